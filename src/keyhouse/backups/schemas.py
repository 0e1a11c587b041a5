"""Wire models (official ``Backup``, ``BackupConfiguration`` and
``BackupConfigurationPatchRequest``)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import Field

from keyhouse.api.wire import Wire, WireRequest
from keyhouse.backups.schedule import BackupConfig
from keyhouse.db import utcnow
from keyhouse.models import Backup as BackupRow


class Backup(Wire):
    """A backup. Its files are in the service's backup directory, under ``backupName`` (the
    backup's id); there is no external bucket."""

    id: str
    status: Literal["done", "error", "in_progress"]
    service_id: str = Field(alias="serviceId")
    started_at: dt.datetime = Field(alias="startedAt")
    finished_at: dt.datetime | None = Field(default=None, alias="finishedAt")
    size_in_bytes: int = Field(alias="sizeInBytes", ge=0)
    duration_in_seconds: float = Field(alias="durationInSeconds", ge=0)
    type: Literal["full", "incremental"]
    backup_name: str = Field(alias="backupName")
    # The bring-your-own bucket's properties; none: the backup is in the service's backup
    # directory (backupBucket is not built).
    bucket: dict[str, Any] | None = None

    @classmethod
    def from_row(cls, row: BackupRow) -> Backup:
        started = row.started_at or row.requested_at
        ended = row.finished_at or utcnow()
        return cls(
            id=str(row.id),
            status=row.status,
            service_id=str(row.service_id),
            started_at=started,
            finished_at=row.finished_at,
            size_in_bytes=row.size_bytes,
            duration_in_seconds=round(max((ended - started).total_seconds(), 0.0), 3),
            type=row.type,
            backup_name=str(row.id),
        )


class BackupConfiguration(Wire):
    backup_period_in_hours: int = Field(alias="backupPeriodInHours")
    backup_retention_period_in_hours: int = Field(alias="backupRetentionPeriodInHours")
    backup_start_time: str | None = Field(default=None, alias="backupStartTime")

    @classmethod
    def from_config(cls, config: BackupConfig) -> BackupConfiguration:
        period, retention, start = config.effective()
        return cls(
            backup_period_in_hours=period,
            backup_retention_period_in_hours=retention,
            backup_start_time=start,
        )


class BackupConfigurationPatchRequest(WireRequest):
    """Each field given is set; ``null`` resets it to its default (the official rule)."""

    backup_period_in_hours: float | None = Field(default=None, alias="backupPeriodInHours")
    backup_retention_period_in_hours: float | None = Field(
        default=None, alias="backupRetentionPeriodInHours"
    )
    backup_start_time: str | None = Field(default=None, alias="backupStartTime", max_length=5)

    def changes(self) -> dict[str, float | str | None]:
        """The fields the request set, by their official names."""
        return {
            (type(self).model_fields[name].alias or name): getattr(self, name)
            for name in self.model_fields_set
        }
