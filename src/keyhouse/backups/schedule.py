"""When a service is backed up, what kind of backup comes next, and which backups retention
deletes: pure functions of a service's configuration and its backups (no database, no engine).

- **Configuration** (the official ``BackupConfiguration``): ``backupPeriodInHours`` (default
  24; whole hours, 1 to 720), ``backupRetentionPeriodInHours`` (default 24; a whole number of
  days, 24 to 1080) and ``backupStartTime`` (``HH:MM`` UTC; when set, backups begin at that time of
  day, and the period is 24 hours, or 48 when set so, as clickhousectl documents for ClickHouse
  Cloud). ``None`` is the default.
- **Due**: one period after the last backup began (the first one a period after the service
  was created), or, with a start time, at the first start time at least a period (less a day)
  after that. A failed backup is
  tried again an hour later (``RETRY_AFTER``) if the schedule comes no sooner.
- **Chains**: the first backup is full; each next one is incremental on the last good one
  (``done``), until a chain holds ``CHAIN_LENGTH`` backups, when a new chain begins with a
  full backup. A chain is restored whole: each incremental needs every backup before it.
- **Retention** deletes whole chains only: a chain whose newest backup is older than the
  retention period, and never the newest chain that holds a good backup (a service that stops
  for longer than its retention keeps its last backups). Failed backups go after the
  retention period too.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

DEFAULT_PERIOD_HOURS = 24
DEFAULT_RETENTION_HOURS = 24
MAX_PERIOD_HOURS = 720
MIN_RETENTION_HOURS, MAX_RETENTION_HOURS = 24, 1080
# Backups in one chain: a full one and six incrementals (a week, at the default period).
CHAIN_LENGTH = 7
RETRY_AFTER = dt.timedelta(hours=1)  # after a failed backup
START_TIME_PERIODS = (24, 48)  # the periods a start time allows (daily, every other day)
_START_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class ConfigError(ValueError):
    """A configuration value out of range (its message names the field)."""


@dataclass(frozen=True)
class BackupConfig:
    period_hours: int | None = None
    retention_hours: int | None = None
    start_time: str | None = None  # "HH:MM", UTC

    @property
    def period(self) -> dt.timedelta:
        hours = self.period_hours or DEFAULT_PERIOD_HOURS
        if self.start_time is not None and hours not in START_TIME_PERIODS:
            hours = 24
        return dt.timedelta(hours=hours)

    @property
    def retention(self) -> dt.timedelta:
        return dt.timedelta(hours=self.retention_hours or DEFAULT_RETENTION_HOURS)

    def effective(self) -> tuple[int, int, str | None]:
        """(period hours, retention hours, start time) as they apply."""
        return (
            int(self.period.total_seconds() // 3600),
            int(self.retention.total_seconds() // 3600),
            self.start_time,
        )


def check_period(hours: float) -> int:
    if hours != int(hours) or not 1 <= hours <= MAX_PERIOD_HOURS:
        raise ConfigError(
            f"backupPeriodInHours: must be a whole number of hours from 1 to {MAX_PERIOD_HOURS}"
        )
    return int(hours)


def check_retention(hours: float) -> int:
    if hours != int(hours) or hours % 24 or not MIN_RETENTION_HOURS <= hours <= MAX_RETENTION_HOURS:
        raise ConfigError(
            "backupRetentionPeriodInHours: must be a whole number of days between 24 (1 day) "
            "and 1080 (45 days), i.e. a multiple of 24"
        )
    return int(hours)


def check_start_time(text: str) -> str:
    if not _START_TIME.match(text):
        raise ConfigError("backupStartTime: must be a time of day as HH:MM (UTC), e.g. 02:30")
    return text


def next_due(
    config: BackupConfig,
    last_started: dt.datetime | None,
    created: dt.datetime,
    *,
    failed: bool = False,
) -> dt.datetime:
    """When the next scheduled backup is due (``failed``: the last one failed; it is tried
    again ``RETRY_AFTER`` later, or sooner when the schedule says so)."""
    anchor = last_started or created
    if config.start_time is None:
        due = anchor + config.period
    else:
        hours, minutes = (int(part) for part in config.start_time.split(":"))
        after = anchor + config.period - dt.timedelta(days=1)
        at = after.astimezone(dt.UTC).replace(hour=hours, minute=minutes, second=0, microsecond=0)
        due = at if at > after else at + dt.timedelta(days=1)
    return min(due, anchor + RETRY_AFTER) if failed and last_started else due


class BackupLike(Protocol):
    @property
    def id(self) -> uuid.UUID: ...
    @property
    def status(self) -> str: ...
    @property
    def chain_id(self) -> uuid.UUID | None: ...
    @property
    def requested_at(self) -> dt.datetime: ...


@dataclass(frozen=True)
class Plan:
    type: str  # "full" or "incremental"
    base_id: uuid.UUID | None
    chain_id: uuid.UUID | None  # None: a new chain (the backup's own id)


def plan(backups: Sequence[BackupLike]) -> Plan:
    """The kind of the next backup, given the service's backups (any order)."""
    done = sorted((b for b in backups if b.status == "done"), key=lambda b: b.requested_at)
    if not done:
        return Plan("full", None, None)
    last = done[-1]
    in_chain = [b for b in done if b.chain_id == last.chain_id]
    if len(in_chain) >= CHAIN_LENGTH:
        return Plan("full", None, None)
    return Plan("incremental", last.id, last.chain_id)


def expired(
    backups: Sequence[BackupLike], retention: dt.timedelta, now: dt.datetime
) -> list[uuid.UUID]:
    """The backups retention deletes now: whole chains past the retention period (never the
    newest chain with a good backup, nor one with a backup in progress), and failed backups
    past it."""
    chains: dict[uuid.UUID, list[BackupLike]] = {}
    gone: list[uuid.UUID] = []
    for backup in backups:
        if backup.status == "error":
            if now - backup.requested_at > retention:
                gone.append(backup.id)
        elif backup.chain_id is not None:
            chains.setdefault(backup.chain_id, []).append(backup)
    good = [chain for chain in chains.values() if any(b.status == "done" for b in chain)]
    newest = max(good, key=lambda chain: max(b.requested_at for b in chain), default=None)
    for chain in chains.values():
        if chain is newest or any(b.status == "in_progress" for b in chain):
            continue
        if now - max(b.requested_at for b in chain) > retention:
            gone += [b.id for b in chain]
    return gone
