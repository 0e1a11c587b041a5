"""The Service API (official paths) and the Query API (``POST /service/{serviceId}/run``)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy.orm import Session

from keyhouse.api.envelope import EmptyEnvelope, Envelope, ok
from keyhouse.api.errors import ApiError, BadRequest, ServiceUnavailable
from keyhouse.api.wire import unstorable_text
from keyhouse.auth.dependencies import AUTHENTICATED, Context, Require, RequireOnService
from keyhouse.auth.permissions import Permission
from keyhouse.auth.principal import Principal
from keyhouse.engine.protocol import TOO_MANY_SIMULTANEOUS_QUERIES, EngineError
from keyhouse.models import Service as ServiceRow
from keyhouse.models import ServiceQueryEndpoint
from keyhouse.services import service
from keyhouse.services.lifecycle import Engines, engines_of
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
from keyhouse.state import app_state
from keyhouse.transactions import run_in_transaction

router = APIRouter(prefix="/organizations/{organizationId}/services", tags=["Service"])
query_router = APIRouter(tags=["Query API"])

ServiceId = Annotated[uuid.UUID, Path(alias="serviceId", description="ID of the service.")]
MAX_SQL_BYTES = 4 * 1024 * 1024


def _on_service(permission: Permission | str) -> Any:
    return Depends(RequireOnService(permission))


def _engines(request: Request) -> Engines:
    return engines_of(app_state(request))


def view(row: ServiceRow, host: str) -> Service:
    """The wire view of a service row (stored, already validated data); ``host`` is where its
    ClickHouse HTTP interface listens (``KEYHOUSE_CLICKHOUSE_HOST``)."""
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
    engines = _engines(request)
    settings = state.settings
    defaults = service.ServiceDefaults.from_settings(settings)

    def create(session: Session, principal: Principal) -> ServicePostResponse:
        row, password = service.create_service(
            session, principal, body, pepper=state.pepper, defaults=defaults
        )
        return ServicePostResponse(
            service=view(row, ctx.state.settings.clickhouse_host), password=password
        )

    created = await ctx.run(create)
    engines.start_soon(uuid.UUID(created.service.id))
    return ok(created)


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
    engines = _engines(request)

    def change(session: Session, principal: Principal) -> tuple[Service, str | None]:
        row, action = service.request_state(session, principal, service_id, body.command)
        return view(row, ctx.state.settings.clickhouse_host), action

    result, action = await ctx.run(change)
    if action == "start":
        engines.start_soon(service_id)
    elif action == "stop":
        engines.stop_soon(service_id)
    return ok(result)


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
    engines = _engines(request)

    def delete(session: Session, principal: Principal) -> None:
        service.delete_service(session, principal, service_id)

    await ctx.run(delete)
    engines.remove_soon(service_id)
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

RUN_FORMAT = r"^[A-Za-z0-9]+$"  # a ClickHouse format's name
MEDIA_TYPES = {
    "JSONEachRow": "application/x-ndjson",
    "JSON": "application/json",
    "JSONCompact": "application/json",
    "CSV": "text/csv",
    "CSVWithNames": "text/csv",
}


def _run_body(raw: bytes) -> dict[str, Any]:
    """``{"sql", "database"?, "runId"?}``, JSON whatever the content type says."""
    if len(raw) > MAX_SQL_BYTES:
        raise BadRequest("The query is over the 4 MiB limit")
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise BadRequest('The body must be JSON: {"sql": "...", "database": "..."}') from None
    if (
        not isinstance(body, dict)
        or not isinstance(body.get("sql"), str)
        or not body["sql"].strip()
    ):
        raise BadRequest('The body must be JSON with a non-empty "sql"')
    database = body.get("database")
    if database is not None and not isinstance(database, str):
        raise BadRequest('"database" must be a string')
    for text in (body["sql"], database or ""):
        problem = unstorable_text(text)
        if problem:
            raise BadRequest(f"sql: {problem}")
    return body


def partial(message: str, cors: dict[str, str]) -> Response:
    return JSONResponse({"data": message}, status_code=206, headers=cors)


CORS_ALLOW_HEADERS = "authorization, content-type, wake-service, x-service-type, auth-provider"


def cors_headers(allowed_origins: str, origin: str | None) -> dict[str, str]:
    """CORS for an allowed origin. ``*`` lets any page call with the Authorization header it
    sets itself, never with the browser's own credentials; a listed origin is echoed, with
    credentials, and the answer varies by Origin."""
    allowed = service.allowed_origin(allowed_origins, origin)
    if allowed is None:
        return {}
    headers = {
        "Access-Control-Allow-Origin": allowed,
        "Access-Control-Expose-Headers": "X-ClickHouse-Query-Id, X-ClickHouse-Format, "
        "X-ClickHouse-Exception-Code",
    }
    if allowed != service.ANY_ORIGIN:
        headers["Access-Control-Allow-Credentials"] = "true"
        headers["Vary"] = "Origin"
    return headers


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


async def answer_run(
    ctx: Context,
    service_id: uuid.UUID,
    raw_body: bytes,
    fmt: str,
    *,
    wake_service: str | None,
    origin: str | None,
) -> Response:
    """``POST /service/{serviceId}/run``, whichever front answers it: the route above, or
    ``keyhouse.api.hot_paths`` in front of FastAPI (the Query API's latency is measured
    against the engine's own)."""
    engines = engines_of(ctx.state)
    body = _run_body(raw_body)
    principal = await ctx.authenticate()
    grant = await service.read_run_grant(ctx.state.reader, principal, service_id)
    cors = cors_headers(grant.allowed_origins, origin)
    if grant.state in service.NOT_QUERYABLE:
        return partial("Service is stopped", cors)
    if grant.state == "idle":
        if (wake_service or "").lower() != "true":
            return partial("Confirm wake service", cors)
        # The caller was authenticated above: the wake is part of this one request (one
        # rate-limit slot, not a second authentication).
        await run_in_transaction(
            ctx.state, lambda session: service.wake_for_query(session, principal, service_id)
        )
        if not await engines.bring_up(service_id):
            raise ServiceUnavailable("The service could not be woken", headers={"Retry-After": "5"})
    query_id = str(body.get("runId") or uuid.uuid4())[:64]
    try:
        chunks = await engines.run(
            grant, sql=body["sql"], fmt=fmt, database=body.get("database"), query_id=query_id
        )
    except EngineError as error:
        raise QueryFailed(error) from None
    return StreamingResponse(
        stream_result(chunks),
        media_type=MEDIA_TYPES.get(fmt, "text/plain; charset=utf-8"),
        headers={"X-ClickHouse-Format": fmt, "X-ClickHouse-Query-Id": query_id, **cors},
    )


async def stream_result(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The result's bytes; an error after the first bytes ends the stream (ClickHouse's HTTP
    interface does the same) and a client that goes away closes the engine's side too."""
    try:
        async for chunk in chunks:
            if chunk:
                yield chunk
    except EngineError as error:
        yield f"\n{error.text}\n".encode()
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]


class QueryFailed(ApiError):
    """ClickHouse refused the query: 400 with its message and code."""

    status = 400

    def __init__(self, error: EngineError) -> None:
        headers = {"X-ClickHouse-Exception-Code": str(error.code)}
        if error.code == TOO_MANY_SIMULTANEOUS_QUERIES:  # a configured limit, reached for now
            self.status = 503
            headers["Retry-After"] = "1"
        super().__init__(error.message, headers=headers)
