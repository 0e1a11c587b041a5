"""Keyhouse: a self-hosted control plane implementing the ClickHouse Cloud management API v1."""

__version__ = "0.1.0"
