"""Query API endpoints' last calls (the console lists them), written behind the requests, as
keys' ``usedAt`` are.

Each run notes its call here (in memory, on the event loop); the app's background task writes
what was noted every ``KEYHOUSE_USAGE_FLUSH_SECONDS``, each endpoint's new calls merged into its
stored ones under a row lock, and the rest at a clean shutdown. A run used to rewrite the
endpoint's list in its own transaction: concurrent runs each wrote their list over the others'
(entries were lost), and every run paid a write.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from keyhouse.auth.usage import flush_every
from keyhouse.models import QueryApiEndpoint
from keyhouse.transactions import run_in_transaction

if TYPE_CHECKING:
    from keyhouse.state import AppState

LAST_CALLS = 10  # the calls kept per endpoint, newest first


class EndpointCalls:
    def __init__(self) -> None:
        self._pending: dict[uuid.UUID, list[dict[str, Any]]] = {}

    def note(self, endpoint_id: uuid.UUID, call: dict[str, Any]) -> None:
        calls = self._pending.setdefault(endpoint_id, [])
        calls.insert(0, call)
        del calls[LAST_CALLS:]

    async def flush(self, state: AppState) -> int:
        """Write what was noted; on failure it is kept for the next flush."""
        pending, self._pending = self._pending, {}
        if not pending:
            return 0

        def write(session: Any) -> None:
            endpoints = session.scalars(
                select(QueryApiEndpoint)
                .where(QueryApiEndpoint.id.in_(list(pending)))
                .with_for_update()
            )
            for endpoint in endpoints:  # (a deleted endpoint's calls go with it)
                endpoint.last_calls = [*pending[endpoint.id], *endpoint.last_calls][:LAST_CALLS]

        try:
            await run_in_transaction(state, write)
        except Exception:
            for endpoint_id, calls in pending.items():  # calls noted meanwhile are newer
                newer = self._pending.get(endpoint_id, [])
                self._pending[endpoint_id] = [*newer, *calls][:LAST_CALLS]
            raise
        return sum(len(calls) for calls in pending.values())

    async def run(self, state: AppState, every: float) -> None:
        await flush_every(self.flush, state, every, "endpoints' last calls")
