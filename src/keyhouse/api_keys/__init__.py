"""API keys: create (secret shown once), list, get, update, delete."""
