"""The hottest authenticated read, served in front of FastAPI.

``GET /v1/organizations/{organizationId}/keys/{keyId}`` is what automation calls most (it polls a
key's state and last use). Through FastAPI it costs about 0.5 ms of CPU: the router tries the
routes before it one by one, the dependency solver and the response machinery run for a route
whose whole work is one read. Here one regular expression recognises it, and it then runs the very
same steps as the FastAPI route: ``Context.authenticate`` (the one authentication path: the key's
current row, the organization and permission checks, the rate limit, usedAt), the domain
function ``read_key_view`` (which checks the permission itself), ``ok`` for the envelope and the
same error envelope. Anything it does not recognise, or cannot parse, goes on to FastAPI, which
still declares the route (the OpenAPI document is unchanged) and answers it the slower way.
"""

from __future__ import annotations

import re
import uuid

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from keyhouse.api.envelope import ok
from keyhouse.api.errors import ApiError
from keyhouse.api.handlers import error_response
from keyhouse.api_keys.service import read_key_view
from keyhouse.auth.dependencies import context_for
from keyhouse.auth.permissions import Permission
from keyhouse.state import AppState

_UUID = r"([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})"
_GET_KEY = re.compile(rf"/v1/organizations/{_UUID}/keys/{_UUID}")


class HotPaths:
    def __init__(self, app: ASGIApp, state: AppState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            match = _GET_KEY.fullmatch(scope["path"])
            if match is not None:
                response = await self._get_key(
                    Request(scope), uuid.UUID(match[1]), uuid.UUID(match[2])
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _get_key(
        self, request: Request, organization_id: uuid.UUID, key_id: uuid.UUID
    ) -> Response:
        try:
            ctx = context_for(
                request, self.state, Permission.ORGANIZATION_VIEW_API_KEYS, organization_id
            )
            principal = await ctx.authenticate()
            return ok(await read_key_view(self.state.reader, principal, key_id))
        except ApiError as error:
            return error_response(error.status, error.message, error.headers)
