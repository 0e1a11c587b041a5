"""FastAPI dependencies: the request context (session + principal) and permission checks.

Every ``/v1`` operation declares what it needs with ``Require(permission)`` (or
``Require(AUTHENTICATED)`` for operations any valid key may call); a test walks the route table
and fails for any operation that declares nothing.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Request
from sqlalchemy.orm import Session

from keyhouse.api.errors import Forbidden, NotFound, Unauthorized
from keyhouse.auth.network import client_address
from keyhouse.auth.permissions import Permission, organization_resource
from keyhouse.auth.principal import Principal
from keyhouse.auth.service import KEY_NOT_FOUND, authenticate_key
from keyhouse.db import utcnow
from keyhouse.state import AppState

AUTHENTICATED = "authenticated"
BASIC_CHALLENGE = {"WWW-Authenticate": 'Basic realm="keyhouse"'}


@dataclass(frozen=True)
class Context:
    session: Session
    principal: Principal


def parse_basic(header: str | None) -> tuple[str, str]:
    if not header:
        raise Unauthorized("UNAUTHORIZED: Missing HTTP Basic credentials", headers=BASIC_CHALLENGE)
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        raise Unauthorized("UNAUTHORIZED: Use HTTP Basic authentication", headers=BASIC_CHALLENGE)
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthorized(
            "UNAUTHORIZED: Malformed HTTP Basic credentials", headers=BASIC_CHALLENGE
        ) from None
    key_id, sep, secret = decoded.partition(":")
    if not sep or not key_id or not secret:
        raise Unauthorized(KEY_NOT_FOUND, headers=BASIC_CHALLENGE)
    return key_id, secret


def api_context(request: Request) -> Iterator[Context]:
    """One session per request: authenticate, yield, commit on success, roll back on error."""
    state: AppState = request.app.state.keyhouse
    key_id, secret = parse_basic(request.headers.get("authorization"))
    peer = request.client.host if request.client else None
    ip_address = client_address(peer, request.headers.get("x-forwarded-for"), state.trusted_proxies)
    session = state.sessionmaker()
    try:
        principal = authenticate_key(
            session,
            pepper=state.pepper,
            key_id=key_id,
            key_secret=secret,
            ip_address=ip_address,
            user_agent=request.headers.get("user-agent"),
            now=utcnow(),
        )
        # Commit the usedAt touch even if the request is then refused.
        session.commit()
        state.rate_limiter.check(str(principal.actor_id))
        yield Context(session, principal)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


class Require:
    """Declares and checks the permission an operation needs on its organization."""

    def __init__(self, permission: Permission | str) -> None:
        self.permission = str(permission)

    def __repr__(self) -> str:
        return f"Require({self.permission!r})"

    async def __call__(
        self, ctx: Annotated[Context, Depends(api_context, scope="function")]
    ) -> Context:
        if self.permission != AUTHENTICATED and not ctx.principal.can(
            self.permission, organization_resource(ctx.principal.organization_id)
        ):
            raise Forbidden(f"FORBIDDEN: This operation requires the {self.permission} permission")
        return ctx


class RequireInOrganization(Require):
    """For ``/organizations/{organizationId}/...``: another organization is a 404, never a 403."""

    async def __call__(  # type: ignore[override]
        self,
        organization_id: Annotated[
            uuid.UUID, Path(alias="organizationId", description="ID of the organization.")
        ],
        ctx: Annotated[Context, Depends(api_context, scope="function")],
    ) -> Context:
        if organization_id != ctx.principal.organization_id:
            raise NotFound("Organization not found")
        return await super().__call__(ctx)
