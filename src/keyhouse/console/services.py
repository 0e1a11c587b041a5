"""The Services page: services with their state, create (the password shown once), start, stop,
delete, the query endpoint's bound keys, and a minimal SQL console on a running service."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from keyhouse.api.errors import ApiError, BadRequest
from keyhouse.api_keys import service as keys
from keyhouse.auth.permissions import Permission, instance_resource
from keyhouse.config import ca_path
from keyhouse.console.web import (
    Acting,
    SignInRequired,
    acting,
    base_url,
    can,
    error_page,
    form_action,
    friendly,
    login_redirect,
    page,
    read_form,
    render_as,
)
from keyhouse.context import query_host
from keyhouse.engine.protocol import ClickHouseError, bounded_result
from keyhouse.query_endpoints import service as endpoints
from keyhouse.query_endpoints.schemas import PublicQueryApiEndpointRequest
from keyhouse.services import service as services
from keyhouse.services.engines import EngineRuntime, engines_of
from keyhouse.services.query_api import run_admitted
from keyhouse.services.schemas import (
    InstanceServiceQueryApiEndpointsPostRequest,
    ServicePostRequest,
)
from keyhouse.services.states import Admission, Command, State, admit
from keyhouse.state import app_state

router = APIRouter(prefix="/console")

SQL_CONSOLE_MAX_ROWS = 1000
# The SQL page's message for a query ``admit()`` does not run (it wakes an idle service).
REFUSALS = {Admission.STOPPED: "The service is stopped: start it first."}


def _engines(request: Request) -> EngineRuntime:
    return engines_of(app_state(request))


def _services_context(session: Session, a: Acting) -> dict[str, Any]:
    found = services.list_services(session, a.principal)
    return {
        "services": found,
        # Where each one on an engine host listens (the others: KEYHOUSE_CLICKHOUSE_HOST).
        "advertised": {s.id: s.host.advertise for s in found if s.host is not None},
        "bindings": services.bound_keys(session, a.principal, found),
        "can_create": can(a, Permission.ORGANIZATION_CREATE_SERVICE),
        "keys": (
            keys.key_view_page(session, a.principal, limit=250, cursor=None).keys
            if can(a, Permission.ORGANIZATION_VIEW_API_KEYS)
            else []
        ),
    }


def _interface(request: Request) -> dict[str, Any]:
    """Where the services' ClickHouse HTTP interfaces are, and the CA file to verify them."""
    settings = app_state(request).settings
    ca = ca_path(settings)
    return {
        "clickhouse_host": settings.clickhouse_host,
        "ca_file": str(ca.resolve()) if ca else None,
    }


@router.get("/o/{org_id}/services")
async def services_page(request: Request, org_id: uuid.UUID) -> Response:
    return await page(
        request, org_id, _services_context, "services.html", "services", **_interface(request)
    )


async def _change(request: Request, org_id: uuid.UUID, work: Any, notice: str) -> Response:
    try:
        _engines(request)  # services are on (the engine work follows the commit)
    except ApiError as error:
        return error_page(request, error)
    return await form_action(request, org_id, f"/console/o/{org_id}/services?msg={notice}", work)


@router.post("/o/{org_id}/services")
async def create_service(request: Request, org_id: uuid.UUID) -> Response:
    def body(session: Session, a: Acting, form: dict[str, Any]) -> dict[str, Any]:
        return {"name": str(form.get("name") or "")}

    async def refused(error: ApiError) -> Response:
        return await page(
            request,
            org_id,
            _services_context,
            "services.html",
            "services",
            status=error.status,
            error=friendly(error),
        )

    return await create_and_show(request, org_id, body, refused)


async def create_and_show(
    request: Request,
    org_id: uuid.UUID,
    body: Callable[[Session, Acting, dict[str, Any]], dict[str, Any]],
    refused: Callable[[ApiError], Awaitable[Response]],
) -> Response:
    """Create a service from the form (``body``: the official request's fields) and show its
    password once; ``refused`` renders the page that explains a refusal."""
    state = app_state(request)
    try:
        form = await read_form(request)
        _engines(request)  # services are on (the engine starts once the service is committed)
    except ApiError as error:
        return error_page(request, error)
    defaults = services.ServiceDefaults.from_settings(state.settings)

    def work(session: Session, a: Acting) -> dict[str, Any]:
        try:
            request_body = ServicePostRequest.model_validate(body(session, a, form))
        except ValidationError:
            raise BadRequest("Give the service a name: letters, digits, spaces, - and _") from None
        row, password = services.create_service(
            session, a.principal, request_body, pepper=state.pepper, defaults=defaults
        )
        return {"service": row, "password": password, "acting": a}

    try:
        result = await acting(request, org_id, work)
    except SignInRequired:
        return login_redirect(request)
    except ApiError as error:
        return await refused(error)
    who = result.pop("acting")
    return render_as(
        request, "service_created.html", who, "services", base_url=base_url(request), **result
    )


@router.post("/o/{org_id}/services/{service_id}/state")
async def service_state(request: Request, org_id: uuid.UUID, service_id: uuid.UUID) -> Response:
    def work(session: Session, a: Acting, form: dict[str, Any]) -> None:
        command = Command.STOP if form.get("command") == "stop" else Command.START
        services.request_state(session, a.principal, service_id, command)

    return await _change(request, org_id, work, "service-updated")


@router.get("/o/{org_id}/services/{service_id}/delete")
async def delete_service_page(
    request: Request, org_id: uuid.UUID, service_id: uuid.UUID
) -> Response:
    def work(session: Session, a: Acting) -> dict[str, Any]:
        service = services.get_service(session, a.principal, service_id)
        return {
            "title": f"Delete service “{service.name}”",
            "warning": (
                "Deleting the service removes its data for good. It must be stopped first."
            ),
        }

    return await page(
        request,
        org_id,
        work,
        "confirm.html",
        "services",
        action=f"/console/o/{org_id}/services/{service_id}/delete",
        button="Delete service",
        cancel=f"/console/o/{org_id}/services",
    )


@router.post("/o/{org_id}/services/{service_id}/delete")
async def delete_service(request: Request, org_id: uuid.UUID, service_id: uuid.UUID) -> Response:
    def work(session: Session, a: Acting, form: dict[str, Any]) -> None:
        services.delete_service(session, a.principal, service_id)

    return await _change(request, org_id, work, "service-deleted")


@router.post("/o/{org_id}/services/{service_id}/endpoint")
async def bind_key(request: Request, org_id: uuid.UUID, service_id: uuid.UUID) -> Response:
    state = app_state(request)

    def work(session: Session, a: Acting, form: dict[str, Any]) -> None:
        role = str(form.get("role") or "sql_console_read_only")
        try:
            current = services.get_query_endpoint(session, a.principal, service_id)
            bound, origins = list(current.open_api_keys), current.allowed_origins
            roles = list(current.roles)
        except ApiError as error:
            if error.status != 404:
                raise
            # No browser origin until one is set through the API: a page elsewhere must not
            # call with a bound key by default.
            bound, origins, roles = [], "", [role]
        key = str(form.get("key") or "")
        if form.get("unbind"):
            bound = [k for k in bound if k != key]
            role = roles[0] if roles else role  # unbinding one key re-roles nobody
        elif key:
            if bound and roles != [role]:
                # The binding's role is every bound key's: never change it for the others.
                raise BadRequest(
                    f"The keys bound to this service's query endpoint run as {', '.join(roles)}: "
                    "bind this key with that role, or unbind the others first"
                )
            bound.append(key)
        try:
            body = InstanceServiceQueryApiEndpointsPostRequest(
                roles=[role], open_api_keys=bound, allowed_origins=origins
            )
        except ValidationError:
            raise BadRequest("Choose a key and a role") from None
        services.upsert_query_endpoint(session, a.principal, service_id, body, pepper=state.pepper)

    return await _change(request, org_id, work, "service-updated")


@router.get("/o/{org_id}/services/{service_id}/sql")
async def sql_page(request: Request, org_id: uuid.UUID, service_id: uuid.UUID) -> Response:
    def work(session: Session, a: Acting) -> dict[str, Any]:
        grant = services.console_sql_grant(session, a.principal, service_id)
        return {"service": services.get_service(session, a.principal, service_id), "grant": grant}

    return await page(request, org_id, work, "service_sql.html", "services", sql="", result=None)


@router.post("/o/{org_id}/services/{service_id}/sql")
async def run_sql(request: Request, org_id: uuid.UUID, service_id: uuid.UUID) -> Response:
    try:
        form = await read_form(request)
        engines = _engines(request)
    except ApiError as error:
        return error_page(request, error)
    sql = str(form.get("sql") or "").strip()

    def work(session: Session, a: Acting) -> dict[str, Any]:
        grant = services.console_sql_grant(session, a.principal, service_id)
        return {"service": services.get_service(session, a.principal, service_id), "grant": grant}

    try:
        context = await acting(request, org_id, work)
    except SignInRequired:
        return login_redirect(request)
    except ApiError as error:
        return error_page(request, error)
    result: dict[str, Any] | None = None
    error_text = None
    if not sql:
        error_text = "Write a query first."
    elif (admission := admit(State(context["grant"].state), may_wake=True)) in REFUSALS:
        error_text = REFUSALS[admission]
    else:

        async def recorded() -> None:  # (console_sql_grant recorded the wake, in its transaction)
            return None

        try:
            chunks = await run_admitted(
                engines,
                context["grant"],
                admission,
                recorded,
                sql=sql,
                fmt="JSONCompact",
                extra_settings={
                    "max_result_rows": SQL_CONSOLE_MAX_ROWS,
                    "result_overflow_mode": "break",
                },
            )
            limit = app_state(request).settings.query_max_buffered_result_bytes
            body = await bounded_result(chunks, limit)
            result = json.loads(body) if body.strip() else {"meta": [], "data": []}
        except ClickHouseError as error:
            error_text = error.message
        except ApiError as error:
            error_text = friendly(error)
    return await page(
        request,
        org_id,
        lambda _s, _a: context,
        "service_sql.html",
        "services",
        status=400 if error_text else 200,
        sql=sql,
        result=result,
        error=error_text,
    )


# --- Query API endpoints ----------------------------------------------------------------------


@router.get("/o/{org_id}/services/{service_id}/endpoints")
async def endpoints_page(request: Request, org_id: uuid.UUID, service_id: uuid.UUID) -> Response:
    host = query_host(request)

    def work(session: Session, a: Acting) -> dict[str, Any]:
        service = services.get_service(session, a.principal, service_id)
        rows, bound, _next = endpoints.list_endpoints(session, a.principal, service_id, limit=100)
        full = [endpoints.get_endpoint(session, a.principal, service_id, r.id) for r in rows]
        names = {
            str(k.id): f"{k.name} (…{k.key_suffix})"
            for k in (
                keys.key_view_page(session, a.principal, limit=250, cursor=None).keys
                if can(a, Permission.ORGANIZATION_VIEW_API_KEYS)
                else []
            )
        }
        return {
            "service": service,
            "endpoints": [
                {"row": row, "url": f"{host}/run/{row.id}", "keys": [names.get(k, k) for k in ks]}
                for row, ks in full
            ],
            "key_names": names,
            "bound": bound,
            "can_manage": a.principal.can(
                Permission.SERVICE_MANAGE_QUERY_API_ENDPOINTS, instance_resource(service_id)
            ),
        }

    return await page(request, org_id, work, "service_endpoints.html", "services")


@router.post("/o/{org_id}/services/{service_id}/endpoints")
async def create_endpoint(request: Request, org_id: uuid.UUID, service_id: uuid.UUID) -> Response:
    def work(session: Session, a: Acting, form: dict[str, Any]) -> None:
        role = str(form.get("role") or "sql_console_read_only")
        origins = [o.strip() for o in str(form.get("origins") or "").split(",") if o.strip()]
        try:
            body = PublicQueryApiEndpointRequest.model_validate(
                {
                    "name": str(form.get("name") or ""),
                    "sql": str(form.get("sql") or ""),
                    "database": str(form.get("database") or "default"),
                    "apiKeyIds": form["api_keys"],
                    "roles": [role],
                    "allowedOrigins": origins,
                }
            )
        except ValidationError:
            raise BadRequest("Give the endpoint a name, its SQL and at least one key") from None
        endpoints.create_endpoint(
            session, a.principal, service_id, body, owner_type=endpoints.USER_OWNED
        )

    target = f"/console/o/{org_id}/services/{service_id}/endpoints?msg=endpoint-created"
    return await form_action(request, org_id, target, work)


@router.post("/o/{org_id}/services/{service_id}/endpoints/{endpoint_id}/delete")
async def delete_endpoint(
    request: Request, org_id: uuid.UUID, service_id: uuid.UUID, endpoint_id: uuid.UUID
) -> Response:
    def work(session: Session, a: Acting, form: dict[str, Any]) -> None:
        endpoints.delete_endpoint(
            session, a.principal, service_id, endpoint_id, owner_type=endpoints.USER_OWNED
        )

    target = f"/console/o/{org_id}/services/{service_id}/endpoints?msg=endpoint-deleted"
    return await form_action(request, org_id, target, work)
