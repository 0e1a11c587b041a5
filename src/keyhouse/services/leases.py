"""Engine leases: exactly one Keyhouse process runs each service's runtime (its engine, or the
connection to its attached server, and its ClickHouse port), whatever runs beside it on the same
database (replicas, a restarted server, a second one started by mistake).

A process holds a service's lease (``engine_leases``) before it starts anything for it, renews
what it holds every third of ``KEYHOUSE_ENGINE_LEASE_SECONDS``, and releases it when it stops
the service or shuts down. Another process takes a lease over only once it has expired, or at
once when the holder's process is gone from this very machine; and only if the service's data
lives in its own data directory (the lease's ``home``): a process with another data directory
would start an empty engine beside the real data, so it answers 503 for that service instead.

Plain functions over a session; ``keyhouse.runtime.Engines`` calls them.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import tempfile
import uuid
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from keyhouse.db import utcnow
from keyhouse.models import EngineLease, SchedulerLease, Service

HOME_FILE = "keyhouse-home"


def home_of(data_dir: Path) -> str:
    """The data directory's own id (made once, kept in ``HOME_FILE``): the same for every
    process that shares the directory, and different for any other, wherever it is mounted."""
    path = data_dir / HOME_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        data_dir.mkdir(parents=True, exist_ok=True)
        made = uuid.uuid4().hex
        try:
            with path.open("x") as handle:  # two processes at once: the first one's id wins
                handle.write(made)
        except FileExistsError:
            return path.read_text().strip()
        return made


def _machine() -> str:
    """This kernel's boot and PID namespace: processes that can see each other's PIDs."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}.{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return "unknown"


def holder_name() -> str:
    """A name for this process's holds: its machine, its PID and a token of its own."""
    return f"{_machine()}/{os.getpid()}/{secrets.token_hex(4)}"


def _gone(holder: str) -> bool:
    """Whether ``holder`` is a process of this machine that no longer exists."""
    machine, _, rest = holder.partition("/")
    pid, _, _ = rest.partition("/")
    if machine != _machine() or machine == "unknown" or not pid.isdigit():
        return False
    return not Path(f"/proc/{pid}").exists()


def alive_here(holder: str) -> bool:
    """Whether ``holder`` is a live process of this very machine."""
    machine, _, rest = holder.partition("/")
    pid, _, _ = rest.partition("/")
    return machine == _machine() and machine != "unknown" and pid.isdigit() and not _gone(holder)


def held_nearby(
    lease_holder: str,
    lease_home: str,
    expires_at: dt.datetime,
    *,
    holder: str,
    home: str,
    now: dt.datetime,
) -> bool:
    """Whether a service's lease is another live process's of this machine, in this data
    directory (``home``): that process runs it, and is reached through its channel
    (``channel_path``). Otherwise the service is ``holder``'s, or ``holder``'s to take (or
    ``take`` says why not)."""
    return (
        lease_holder != holder
        and lease_home == home
        and expires_at > now
        and alive_here(lease_holder)
    )


def channels_dir(data_dir: Path) -> Path:
    """Where the server processes sharing ``data_dir`` listen for each other: a directory of
    the system's temporary one named by the data directory's id (a Unix socket's path must be
    short; the data directory's may not be). Made 0700 by its first process, and used only
    when it is ours and 0700 (``keyhouse.runtime``)."""
    return Path(tempfile.gettempdir()) / f"keyhouse-channels-{home_of(data_dir)[:16]}"


def channel_path(data_dir: Path, holder: str) -> Path:
    """Where the server process ``holder`` listens for the others of its machine (its
    services' queries and engine work; ``keyhouse.runtime``)."""
    _machine_part, _, rest = holder.partition("/")
    pid, _, token = rest.partition("/")
    return channels_dir(data_dir) / f"{pid}-{token}.sock"


class HeldElsewhere(Exception):
    """Another process runs the service (or its data lives in another data directory)."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def take(
    session: Session,
    service_id: uuid.UUID,
    holder: str,
    home: str,
    *,
    seconds: float,
    now: dt.datetime | None = None,
) -> None:
    """Hold the service's lease for ``seconds`` from ``now``: a new one, ours, or one whose
    holder has expired or is gone (in our home); ``HeldElsewhere`` otherwise. A service that no
    longer exists has nothing to hold."""
    now = now or utcnow()
    service = session.get(Service, service_id)
    if service is None:
        return
    if service.host_id is not None:
        raise HeldElsewhere("it runs on an engine host (keyhouse hosts list)")
    expires = now + dt.timedelta(seconds=seconds)
    values = {"service_id": service_id, "holder": holder, "home": home, "expires_at": expires}
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    session.execute(dialect.insert(EngineLease).values(values).on_conflict_do_nothing())
    lease = session.get(EngineLease, service_id, with_for_update=True, populate_existing=True)
    if lease is None:  # the service went meanwhile
        return
    if lease.holder != holder:
        if lease.home != home:
            raise HeldElsewhere(
                "its data lives in another Keyhouse server's data directory; that server serves it"
            )
        if lease.expires_at > now and not _gone(lease.holder):
            raise HeldElsewhere("another Keyhouse server process runs its engine")
    lease.holder, lease.expires_at = holder, expires
    session.flush()


def renew(
    session: Session,
    holder: str,
    service_ids: Iterable[uuid.UUID],
    *,
    seconds: float,
    now: dt.datetime | None = None,
) -> set[uuid.UUID]:
    """Extend ``holder``'s leases on ``service_ids``; the ones it no longer holds (taken over
    after it was silent past its lease, or their service deleted)."""
    wanted = set(service_ids)
    if not wanted:
        return set()
    now = now or utcnow()
    leases = session.scalars(
        select(EngineLease)
        .where(EngineLease.service_id.in_(wanted), EngineLease.holder == holder)
        .with_for_update()
    ).all()
    for lease in leases:
        lease.expires_at = now + dt.timedelta(seconds=seconds)
    session.flush()
    return wanted - {lease.service_id for lease in leases}


def release(
    session: Session,
    holder: str,
    service_ids: Iterable[uuid.UUID],
    *,
    now: dt.datetime | None = None,
) -> None:
    """End ``holder``'s leases on ``service_ids`` now (each stays, expired, with its home)."""
    wanted = set(service_ids)
    if not wanted:
        return
    now = now or utcnow()
    for lease in session.scalars(
        select(EngineLease)
        .where(EngineLease.service_id.in_(wanted), EngineLease.holder == holder)
        .with_for_update()
    ):
        lease.expires_at = now
    session.flush()


def unheld(
    session: Session,
    home: str,
    states: Iterable[str],
    *,
    leased_only: bool = False,
    now: dt.datetime | None = None,
) -> list[tuple[uuid.UUID, str]]:
    """Services in ``states`` whose data is in ``home`` (or that never ran anywhere, unless
    ``leased_only``) that nobody holds: no lease, an expired one, or a gone holder's. What a
    process may take over."""
    now = now or utcnow()
    rows = session.execute(
        select(
            Service.id, Service.state, EngineLease.holder, EngineLease.home, EngineLease.expires_at
        )
        .outerjoin(EngineLease, EngineLease.service_id == Service.id)
        .where(Service.state.in_([str(state) for state in states]), Service.host_id.is_(None))
    ).all()
    return [
        (service_id, state)
        for service_id, state, holder, lease_home, expires_at in rows
        if (holder is None and not leased_only)
        or (lease_home == home and (expires_at <= now or _gone(holder)))
    ]


def schedule(
    session: Session,
    name: str,
    holder: str,
    *,
    seconds: float,
    now: dt.datetime | None = None,
) -> bool:
    """Hold (or keep) the deployment-wide schedule ``name`` for ``seconds``: True when
    ``holder`` holds it now (it was free, expired, its holder's process gone, or ours)."""
    now = now or utcnow()
    expires = now + dt.timedelta(seconds=seconds)
    values = {"name": name, "holder": holder, "expires_at": expires}
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    session.execute(dialect.insert(SchedulerLease).values(values).on_conflict_do_nothing())
    lease = session.get(SchedulerLease, name, with_for_update=True, populate_existing=True)
    if lease is None:
        return False
    if lease.holder != holder and lease.expires_at > now and not _gone(lease.holder):
        return False
    lease.holder, lease.expires_at = holder, expires
    session.flush()
    return True


def unschedule(session: Session, name: str, holder: str) -> None:
    """Give the schedule up now (another process takes it at its next try)."""
    lease = session.get(SchedulerLease, name, with_for_update=True)
    if lease is not None and lease.holder == holder:
        lease.expires_at = utcnow() - dt.timedelta(seconds=1)
        session.flush()
