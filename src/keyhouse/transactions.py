"""The request's transaction: one per request, on the app's database threads.

``run_in_transaction(state, call)`` opens a session, runs ``call(session)``, commits, or rolls
back on any error; services only ``flush()``. Database failures become errors a client can act
on: a unique constraint that lost a race is a 409, and a database that cannot be reached or
timed out is a 503 with ``Retry-After`` and one log line (no traceback, no detail to the client).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session

from keyhouse.api.envelope import request_id_var
from keyhouse.api.errors import Conflict, ServiceUnavailable

if TYPE_CHECKING:
    from keyhouse.state import AppState

T = TypeVar("T")
log = logging.getLogger("keyhouse.database")

RETRY_AFTER_SECONDS = "5"


def database_unavailable(error: Exception) -> ServiceUnavailable:
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
    request_id = request_id_var.get() or "-"
    log.warning(
        "database unavailable (request %s): %s: %s",
        request_id,
        type(error).__name__,
        first_line[:200],
    )
    return ServiceUnavailable(
        "The database is unavailable; retry shortly", headers={"Retry-After": RETRY_AFTER_SECONDS}
    )


def _is_outage(error: DBAPIError) -> bool:
    return isinstance(error, OperationalError) or error.connection_invalidated


async def run_in_transaction(state: AppState, call: Callable[[Session], T]) -> T:
    """Run ``call(session)`` on the app's database threads; commit, or roll back on error."""

    def transaction() -> T:
        try:
            with state.sessionmaker() as session:
                try:
                    result = call(session)
                    session.commit()
                    return result
                except BaseException:
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
    return await loop.run_in_executor(state.executor, context.run, transaction)
