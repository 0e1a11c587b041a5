"""Who may scrape what, the engine's figures, and Prometheus HTTP service discovery. Plain
functions over a session; the text is ``keyhouse.prometheus.exposition``'s."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from keyhouse.api.errors import BadRequest
from keyhouse.auth.authorize import find_in_organization, require
from keyhouse.auth.permissions import Permission, instance_resource
from keyhouse.auth.principal import Principal
from keyhouse.models import Service
from keyhouse.prometheus.exposition import EngineRow, Scraped
from keyhouse.services.engines import EngineRuntime

# What a scrape reads from a running engine (the control plane's own query, read-only).
ENGINE_SQL = (
    "SELECT 'event' AS kind, event AS name, toString(value) AS value, description "
    "FROM system.events UNION ALL "
    "SELECT 'metric', metric, toString(value), description FROM system.metrics"
)


@dataclass(frozen=True)
class Target:
    id: uuid.UUID
    organization_id: uuid.UUID
    name: str
    state: str
    version: str | None
    provider: str
    region: str
    host: str | None = None  # its engine host's advertised name (None: this deployment's)


def _target(service: Service) -> Target:
    return Target(
        service.id,
        service.organization_id,
        service.name,
        service.state,
        service.clickhouse_version,
        service.provider,
        service.region,
        service.host.advertise if service.host is not None else None,
    )


def filtered(value: str | None) -> bool:
    """The official ``filtered_metrics`` parameter (a boolean as text)."""
    if value is None or value == "":
        return False
    if value.lower() not in ("true", "false"):
        raise BadRequest("filtered_metrics: must be true or false")
    return value.lower() == "true"


def service_target(session: Session, principal: Principal, service_id: uuid.UUID) -> Target:
    service = find_in_organization(session, principal, Service, service_id, "Service")
    require(principal, Permission.SERVICE_VIEW, instance_resource(service.id))
    return _target(service)


def organization_targets(session: Session, principal: Principal) -> list[Target]:
    """The organization's services the caller may view (none being deleted), oldest first."""
    require(principal, Permission.ORGANIZATION_VIEW, f"organization/{principal.organization_id}")
    rows = session.scalars(
        select(Service)
        .where(Service.organization_id == principal.organization_id)
        .order_by(Service.created_at, Service.id)
    )
    return [
        _target(service)
        for service in rows
        if service.state != "terminating"
        and principal.can(Permission.SERVICE_VIEW, instance_resource(service.id))
    ]


def engine_rows(answer: bytes | None) -> list[EngineRow] | None:
    """The engine's figures from its answer to ``ENGINE_SQL`` (None: it does not run)."""
    if answer is None:
        return None
    rows = []
    for line in answer.splitlines():
        if line.strip():
            row: dict[str, Any] = json.loads(line)
            rows.append(EngineRow(row["kind"], row["name"], int(row["value"]), row["description"]))
    return rows


async def scrape(
    engines: EngineRuntime | None, targets: list[Target], hostname: str
) -> list[Scraped]:
    """Each service's part of a scrape: its engine's figures when it runs here (read
    concurrently), nothing of a service that does not (it is never woken for a scrape)."""

    async def one(target: Target) -> Scraped:
        answer = None
        if engines is not None and target.state == "running":
            answer = await engines.read_if_running(target.id, ENGINE_SQL)
        return Scraped(
            str(target.organization_id),
            str(target.id),
            target.name,
            target.state,
            target.version,
            engine_rows(answer),
            hostname=target.host or hostname,
        )

    return list(await asyncio.gather(*(one(target) for target in targets)))


def discovery(
    targets: list[Target], *, host: str, scheme: str, filtered_metrics: bool
) -> list[dict[str, Any]]:
    """Prometheus HTTP service discovery: one target group per service, scraped at its own
    metrics path on this server (``host``), with its organization, id and name as labels."""
    return [
        {
            "targets": [host],
            "labels": {
                "__scheme__": scheme,
                "__metrics_path__": (
                    f"/v1/organizations/{target.organization_id}/services/{target.id}/prometheus"
                ),
                "__param_filtered_metrics": "true" if filtered_metrics else "false",
                "__meta_clickhouse_provider": target.provider,
                "__meta_clickhouse_region": target.region,
                "clickhouse_org_id": str(target.organization_id),
                "clickhouse_service_id": str(target.id),
                "clickhouse_discovery_service_name": target.name,
            },
        }
        for target in targets
    ]
