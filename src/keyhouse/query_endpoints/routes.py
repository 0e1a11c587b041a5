"""Query API endpoints and saved queries (``/v1/.../services/{id}/query-api-endpoints`` and
``.../saved-queries``), and running an endpoint (``GET|POST /run/{endpointId}``)."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from keyhouse.api.envelope import EmptyEnvelope, Envelope, ok
from keyhouse.api.errors import BadRequest
from keyhouse.auth.permissions import Permission
from keyhouse.auth.principal import Principal
from keyhouse.context import AUTHENTICATED, Context, Require, RequireOnService, query_host
from keyhouse.db import utcnow
from keyhouse.engine.protocol import ClickHouseError
from keyhouse.engine.sql import parameter_text
from keyhouse.models import QueryApiEndpoint, SavedQuery
from keyhouse.query_endpoints import service
from keyhouse.query_endpoints.schemas import (
    PublicQueryApiEndpoint,
    PublicQueryApiEndpointListItem,
    PublicQueryApiEndpointRequest,
    PublicSavedQuery,
    PublicSavedQueryListItem,
    PublicSavedQueryRequest,
)
from keyhouse.query_endpoints.version1 import VERSION_1_FORMAT, version_1_document
from keyhouse.services.engines import engines_of
from keyhouse.services.query_api import (
    CORS_ALLOW_HEADERS,
    MEDIA_TYPES,
    PARTIAL_ANSWERS,
    QueryFailed,
    cors_headers,
    partial,
    run_admitted,
    stream_result,
)
from keyhouse.services.service import RunGrant
from keyhouse.services.states import State, admit
from keyhouse.state import app_state
from keyhouse.transactions import run_in_transaction

router = APIRouter(
    prefix="/organizations/{organizationId}/services/{serviceId}", tags=["Query API endpoints"]
)
run_router = APIRouter(tags=["Query API"])

ServiceId = Annotated[uuid.UUID, Path(alias="serviceId", description="ID of the service.")]
EndpointId = Annotated[uuid.UUID, Path(alias="endpointId", description="ID of the endpoint.")]
QueryId = Annotated[uuid.UUID, Path(alias="queryId", description="ID of the saved query.")]
Cursor = Annotated[str | None, Query(max_length=64, description="pagination.nextCursor")]
Limit = Annotated[int, Query(ge=1, le=100, description="Records per page (1-100).")]


def _on_service(permission: Permission) -> Any:
    """The permission on ``instance/<id>`` (checked by the domain function, shown in docs)."""
    return Depends(RequireOnService(permission))


def endpoint_view(
    host: str, row: QueryApiEndpoint, keys: list[str], *, full: bool = True
) -> PublicQueryApiEndpointListItem:
    fields: dict[str, Any] = {
        "id": str(row.id),
        "name": row.name,
        "database": row.database,
        "apiKeyIds": keys,
        "roles": row.roles,
        "allowedOrigins": row.allowed_origins,
        "url": f"{host}/run/{row.id}",
        "ownerType": row.owner_type,
    }
    if not full:
        return PublicQueryApiEndpointListItem.model_validate(fields)
    return PublicQueryApiEndpoint.model_validate(
        {**fields, "sql": row.sql, "parameters": row.parameters}
    )


def _saved_view(row: SavedQuery) -> PublicSavedQuery:
    return PublicSavedQuery(
        id=str(row.id),
        name=row.name,
        database=row.database,
        sql=row.sql,
        parameters=row.parameters,
    )


# --- Query API endpoints --------------------------------------------------------------------


@router.get(
    "/query-api-endpoints",
    operation_id="queryApiEndpointList",
    response_model=Envelope[list[PublicQueryApiEndpointListItem]],
)
async def list_endpoints(
    request: Request,
    ctx: Annotated[Context, _on_service(Permission.SERVICE_VIEW_QUERY_API_ENDPOINTS)],
    service_id: ServiceId,
    cursor: Cursor = None,
    limit: Limit = service.DEFAULT_PAGE,
) -> Response:
    """The result is the page; ``nextCursor`` is on the envelope (what clickhousectl 0.5.0
    reads, as for saved queries)."""
    host = query_host(request)

    def page(
        session: Session, principal: Principal
    ) -> tuple[list[PublicQueryApiEndpointListItem], str | None]:
        rows, keys, next_cursor = service.list_endpoints(
            session, principal, service_id, cursor=cursor, limit=limit
        )
        return [endpoint_view(host, row, keys[row.id], full=False) for row in rows], next_cursor

    items, next_cursor = await ctx.run(page)
    return ok(items, extra={"nextCursor": next_cursor} if next_cursor else None)


@router.post(
    "/query-api-endpoints",
    operation_id="queryApiEndpointCreate",
    status_code=201,
    response_model=Envelope[PublicQueryApiEndpoint],
)
async def create_endpoint(
    request: Request,
    ctx: Annotated[Context, _on_service(Permission.SERVICE_MANAGE_QUERY_API_ENDPOINTS)],
    service_id: ServiceId,
    body: Annotated[PublicQueryApiEndpointRequest, Body()],
) -> Response:
    host = query_host(request)

    def create(session: Session, principal: Principal) -> PublicQueryApiEndpointListItem:
        row, keys = service.create_endpoint(session, principal, service_id, body)
        return endpoint_view(host, row, keys)

    return ok(await ctx.run(create), status=201)


@router.get(
    "/query-api-endpoints/{endpointId}",
    operation_id="queryApiEndpointGet",
    response_model=Envelope[PublicQueryApiEndpoint],
)
async def get_endpoint(
    request: Request,
    ctx: Annotated[Context, _on_service(Permission.SERVICE_VIEW_QUERY_API_ENDPOINTS)],
    service_id: ServiceId,
    endpoint_id: EndpointId,
) -> Response:
    host = query_host(request)

    def get(session: Session, principal: Principal) -> PublicQueryApiEndpointListItem:
        row, keys = service.get_endpoint(session, principal, service_id, endpoint_id)
        return endpoint_view(host, row, keys)

    return ok(await ctx.run(get))


@router.put(
    "/query-api-endpoints/{endpointId}",
    operation_id="queryApiEndpointUpdate",
    response_model=Envelope[PublicQueryApiEndpoint],
)
async def replace_endpoint(
    request: Request,
    ctx: Annotated[Context, _on_service(Permission.SERVICE_MANAGE_QUERY_API_ENDPOINTS)],
    service_id: ServiceId,
    endpoint_id: EndpointId,
    body: Annotated[PublicQueryApiEndpointRequest, Body()],
) -> Response:
    host = query_host(request)

    def replace(session: Session, principal: Principal) -> PublicQueryApiEndpointListItem:
        row, keys = service.replace_endpoint(session, principal, service_id, endpoint_id, body)
        return endpoint_view(host, row, keys)

    return ok(await ctx.run(replace))


@router.delete(
    "/query-api-endpoints/{endpointId}",
    operation_id="queryApiEndpointDelete",
    response_model=EmptyEnvelope,
)
async def delete_endpoint(
    ctx: Annotated[Context, _on_service(Permission.SERVICE_MANAGE_QUERY_API_ENDPOINTS)],
    service_id: ServiceId,
    endpoint_id: EndpointId,
) -> Response:
    def delete(session: Session, principal: Principal) -> None:
        service.delete_endpoint(session, principal, service_id, endpoint_id)

    await ctx.run(delete)
    return ok()


# --- saved queries --------------------------------------------------------------------------


@router.get(
    "/saved-queries",
    operation_id="savedQueryList",
    response_model=Envelope[list[PublicSavedQueryListItem]],
)
async def list_saved(
    ctx: Annotated[Context, _on_service(Permission.SERVICE_VIEW)],
    service_id: ServiceId,
    cursor: Cursor = None,
    limit: Limit = service.DEFAULT_PAGE,
) -> Response:
    """The result is the page; ``nextCursor`` is on the envelope, as the newer spec has it."""

    def page(session: Session, principal: Principal) -> tuple[list[Any], str | None]:
        rows, next_cursor = service.list_saved(
            session, principal, service_id, cursor=cursor, limit=limit
        )
        items = [
            PublicSavedQueryListItem(id=str(row.id), name=row.name, database=row.database)
            for row in rows
        ]
        return items, next_cursor

    items, next_cursor = await ctx.run(page)
    return ok(items, extra={"nextCursor": next_cursor} if next_cursor else None)


@router.post(
    "/saved-queries",
    operation_id="savedQueryCreate",
    response_model=Envelope[PublicSavedQuery],
)
async def create_saved(
    ctx: Annotated[Context, _on_service(Permission.SERVICE_MANAGE)],
    service_id: ServiceId,
    body: Annotated[PublicSavedQueryRequest, Body()],
) -> Response:
    def create(session: Session, principal: Principal) -> PublicSavedQuery:
        return _saved_view(service.create_saved(session, principal, service_id, body))

    return ok(await ctx.run(create))


@router.get(
    "/saved-queries/{queryId}",
    operation_id="savedQueryGet",
    response_model=Envelope[PublicSavedQuery],
)
async def get_saved(
    ctx: Annotated[Context, _on_service(Permission.SERVICE_VIEW)],
    service_id: ServiceId,
    query_id: QueryId,
) -> Response:
    def get(session: Session, principal: Principal) -> PublicSavedQuery:
        return _saved_view(service.get_saved(session, principal, service_id, query_id))

    return ok(await ctx.run(get))


@router.put(
    "/saved-queries/{queryId}",
    operation_id="savedQueryUpdate",
    response_model=Envelope[PublicSavedQuery],
)
async def replace_saved(
    ctx: Annotated[Context, _on_service(Permission.SERVICE_MANAGE)],
    service_id: ServiceId,
    query_id: QueryId,
    body: Annotated[PublicSavedQueryRequest, Body()],
) -> Response:
    def replace(session: Session, principal: Principal) -> PublicSavedQuery:
        return _saved_view(service.replace_saved(session, principal, service_id, query_id, body))

    return ok(await ctx.run(replace))


@router.delete(
    "/saved-queries/{queryId}", operation_id="savedQueryDelete", response_model=EmptyEnvelope
)
async def delete_saved(
    ctx: Annotated[Context, _on_service(Permission.SERVICE_MANAGE)],
    service_id: ServiceId,
    query_id: QueryId,
) -> Response:
    def delete(session: Session, principal: Principal) -> None:
        service.delete_saved(session, principal, service_id, query_id)

    await ctx.run(delete)
    return ok()


# --- running an endpoint --------------------------------------------------------------------

MAX_RUN_BODY = 1024 * 1024


def _run_request(raw: bytes, query: dict[str, str]) -> tuple[dict[str, str], str | None]:
    """The caller's parameters (body ``queryVariables``, then ``param_<name>``) and format."""
    if len(raw) > MAX_RUN_BODY:
        raise BadRequest("The body is over the 1 MiB limit")
    body: Any = {}
    if raw.strip():
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise BadRequest('The body must be JSON: {"queryVariables": {...}}') from None
        if not isinstance(body, dict):
            raise BadRequest('The body must be a JSON object: {"queryVariables": {...}}')
    variables = body.get("queryVariables") or {}
    if not isinstance(variables, dict):
        raise BadRequest("queryVariables: must be an object")
    try:
        params = {str(name): parameter_text(value) for name, value in variables.items()}
    except ValueError as error:
        raise BadRequest(f"queryVariables: {error}") from None
    for name, value in query.items():
        if name.startswith("param_") and len(name) > 6:
            params[name[6:]] = value
    fmt = query.get("format") or body.get("format")
    if fmt is not None and (not isinstance(fmt, str) or not fmt.isalnum() or len(fmt) > 64):
        raise BadRequest("format: must be a ClickHouse output format name")
    return params, fmt


@run_router.options("/run/{endpointId}", include_in_schema=False)
async def run_endpoint_preflight(request: Request, endpoint_id: EndpointId) -> Response:
    origins = await run_in_transaction(
        app_state(request), lambda session: service.endpoint_origins(session, endpoint_id)
    )
    headers = cors_headers(",".join(origins), request.headers.get("origin"))
    if headers:
        headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        headers["Access-Control-Allow-Headers"] = (
            CORS_ALLOW_HEADERS + ", x-clickhouse-endpoint-version"
        )
        headers["Access-Control-Max-Age"] = "600"
    return Response(status_code=204, headers=headers)


async def run_endpoint(
    request: Request,
    ctx: Annotated[Context, Depends(Require(AUTHENTICATED))],
    endpoint_id: EndpointId,
    version: Annotated[str | None, Header(alias="x-clickhouse-endpoint-version")] = None,
) -> Response:
    """Basic auth with one of the endpoint's keys. Parameters come from the endpoint's
    defaults, then ``queryVariables`` in the JSON body, then ``param_<name>`` in the query
    string. Version 1 (the default) answers ``{"data": {"columns": [...], "rows": [...]}}``;
    version 2 streams the result in ``format`` (``JSONEachRow`` unless given)."""
    state = app_state(request)
    engines = engines_of(state)
    params, fmt = _run_request(await request.body(), dict(request.query_params))
    principal = await ctx.authenticate()  # once: a wake is part of this request
    grant = await run_in_transaction(
        state, lambda session: service.authorize_endpoint_run(session, principal, endpoint_id)
    )
    state.endpoint_calls.note(endpoint_id, {"at": utcnow().isoformat(), "key": principal.name})
    cors = cors_headers(",".join(grant.allowed_origins), request.headers.get("origin"))
    admission = admit(State(grant.state), may_wake=True)  # a call wakes without asking
    if admission in PARTIAL_ANSWERS:
        return partial(PARTIAL_ANSWERS[admission], cors)

    async def wake() -> None:
        await run_in_transaction(
            state, lambda session: service.wake_for_endpoint(session, principal, endpoint_id)
        )

    streaming = (version or "1").strip() == "2"
    if not streaming and version not in (None, "1"):
        raise BadRequest("x-clickhouse-endpoint-version: must be 1 or 2")
    run_format = (fmt or "JSONEachRow") if streaming else VERSION_1_FORMAT
    query_id = str(uuid.uuid4())
    run_grant = RunGrant(
        grant.service_id, grant.state, False, grant.max_memory_gb, roles=tuple(grant.roles)
    )
    try:
        chunks = await run_admitted(
            engines,
            run_grant,
            admission,
            wake,
            sql=grant.sql,
            fmt=run_format,
            database=grant.database,
            query_id=query_id,
            params={**grant.parameters, **params},
        )
    except ClickHouseError as error:
        raise QueryFailed(error) from None
    headers = {"X-ClickHouse-Query-Id": query_id, "X-ClickHouse-Format": run_format, **cors}
    if streaming:
        return StreamingResponse(
            stream_result(chunks),
            media_type=MEDIA_TYPES.get(run_format, "text/plain; charset=utf-8"),
            headers=headers,
        )
    headers["X-ClickHouse-Format"] = "JSONCompact"  # what version 1 is built from, as before
    return StreamingResponse(
        version_1_document(chunks), media_type="application/json", headers=headers
    )


for _method, _operation in (("POST", "queryApiEndpointRun"), ("GET", "queryApiEndpointRunGet")):
    run_router.add_api_route(
        "/run/{endpointId}",
        run_endpoint,
        methods=[_method],
        operation_id=_operation,
        summary="Run a Query API endpoint",
    )
