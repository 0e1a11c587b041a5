"""The hottest calls, answered before FastAPI's stack.

A few calls carry most of the traffic: ``GET /v1/organizations/{organizationId}/keys/{keyId}``
and the key list (automation polls keys' state and last use), and the Query API's
``POST /service/{serviceId}/run`` (whose latency is measured against the engine's own). Through
FastAPI each costs several times its work: Starlette's error and exception layers, FastAPI's
telemetry and body-limit layers, the router trying the routes one by one, the dependency solver.
``KeyhouseAPI`` (the app ``create_app`` returns) asks ``HotPaths`` first; the FastAPI route's
own path matcher and parameter validation recognise the call, and it then runs the very
functions the FastAPI route calls
(``key_body``, ``key_list_body``, ``answer_run``: authentication through
``Context.authenticate_reading``/``authenticate``, the domain functions, the envelopes), inside
the same middlewares as every other request (the app's one list: ``RequestIdMiddleware``, a
fresh request id and an unexpected error as a 500 envelope; ``BodyLimitMiddleware``).

Anything it does not recognise, or whose parameters it would have to refuse (a malformed
``limit`` or ``format``), goes on to FastAPI, which still declares every route (the OpenAPI
document is unchanged) and answers them the slower way; tests hold the two answers equal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from keyhouse.api.errors import ApiError
from keyhouse.api.handlers import error_response
from keyhouse.api.route_table import api_routes
from keyhouse.api_keys.routes import key_body, key_list_body
from keyhouse.auth.permissions import Permission
from keyhouse.context import AUTHENTICATED, context_from_scope
from keyhouse.services.query_api import answer_run
from keyhouse.state import AppState

_JSON = (b"content-type", b"application/json")
# The routes answered here, by their operation: the path, its parameters and the query's
# constraints are the FastAPI route's own (no second copy of any of them).
GET_KEY, LIST_KEYS, RUN = "openapiKeyGet", "openapiKeyGetList", "queryApiRun"


class _Hot:
    """One FastAPI route answered here: its method, its own path matcher and converters, its
    query parameters' own validation, and the raw handler."""

    def __init__(self, path: str, route: APIRoute, app: ASGIApp) -> None:
        [self.method] = route.methods or ("GET",)
        self.route = route
        self.app = app
        # The route's path as served (its routers' prefixes before it), compiled as Starlette
        # compiles a route's.
        self.regex, _format, self.convertors = compile_path(path)
        self.path = {field.alias: field for field in _path_params(route.dependant)}
        self.query = {field.alias: field for field in route.dependant.query_params}

    def match(self, scope: Scope) -> dict[str, Any] | None:
        """The path's parameters and the query's, converted and validated as FastAPI would; None
        when FastAPI must answer (another path, or a parameter it would refuse with a 4xx that
        names it)."""
        if scope["method"] != self.method:
            return None
        found = self.regex.match(scope["path"])
        if found is None:
            return None
        params: dict[str, Any] = {}
        given = _last_values(scope) if self.query else {}
        convert = self.convertors
        checks = [
            (self.path[name], convert[name].convert(text), "path")
            for name, text in found.groupdict().items()
        ]
        checks += [
            (field, given.get(name, field.default), "query") for name, field in self.query.items()
        ]
        for field, raw, where in checks:
            value, errors = field.validate(raw, loc=(where, field.alias))
            if errors:
                return None
            params[field.alias] = value
        return params


def _path_params(dependant: Dependant) -> list[Any]:
    """The path parameters a route declares, its dependencies' included."""
    found = list(dependant.path_params)
    for dependency in dependant.dependencies:
        found += _path_params(dependency)
    return found


class HotPaths:
    def __init__(
        self, state: AppState, routes: Sequence[BaseRoute], wrap: Callable[[ASGIApp], ASGIApp]
    ) -> None:
        """``routes``: the app's; ``wrap``: the app's own middleware list, which wraps each hot
        path as it wraps FastAPI."""
        self.state = state
        by_operation = {route.operation_id: (path, route) for path, route in api_routes(routes)}
        self._hot = [
            _Hot(*by_operation[GET_KEY], wrap(self._keys)),
            _Hot(*by_operation[LIST_KEYS], wrap(self._keys)),
            _Hot(*by_operation[RUN], wrap(self._run)),
        ]

    def route(self, scope: Scope) -> ASGIApp | None:
        """The hot path's app for this request (its parameters in ``scope["path_params"]``),
        or None: FastAPI answers."""
        for hot in self._hot:
            params = hot.match(scope)
            if params is not None:
                scope["path_params"] = params
                scope["route"] = hot.route  # (as Starlette's routing leaves it: for metrics)
                return hot.app
        return None

    async def _keys(self, scope: Scope, receive: Receive, send: Send) -> None:
        """GET key and the key list: the same functions as their FastAPI routes."""
        params = scope["path_params"]
        try:
            ctx = context_from_scope(
                scope, self.state, Permission.ORGANIZATION_VIEW_API_KEYS, params["organizationId"]
            )
            if "keyId" in params:
                body = await key_body(ctx, params["keyId"])
            else:
                body = await key_list_body(ctx, params["limit"], params["cursor"])
        except ApiError as error:
            await error_response(error.status, error.message, error.headers)(scope, receive, send)
            return
        headers = [_JSON, (b"content-length", b"%d" % len(body))]  # the answer, as it is
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _run(self, scope: Scope, receive: Receive, send: Send) -> None:
        params = scope["path_params"]
        body = b""
        while True:  # BodyLimitMiddleware hands the whole body over in one message
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        try:
            ctx = context_from_scope(scope, self.state, AUTHENTICATED, None)
            response = await answer_run(
                ctx,
                params["serviceId"],
                body,
                params["format"],
                wake_service=_header(scope, b"wake-service"),
                origin=_header(scope, b"origin"),
            )
        except ApiError as error:
            response = error_response(error.status, error.message, error.headers)
        await response(scope, receive, send)


def _last_values(scope: Scope) -> dict[str, str]:
    """The query string's parameters, the last value of each (as FastAPI reads a parameter)."""
    return dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True))


def _header(scope: Scope, name: bytes) -> str | None:
    """The first value of a header, decoded as Starlette decodes headers."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


class KeyhouseAPI(FastAPI):
    """FastAPI, with the hot paths answered before its stack (``hot_paths`` is set by
    ``create_app``)."""

    hot_paths: HotPaths | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.hot_paths is not None and scope["type"] == "http":
            app = self.hot_paths.route(scope)
            if app is not None:
                await app(scope, receive, send)
                return
        await super().__call__(scope, receive, send)
