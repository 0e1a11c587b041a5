"""The official Prometheus operations: a service's metrics, the organization's, and HTTP
service discovery (the newer spec's ``organizationPrometheusDiscoveryGet``)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy.orm import Session

from keyhouse.auth.permissions import Permission
from keyhouse.auth.principal import Principal
from keyhouse.context import Context, RequireInOrganization, RequireOnService
from keyhouse.prometheus import service
from keyhouse.prometheus.exposition import Scraped, render
from keyhouse.state import AppState, app_state

router = APIRouter(prefix="/organizations/{organizationId}", tags=["Prometheus"])

FilteredMetrics = Annotated[
    str | None,
    Query(
        alias="filtered_metrics",
        description="true: only the filtered subset of the metrics (see the README).",
        max_length=5,
    ),
]
# Prometheus' text exposition format.
EXPOSITION = "text/plain; version=0.0.4; charset=utf-8"
_TEXT: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/plain": {"schema": {"type": "string"}}}}
}


async def _scrape(state: AppState, targets: list[service.Target]) -> list[Scraped]:
    return await service.scrape(state.engines, targets, state.settings.clickhouse_host)


@router.get(
    "/services/{serviceId}/prometheus",
    operation_id="instancePrometheusGet",
    response_class=PlainTextResponse,
    responses=_TEXT,
)
async def service_metrics(
    request: Request,
    ctx: Annotated[Context, Depends(RequireOnService(Permission.SERVICE_VIEW))],
    service_id: Annotated[uuid.UUID, Path(alias="serviceId", description="ID of the service.")],
    filtered_metrics: FilteredMetrics = None,
) -> Response:
    """The service's metrics in Prometheus' text format."""
    only = service.filtered(filtered_metrics)

    def target(session: Session, principal: Principal) -> service.Target:
        return service.service_target(session, principal, service_id)

    found = await ctx.run(target)
    scraped = await _scrape(app_state(request), [found])
    return Response(render(scraped, filtered=only), media_type=EXPOSITION)


@router.get(
    "/prometheus",
    operation_id="organizationPrometheusGet",
    response_class=PlainTextResponse,
    responses=_TEXT,
)
async def organization_metrics(
    request: Request,
    ctx: Annotated[Context, Depends(RequireInOrganization(Permission.ORGANIZATION_VIEW))],
    filtered_metrics: FilteredMetrics = None,
) -> Response:
    """The metrics of every service of the organization the caller may view (deprecated by
    ClickHouse Cloud in favour of discovery, which scrapes each service on its own)."""
    only = service.filtered(filtered_metrics)
    targets = await ctx.run(service.organization_targets)
    scraped = await _scrape(app_state(request), targets)
    return Response(render(scraped, filtered=only), media_type=EXPOSITION)


@router.get("/prometheus/discovery", operation_id="organizationPrometheusDiscoveryGet")
async def discovery(
    request: Request,
    ctx: Annotated[Context, Depends(RequireInOrganization(Permission.ORGANIZATION_VIEW))],
    filtered_metrics: FilteredMetrics = None,
) -> Response:
    """Prometheus HTTP service discovery (a bare JSON list of target groups, as Prometheus
    reads it): one group per service the caller may view, scraped on this server."""
    only = service.filtered(filtered_metrics)
    targets = await ctx.run(service.organization_targets)
    base = urlsplit(app_state(request).settings.public_url or str(request.base_url))
    groups: list[dict[str, Any]] = service.discovery(
        targets, host=base.netloc, scheme=base.scheme or "http", filtered_metrics=only
    )
    return JSONResponse(groups)
