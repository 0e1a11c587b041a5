"""Query API endpoints and saved queries: business rules.

An endpoint is saved SQL on a service, published at ``{queryHost}/run/{id}``. Only the API
keys bound to it may run it (the binding, not the key's roles, is the grant), and it runs under
the database roles it names, never more. Managing endpoints needs
``control-plane:service:manage-query-api-endpoints`` on the service and reading them
``view-query-api-endpoints``; saved queries need ``service:manage`` / ``service:view``.
Endpoints made in the console are ``user``-owned: the API may read them but not change them.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from keyhouse.api.errors import BadRequest, Conflict, NotFound, Unauthorized
from keyhouse.auth.authorize import find_in_organization, require
from keyhouse.auth.permissions import Permission, instance_resource
from keyhouse.auth.principal import Principal
from keyhouse.models import ApiKey, QueryApiEndpoint, QueryApiEndpointKey, SavedQuery, Service
from keyhouse.query_endpoints import schemas
from keyhouse.services.service import check_database_roles, wake_if_idle

API_OWNED = "queryApiEndpoint"
USER_OWNED = "user"
DEFAULT_PAGE = 100

Row = TypeVar("Row", QueryApiEndpoint, SavedQuery)


@dataclass(frozen=True)
class EndpointGrant:
    """What running one endpoint may do: its SQL, under its roles, on its service."""

    service_id: uuid.UUID
    state: str
    max_memory_gb: int
    sql: str
    database: str
    parameters: dict[str, str]
    roles: list[str]
    allowed_origins: list[str]


def _service(
    session: Session, principal: Principal, service_id: uuid.UUID, permission: Permission
) -> Service:
    service = find_in_organization(session, principal, Service, service_id, "Service")
    require(principal, permission, instance_resource(service.id))
    return service


def _page(
    session: Session, model: type[Row], service_id: uuid.UUID, cursor: str | None, limit: int
) -> tuple[list[Row], str | None]:
    """One page ordered by id; the cursor is the last id of the previous page."""
    query = select(model).where(model.service_id == service_id).order_by(model.id)
    if cursor:
        try:
            query = query.where(model.id > uuid.UUID(cursor))
        except ValueError:
            raise BadRequest("cursor: not a cursor this API returned") from None
    rows = list(session.scalars(query.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (str(rows[-1].id) if more else None)


def _in_service(session: Session, model: type[Row], service_id: uuid.UUID, id_: uuid.UUID) -> Row:
    row = session.get(model, id_)
    if row is None or row.service_id != service_id:
        what = "Query API endpoint" if model is QueryApiEndpoint else "Saved query"
        raise NotFound(f"{what} {id_} was not found")
    return row


def _name_free(
    session: Session, model: type[Row], service_id: uuid.UUID, name: str, id_: uuid.UUID | None
) -> None:
    existing = session.scalar(
        select(model.id).where(model.service_id == service_id, model.name == name)
    )
    if existing is not None and existing != id_:
        raise Conflict(f"The name {name!r} is already used in this service")


# --- Query API endpoints --------------------------------------------------------------------


def endpoint_keys(
    session: Session, endpoint_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[str]]:
    found: dict[uuid.UUID, list[str]] = {id_: [] for id_ in endpoint_ids}
    if endpoint_ids:
        rows = session.execute(
            select(QueryApiEndpointKey.endpoint_id, QueryApiEndpointKey.api_key_id)
            .where(QueryApiEndpointKey.endpoint_id.in_(endpoint_ids))
            .order_by(QueryApiEndpointKey.api_key_id)
        )
        for endpoint_id, key_id in rows:
            found[endpoint_id].append(str(key_id))
    return found


def list_endpoints(
    session: Session,
    principal: Principal,
    service_id: uuid.UUID,
    *,
    cursor: str | None = None,
    limit: int = DEFAULT_PAGE,
) -> tuple[list[QueryApiEndpoint], dict[uuid.UUID, list[str]], str | None]:
    _service(session, principal, service_id, Permission.SERVICE_VIEW_QUERY_API_ENDPOINTS)
    rows, next_cursor = _page(session, QueryApiEndpoint, service_id, cursor, limit)
    return rows, endpoint_keys(session, [row.id for row in rows]), next_cursor


def get_endpoint(
    session: Session, principal: Principal, service_id: uuid.UUID, endpoint_id: uuid.UUID
) -> tuple[QueryApiEndpoint, list[str]]:
    _service(session, principal, service_id, Permission.SERVICE_VIEW_QUERY_API_ENDPOINTS)
    row = _in_service(session, QueryApiEndpoint, service_id, endpoint_id)
    return row, endpoint_keys(session, [row.id])[row.id]


def _bind_keys(
    session: Session, principal: Principal, endpoint: QueryApiEndpoint, key_ids: Sequence[uuid.UUID]
) -> list[str]:
    wanted = list(dict.fromkeys(key_ids))
    known = set(
        session.scalars(
            select(ApiKey.id).where(
                ApiKey.id.in_(wanted), ApiKey.organization_id == principal.organization_id
            )
        )
    )
    for key_id in wanted:
        if key_id not in known:
            raise BadRequest(f"apiKeyIds: {key_id} is not an API key of this organization")
    session.execute(
        delete(QueryApiEndpointKey).where(QueryApiEndpointKey.endpoint_id == endpoint.id)
    )
    session.add_all(QueryApiEndpointKey(endpoint_id=endpoint.id, api_key_id=k) for k in wanted)
    session.flush()
    return sorted(str(k) for k in wanted)


def _apply(endpoint: QueryApiEndpoint, request: schemas.PublicQueryApiEndpointRequest) -> None:
    endpoint.name = request.name
    endpoint.sql = request.sql
    endpoint.database = request.database
    endpoint.parameters = dict(request.parameters or {})
    endpoint.roles = list(dict.fromkeys(request.roles))
    endpoint.allowed_origins = list(dict.fromkeys(request.allowed_origins or []))


def create_endpoint(
    session: Session,
    principal: Principal,
    service_id: uuid.UUID,
    request: schemas.PublicQueryApiEndpointRequest,
    *,
    owner_type: str = API_OWNED,
) -> tuple[QueryApiEndpoint, list[str]]:
    service = _service(
        session, principal, service_id, Permission.SERVICE_MANAGE_QUERY_API_ENDPOINTS
    )
    check_database_roles(principal, service, request.roles, field="roles")
    _name_free(session, QueryApiEndpoint, service_id, request.name, None)
    endpoint = QueryApiEndpoint(service_id=service_id, owner_type=owner_type, last_calls=[])
    _apply(endpoint, request)
    session.add(endpoint)
    session.flush()
    return endpoint, _bind_keys(session, principal, endpoint, request.api_key_ids)


def _changeable(endpoint: QueryApiEndpoint, owner_type: str) -> None:
    if endpoint.owner_type != owner_type:
        raise Conflict(
            "This Query API endpoint was made in the console: change it there"
            if endpoint.owner_type == USER_OWNED
            else "This Query API endpoint is managed through the API"
        )


def replace_endpoint(
    session: Session,
    principal: Principal,
    service_id: uuid.UUID,
    endpoint_id: uuid.UUID,
    request: schemas.PublicQueryApiEndpointRequest,
    *,
    owner_type: str = API_OWNED,
) -> tuple[QueryApiEndpoint, list[str]]:
    """A full replace: omitted ``parameters`` and ``allowedOrigins`` become empty."""
    service = _service(
        session, principal, service_id, Permission.SERVICE_MANAGE_QUERY_API_ENDPOINTS
    )
    endpoint = _in_service(session, QueryApiEndpoint, service_id, endpoint_id)
    _changeable(endpoint, owner_type)
    check_database_roles(principal, service, request.roles, field="roles")
    _name_free(session, QueryApiEndpoint, service_id, request.name, endpoint.id)
    _apply(endpoint, request)
    return endpoint, _bind_keys(session, principal, endpoint, request.api_key_ids)


def delete_endpoint(
    session: Session,
    principal: Principal,
    service_id: uuid.UUID,
    endpoint_id: uuid.UUID,
    *,
    owner_type: str = API_OWNED,
) -> None:
    _service(session, principal, service_id, Permission.SERVICE_MANAGE_QUERY_API_ENDPOINTS)
    endpoint = _in_service(session, QueryApiEndpoint, service_id, endpoint_id)
    _changeable(endpoint, owner_type)
    session.delete(endpoint)
    session.flush()


def authorize_endpoint_run(
    session: Session, principal: Principal, endpoint_id: uuid.UUID
) -> EndpointGrant:
    """The gate of ``/run/{id}`` (see ``_bound``); it writes nothing (the call is recorded
    behind the request: ``keyhouse.usage``)."""
    endpoint, service = _bound(session, principal, endpoint_id)
    return EndpointGrant(
        service.id,
        service.state,
        service.max_replica_memory_gb,
        endpoint.sql,
        endpoint.database,
        dict(endpoint.parameters),
        list(endpoint.roles),
        list(endpoint.allowed_origins),
    )


def endpoint_origins(session: Session, endpoint_id: uuid.UUID) -> list[str]:
    """``allowedOrigins`` for a browser's preflight (which carries no credentials)."""
    endpoint = session.get(QueryApiEndpoint, endpoint_id)
    return list(endpoint.allowed_origins) if endpoint is not None else []


def wake_for_endpoint(session: Session, principal: Principal, endpoint_id: uuid.UUID) -> bool:
    """A call with one of the endpoint's keys wakes its idle service (the binding is the
    permission)."""
    _endpoint, service = _bound(session, principal, endpoint_id)
    return wake_if_idle(session, principal, service)


def _bound(
    session: Session, principal: Principal, endpoint_id: uuid.UUID
) -> tuple[QueryApiEndpoint, Service]:
    """The endpoint must exist in the key's organization (404) and the key must be one of its
    keys (401)."""
    endpoint = session.get(QueryApiEndpoint, endpoint_id)
    service = session.get(Service, endpoint.service_id) if endpoint is not None else None
    if endpoint is None or service is None or service.organization_id != principal.organization_id:
        raise NotFound(f"Query API endpoint {endpoint_id} was not found")
    bound = principal.actor_type == "apiKey" and (
        session.get(QueryApiEndpointKey, (endpoint.id, principal.actor_id)) is not None
    )
    if not bound:
        raise Unauthorized("This API key may not run this Query API endpoint")
    return endpoint, service


# --- saved queries --------------------------------------------------------------------------


def list_saved(
    session: Session,
    principal: Principal,
    service_id: uuid.UUID,
    *,
    cursor: str | None = None,
    limit: int = DEFAULT_PAGE,
) -> tuple[list[SavedQuery], str | None]:
    _service(session, principal, service_id, Permission.SERVICE_VIEW)
    return _page(session, SavedQuery, service_id, cursor, limit)


def get_saved(
    session: Session, principal: Principal, service_id: uuid.UUID, query_id: uuid.UUID
) -> SavedQuery:
    _service(session, principal, service_id, Permission.SERVICE_VIEW)
    return _in_service(session, SavedQuery, service_id, query_id)


def _apply_saved(row: SavedQuery, request: schemas.PublicSavedQueryRequest) -> None:
    row.name = request.name
    row.sql = request.sql
    row.database = request.database
    row.parameters = dict(request.parameters or {})


def create_saved(
    session: Session,
    principal: Principal,
    service_id: uuid.UUID,
    request: schemas.PublicSavedQueryRequest,
) -> SavedQuery:
    _service(session, principal, service_id, Permission.SERVICE_MANAGE)
    _name_free(session, SavedQuery, service_id, request.name, None)
    row = SavedQuery(service_id=service_id)
    _apply_saved(row, request)
    session.add(row)
    session.flush()
    return row


def replace_saved(
    session: Session,
    principal: Principal,
    service_id: uuid.UUID,
    query_id: uuid.UUID,
    request: schemas.PublicSavedQueryRequest,
) -> SavedQuery:
    _service(session, principal, service_id, Permission.SERVICE_MANAGE)
    row = _in_service(session, SavedQuery, service_id, query_id)
    _name_free(session, SavedQuery, service_id, request.name, row.id)
    _apply_saved(row, request)
    session.flush()
    return row


def delete_saved(
    session: Session, principal: Principal, service_id: uuid.UUID, query_id: uuid.UUID
) -> None:
    _service(session, principal, service_id, Permission.SERVICE_MANAGE)
    session.delete(_in_service(session, SavedQuery, service_id, query_id))
    session.flush()
