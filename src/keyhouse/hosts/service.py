"""Engine hosts: join tokens, joining, placement, and the sync through which each host's agent
learns what to run and reports what runs.

A host joins once with a join token (``keyhouse hosts token``) and gets its own secret, derived
from the deployment's pepper and its id (every API replica can check it without storing it).
Then its agent syncs every second or so (``sync``): the sync is its heartbeat, carries what it
observed of each service it was given, and answers what it must run (each service's desired
state) and what data it holds that it must remove. A host silent past
``KEYHOUSE_HOST_SILENT_SECONDS`` has its services ``degraded`` (``mark_silent``) until it
reports them running again.

Plain functions over a session: ``keyhouse.hosts.routes`` (the agents' side) and the CLI call
them.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from keyhouse.api.errors import Conflict, NotFound, Unauthorized
from keyhouse.auth import credentials
from keyhouse.billing import service as billing
from keyhouse.billing.service import Sample
from keyhouse.db import utcnow
from keyhouse.hosts.schemas import HostSync, JoinRequest, ServiceReport
from keyhouse.models import EngineHost, HostToken, Service
from keyhouse.services.states import (
    RUN_ON_HOST,
    Observed,
    State,
    idle_due,
    on_report,
    on_silence,
)

TOKEN_PREFIX = "khj_"  # noqa: S105 (a prefix, not a secret)


def new_token(session: Session, pepper: bytes) -> tuple[HostToken, str]:
    """A new join token, and its secret (shown once: only its keyed hash is kept)."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = HostToken(token_hash=credentials.hash_value(pepper, secret))
    session.add(token)
    session.flush()
    return token, secret


def revoke_token(session: Session, token_id: uuid.UUID) -> HostToken:
    token = session.get(HostToken, token_id)
    if token is None:
        raise NotFound(f"No join token {token_id}")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
    session.flush()
    return token


def tokens(session: Session) -> Sequence[HostToken]:
    return session.scalars(select(HostToken).order_by(HostToken.created_at)).all()


def host_secret(pepper: bytes, host_id: uuid.UUID) -> str:
    """The host's own secret: what its agent presents to the control plane, and the control
    plane to its agent (over TLS both ways)."""
    digest = hmac.new(pepper, b"keyhouse-host:" + host_id.bytes, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def join(session: Session, pepper: bytes, token: str, request: JoinRequest) -> EngineHost:
    """A new host, for an agent presenting a valid join token (401 otherwise: the same answer
    for an unknown and a revoked token)."""
    row = session.scalar(
        select(HostToken).where(HostToken.token_hash == credentials.hash_value(pepper, token))
    )
    if row is None or row.revoked_at is not None:
        raise Unauthorized("The join token is not valid (unknown, or revoked)")
    host = EngineHost(token_id=row.id)
    _describe(host, request)
    session.add(host)
    session.flush()
    return host


def _describe(host: EngineHost, request: JoinRequest) -> None:
    host.name = request.name
    host.labels = dict(request.labels)
    host.memory_gb = request.memory_gb
    host.channel = request.channel
    host.advertise = request.advertise
    host.ca_pem = request.ca_pem
    host.version = request.version


def authenticate(session: Session, pepper: bytes, host_id: uuid.UUID, secret: str) -> EngineHost:
    """The host whose agent presents ``secret`` (401 for a wrong one, or a removed host)."""
    expected = host_secret(pepper, host_id)
    host = session.get(EngineHost, host_id)
    if not hmac.compare_digest(expected.encode(), secret.encode()) or host is None:
        raise Unauthorized("Unknown engine host, or a wrong host secret")
    return host


def check_given(session: Session, host: EngineHost, service_id: uuid.UUID) -> None:
    """404 unless ``service_id`` is given to ``host``: a host asks only of its own."""
    given = session.scalar(select(Service.host_id).where(Service.id == service_id))
    if given != host.id:
        raise NotFound("The service is not given to this host")


@dataclass
class Assignment:
    """What a host must run: each service's desired state (and the services moving to it),
    and the data it must remove."""

    services: list[dict[str, object]] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)


def sync(session: Session, host: EngineHost, report: HostSync, now: dt.datetime) -> Assignment:
    """One heartbeat of ``host``: its description as its agent now runs it, what it observed of
    the services it was given (each one's state moves per ``on_report``; a running one unused
    past its ``idleTimeoutMinutes`` goes idle when idle scaling is on), and what it must run
    and remove."""
    _describe(host, report)
    host.last_seen = now
    given = session.scalars(
        select(Service).where(or_(Service.host_id == host.id, Service.moving_to == host.id))
    ).all()
    samples = []
    for service in given:
        seen = report.services.get(str(service.id))
        if seen is not None and service.host_id == host.id:  # (not one moving in)
            # Told something new since its last sync (a command): what it saw is older.
            _observe(session, service, seen, told_since=_digest(service) != service.assigned)
            if seen.usage is not None:
                used = seen.usage
                samples.append(Sample(service.id, used.seconds, used.data_bytes, used.backup_bytes))
    if samples:
        billing.record_samples(session, samples, now)
    assignment = Assignment()
    for service in given:
        wanted = desired(service)
        digest = _digest(service)
        if digest != service.assigned:  # what the host is told changed: a new version
            service.assigned, service.generation = digest, service.generation + 1
        assignment.services.append(
            {
                "id": str(service.id),
                **wanted,
                "generation": service.generation,
                # Moving here (keyhouse hosts drain): its engine runs, its data is on its way.
                "incoming": service.moving_to == host.id,
            }
        )
    mine = {str(service.id) for service in given}
    assignment.remove = sorted(set(report.data) - mine)
    session.flush()
    return assignment


def desired(service: Service) -> dict[str, Any]:
    """What a host is told of a service it runs (or that moves to it)."""
    state = State(service.state)
    return {
        "run": state in RUN_ON_HOST,
        # Idle: no engine, but its port answers (and wakes it).
        "listen": state in RUN_ON_HOST | {State.IDLE},
        "maxMemoryGb": service.max_replica_memory_gb,
        "settings": dict(service.clickhouse_settings or {}),
        # Moving (here or away): its writes wait.
        "frozen": service.moving_to is not None,
        # Created from a backup not restored yet: no query.
        "restoring": service.restore_from is not None,
        "host": str(service.host_id),
        "movingTo": str(service.moving_to) if service.moving_to else None,
    }


def _digest(service: Service) -> str:
    return hashlib.sha256(json.dumps(desired(service), sort_keys=True).encode()).hexdigest()


def _observe(session: Session, service: Service, seen: ServiceReport, *, told_since: bool) -> None:
    if seen.port is not None and service.http_port != seen.port:
        service.http_port = seen.port
    if seen.generation is not None:
        service.observed_generation = seen.generation
        if seen.generation != service.generation or told_since:
            return  # (what it saw answered an older version of what it is told)
    new = on_report(State(service.state), Observed(seen.state))
    if new == State.RUNNING and service.restore_from is not None:
        new = None  # (its engine runs; it is running once its backup is restored)
    if (
        new is None
        and service.state == State.RUNNING
        and service.idle_scaling
        and seen.idle_seconds is not None
        and idle_due(seen.idle_seconds, service.idle_timeout_minutes)
    ):
        new = State.IDLE  # (its host stops the engine, and its port wakes it)
    if new is not None:
        service.state = new.value
        if seen.version:
            service.clickhouse_version = seen.version
        service.failure = (seen.failure or "its engine failed") if new == State.FAILED else None


def mark_silent(session: Session, now: dt.datetime, silent_seconds: float) -> list[uuid.UUID]:
    """Turn the services of every host silent for ``silent_seconds`` ``degraded``; their
    ids."""
    since = now - dt.timedelta(seconds=silent_seconds)
    rows = session.scalars(
        select(Service)
        .join(EngineHost, EngineHost.id == Service.host_id)
        .where(EngineHost.last_seen < since)
        .with_for_update()
    ).all()
    moved = []
    for service in rows:
        new = on_silence(State(service.state))
        if new is not None:
            service.state = new.value
            service.failure = "its engine host has been silent since its last heartbeat"
            moved.append(service.id)
    session.flush()
    return moved


@dataclass(frozen=True)
class HostView:
    host: EngineHost
    # id, name, state, max memory, generation, the generation its host last acted on
    services: list[tuple[uuid.UUID, str, str, int, int, int]]


def list_hosts(session: Session) -> list[HostView]:
    hosts = session.scalars(select(EngineHost).order_by(EngineHost.joined_at)).all()
    views = []
    for host in hosts:
        rows = session.execute(
            select(
                Service.id,
                Service.name,
                Service.state,
                Service.max_replica_memory_gb,
                Service.generation,
                Service.observed_generation,
            )
            .where(Service.host_id == host.id)
            .order_by(Service.name)
        ).all()
        views.append(HostView(host, [(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]))
    return views


def remove_host(session: Session, host_id: uuid.UUID) -> None:
    """Forget an empty host (409 while services are on it: drain it first)."""
    host = session.get(EngineHost, host_id)
    if host is None:
        raise NotFound(f"No engine host {host_id}")
    count = session.scalar(select(func.count()).where(Service.host_id == host_id))
    if count:
        raise Conflict(f"{count} services run on host {host_id}: drain it first")
    if session.scalar(select(func.count()).where(Service.moving_to == host_id)):
        raise Conflict(f"services are moving to host {host_id}: wait for the moves to end")
    session.delete(host)
    session.flush()
