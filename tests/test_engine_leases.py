"""One process runs each service's engine, whatever else runs on the same database: a process
holds a lease before it starts anything for a service; another takes it over only once it has
expired or its holder's process is gone, and only with the data directory the service's data
lives in (on SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from keyhouse.db import utcnow
from keyhouse.models import EngineLease, Service
from keyhouse.services import leases
from tests.conftest import Org

SECONDS = 30.0
HOME = "home-a"


@pytest.fixture
def service_id(session: Session, org: Org) -> uuid.UUID:
    service = Service(
        organization_id=org.id,
        name=f"leased-{uuid.uuid4().hex[:8]}",
        state="running",
        provider="aws",
        region="us-east-1",
        password_hash="0" * 64,
    )
    session.add(service)
    session.commit()
    return service.id


def _take(
    session: Session, service_id: uuid.UUID, holder: str, at: dt.datetime, home: str = HOME
) -> None:
    leases.take(session, service_id, holder, home, seconds=SECONDS, now=at)
    session.commit()


def test_a_lease_is_one_holders_until_it_expires(session: Session, service_id: uuid.UUID) -> None:
    now = utcnow()
    me, other = leases.holder_name(), leases.holder_name()
    _take(session, service_id, me, now)
    _take(session, service_id, me, now + dt.timedelta(seconds=5))  # ours: taken again
    with pytest.raises(leases.HeldElsewhere, match="another Keyhouse server process"):
        _take(session, service_id, other, now + dt.timedelta(seconds=20))
    session.rollback()
    # Past its expiry (35 s after the last take), the other process takes it over, and the
    # first one's renewal says it lost it.
    _take(session, service_id, other, now + dt.timedelta(seconds=36))
    lost = leases.renew(
        session, me, {service_id}, seconds=SECONDS, now=now + dt.timedelta(seconds=37)
    )
    assert lost == {service_id}
    assert leases.renew(session, other, {service_id}, seconds=SECONDS) == set()


def test_a_released_lease_is_free_at_once_and_remembers_its_home(
    session: Session, service_id: uuid.UUID
) -> None:
    now = utcnow()
    me, other = leases.holder_name(), leases.holder_name()
    _take(session, service_id, me, now)
    leases.release(session, me, {service_id}, now=now)
    session.commit()
    assert (service_id, "running") in leases.unheld(
        session, HOME, {"running"}, leased_only=True, now=now
    )  # (other tests' services on this database may be listed too)
    # A process whose data directory is another never takes it: it would start an empty engine.
    assert (service_id, "running") not in leases.unheld(
        session, "home-b", {"running"}, leased_only=True, now=now
    )
    with pytest.raises(leases.HeldElsewhere, match="another Keyhouse server's data directory"):
        _take(session, service_id, other, now + dt.timedelta(hours=1), home="home-b")
    session.rollback()
    _take(session, service_id, other, now)
    lease = session.get(EngineLease, service_id)
    assert lease is not None
    assert (lease.holder, lease.home) == (other, HOME)


def test_a_holder_whose_process_is_gone_from_this_machine_is_taken_over_at_once(
    session: Session, service_id: uuid.UUID
) -> None:
    ended = subprocess.run(  # a process of this machine that no longer exists
        [sys.executable, "-c", "from keyhouse.services.leases import holder_name as h; print(h())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    now = utcnow()
    _take(session, service_id, ended, now)
    assert (service_id, "running") in leases.unheld(
        session, HOME, {"running"}, leased_only=True, now=now
    )
    _take(session, service_id, leases.holder_name(), now)  # well before its expiry
    # A live holder of this machine (this very process) is not taken over before expiry.
    with pytest.raises(leases.HeldElsewhere):
        _take(session, service_id, leases.holder_name(), now)


def test_a_services_lease_goes_with_it(session: Session, service_id: uuid.UUID) -> None:
    _take(session, service_id, leases.holder_name(), utcnow())
    service = session.get(Service, service_id)
    session.delete(service)
    session.commit()
    assert session.get(EngineLease, service_id) is None
    leases.take(session, service_id, leases.holder_name(), HOME, seconds=SECONDS)  # nothing


def test_a_data_directory_keeps_its_own_id(tmp_path: Path) -> None:
    first = leases.home_of(tmp_path / "data")
    assert leases.home_of(tmp_path / "data") == first
    assert leases.home_of(tmp_path / "other") != first


def test_one_process_holds_a_deployment_schedule_and_another_takes_it_over(
    session: Session,
) -> None:
    """The deployment-wide schedules (the watch of engine hosts' heartbeats) run in exactly one
    process: the holder of their lease, until it gives it up, expires, or its process is gone."""
    name = f"schedule-{uuid.uuid4().hex[:8]}"
    now = utcnow()
    me, other = leases.holder_name(), leases.holder_name()

    def schedule(holder: str, seconds_later: float) -> bool:
        at = now + dt.timedelta(seconds=seconds_later)
        held = leases.schedule(session, name, holder, seconds=SECONDS, now=at)
        session.commit()
        return held

    assert schedule(me, 0)
    assert schedule(me, 10)  # renewed
    assert not schedule(other, 20)  # until 40 s: mine
    assert schedule(other, 41)  # expired: taken over
    assert not schedule(me, 42)
    leases.unschedule(session, name, other)
    session.commit()
    assert schedule(me, 1)  # given up: free at once
    ended = subprocess.run(  # a process of this machine that no longer exists
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    machine = leases.holder_name().split("/")[0]
    gone = f"{machine}/{ended.stdout.strip()}/dead"
    leases.unschedule(session, name, me)
    session.commit()
    assert schedule(gone, 2)
    assert schedule(other, 4)  # its holder is gone from this machine: at once, before 32 s


def test_a_service_held_by_another_live_process_here_is_reached_through_it() -> None:
    """A query on a service another live process of this machine holds, in this data
    directory, goes through that process; one held by this process, by a gone one, in
    another data directory or past its lease is this process's (or ``take`` says why not)."""
    now = utcnow()
    me, other = leases.holder_name(), leases.holder_name()  # (both alive: this process)
    later = now + dt.timedelta(seconds=SECONDS)

    def nearby(holder: str, home: str = HOME, expires: dt.datetime = later) -> bool:
        return leases.held_nearby(holder, home, expires, holder=me, home=HOME, now=now)

    assert nearby(other)
    assert not nearby(me)
    assert not nearby(other, home="home-b")
    assert not nearby(other, expires=now)
    ended = subprocess.run(
        [sys.executable, "-c", "from keyhouse.services.leases import holder_name as h; print(h())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert not nearby(ended)
