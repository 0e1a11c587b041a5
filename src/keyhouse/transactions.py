"""The request's transaction: one per request, on the app's database threads.

``run_in_transaction(state, call)`` opens a session, runs ``call(session)``, commits, or rolls
back on any error; services only ``flush()``. Database failures become errors a client can act
on: a unique constraint that lost a race is a 409, and a database that cannot be reached or
timed out is a 503 with ``Retry-After`` and one log line (no traceback, no detail to the client).

Work that must follow a commit (starting an engine, say) is queued on the session with
``after_commit(session, work)``: once the commit succeeded, the runner hands each queued item,
in order, to the app's ``committed`` handler (the services runtime); a transaction that rolled
back hands over nothing. No front end dispatches such work itself.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, Protocol, TypeVar

from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from keyhouse.api.errors import Conflict
from keyhouse.db import database_unavailable

T = TypeVar("T")
_AFTER_COMMIT = "keyhouse.after_commit"


class Database(Protocol):
    """What a transaction needs (the app's ``AppState`` is one): sessions, the threads that run
    them, and who does the work queued to follow a commit."""

    @property
    def sessionmaker(self) -> sessionmaker[Session]: ...

    @property
    def executor(self) -> Executor: ...

    def committed(self, work: Any) -> None: ...


def after_commit(session: Session, work: Any) -> None:
    """Queue ``work`` for the app's ``committed`` handler, once this session's transaction
    committed (``run_in_transaction``)."""
    session.info.setdefault(_AFTER_COMMIT, []).append(work)


def _is_outage(error: DBAPIError) -> bool:
    return isinstance(error, OperationalError) or error.connection_invalidated


async def run_in_transaction(state: Database, call: Callable[[Session], T]) -> T:
    """Run ``call(session)`` on the app's database threads; commit, or roll back on error."""

    def transaction() -> tuple[T, list[Any]]:
        try:
            with state.sessionmaker() as session:
                try:
                    result = call(session)
                    session.commit()
                    return result, session.info.pop(_AFTER_COMMIT, [])
                except BaseException:
                    session.info.pop(_AFTER_COMMIT, None)
                    session.rollback()
                    raise
        except IntegrityError:
            # A unique constraint lost a race the service's own checks could not see.
            raise Conflict(
                "The request conflicts with a change made at the same time; retry it"
            ) from None
        except PoolTimeout as error:
            raise database_unavailable(error) from None
        except DBAPIError as error:
            if _is_outage(error):
                raise database_unavailable(error) from None
            raise

    context = contextvars.copy_context()
    loop = asyncio.get_running_loop()
    result, committed = await loop.run_in_executor(state.executor, context.run, transaction)
    for work in committed:
        state.committed(work)
    return result
