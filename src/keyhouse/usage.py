"""What requests leave behind, written behind them: API keys' ``usedAt`` and Query API
endpoints' last calls (the console lists them).

A key's ``usedAt`` has minute precision, so a request needs a write only when the stored minute
is older than the current one. Authentication notes that here (in memory, on the event loop);
a background task writes what was noted every ``KEYHOUSE_USAGE_FLUSH_SECONDS`` in one statement,
and the app writes the rest when it shuts down cleanly. The write is conditional (``used_at``
only moves forward), so replicas that note the same key agree, and a minute is never earlier
than the key's creation.

An endpoint's run notes its call the same way; each endpoint's new calls are merged into its
stored ones under a row lock. A run used to rewrite the endpoint's list in its own transaction:
concurrent runs each wrote their list over the others' (entries were lost), and every run paid
a write.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import bindparam, or_, select, update

from keyhouse.auth.service import KeyUse
from keyhouse.models import API_KEYS, QueryApiEndpoint
from keyhouse.transactions import Database, run_in_transaction

log = logging.getLogger("keyhouse.usage")

_WRITE = (
    update(API_KEYS)
    .where(
        API_KEYS.c.id == bindparam("key"),
        or_(API_KEYS.c.used_at.is_(None), API_KEYS.c.used_at < bindparam("minute")),
    )
    .values(used_at=bindparam("minute"))
)


class UsageRecorder:
    def __init__(self) -> None:
        self._pending: dict[uuid.UUID, dt.datetime] = {}

    def note(self, use: KeyUse, now: dt.datetime) -> None:
        minute = now.replace(second=0, microsecond=0)
        if use.used_at is not None and use.used_at >= minute:
            return
        minute = max(minute, use.created_at)
        if self._pending.get(use.key_uuid, minute) > minute:
            return
        self._pending[use.key_uuid] = minute

    async def flush(self, state: Database) -> int:
        """Write what was noted; on failure it is kept for the next flush."""
        pending, self._pending = self._pending, {}
        if not pending:
            return 0
        rows = [{"key": key, "minute": minute} for key, minute in pending.items()]

        def write(session: Any) -> None:
            session.connection().execute(_WRITE, rows)

        try:
            await run_in_transaction(state, write)
        except Exception:
            for key, minute in pending.items():  # later notes of the same key win
                self._pending[key] = max(minute, self._pending.get(key, minute))
            raise
        return len(rows)

    async def run(self, state: Database, every: float) -> None:
        await flush_every(self.flush, state, every, "usedAt")


async def flush_every(
    flush: Callable[[Database], Awaitable[int]], state: Database, every: float, what: str
) -> None:
    """``flush`` a recorder of what requests noted every ``every`` seconds until cancelled
    (the app's lifespan flushes last); a failed flush keeps its notes for the next."""
    while True:
        await asyncio.sleep(every)
        try:
            await flush(state)
        except Exception as error:  # the database is away: keep the notes, try again
            log.warning("%s not written yet: %s", what, type(error).__name__)


LAST_CALLS = 10  # the calls kept per endpoint, newest first


class EndpointCalls:
    def __init__(self) -> None:
        self._pending: dict[uuid.UUID, list[dict[str, Any]]] = {}

    def note(self, endpoint_id: uuid.UUID, call: dict[str, Any]) -> None:
        calls = self._pending.setdefault(endpoint_id, [])
        calls.insert(0, call)
        del calls[LAST_CALLS:]

    async def flush(self, state: Database) -> int:
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

    async def run(self, state: Database, every: float) -> None:
        await flush_every(self.flush, state, every, "endpoints' last calls")
