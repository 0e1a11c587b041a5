"""The backup schedule's rules: when a backup is due, full or incremental, and what retention
deletes (keyhouse.backups.schedule; pure functions)."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field

import pytest

from keyhouse.backups import schedule
from keyhouse.backups.schedule import CHAIN_LENGTH, BackupConfig, expired, next_due, plan

pytestmark = pytest.mark.one_database

T0 = dt.datetime(2026, 12, 1, 10, 17, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


@dataclass
class B:
    at: dt.datetime
    status: str = "done"
    chain_id: uuid.UUID | None = None
    id: uuid.UUID = field(default_factory=uuid.uuid4)

    @property
    def requested_at(self) -> dt.datetime:
        return self.at


def test_a_backup_is_due_a_period_after_the_last_or_at_the_start_time() -> None:
    assert next_due(BackupConfig(), None, T0) == T0 + 24 * HOUR  # a new service: a period on
    assert next_due(BackupConfig(period_hours=6), T0, T0 - HOUR) == T0 + 6 * HOUR
    daily = BackupConfig(start_time="02:30")
    assert next_due(daily, T0, T0) == dt.datetime(2026, 12, 2, 2, 30, tzinfo=dt.UTC)
    every_other_day = BackupConfig(period_hours=48, start_time="02:30")
    assert next_due(every_other_day, T0, T0) == dt.datetime(2026, 12, 3, 2, 30, tzinfo=dt.UTC)
    early = T0.replace(hour=1)
    assert next_due(daily, early, early) == dt.datetime(2026, 12, 1, 2, 30, tzinfo=dt.UTC)
    # A failed backup is tried again an hour on, unless the schedule comes sooner.
    assert next_due(BackupConfig(), T0, T0, failed=True) == T0 + HOUR
    at_10_30 = BackupConfig(start_time="10:30")
    assert next_due(at_10_30, T0, T0, failed=True) == T0 + dt.timedelta(minutes=13)


def test_the_configuration_is_checked_as_the_spec_says() -> None:
    assert schedule.check_retention(48) == 48
    for bad in (0, 12, 25, 1104, 24.5):
        with pytest.raises(schedule.ConfigError, match="backupRetentionPeriodInHours"):
            schedule.check_retention(bad)
    assert schedule.check_period(6) == 6
    for bad in (0, 0.5, 721):
        with pytest.raises(schedule.ConfigError, match="backupPeriodInHours"):
            schedule.check_period(bad)
    assert schedule.check_start_time("23:59") == "23:59"
    for text in ("24:00", "2:30", "02:60", "noon"):
        with pytest.raises(schedule.ConfigError, match="backupStartTime"):
            schedule.check_start_time(text)
    assert BackupConfig(period_hours=6, start_time="01:00").effective() == (24, 24, "01:00")
    assert BackupConfig(period_hours=48, start_time="01:00").effective() == (48, 24, "01:00")


def test_a_chain_is_a_full_backup_and_incrementals_on_the_last_good_one() -> None:
    assert plan([]) == schedule.Plan("full", None, None)
    full = B(T0)
    full.chain_id = full.id
    failed = B(T0 + HOUR, status="error", chain_id=full.id)
    step = plan([full, failed])
    assert step == schedule.Plan("incremental", full.id, full.id)  # never on a failed one
    chain = [full] + [B(T0 + i * HOUR, chain_id=full.id) for i in range(1, CHAIN_LENGTH)]
    assert plan(chain) == schedule.Plan("full", None, None)  # a chain is at most CHAIN_LENGTH


def _chain(start: dt.datetime, length: int) -> list[B]:
    first = B(start)
    first.chain_id = first.id
    return [first] + [B(start + i * HOUR, chain_id=first.id) for i in range(1, length)]


def test_retention_deletes_whole_old_chains_and_never_the_newest_good_one() -> None:
    old, new = _chain(T0, 3), _chain(T0 + 10 * HOUR, 2)
    now = T0 + 36 * HOUR  # the old chain ended 34 hours before, the new one 25
    gone = expired(old + new, 24 * HOUR, now)
    assert set(gone) == {b.id for b in old}
    # A chain's base is never deleted while a newer backup of the chain is within retention.
    young_tail = _chain(T0, 2) + [B(now - HOUR)]
    young_tail[-1].chain_id = young_tail[0].id
    assert expired(young_tail + new, 24 * HOUR, now) == [b.id for b in new]
    # The newest chain with a good backup stays, however old (a service stopped for months).
    assert expired(new, 24 * HOUR, now + 1000 * HOUR) == []
    # A failed backup goes once past retention; a chain with one in progress does not.
    failed = B(T0, status="error")
    running = _chain(T0, 1)
    running.append(B(T0 + HOUR, status="in_progress", chain_id=running[0].id))
    assert set(expired([failed, *running, *new], 24 * HOUR, now)) == {failed.id}
