"""Service engines: one worker process per running service, and the supervisor that owns them."""
