"""The agents' side of the control plane (``/internal/hosts``, outside the Cloud API): joining
with a join token, and the sync with the host's own secret (``keyhouse.hosts.service``)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from sqlalchemy.orm import Session

from keyhouse.api.envelope import ok
from keyhouse.api.errors import Unauthorized
from keyhouse.db import utcnow
from keyhouse.engine.protocol import ClickHouseError
from keyhouse.hosts import service
from keyhouse.hosts.schemas import GateRequest, HostSync, JoinRequest
from keyhouse.services.clickhouse_gate import clickhouse_admission
from keyhouse.state import app_state
from keyhouse.transactions import run_in_transaction

router = APIRouter(prefix="/internal/hosts", include_in_schema=False)


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

    host_id = await run_in_transaction(state, joined)
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

    return ok(await run_in_transaction(state, synced))


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

    await run_in_transaction(state, check)
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
