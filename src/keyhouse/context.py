"""Request context: authentication, permission checks and the request's transaction.

Every ``/v1`` operation declares what it needs with ``Require(permission)`` (or
``Require(AUTHENTICATED)`` for operations any valid key may call); a test walks the route table
and fails for any operation that declares nothing.

The dependency itself does no I/O. The route hands its service call to ``ctx.run``, which
authenticates the key on the event loop with the database driver directly (reading its current
row, so revocation is immediate: ``keyhouse.loop_reads``), checks the organization (404) and the
permission (403), counts the request against the key's rate limit, notes the key's use (written
behind: ``keyhouse.usage``), and then runs the service call in the request's transaction on
the app's database threads (one hop).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextvars
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from fastapi import Path, Request
from sqlalchemy.orm import Session
from starlette.requests import HTTPConnection
from starlette.types import Scope

from keyhouse.api.errors import Forbidden, NotFound, TooManyRequests, Unauthorized
from keyhouse.auth.network import client_address
from keyhouse.auth.permissions import Permission, organization_resource
from keyhouse.auth.principal import Principal
from keyhouse.auth.service import KEY_NOT_FOUND, authenticate_key_on_loop
from keyhouse.db import utcnow
from keyhouse.loop_reads import Read
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
        """Authenticate and authorize (on the event loop), then run ``call(session,
        principal)`` in the request's transaction."""
        principal = await self.authenticate()
        return await run_in_transaction(self.state, lambda session: call(session, principal))

    async def authenticate(self) -> Principal:
        """The caller, from the key's current row: checked against the organization (404) and
        the permission (403), and counted against the key's rate limit."""
        principal, _rows = await self._authenticate(())
        return principal

    async def authenticate_reading(
        self, reads: Callable[[uuid.UUID], Sequence[Read]]
    ) -> tuple[Principal, list[list[Any]]]:
        """``authenticate``, with ``reads(organizationId)`` (the request's organization, the one
        the caller is checked against) sent in the same round trip as the key's own read. Their
        rows come back only once the caller passed every check."""
        if self.organization_id is None:
            raise TypeError("reads with the authentication need the request's organization")
        return await self._authenticate(reads(self.organization_id))

    async def _authenticate(self, reads: Sequence[Read]) -> tuple[Principal, list[list[Any]]]:
        state = self.state
        failures = state.auth_failures
        try:
            await limiter_call(state, failures.check, self.ip_address, self.key_id)
        except TooManyRequests:
            state.metrics.rate_limited.labels("failures").inc()
            raise
        now = utcnow()
        try:
            principal, use, rows = await authenticate_key_on_loop(
                state.reader,
                pepper=state.pepper,
                key_id=self.key_id,
                key_secret=self.key_secret,
                ip_address=self.ip_address,
                user_agent=self.user_agent,
                now=now,
                also=reads,
            )
        except Unauthorized:
            state.metrics.auth_failures.labels("api").inc()
            await limiter_call(state, failures.failed, self.ip_address, self.key_id)
            raise
        state.usage.note(use, now)
        self._authorize(principal)
        try:
            await limiter_call(state, state.rate_limiter.check, str(principal.actor_id))
        except TooManyRequests:
            state.metrics.rate_limited.labels("key").inc()
            raise
        return principal, rows

    def _authorize(self, principal: Principal) -> None:
        if self.organization_id is not None and self.organization_id != principal.organization_id:
            raise NotFound("Organization not found")
        if self.permission != AUTHENTICATED and not principal.can(
            self.permission, organization_resource(principal.organization_id)
        ):
            raise Forbidden(f"FORBIDDEN: This operation requires the {self.permission} permission")


async def limiter_call(state: AppState, call: Callable[..., None], *args: Any) -> None:
    """A limiter's look-up: in memory, right here; in Redis (a network round trip), on a
    database thread, so that the event loop never waits for Redis."""
    if state.settings.redis_url is None:
        call(*args)
        return
    context = contextvars.copy_context()
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(state.executor, context.run, call, *args)


def _context(request: Request, permission: str, organization_id: uuid.UUID | None) -> Context:
    return context_for(request, app_state(request), permission, organization_id)


def context_for(
    request: HTTPConnection, state: AppState, permission: str, organization_id: uuid.UUID | None
) -> Context:
    """The request's context: its Basic credentials, client address and what it needs."""
    return context_from_scope(request.scope, state, permission, organization_id)


def context_from_scope(
    scope: Scope, state: AppState, permission: str, organization_id: uuid.UUID | None
) -> Context:
    """``context_for`` from the ASGI scope itself (the hot paths have no Request object): the
    first Authorization and User-Agent lines, every X-Forwarded-For line, decoded as Starlette
    decodes headers (latin-1)."""
    authorization: str | None = None
    user_agent: str | None = None
    forwarded_for: list[str] = []
    for name, value in scope["headers"]:
        if name == b"authorization":
            if authorization is None:
                authorization = value.decode("latin-1")
        elif name == b"user-agent":
            if user_agent is None:
                user_agent = value.decode("latin-1")
        elif name == b"x-forwarded-for":
            forwarded_for.append(value.decode("latin-1"))
    key_id, secret = parse_basic(authorization)
    client = scope.get("client")
    peer = client[0] if client else None
    return Context(
        state=state,
        key_id=key_id,
        key_secret=secret,
        ip_address=client_address(peer, forwarded_for, state.trusted_proxies),
        user_agent=user_agent,
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
        return _context(request, self.checked_here, organization_id)

    @property
    def checked_here(self) -> str:
        """The permission the route itself checks (its declared one)."""
        return self.permission


class RequireOnService(RequireInOrganization):
    """For ``.../services/{serviceId}...``: the permission is one on ``instance/<id>``, which the
    service function checks once it has found the service (404 first); the route checks only
    that the caller belongs to the organization."""

    @property
    def checked_here(self) -> str:
        return AUTHENTICATED


def query_host(request: Request) -> str:
    """Where clients reach the Query API: the configured query host, else this server."""
    configured = app_state(request).settings.query_host
    return (configured or str(request.base_url)).rstrip("/")
