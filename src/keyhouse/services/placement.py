"""Where a new service runs: on which engine host (``keyhouse.hosts``), if any joined.

A host can take a service when it is schedulable (not drained), heard from recently, its
``region`` and ``provider`` labels match the service's (a host without one of those labels
takes any), and the memory it offers, less the maximum memory of the services it already
runs, covers the service's maximum. Of those, the one with the most memory left wins.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from keyhouse.api.errors import Conflict
from keyhouse.models import EngineHost, Service


@dataclass(frozen=True)
class Candidate:
    host_id: uuid.UUID
    labels: dict[str, str]
    free_gb: int
    schedulable: bool
    last_seen: dt.datetime


def choose(
    hosts: Sequence[Candidate],
    *,
    region: str,
    provider: str,
    memory_gb: int,
    fresh_since: dt.datetime,
) -> uuid.UUID | str:
    """The chosen host's id, or why none can take the service (a sentence for the caller)."""
    matching = [
        host
        for host in hosts
        if host.labels.get("region", region) == region
        and host.labels.get("provider", provider) == provider
    ]
    where = f"region {region!r} (provider {provider!r})"
    if not matching:
        return f"No engine host serves {where}: ask the operator to add one"
    usable = [host for host in matching if host.schedulable and host.last_seen >= fresh_since]
    if not usable:
        return f"No engine host of {where} is available now (drained, or silent): try later"
    roomy = [host for host in usable if host.free_gb >= memory_gb]
    if not roomy:
        return (
            f"No engine host of {where} has {memory_gb} GiB of memory free for the service "
            "(maxReplicaMemoryGb): lower it, or ask the operator for more capacity"
        )
    return max(roomy, key=lambda host: (host.free_gb, str(host.host_id))).host_id


def place(
    session: Session,
    *,
    region: str,
    provider: str,
    memory_gb: int,
    now: dt.datetime,
    silent_seconds: float,
) -> uuid.UUID | None:
    """The host a new service runs on; None when no host ever joined (this deployment's
    in-process host runs it). 409 naming why when hosts exist and none can take it."""
    hosts = session.scalars(select(EngineHost).with_for_update()).all()
    if not hosts:
        return None
    used: dict[uuid.UUID | None, int] = {
        host_id: int(total)
        for host_id, total in session.execute(
            select(Service.host_id, func.coalesce(func.sum(Service.max_replica_memory_gb), 0))
            .where(Service.host_id.is_not(None))
            .group_by(Service.host_id)
        )
    }
    candidates = [
        Candidate(
            host.id,
            host.labels,
            host.memory_gb - int(used.get(host.id, 0)),
            host.schedulable,
            host.last_seen,
        )
        for host in hosts
    ]
    chosen = choose(
        candidates,
        region=region,
        provider=provider,
        memory_gb=memory_gb,
        fresh_since=now - dt.timedelta(seconds=silent_seconds),
    )
    if isinstance(chosen, str):
        raise Conflict(chosen)
    return chosen
