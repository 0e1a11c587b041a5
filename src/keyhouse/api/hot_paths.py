"""The hottest calls, answered before FastAPI's stack.

Two calls carry most of the traffic: ``GET /v1/organizations/{organizationId}/keys/{keyId}``
(automation polls a key's state and last use) and the Query API's
``POST /service/{serviceId}/run`` (whose latency is measured against the engine's own). Through
FastAPI each costs several times its work: Starlette's error and exception layers, FastAPI's
telemetry and body-limit layers, the router trying the routes one by one, the dependency solver.
``KeyhouseAPI`` (the app ``create_app`` returns) asks ``HotPaths`` first; a regular expression
recognises the call, and it then runs the very same steps as the FastAPI route, inside the same
two middlewares as every other request (``RequestIdMiddleware``: a fresh request id, an unexpected
error as a 500 envelope; ``BodyLimitMiddleware`` for a body):

- GET key: ``Context.authenticate_reading`` (the one authentication path: the key's current row,
  the organization and permission checks, the rate limit, usedAt; the key's view read in the same
  round trip), the domain function ``key_view`` (which checks the permission itself), the same
  envelopes;
- run: ``answer_run``, the function the FastAPI route itself calls.

Anything it does not recognise, or whose parameters it would have to refuse (a malformed
``format``), goes on to FastAPI, which still declares both routes (the OpenAPI document is
unchanged) and answers them the slower way; tests hold the two answers equal.
"""

from __future__ import annotations

import re
import uuid
from urllib.parse import parse_qsl

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from keyhouse.api.envelope import error_body, ok_body
from keyhouse.api.errors import ApiError
from keyhouse.api.handlers import error_response
from keyhouse.api.middleware import BodyLimitMiddleware, RequestIdMiddleware
from keyhouse.api_keys.service import key_view, key_view_reads
from keyhouse.auth.dependencies import AUTHENTICATED, context_from_scope
from keyhouse.auth.permissions import Permission
from keyhouse.services.routes import RUN_FORMAT, answer_run
from keyhouse.state import AppState

_UUID = r"([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})"
_GET_KEY = re.compile(rf"/v1/organizations/{_UUID}/keys/{_UUID}")
_RUN = re.compile(rf"/service/{_UUID}/run")
_FORMAT = re.compile(RUN_FORMAT)
_JSON = (b"content-type", b"application/json")


class HotPaths:
    def __init__(self, state: AppState) -> None:
        self.state = state
        self._get_key_app = RequestIdMiddleware(self._get_key)
        self._run_app = RequestIdMiddleware(
            BodyLimitMiddleware(self._run, max_bytes=state.settings.max_body_bytes)
        )

    def route(self, scope: Scope) -> ASGIApp | None:
        """The hot path's app for this request (its parameters in ``scope["path_params"]``),
        or None: FastAPI answers."""
        method = scope["method"]
        if method == "GET":
            match = _GET_KEY.fullmatch(scope["path"])
            if match is None:
                return None
            scope["path_params"] = {"organization": match[1], "key": match[2]}
            return self._get_key_app
        if method == "POST":
            match = _RUN.fullmatch(scope["path"])
            if match is None:
                return None
            fmt = "TabSeparated"
            for name, value in parse_qsl(scope["query_string"].decode("latin-1")):
                if name == "format":
                    fmt = value  # the last one, as FastAPI reads a query parameter
            if len(fmt) > 64 or _FORMAT.match(fmt) is None:
                return None  # FastAPI's 400 names the parameter
            scope["path_params"] = {"service": match[1], "format": fmt}
            return self._run_app
        return None

    async def _get_key(self, scope: Scope, receive: Receive, send: Send) -> None:
        params = scope["path_params"]
        headers: list[tuple[bytes, bytes]] = []
        try:
            ctx = context_from_scope(
                scope,
                self.state,
                Permission.ORGANIZATION_VIEW_API_KEYS,
                uuid.UUID(params["organization"]),
            )
            key_uuid = uuid.UUID(params["key"])
            principal, (rows,) = await ctx.authenticate_reading(
                lambda organization: key_view_reads(organization, key_uuid)
            )
            status, body = 200, ok_body(key_view(principal, rows))
        except ApiError as error:
            status, body = error.status, error_body(error.status, error.message)
            headers = [(k.lower().encode(), v.encode()) for k, v in (error.headers or {}).items()]
        headers += [_JSON, (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
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
                uuid.UUID(params["service"]),
                body,
                params["format"],
                wake_service=_header(scope, b"wake-service"),
                origin=_header(scope, b"origin"),
            )
        except ApiError as error:
            response = error_response(error.status, error.message, error.headers)
        await response(scope, receive, send)


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
