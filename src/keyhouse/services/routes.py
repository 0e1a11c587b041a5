"""The Service API (official paths) and the Query API (``POST /service/{serviceId}/run``)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request, Response
from sqlalchemy.orm import Session

from keyhouse.api.envelope import EmptyEnvelope, Envelope, ok
from keyhouse.auth.permissions import Permission
from keyhouse.auth.principal import Principal
from keyhouse.context import AUTHENTICATED, Context, Require, RequireOnService
from keyhouse.models import Service as ServiceRow
from keyhouse.models import ServiceQueryEndpoint
from keyhouse.services import service
from keyhouse.services.engines import EngineRuntime, engines_of
from keyhouse.services.query_api import CORS_ALLOW_HEADERS, RUN_FORMAT, answer_run, cors_headers
from keyhouse.services.schemas import (
    CurrentScaling,
    InstanceServiceQueryApiEndpointsPostRequest,
    Service,
    ServicePasswordPatchRequest,
    ServicePasswordPatchResponse,
    ServicePatchRequest,
    ServicePostRequest,
    ServicePostResponse,
    ServiceQueryAPIEndpoint,
    ServiceReplicaScalingPatchRequest,
    ServiceScalingPatchRequest,
    ServiceStatePatchRequest,
)
from keyhouse.services.states import Command
from keyhouse.state import app_state
from keyhouse.transactions import run_in_transaction

router = APIRouter(prefix="/organizations/{organizationId}/services", tags=["Service"])
query_router = APIRouter(tags=["Query API"])

ServiceId = Annotated[uuid.UUID, Path(alias="serviceId", description="ID of the service.")]


def _on_service(permission: Permission | str) -> Any:
    return Depends(RequireOnService(permission))


def _engines(request: Request) -> EngineRuntime:
    return engines_of(app_state(request))


def view(row: ServiceRow, host: str) -> Service:
    """The wire view of a service row (stored, already validated data); ``host`` is where its
    ClickHouse HTTP interface listens (``KEYHOUSE_CLICKHOUSE_HOST``), or its engine host's
    advertised name."""
    if row.host_id is not None and row.host is not None:
        host = row.host.advertise
    endpoints = (
        [{"protocol": "https", "host": host, "port": row.http_port, "username": "default"}]
        if row.http_port is not None
        else []
    )
    return Service.model_validate(
        {
            "id": str(row.id),
            "name": row.name,
            "provider": row.provider,
            "region": row.region,
            "state": row.state,
            "clickhouseVersion": row.clickhouse_version,
            "endpoints": endpoints,
            "minReplicaMemoryGb": row.min_replica_memory_gb,
            "maxReplicaMemoryGb": row.max_replica_memory_gb,
            "numReplicas": row.num_replicas,
            "autoscalingMode": "vertical",
            "idleScaling": row.idle_scaling,
            "idleTimeoutMinutes": row.idle_timeout_minutes,
            "ipAccessList": row.ip_access_list,
            "createdAt": row.created_at,
            "privateEndpointIds": [],
            "availablePrivateEndpointIds": [],
            "dataWarehouseId": str(row.id),
            "isPrimary": True,
            "isReadonly": False,
            "releaseChannel": row.release_channel,
            "tags": row.tags,
            "enableCoreDumps": row.enable_core_dumps,
            "currentScaling": CurrentScaling(
                effective_autoscaling_mode="vertical",
                effective_min_replica_memory_gb=row.min_replica_memory_gb,
                effective_max_replica_memory_gb=row.max_replica_memory_gb,
                effective_idle_scaling=row.idle_scaling,
                effective_idle_timeout_minutes=row.idle_timeout_minutes,
            ),
        }
    )


def _endpoint_view(row: ServiceQueryEndpoint) -> ServiceQueryAPIEndpoint:
    return ServiceQueryAPIEndpoint.model_validate(
        {
            "id": str(row.id),
            "openApiKeys": row.open_api_keys,
            "roles": row.roles,
            "allowedOrigins": row.allowed_origins,
        }
    )


@router.get("", operation_id="instanceGetList", response_model=Envelope[list[Service]])
async def list_services(
    ctx: Annotated[Context, _on_service(AUTHENTICATED)],
    filter: Annotated[  # noqa: A002 (the official parameter name)
        list[str] | None, Query(description="Tag filters: tag:KEY=VALUE or tag:KEY.")
    ] = None,
) -> Response:
    def services(session: Session, principal: Principal) -> list[Service]:
        return [
            view(row, ctx.state.settings.clickhouse_host)
            for row in service.list_services(session, principal, tag_filters=filter or [])
        ]

    return ok(await ctx.run(services))


@router.post("", operation_id="instanceCreate", response_model=Envelope[ServicePostResponse])
async def create_service(
    request: Request,
    ctx: Annotated[Context, _on_service(Permission.ORGANIZATION_CREATE_SERVICE)],
    body: Annotated[ServicePostRequest, Body()],
) -> Response:
    state = app_state(request)
    _engines(request)  # 503 when services are off, before anything is created
    settings = state.settings
    defaults = service.ServiceDefaults.from_settings(settings)

    def create(session: Session, principal: Principal) -> ServicePostResponse:
        row, password = service.create_service(
            session, principal, body, pepper=state.pepper, defaults=defaults
        )
        return ServicePostResponse(
            service=view(row, ctx.state.settings.clickhouse_host), password=password
        )

    return ok(await ctx.run(create))


@router.get("/{serviceId}", operation_id="instanceGet", response_model=Envelope[Service])
async def get_service(
    ctx: Annotated[Context, _on_service(Permission.SERVICE_VIEW)], service_id: ServiceId
) -> Response:
    def get(session: Session, principal: Principal) -> Service:
        return view(
            service.get_service(session, principal, service_id), ctx.state.settings.clickhouse_host
        )

    return ok(await ctx.run(get))


@router.patch("/{serviceId}", operation_id="instanceUpdate", response_model=Envelope[Service])
async def update_service(
    ctx: Annotated[Context, _on_service(Permission.SERVICE_MANAGE)],
    service_id: ServiceId,
    body: Annotated[ServicePatchRequest, Body()],
) -> Response:
    def update(session: Session, principal: Principal) -> Service:
        return view(
            service.update_service(session, principal, service_id, body),
            ctx.state.settings.clickhouse_host,
        )

    return ok(await ctx.run(update))


@router.patch(
    "/{serviceId}/state", operation_id="instanceStateUpdate", response_model=Envelope[Service]
)
async def update_state(
    request: Request,
    ctx: Annotated[Context, _on_service(Permission.SERVICE_MANAGE)],
    service_id: ServiceId,
    body: Annotated[ServiceStatePatchRequest, Body()],
) -> Response:
    _engines(request)  # 503 when services are off, before anything changes

    def change(session: Session, principal: Principal) -> Service:
        row = service.request_state(session, principal, service_id, Command(body.command))
        return view(row, ctx.state.settings.clickhouse_host)

    return ok(await ctx.run(change))


@router.patch(
    "/{serviceId}/password",
    operation_id="instancePasswordUpdate",
    response_model=Envelope[ServicePasswordPatchResponse],
)
async def update_password(
    request: Request,
    ctx: Annotated[Context, _on_service(Permission.SERVICE_MANAGE)],
    service_id: ServiceId,
    body: Annotated[ServicePasswordPatchRequest, Body()],
) -> Response:
    pepper = app_state(request).pepper

    def change(session: Session, principal: Principal) -> ServicePasswordPatchResponse:
        password = service.change_password(session, principal, service_id, body, pepper=pepper)
        return ServicePasswordPatchResponse(password=password)

    return ok(await ctx.run(change))


@router.patch(
    "/{serviceId}/scaling",
    operation_id="instanceScalingUpdate",
    response_model=Envelope[Service],
)
async def update_scaling(
    ctx: Annotated[Context, _on_service(Permission.SERVICE_MANAGE_SCALING_CONFIG)],
    service_id: ServiceId,
    body: Annotated[ServiceScalingPatchRequest, Body()],
) -> Response:
    def change(session: Session, principal: Principal) -> Service:
        return view(
            service.update_scaling(session, principal, service_id, body),
            ctx.state.settings.clickhouse_host,
        )

    return ok(await ctx.run(change))


@router.patch(
    "/{serviceId}/replicaScaling",
    operation_id="instanceReplicaScalingUpdate",
    response_model=Envelope[Service],
)
async def update_replica_scaling(
    ctx: Annotated[Context, _on_service(Permission.SERVICE_MANAGE_SCALING_CONFIG)],
    service_id: ServiceId,
    body: Annotated[ServiceReplicaScalingPatchRequest, Body()],
) -> Response:
    def change(session: Session, principal: Principal) -> Service:
        return view(
            service.update_scaling(session, principal, service_id, body),
            ctx.state.settings.clickhouse_host,
        )

    return ok(await ctx.run(change))


@router.delete("/{serviceId}", operation_id="instanceDelete", response_model=EmptyEnvelope)
async def delete_service(
    request: Request,
    ctx: Annotated[Context, _on_service(Permission.SERVICE_DELETE)],
    service_id: ServiceId,
) -> Response:
    _engines(request)  # 503 when services are off, before anything is deleted

    def delete(session: Session, principal: Principal) -> None:
        service.delete_service(session, principal, service_id)

    await ctx.run(delete)
    return ok()


@router.get(
    "/{serviceId}/serviceQueryEndpoint",
    operation_id="instanceQueryEndpointGet",
    response_model=Envelope[ServiceQueryAPIEndpoint],
)
async def get_query_endpoint(
    ctx: Annotated[Context, _on_service(Permission.SERVICE_VIEW_QUERY_API_ENDPOINTS)],
    service_id: ServiceId,
) -> Response:
    def get(session: Session, principal: Principal) -> ServiceQueryAPIEndpoint:
        return _endpoint_view(service.get_query_endpoint(session, principal, service_id))

    return ok(await ctx.run(get))


@router.post(
    "/{serviceId}/serviceQueryEndpoint",
    operation_id="instanceQueryEndpointUpsert",
    response_model=Envelope[ServiceQueryAPIEndpoint],
)
async def upsert_query_endpoint(
    request: Request,
    ctx: Annotated[Context, _on_service(Permission.SERVICE_MANAGE_QUERY_API_ENDPOINTS)],
    service_id: ServiceId,
    body: Annotated[InstanceServiceQueryApiEndpointsPostRequest, Body()],
) -> Response:
    pepper = app_state(request).pepper

    def upsert(session: Session, principal: Principal) -> ServiceQueryAPIEndpoint:
        row = service.upsert_query_endpoint(session, principal, service_id, body, pepper=pepper)
        return _endpoint_view(row)

    return ok(await ctx.run(upsert))


@router.delete(
    "/{serviceId}/serviceQueryEndpoint",
    operation_id="instanceQueryEndpointDelete",
    response_model=EmptyEnvelope,
)
async def delete_query_endpoint(
    ctx: Annotated[Context, _on_service(Permission.SERVICE_MANAGE_QUERY_API_ENDPOINTS)],
    service_id: ServiceId,
) -> Response:
    def delete(session: Session, principal: Principal) -> None:
        service.delete_query_endpoint(session, principal, service_id)

    await ctx.run(delete)
    return ok()


# --- the Query API --------------------------------------------------------------------------


@query_router.options("/service/{serviceId}/run", include_in_schema=False)
async def run_preflight(request: Request, service_id: ServiceId) -> Response:
    """CORS preflight: allowed origins come from the service's query endpoint."""
    origins = await run_in_transaction(
        app_state(request), lambda session: service.cors_origins(session, service_id)
    )
    headers = cors_headers(origins, request.headers.get("origin"))
    if headers:
        headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
        headers["Access-Control-Allow-Headers"] = CORS_ALLOW_HEADERS
        headers["Access-Control-Max-Age"] = "600"
    return Response(status_code=204, headers=headers)


@query_router.post(
    "/service/{serviceId}/run",
    operation_id="queryApiRun",
    summary="Run a query on a service (Query API)",
)
async def run_query(
    request: Request,
    ctx: Annotated[Context, Depends(Require(AUTHENTICATED))],
    service_id: ServiceId,
    format: Annotated[str, Query(max_length=64, pattern=RUN_FORMAT)] = "TabSeparated",  # noqa: A002
    wake_service: Annotated[str | None, Header(alias="wake-service")] = None,
) -> Response:
    """The key must be bound to the service's query endpoint; a read-only binding runs the
    query under the engine's ``readonly`` setting. 206 ``{"data": ...}`` when the service is
    idle (unless ``wake-service: true``) or stopped. The answer streams in ``format``."""
    return await answer_run(
        ctx,
        service_id,
        await request.body(),
        format,
        wake_service=wake_service,
        origin=request.headers.get("origin"),
    )
