"""Request context: authentication, permission checks and the request's transaction.

Every ``/v1`` operation declares what it needs with ``Require(permission)`` (or
``Require(AUTHENTICATED)`` for operations any valid key may call); a test walks the route table
and fails for any operation that declares nothing.

The dependency itself does no I/O. The route hands its service call to ``ctx.run``, which runs,
in one worker thread: open a session, authenticate the key (reading its current row, so
revocation is immediate), check the organization (404) and the permission (403), count the
request against the key's rate limit, call the service, commit (or roll back on error). One
thread hop per request instead of one per dependency, on the app's own executor: measured here
at 0.08 ms a hop, against 0.17 ms for anyio's ``run_in_threadpool``.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, TypeVar

from fastapi import Path, Request
from sqlalchemy.orm import Session

from keyhouse.api.errors import Forbidden, NotFound, Unauthorized
from keyhouse.auth.network import request_address
from keyhouse.auth.permissions import Permission, organization_resource
from keyhouse.auth.principal import Principal
from keyhouse.auth.service import KEY_NOT_FOUND, authenticate_key
from keyhouse.db import utcnow
from keyhouse.state import AppState, app_state
from keyhouse.transactions import run_in_transaction

AUTHENTICATED = "authenticated"
BASIC_CHALLENGE = {"WWW-Authenticate": 'Basic realm="keyhouse"'}

T = TypeVar("T")


def parse_basic(header: str | None) -> tuple[str, str]:
    if not header:
        raise Unauthorized("UNAUTHORIZED: Missing HTTP Basic credentials", headers=BASIC_CHALLENGE)
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        raise Unauthorized("UNAUTHORIZED: Use HTTP Basic authentication", headers=BASIC_CHALLENGE)
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, ValueError):  # not base64, not ASCII, or not UTF-8
        raise Unauthorized(
            "UNAUTHORIZED: Malformed HTTP Basic credentials", headers=BASIC_CHALLENGE
        ) from None
    key_id, sep, secret = decoded.partition(":")
    if not sep or not key_id or not secret:
        raise Unauthorized(KEY_NOT_FOUND, headers=BASIC_CHALLENGE)
    return key_id, secret


@dataclass(frozen=True)
class Context:
    """What a route needs to run its service call inside the request's transaction."""

    state: AppState = field(repr=False)
    key_id: str
    key_secret: str = field(repr=False)
    ip_address: str | None
    user_agent: str | None
    permission: str
    organization_id: uuid.UUID | None

    async def run(self, call: Callable[[Session, Principal], T]) -> T:
        """Authenticate, authorize and run ``call(session, principal)`` in one transaction."""

        failures = self.state.auth_failures
        failures.check(self.ip_address, self.key_id)

        def authenticated(session: Session) -> T:
            try:
                principal = authenticate_key(
                    session,
                    pepper=self.state.pepper,
                    key_id=self.key_id,
                    key_secret=self.key_secret,
                    ip_address=self.ip_address,
                    user_agent=self.user_agent,
                    now=utcnow(),
                )
            except Unauthorized:
                failures.failed(self.ip_address, self.key_id)
                raise
            self._authorize(principal)
            self.state.rate_limiter.check(str(principal.actor_id))
            return call(session, principal)

        return await run_in_transaction(self.state, authenticated)

    def _authorize(self, principal: Principal) -> None:
        if self.organization_id is not None and self.organization_id != principal.organization_id:
            raise NotFound("Organization not found")
        if self.permission != AUTHENTICATED and not principal.can(
            self.permission, organization_resource(principal.organization_id)
        ):
            raise Forbidden(f"FORBIDDEN: This operation requires the {self.permission} permission")


def _context(request: Request, permission: str, organization_id: uuid.UUID | None) -> Context:
    state = app_state(request)
    key_id, secret = parse_basic(request.headers.get("authorization"))
    return Context(
        state=state,
        key_id=key_id,
        key_secret=secret,
        ip_address=request_address(request, state.trusted_proxies),
        user_agent=request.headers.get("user-agent"),
        permission=permission,
        organization_id=organization_id,
    )


class Require:
    """Declares the permission an operation needs on the caller's organization."""

    def __init__(self, permission: Permission | str) -> None:
        self.permission = str(permission)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.permission!r})"

    async def __call__(self, request: Request) -> Context:
        return _context(request, self.permission, None)


class RequireInOrganization(Require):
    """For ``/organizations/{organizationId}/...``: another organization is a 404, never a 403."""

    async def __call__(  # type: ignore[override]
        self,
        request: Request,
        organization_id: Annotated[
            uuid.UUID, Path(alias="organizationId", description="ID of the organization.")
        ],
    ) -> Context:
        return _context(request, self.permission, organization_id)


class RequireOnService(RequireInOrganization):
    """For ``.../services/{serviceId}...``: the permission is one on ``instance/<id>``, which the
    service function checks once it has found the service (404 first); the route checks only
    that the caller belongs to the organization."""

    async def __call__(  # type: ignore[override]
        self,
        request: Request,
        organization_id: Annotated[
            uuid.UUID, Path(alias="organizationId", description="ID of the organization.")
        ],
    ) -> Context:
        return _context(request, AUTHENTICATED, organization_id)
