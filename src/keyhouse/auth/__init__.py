"""Authentication (HTTP Basic with API keys), principals, permissions and policy evaluation."""
