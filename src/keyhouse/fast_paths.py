"""The hottest calls, answered before FastAPI's stack.

A few calls carry most of the traffic: ``GET /v1/organizations/{organizationId}/keys/{keyId}``
and the key list (automation polls keys' state and last use), and the Query API's
``POST /service/{serviceId}/run`` (whose latency is measured against the engine's own). Through
FastAPI each costs several times its work: Starlette's error and exception layers, FastAPI's
telemetry and body-limit layers, the router trying the routes one by one, the dependency solver.
``KeyhouseAPI`` (the app ``create_app`` returns) asks ``HotPaths`` first; a regular expression
recognises the call, and it then runs the very functions the FastAPI route calls
(``key_body``, ``key_list_body``, ``answer_run``: authentication through
``Context.authenticate_reading``/``authenticate``, the domain functions, the envelopes), inside
the same middlewares as every other request (``RequestIdMiddleware``: a fresh request id, an
unexpected error as a 500 envelope; ``BodyLimitMiddleware`` for a body).

Anything it does not recognise, or whose parameters it would have to refuse (a malformed
``limit`` or ``format``), goes on to FastAPI, which still declares every route (the OpenAPI
document is unchanged) and answers them the slower way; tests hold the two answers equal.
"""

from __future__ import annotations

import re
import uuid
from urllib.parse import parse_qsl

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from keyhouse.api.errors import ApiError
from keyhouse.api.handlers import error_response
from keyhouse.api.middleware import BodyLimitMiddleware, RequestIdMiddleware
from keyhouse.api_keys.routes import MAX_KEYS_PAGE, key_body, key_list_body
from keyhouse.auth.permissions import Permission
from keyhouse.context import AUTHENTICATED, context_from_scope
from keyhouse.services.query_api import RUN_FORMAT, answer_run
from keyhouse.state import AppState

_UUID = r"([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})"
_GET_KEY = re.compile(rf"/v1/organizations/{_UUID}/keys/{_UUID}")
_LIST_KEYS = re.compile(rf"/v1/organizations/{_UUID}/keys")
_LIMIT = re.compile(r"[0-9]{1,3}")
_RUN = re.compile(rf"/service/{_UUID}/run")
_FORMAT = re.compile(RUN_FORMAT)
_JSON = (b"content-type", b"application/json")


class HotPaths:
    def __init__(self, state: AppState) -> None:
        self.state = state
        self._keys_app = RequestIdMiddleware(self._keys)
        self._run_app = RequestIdMiddleware(
            BodyLimitMiddleware(self._run, max_bytes=state.settings.max_body_bytes)
        )

    def route(self, scope: Scope) -> ASGIApp | None:
        """The hot path's app for this request (its parameters in ``scope["path_params"]``),
        or None: FastAPI answers."""
        method = scope["method"]
        if method == "GET":
            match = _GET_KEY.fullmatch(scope["path"])
            if match is not None:
                scope["path_params"] = {"organization": match[1], "key": match[2]}
                return self._keys_app
            match = _LIST_KEYS.fullmatch(scope["path"])
            if match is None:
                return None
            query = _last_values(scope)
            limit = query.get("limit", str(MAX_KEYS_PAGE))
            if not _LIMIT.fullmatch(limit) or not 1 <= int(limit) <= MAX_KEYS_PAGE:
                return None  # FastAPI's 400 names the parameter
            scope["path_params"] = {
                "organization": match[1],
                "limit": int(limit),
                "cursor": query.get("cursor"),
            }
            return self._keys_app
        if method == "POST":
            match = _RUN.fullmatch(scope["path"])
            if match is None:
                return None
            fmt = _last_values(scope).get("format", "TabSeparated")
            if len(fmt) > 64 or _FORMAT.match(fmt) is None:
                return None  # FastAPI's 400 names the parameter
            scope["path_params"] = {"service": match[1], "format": fmt}
            return self._run_app
        return None

    async def _keys(self, scope: Scope, receive: Receive, send: Send) -> None:
        """GET key and the key list: the same functions as their FastAPI routes."""
        params = scope["path_params"]
        try:
            ctx = context_from_scope(
                scope,
                self.state,
                Permission.ORGANIZATION_VIEW_API_KEYS,
                uuid.UUID(params["organization"]),
            )
            if "key" in params:
                body = await key_body(ctx, uuid.UUID(params["key"]))
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
                uuid.UUID(params["service"]),
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
