"""Service backups: the schedule, the records, the runner, and the official operations
(``Backup``, ``BackupConfiguration``)."""
