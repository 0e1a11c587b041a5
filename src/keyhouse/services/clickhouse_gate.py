"""The gate of a service's ClickHouse HTTP interface, wherever the interface listens (in this
process, or on an engine host whose agent asks the control plane): the service's
``ipAccessList``, the failed-password limits, the ``default`` user's password, and whether the
query runs, wakes the service (recorded) or is refused (``keyhouse.services.states.admit``)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from keyhouse.context import limiter_call
from keyhouse.engine.protocol import ClickHouseError
from keyhouse.services import service
from keyhouse.services.states import Admission, State, admit
from keyhouse.transactions import run_in_transaction

if TYPE_CHECKING:
    from keyhouse.state import AppState


async def clickhouse_admission(
    state: AppState, service_id: uuid.UUID, user: str, password: str, address: str | None
) -> tuple[service.RunGrant, Admission]:
    """The caller's grant on the service and what its query may do; ``ClickHouseError``
    (``AUTHENTICATION_FAILED``, the address refused, ...) otherwise."""
    # Failed passwords count per client address, and per service at a much higher threshold
    # (KEYHOUSE_CLICKHOUSE_AUTH_FAILURES_PER_SERVICE): a stranger's guesses cannot lock the
    # port for the service's own clients. Checked after the IP access list.
    failures = state.clickhouse_auth_failures
    subject = f"clickhouse:{service_id}"
    pepper = state.pepper
    try:
        # Every request passes here: the service's row is read on the event loop (no thread
        # hop), and only an idle service's wake takes a transaction.
        row = await service.read_clickhouse_gate(state.reader, service_id)
        admission = admit(State(row.state), may_wake=True) if row is not None else None
        if admission is not None and admission != Admission.WAKE:
            service.check_clickhouse_address(row, address)
            await limiter_call(state, failures.check, address, subject)
            grant = service.clickhouse_gate(service_id, row, user, password, address, pepper=pepper)
        else:  # (no such service: the transaction's gate refuses it)

            def authorize(session: Any) -> service.RunGrant:
                return service.authorize_clickhouse(
                    session,
                    service_id,
                    user,
                    password,
                    address,
                    pepper=pepper,
                    before_password=lambda: failures.check(address, subject),
                )

            grant = await run_in_transaction(state, authorize)
            admission = admit(State(grant.state), may_wake=True)
    except ClickHouseError as refused:
        if refused.code == service.AUTHENTICATION_FAILED:
            state.metrics.auth_failures.labels("clickhouse").inc()
            await limiter_call(state, failures.failed, address, subject)
        raise
    return grant, admission
