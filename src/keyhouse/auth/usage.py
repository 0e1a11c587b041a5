"""``usedAt``, written behind the request path.

A key's ``usedAt`` has minute precision, so a request needs a write only when the stored minute
is older than the current one. Authentication notes that here (in memory, on the event loop);
a background task writes what was noted every ``KEYHOUSE_USAGE_FLUSH_SECONDS`` in one statement,
and the app writes the rest when it shuts down cleanly. The write is conditional (``used_at``
only moves forward), so replicas that note the same key agree, and a minute is never earlier
than the key's creation.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, or_, update

from keyhouse.auth.service import KeyUse
from keyhouse.models import API_KEYS
from keyhouse.transactions import run_in_transaction

if TYPE_CHECKING:
    from keyhouse.state import AppState

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

    async def flush(self, state: AppState) -> int:
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

    async def run(self, state: AppState, every: float) -> None:
        await flush_every(self.flush, state, every, "usedAt")


async def flush_every(
    flush: Callable[[AppState], Awaitable[int]], state: AppState, every: float, what: str
) -> None:
    """``flush`` a recorder of what requests noted every ``every`` seconds until cancelled
    (the app's lifespan flushes last); a failed flush keeps its notes for the next."""
    while True:
        await asyncio.sleep(every)
        try:
            await flush(state)
        except Exception as error:  # the database is away: keep the notes, try again
            log.warning("%s not written yet: %s", what, type(error).__name__)
