"""The activity log: one record per change, written in the change's own transaction."""
