"""``create_app(settings)``: the FastAPI application with ``/v1`` and ``/healthz``."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import text
from starlette.middleware import Middleware
from starlette.types import ASGIApp

from keyhouse import __version__
from keyhouse.activities.routes import router as activities_router
from keyhouse.api import handlers
from keyhouse.api.envelope import ErrorEnvelope
from keyhouse.api.errors import ServiceUnavailable
from keyhouse.api.handlers import error_response
from keyhouse.api.middleware import BodyLimitMiddleware, RequestIdMiddleware
from keyhouse.api_keys.routes import router as keys_router
from keyhouse.auth.network import request_address
from keyhouse.backups.routes import router as backups_router
from keyhouse.billing.routes import router as billing_router
from keyhouse.clickhouse_http.listeners import DatabasePorts, Listeners
from keyhouse.config import Settings
from keyhouse.console.routes import router as console_router
from keyhouse.fast_paths import HotPaths, KeyhouseAPI
from keyhouse.hosts.routes import router as hosts_router
from keyhouse.invitations.routes import router as invitations_router
from keyhouse.members.routes import router as members_router
from keyhouse.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from keyhouse.metrics import MetricsMiddleware
from keyhouse.metrics import allowed as metrics_allowed
from keyhouse.organizations.routes import router as organizations_router
from keyhouse.prometheus.routes import router as prometheus_router
from keyhouse.query_endpoints.routes import router as query_endpoints_router
from keyhouse.query_endpoints.routes import run_router
from keyhouse.roles.routes import router as roles_router
from keyhouse.runtime import Engines
from keyhouse.service_settings.routes import router as service_settings_router
from keyhouse.services.clickhouse_gate import clickhouse_admission
from keyhouse.services.routes import query_router
from keyhouse.services.routes import router as services_router
from keyhouse.state import AppState
from keyhouse.transactions import run_in_transaction

DESCRIPTION = (
    "Keyhouse implements the ClickHouse Cloud management API v1 on your own machines. "
    "Authenticate with HTTP Basic: key ID as the user name, key secret as the password."
)


@asynccontextmanager
async def _engines(state: AppState) -> AsyncIterator[None]:
    """Engines belong to the running app that started them, on its event loop, and stop with
    it. One app serves a state at a time (a served process has one loop)."""
    if not state.settings.services_enabled:
        yield
        return
    if state.engines is not None:
        raise RuntimeError("this state is served by another app already (one app per state)")
    engines = state.engines = Engines(state)
    # Each service's ClickHouse HTTP interface.
    gate = functools.partial(clickhouse_admission, state)
    engines.watch(Listeners(lambda: state.settings, engines, gate, DatabasePorts(state)))
    state.on_commit.append(engines.handle)
    await engines.open()
    try:
        yield
    finally:
        state.on_commit.remove(engines.handle)
        await engines.close()
        state.engines = None


def create_app(
    settings: Settings, *, state: AppState | None = None, freeze_heap: bool = False
) -> FastAPI:
    """The app over ``state`` (or its own). ``freeze_heap``: for a served process, move what
    exists once it has started out of the garbage collector's generations (``gc.freeze``)."""
    owns_state = state is None
    state = state or AppState.from_settings(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        state.reader.open_loop()  # closed below (close_loop)
        every = settings.usage_flush_seconds
        behind = [
            asyncio.create_task(state.usage.run(state, every)),
            asyncio.create_task(state.endpoint_calls.run(state, every)),
        ]
        try:
            async with _engines(state):
                if freeze_heap:
                    # What exists now (modules, routes, schemas, pools) lives as long as the
                    # process: out of the collector's sight, a full collection no longer scans
                    # it (measured: a list's p99 at one client 105 ms -> 7 ms).
                    gc.collect()
                    gc.freeze()
                yield
        finally:
            for task in behind:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            # A clean shutdown loses no usedAt and no endpoint call.
            for flush in (state.usage.flush, state.endpoint_calls.flush):
                try:
                    await flush(state)
                except Exception:
                    logging.getLogger("keyhouse.usage").exception("not written at shutdown")
            await state.reader.close_loop()
        if owns_state:  # a state handed in belongs to the caller (tests share one)
            state.close()

    app = KeyhouseAPI(
        title="Keyhouse: ClickHouse Cloud API v1",
        version=__version__,
        description=DESCRIPTION,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        separate_input_output_schemas=False,
    )
    app.state.keyhouse = state
    handlers.install(app)
    # The app's middlewares, outermost first: they wrap FastAPI's stack and each hot path alike
    # (a middleware added anywhere else would miss the busiest calls).
    middlewares = [
        Middleware(MetricsMiddleware, metrics=state.metrics),
        Middleware(RequestIdMiddleware),
        Middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes),
    ]
    for middleware in reversed(middlewares):
        app.add_middleware(middleware.cls, *middleware.args, **middleware.kwargs)

    def wrapped(inner: ASGIApp) -> ASGIApp:
        for middleware in reversed(middlewares):
            inner = middleware.cls(inner, *middleware.args, **middleware.kwargs)
        return inner

    async def healthz() -> JSONResponse:
        """Liveness: the process answers. It touches nothing else, so an outage of the
        database does not get a healthy process restarted."""
        return JSONResponse({"status": "ok"})

    async def readyz() -> Response:
        """Readiness: the database answers (503 in the envelope when it does not)."""
        try:
            await run_in_transaction(state, lambda session: session.execute(text("SELECT 1")))
        except ServiceUnavailable as error:
            return error_response(error.status, error.message, error.headers)
        return JSONResponse({"status": "ok"})

    async def operator_metrics(request: Request) -> Response:
        """Keyhouse's own metrics (keyhouse.metrics): from loopback, or with the operator's
        token (KEYHOUSE_METRICS_TOKEN)."""
        address = request_address(request, state.trusted_proxies)
        token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
        if not metrics_allowed(address, request.headers.get("authorization"), token):
            return error_response(
                403,
                "FORBIDDEN: /metrics is readable from loopback, or with the token set in "
                "KEYHOUSE_METRICS_TOKEN (Authorization: Bearer)",
            )
        try:
            await run_in_transaction(state, state.metrics.refresh)
        except ServiceUnavailable as error:
            return error_response(error.status, error.message, error.headers)
        return Response(state.metrics.exposition(), media_type=METRICS_CONTENT_TYPE)

    app.add_api_route("/metrics", operator_metrics, methods=["GET"], include_in_schema=False)
    app.add_api_route("/healthz", healthz, methods=["GET"], include_in_schema=False)
    app.add_api_route("/readyz", readyz, methods=["GET"], include_in_schema=False)

    # The Query API first: a request is matched against the routes in order, and its calls are
    # the ones whose latency is measured against the engine's own.
    app.include_router(query_router)
    app.include_router(hosts_router)
    app.include_router(run_router)
    v1 = APIRouter(prefix="/v1")
    v1.include_router(organizations_router)
    v1.include_router(keys_router)
    v1.include_router(roles_router)
    v1.include_router(members_router)
    v1.include_router(invitations_router)
    v1.include_router(activities_router)
    v1.include_router(services_router)
    v1.include_router(backups_router)
    v1.include_router(service_settings_router)
    v1.include_router(prometheus_router)
    v1.include_router(billing_router)
    v1.include_router(query_endpoints_router)
    app.include_router(v1)

    async def openapi_document() -> JSONResponse:
        return JSONResponse(openapi_with_security(app))

    app.add_api_route("/v1", openapi_document, methods=["GET"], include_in_schema=False)
    app.add_api_route(
        "/v1/openapi.json", openapi_document, methods=["GET"], include_in_schema=False
    )

    app.include_router(console_router)
    app.mount(
        "/console/static",
        StaticFiles(directory=Path(__file__).parent / "console" / "static"),
        name="console-static",
    )
    app.hot_paths = HotPaths(state, app.routes, wrapped)
    return app


ERROR_STATUSES = {
    "400": "Malformed JSON, a field of the wrong type or an invalid value.",
    "401": "Missing, unknown, wrong, disabled, expired or deleted API key.",
    "403": "The key lacks the permission, or the request comes from outside its IP list.",
    "404": "No such resource in the caller's organization.",
    "409": "Quota reached or conflicting state.",
    "413": "The request body is over the size limit.",
    "429": "Rate limit reached; see the X-RateLimit-Reset and Retry-After headers.",
    "500": "Internal error; the body carries no details.",
    "503": "The database is unavailable or timed out; see the Retry-After header.",
}


def openapi_with_security(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with Basic auth and our error envelope in place of its 422."""
    if app.openapi_schema is None:
        schema = app.openapi()
        components = schema.setdefault("components", {})
        components["securitySchemes"] = {
            "basicAuth": {
                "type": "http",
                "scheme": "basic",
                "description": "Key ID as the user name, key secret as the password.",
            }
        }
        schemas = components.setdefault("schemas", {})
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        schemas["ErrorEnvelope"] = ErrorEnvelope.model_json_schema(by_alias=True)
        error = {
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}
            }
        }
        for methods in schema.get("paths", {}).values():
            for operation in methods.values():
                responses = operation.setdefault("responses", {})
                responses.pop("422", None)
                for status, description in ERROR_STATUSES.items():
                    responses.setdefault(status, {"description": description, **error})
        schema["security"] = [{"basicAuth": []}]
        app.openapi_schema = schema
    return app.openapi_schema


def create_app_from_env() -> FastAPI:
    """Factory for the ASGI server's workers: settings come from ``KEYHOUSE_*`` variables."""
    return create_app(Settings(), freeze_heap=True)
