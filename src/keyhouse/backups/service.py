"""Backups as records: the API's reads, the configuration, restore's checks, and the steps the
runner (``keyhouse.backups.runner``) records as it takes and prunes backups. Plain functions
over a session; the schedule's rules are ``keyhouse.backups.schedule``'s."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from keyhouse.activities.service import record
from keyhouse.api.errors import BadRequest, Conflict, NotFound
from keyhouse.auth.authorize import find_in_organization, require
from keyhouse.auth.permissions import Permission, instance_resource
from keyhouse.auth.principal import Principal, system_principal
from keyhouse.backups import schedule
from keyhouse.backups.schedule import BackupConfig
from keyhouse.db import utcnow
from keyhouse.models import Backup, Service

ATTACHED = (
    "Backups of a service attached to a ClickHouse server are that server's operator's: "
    "Keyhouse neither takes nor restores them"
)
# The states in which a service's data can change (its engine runs, or wakes for a query).
LIVE = frozenset({"running"})


def _service(
    session: Session,
    principal: Principal,
    service_id: uuid.UUID,
    permission: Permission = Permission.SERVICE_VIEW_BACKUPS,
) -> Service:
    """The caller's service (404 otherwise), once the caller holds ``permission`` on it."""
    service = find_in_organization(session, principal, Service, service_id, "Service")
    require(principal, permission, instance_resource(service.id))
    return service


def config_of(service: Service) -> BackupConfig:
    return BackupConfig(
        service.backup_period_hours, service.backup_retention_hours, service.backup_start_time
    )


def list_backups(session: Session, principal: Principal, service_id: uuid.UUID) -> list[Backup]:
    """The service's backups, the most recent first (none for an attached service)."""
    service = _service(session, principal, service_id)
    return list(service_backups(session, service.id))


def get_backup(
    session: Session, principal: Principal, service_id: uuid.UUID, backup_id: uuid.UUID
) -> Backup:
    service = _service(session, principal, service_id)
    backup = session.get(Backup, backup_id)
    if backup is None or backup.service_id != service.id:
        raise NotFound("Backup not found")
    return backup


def get_configuration(
    session: Session, principal: Principal, service_id: uuid.UUID
) -> BackupConfig:
    service = _service(session, principal, service_id)
    return config_of(service)


def update_configuration(
    session: Session, principal: Principal, service_id: uuid.UUID, changes: dict[str, Any]
) -> BackupConfig:
    """Apply the fields given (``None``: back to the default); ``changes`` holds the official
    names of the fields the request set."""
    service = _service(session, principal, service_id, Permission.SERVICE_MANAGE_BACKUPS)
    if service.attached_url is not None:
        raise BadRequest(ATTACHED)
    try:
        if "backupPeriodInHours" in changes:
            period = changes["backupPeriodInHours"]
            service.backup_period_hours = None if period is None else schedule.check_period(period)
        if "backupRetentionPeriodInHours" in changes:
            hours = changes["backupRetentionPeriodInHours"]
            service.backup_retention_hours = (
                None if hours is None else schedule.check_retention(hours)
            )
        if "backupStartTime" in changes:
            start = changes["backupStartTime"]
            service.backup_start_time = None if start is None else schedule.check_start_time(start)
    except schedule.ConfigError as error:
        raise BadRequest(str(error)) from None
    allowed = (None, *schedule.START_TIME_PERIODS)
    if service.backup_start_time is not None and service.backup_period_hours not in allowed:
        if "backupPeriodInHours" in changes:
            raise BadRequest(
                "backupPeriodInHours: with a backupStartTime, backups are taken every 24 or 48 "
                "hours"
            )
        service.backup_period_hours = None  # a start time resets the period to 24 hours
    record(session, principal, "service_update_backup_configuration", service_id=service.id)
    session.flush()
    return config_of(service)


def restore_source(
    session: Session, principal: Principal, backup_id: str, region: str
) -> uuid.UUID:
    """The backup a new service starts from: a good backup of a service of the caller's
    organization (404 otherwise, whatever other organizations hold), in the new service's
    region."""
    try:
        wanted = uuid.UUID(backup_id)
    except ValueError:
        raise NotFound("Backup not found") from None
    backup = session.get(Backup, wanted)
    source = session.get(Service, backup.service_id) if backup is not None else None
    if backup is None or source is None or source.organization_id != principal.organization_id:
        raise NotFound("Backup not found")
    require(principal, Permission.SERVICE_VIEW_BACKUPS, instance_resource(source.id))
    if backup.status != "done":
        raise BadRequest(f"backupId: the backup is {backup.status}; only a finished one restores")
    if source.region != region:
        raise BadRequest(
            f"region: a service restored from a backup must be in its region ({source.region})"
        )
    return backup.id


# --- the runner's records -------------------------------------------------------------------


def request_backup(session: Session, service_id: uuid.UUID) -> Backup:
    """A backup the operator asked for now (``keyhouse backups take``): recorded, and taken by
    the server process that runs the service."""
    service = session.get(Service, service_id)
    if service is None:
        raise NotFound("Service not found")
    if service.attached_url is not None:
        raise BadRequest(ATTACHED)
    if service.state not in LIVE:
        raise Conflict(
            f"The service is {service.state}: a backup is taken of a running service (an idle "
            "or stopped one's data cannot change until it runs again)"
        )
    backup = Backup(service_id=service.id, status="in_progress", trigger="operator")
    session.add(backup)
    session.flush()
    return backup


def chain(session: Session, backup_id: uuid.UUID) -> list[Backup]:
    """The backups a restore of ``backup_id`` reads: its chain's, from the full one to it."""
    backup = session.get(Backup, backup_id)
    found: list[Backup] = []
    while backup is not None:
        found.append(backup)
        backup = session.get(Backup, backup.base_id) if backup.base_id else None
    return found[::-1]


def begin(
    session: Session, service_id: uuid.UUID, runner: str, backup_id: uuid.UUID | None = None
) -> Backup:
    """Start a backup of the service (the requested ``backup_id``, or a scheduled one): full or
    incremental as the schedule's chain rule says."""
    existing = session.scalars(select(Backup).where(Backup.service_id == service_id)).all()
    step = schedule.plan(existing)
    backup = session.get(Backup, backup_id) if backup_id else None
    if backup is None:
        backup = Backup(service_id=service_id, trigger="schedule")
        session.add(backup)
        session.flush()
    backup.status = "in_progress"
    backup.runner = runner
    backup.started_at = utcnow()
    backup.type = step.type
    backup.base_id = step.base_id
    backup.chain_id = step.chain_id or backup.id
    service = session.get(Service, service_id)
    if service is not None:
        service.backup_note = None
    session.flush()
    return backup


def finish(session: Session, backup_id: uuid.UUID, size: int) -> None:
    backup = session.get(Backup, backup_id)
    if backup is not None and backup.status == "in_progress":
        backup.status = "done"
        backup.size_bytes = size
        backup.finished_at = utcnow()


def fail(session: Session, backup_id: uuid.UUID, why: str) -> None:
    backup = session.get(Backup, backup_id)
    if backup is not None and backup.status == "in_progress":
        backup.status = "error"
        backup.error = why[:1024]
        backup.finished_at = utcnow()


def requested(
    session: Session, service_ids: Collection[uuid.UUID]
) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """(service, backup) for each backup asked for and not begun, of these services."""
    rows = session.execute(
        select(Backup.service_id, Backup.id).where(
            Backup.service_id.in_(list(service_ids)),
            Backup.status == "in_progress",
            Backup.runner.is_(None),
        )
    )
    return [(service_id, backup_id) for service_id, backup_id in rows]


def abandon(session: Session, service_ids: Collection[uuid.UUID], runner: str) -> int:
    """Fail the backups another process began for these services (this one holds them now:
    whatever ran them is gone)."""
    rows = session.scalars(
        select(Backup).where(
            Backup.service_id.in_(list(service_ids)),
            Backup.status == "in_progress",
            Backup.runner.is_not(None),
            Backup.runner != runner,
        )
    ).all()
    for backup in rows:
        fail(session, backup.id, "the server process running the backup stopped")
    return len(rows)


def due(
    session: Session, service_ids: Collection[uuid.UUID], now: dt.datetime
) -> tuple[list[uuid.UUID], dict[uuid.UUID, str]]:
    """Of these services, the running ones a scheduled backup is due for; and a note for each
    one that is due but does not run (its data cannot change until it runs again)."""
    services = session.scalars(
        select(Service).where(Service.id.in_(list(service_ids)), Service.attached_url.is_(None))
    ).all()
    last: dict[uuid.UUID, tuple[dt.datetime, bool]] = {}
    attempts = session.execute(
        select(Backup.service_id, Backup.requested_at, Backup.status)
        .where(Backup.service_id.in_(list(service_ids)))
        .order_by(Backup.requested_at)
    )
    for service_id, at, status in attempts:  # (the last one per service wins)
        last[service_id] = (at, status == "error")
    busy = set(
        session.scalars(
            select(Backup.service_id).where(
                Backup.service_id.in_(list(service_ids)), Backup.status == "in_progress"
            )
        )
    )
    ready: list[uuid.UUID] = []
    notes: dict[uuid.UUID, str] = {}
    for service in services:
        at, failed = last.get(service.id, (None, False))
        when = schedule.next_due(config_of(service), at, service.created_at, failed=failed)
        if when > now or service.id in busy:
            continue
        if service.state in LIVE:
            ready.append(service.id)
        else:
            notes[service.id] = (
                f"The backup due at {when.isoformat(timespec='minutes')} was not taken: the "
                f"service is {service.state}, and its data cannot change until it runs again "
                "(it is backed up once it runs)"
            )
    return ready, notes


def stopped_notes(session: Session, now: dt.datetime) -> dict[uuid.UUID, str]:
    """A note for each stopped service a scheduled backup is due for (no process holds a
    stopped service: any process may say why it was not taken)."""
    stopped = session.scalars(
        select(Service.id).where(Service.state == "stopped", Service.attached_url.is_(None))
    ).all()
    return due(session, stopped, now)[1] if stopped else {}


def pending_restore(session: Session, service_id: uuid.UUID) -> uuid.UUID | None:
    service = session.get(Service, service_id)
    return service.restore_from if service is not None else None


def restored(session: Session, service_id: uuid.UUID) -> None:
    service = session.get(Service, service_id)
    if service is not None:
        service.restore_from = None


def note(session: Session, notes: dict[uuid.UUID, str]) -> None:
    for service_id, text in notes.items():
        service = session.get(Service, service_id)
        if service is not None and service.backup_note != text:
            service.backup_note = text


def prune(session: Session, service_id: uuid.UUID, now: dt.datetime) -> list[uuid.UUID]:
    """Delete the records of the backups retention lets go (the caller deletes their files
    after the commit); each one is recorded as ``backup_delete``."""
    service = session.get(Service, service_id)
    if service is None:
        return []
    backups = session.scalars(select(Backup).where(Backup.service_id == service_id)).all()
    gone = schedule.expired(backups, config_of(service).retention, now)
    principal = system_principal(service.organization_id, "backup retention")
    for backup in backups:
        if backup.id in gone:
            record(
                session,
                principal,
                "backup_delete",
                service_id=service_id,
                details=f"backup {backup.id} ({backup.type}, {backup.status})",
            )
            session.delete(backup)
    session.flush()
    return gone


def service_backups(session: Session, service_id: uuid.UUID) -> Sequence[Backup]:
    """Every backup of a service, the most recent first (the operator's CLI)."""
    return session.scalars(
        select(Backup)
        .where(Backup.service_id == service_id)
        .order_by(Backup.requested_at.desc(), Backup.id)
    ).all()
