"""Organizations: list, get, rename, and creating one with its first admin (bootstrap)."""
