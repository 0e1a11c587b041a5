"""The hottest authenticated read, answered before FastAPI's stack.

``GET /v1/organizations/{organizationId}/keys/{keyId}`` is what automation calls most (it polls a
key's state and last use). Through FastAPI it costs several times its work: the middlewares
(Starlette's error and exception layers, FastAPI's telemetry and body-limit layers, ours), the
router trying the routes before it one by one, the dependency solver and the response machinery,
for a route whose whole work is two reads. ``KeyhouseAPI`` (the app ``create_app`` returns) hands
a request to ``HotPaths`` first; one regular expression recognises it, and it then runs the very
same steps as the FastAPI route: ``Context.authenticate_reading`` (the one authentication path:
the key's current row, the organization and permission checks, the rate limit, usedAt; the key's
view read in the same round trip), the domain function ``key_view`` (which checks the permission
itself), the same envelope and error envelope, a
fresh request id, and the same last line of defence (an unexpected error is a 500 envelope, logged
with the request id). Anything it does not recognise goes on to FastAPI, which still declares the
route (the OpenAPI document is unchanged) and answers it the slower way; a test holds the two
answers equal.
"""

from __future__ import annotations

import logging
import re
import uuid

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from keyhouse.api.envelope import error_body, ok_body, request_id_var
from keyhouse.api.errors import ApiError
from keyhouse.api_keys.service import key_view, key_view_reads
from keyhouse.auth.dependencies import context_from_scope
from keyhouse.auth.permissions import Permission
from keyhouse.state import AppState

log = logging.getLogger("keyhouse")

_UUID = r"([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})"
_GET_KEY = re.compile(rf"/v1/organizations/{_UUID}/keys/{_UUID}")
_JSON = (b"content-type", b"application/json")

Answer = tuple[int, bytes, list[tuple[bytes, bytes]]]


class HotPaths:
    def __init__(self, state: AppState) -> None:
        self.state = state

    async def answer(self, scope: Scope, send: Send) -> bool:
        """Answer the request if it is a hot path's (True), else leave it alone (False)."""
        if scope["method"] != "GET":
            return False
        match = _GET_KEY.fullmatch(scope["path"])
        if match is None:
            return False
        request_id = str(uuid.uuid4())
        token = request_id_var.set(request_id)
        try:
            status, body, headers = await self._get_key(
                scope, uuid.UUID(match[1]), uuid.UUID(match[2])
            )
        except Exception:
            log.exception("unhandled error in request %s", request_id)
            status, body, headers = 500, error_body(500, "Internal server error"), []
        finally:
            request_id_var.reset(token)
        headers += [_JSON, (b"content-length", b"%d" % len(body))]
        headers.append((b"x-request-id", request_id.encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return True

    async def _get_key(self, scope: Scope, organization_id: uuid.UUID, key_id: uuid.UUID) -> Answer:
        try:
            ctx = context_from_scope(
                scope, self.state, Permission.ORGANIZATION_VIEW_API_KEYS, organization_id
            )
            principal, (rows,) = await ctx.authenticate_reading(
                lambda organization: key_view_reads(organization, key_id)
            )
            return 200, ok_body(key_view(principal, rows)), []
        except ApiError as error:
            headers = [(k.lower().encode(), v.encode()) for k, v in (error.headers or {}).items()]
            return error.status, error_body(error.status, error.message), headers


class KeyhouseAPI(FastAPI):
    """FastAPI, with the hot paths answered before its stack (``hot_paths`` is set by
    ``create_app``)."""

    hot_paths: HotPaths | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hot = self.hot_paths
        if hot is not None and scope["type"] == "http" and await hot.answer(scope, send):
            return
        await super().__call__(scope, receive, send)
