"""The agents' side of the control plane (``/internal/hosts``, outside the Cloud API): joining
with a join token, and the sync with the host's own secret (``keyhouse.hosts.service``)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Path, Request, Response
from sqlalchemy.orm import Session

from keyhouse.api.envelope import ok
from keyhouse.api.errors import Unauthorized
from keyhouse.auth.network import client_address
from keyhouse.context import limiter_call
from keyhouse.db import utcnow
from keyhouse.engine.protocol import ClickHouseError
from keyhouse.hosts import service
from keyhouse.hosts.schemas import GateRequest, HostSync, JoinRequest
from keyhouse.services.clickhouse_gate import clickhouse_admission
from keyhouse.state import app_state
from keyhouse.transactions import run_in_transaction

router = APIRouter(prefix="/internal/hosts", include_in_schema=False)
T = TypeVar("T")


def _address(request: Request) -> str | None:
    state = app_state(request)
    forwarded = request.headers.getlist("x-forwarded-for")
    peer = request.client.host if request.client else None
    return client_address(peer, forwarded, state.trusted_proxies)


async def _limited(request: Request, subject: str, check: Callable[[], Awaitable[T]]) -> T:
    """``check`` under the failed-authentication limits (per address, and per ``subject``):
    429 once spent; a 401 counts."""
    state = app_state(request)
    failures, address = state.auth_failures, _address(request)
    await limiter_call(state, failures.check, address, subject)
    try:
        return await check()
    except Unauthorized:
        state.metrics.auth_failures.labels("engine_host").inc()
        await limiter_call(state, failures.failed, address, subject)
        raise


def _bearer(request: Request) -> str:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value:
        raise Unauthorized("An engine host authenticates with a bearer token")
    return value.strip()


@router.post("/join")
async def join(request: Request, body: JoinRequest) -> Response:
    """A new host, for an agent with a valid join token: its id and its own secret."""
    state = app_state(request)
    token, pepper = _bearer(request), state.pepper

    def joined(session: Session) -> uuid.UUID:
        return service.join(session, pepper, token, body).id

    host_id = await _limited(request, "host-join", lambda: run_in_transaction(state, joined))
    secret = service.host_secret(pepper, host_id)
    return ok({"hostId": str(host_id), "secret": secret}, status=201)


@router.post("/{host_id}/sync")
async def sync(request: Request, host_id: Annotated[uuid.UUID, Path()], body: HostSync) -> Response:
    """A host's heartbeat and report; what it must run and remove."""
    state = app_state(request)
    secret, pepper = _bearer(request), state.pepper

    def synced(session: Session) -> dict[str, Any]:
        host = service.authenticate(session, pepper, host_id, secret)
        assignment = service.sync(session, host, body, utcnow())
        return {"services": assignment.services, "remove": assignment.remove}

    subject = f"host:{host_id}"
    return ok(await _limited(request, subject, lambda: run_in_transaction(state, synced)))


@router.post("/{host_id}/gate")
async def gate(
    request: Request, host_id: Annotated[uuid.UUID, Path()], body: GateRequest
) -> Response:
    """The gate of a service's ClickHouse HTTP interface on the host: the same checks, limits
    and wake as on the control plane's own ports (``clickhouse_admission``), for the host's own
    services only. A refusal is the engine's error (``code``, ``message``), as its interface
    answers it."""
    state = app_state(request)
    secret, pepper = _bearer(request), state.pepper

    def check(session: Session) -> None:
        host = service.authenticate(session, pepper, host_id, secret)
        service.check_given(session, host, body.service)

    await _limited(request, f"host:{host_id}", lambda: run_in_transaction(state, check))
    try:
        grant, admission = await clickhouse_admission(
            state, body.service, body.user, body.password, body.address
        )
    except ClickHouseError as refused:
        return ok({"error": {"code": refused.code, "message": refused.text}})
    return ok(
        {
            "grant": {
                "readonly": grant.readonly,
                "maxMemoryGb": grant.max_memory_gb,
                "roles": list(grant.roles),
                "state": grant.state,
            },
            "admission": admission.value,
        }
    )
