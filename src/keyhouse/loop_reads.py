"""Reads on the event loop, with the database driver directly: the hot path's queries
(authenticating a key, reading keys) without a thread hop, an ORM session or SQLAlchemy's result
machinery.

A statement is an ordinary SQLAlchemy Core ``select``, compiled once per dialect; its parameters
and columns go through the same type processors SQLAlchemy itself would apply, so the values are
those a session returns (UUIDs, aware UTC datetimes, decoded JSON).

- SQLite: one read-only connection per thread (the event loop's), in WAL mode, where a reader
  never waits for a writer; a statement that still finds the database busy (a checkpoint) waits
  at most ``BUSY_MS`` and is then a 503.
- PostgreSQL: psycopg's async connections, pooled on the app's event loop (``open_loop`` at
  its start, ``close_loop`` at its end: a served process has one loop, and one app serves a
  state), with the same statement and lock timeouts as the engine's; a read outside the app's
  loop (a command, a script) uses a connection of its own, closed at once;
  statements are prepared on each connection (server-side plans, re-planned by PostgreSQL
  when a table's statistics change).

Writes never come here: they stay in the request's transaction (``transactions.py``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import psycopg
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import DateTime, Select, TypeDecorator, Uuid
from sqlalchemy.engine import Compiled, Dialect, Engine
from sqlalchemy.types import TypeEngine

from keyhouse.config import Settings
from keyhouse.db import database_unavailable

BUSY_MS = 200


@dataclass(frozen=True)
class Read:
    """A statement (a module-level constant) and its parameters' values."""

    statement: Select[Any]
    values: dict[str, Any]


@dataclass(frozen=True)
class _Prepared:
    statement: Select[Any]
    compiled: Compiled
    sql: str
    positional: tuple[str, ...] | None  # the parameters' order, for qmark drivers
    binders: Mapping[str, Callable[[Any], Any]]
    # (column index, type processor) for the columns that have one
    processors: tuple[tuple[int, Callable[[Any], Any]], ...]
    row: Callable[..., Any]  # a named tuple of the statement's columns

    def parameters(self, values: dict[str, Any]) -> Any:
        # With the statement's own literals (e.g. ``actor_type = 'apiKey'`` in a join).
        bound = dict(self.compiled.construct_params(values) or {})
        for name, binder in self.binders.items():
            if bound.get(name) is not None:
                bound[name] = binder(bound[name])
        if self.positional is not None:
            return tuple(bound[name] for name in self.positional)
        return bound

    def rows(self, raw: Sequence[Sequence[Any]]) -> list[Any]:
        make = self.row._make  # type: ignore[attr-defined]
        if not self.processors:
            return [make(row) for row in raw]
        rows = []
        for row in raw:
            values = list(row)
            for index, process in self.processors:
                value = values[index]
                if value is not None:
                    values[index] = process(value)
            rows.append(make(values))
        return rows


# The values of these types are immutable and repeat from request to request (a key's own id,
# its organization's, its roles', its creation time), so each processor remembers what it made:
# SQLite stores them as text, and building a UUID or parsing a datetime in Python costs more
# than the read that fetched it.
_IMMUTABLE = (Uuid, DateTime)
_REMEMBERED = 8192


def _result_processor(type_: TypeEngine[Any], dialect: Dialect) -> Callable[[Any], Any] | None:
    process = type_.dialect_impl(dialect).result_processor(dialect, None)
    if process is None:
        return None
    inner = type_.impl if isinstance(type_, TypeDecorator) else type_
    if isinstance(inner, _IMMUTABLE):
        return functools.lru_cache(maxsize=_REMEMBERED)(process)
    return cast(Callable[[Any], Any], process)


def _prepare(statement: Select[Any], dialect: Dialect) -> _Prepared:
    compiled = statement.compile(dialect=dialect)
    # The processors SQLAlchemy applies to each parameter, by the names the driver sees.
    binders = {
        name: cast(Callable[[Any], Any], bind)
        for name, bind in compiled._bind_processors.items()
        if bind is not None
    }
    processors = tuple(
        (index, process)
        for index, column in enumerate(statement.selected_columns)
        if (process := _result_processor(column.type, dialect)) is not None
    )
    positional = tuple(compiled.positiontup) if compiled.positiontup else None
    row = collections.namedtuple(  # type: ignore[misc]
        "Row", [column.name for column in statement.selected_columns]
    )
    return _Prepared(statement, compiled, compiled.string, positional, binders, processors, row)


READER_APPLICATION = "keyhouse-reader"


class LoopReader:
    def __init__(self, engine: Engine, settings: Settings) -> None:
        self._dialect = engine.dialect
        self._url = engine.url
        self._settings = settings
        self._prepared: dict[int, _Prepared] = {}
        self._local = threading.local()
        # The app's pool, on the app's event loop (open_loop, close_loop).
        self._pool: AsyncConnectionPool | None = None
        self._pool_loop: asyncio.AbstractEventLoop | None = None
        self._pool_opened = False
        self.sqlite = engine.dialect.name == "sqlite"

    def _statement(self, statement: Select[Any]) -> _Prepared:
        prepared = self._prepared.get(id(statement))
        if prepared is None or prepared.statement is not statement:  # ids of the dead are reused
            prepared = self._prepared[id(statement)] = _prepare(statement, self._dialect)
        return prepared

    async def all(self, statement: Select[Any], values: dict[str, Any]) -> list[Any]:
        """The rows of ``statement`` (a module-level constant: it is compiled once), as named
        tuples of its columns."""
        (rows,) = await self.all_of(Read(statement, values))
        return rows

    async def all_of(self, *reads: Read) -> list[list[Any]]:
        """The rows of each read; on PostgreSQL, all of them in one round trip (a pipeline)."""
        prepared = [self._statement(read.statement) for read in reads]
        parameters = [p.parameters(read.values) for p, read in zip(prepared, reads, strict=True)]
        if self.sqlite:
            connection = self._sqlite()
            try:
                raws = [
                    connection.execute(p.sql, values).fetchall()
                    for p, values in zip(prepared, parameters, strict=True)
                ]
            except sqlite3.OperationalError as error:
                raise database_unavailable(error) from None
        else:
            try:
                raws = await self._postgresql(prepared, parameters)
            except (psycopg.OperationalError, TimeoutError) as error:
                raise database_unavailable(error) from None
        return [p.rows(raw) for p, raw in zip(prepared, raws, strict=True)]

    async def _postgresql(
        self, prepared: list[_Prepared], parameters: list[Any]
    ) -> list[list[Any]]:
        async with self._connection() as connection:
            if len(prepared) == 1:
                cursor = await connection.execute(prepared[0].sql, parameters[0], prepare=True)
                return [await cursor.fetchall()]
            async with connection.pipeline():
                cursors = [
                    await connection.execute(p.sql, values, prepare=True)
                    for p, values in zip(prepared, parameters, strict=True)
                ]
            return [await cursor.fetchall() for cursor in cursors]

    # --- SQLite ---------------------------------------------------------------------------

    def _sqlite(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            path = self._url.database or ""
            connection = sqlite3.connect(
                f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
            )
            connection.execute(f"PRAGMA busy_timeout={BUSY_MS}")
            connection.execute("PRAGMA query_only=1")
            self._local.connection = connection
        return connection

    # --- PostgreSQL -----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A connection of the app's pool; outside the app's loop (a command, a script), one of
        its own."""
        pool = self._pool
        if pool is None or self._pool_loop is not asyncio.get_running_loop():
            connection = await psycopg.AsyncConnection.connect(
                self._conninfo(), **self._connection_options()
            )
            async with connection:
                yield connection
            return
        if not self._pool_opened:  # (opening an open pool does nothing)
            await pool.open(wait=False)
            self._pool_opened = True
        async with pool.connection() as connection:
            yield connection

    def _conninfo(self) -> str:
        return self._url.set(drivername="postgresql").render_as_string(hide_password=False)

    def _connection_options(self) -> dict[str, Any]:
        settings = self._settings
        statement_ms = int(settings.database_statement_timeout * 1000)
        return {
            "autocommit": True,
            "application_name": READER_APPLICATION,  # told apart in pg_stat_activity
            "connect_timeout": max(1, round(settings.database_connect_timeout)),
            # Prepared once per connection; PostgreSQL keeps a generic plan after five calls
            # (planning is ~150 us of a ~250 us read here) and plans again when the tables'
            # statistics change (ANALYZE, autovacuum's included), so a plan made while a table
            # was small does not outlive its growth.
            "options": f"-c statement_timeout={statement_ms}",
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
        }

    def open_loop(self) -> None:
        """The running loop is the app's (it calls ``close_loop`` at its end): reads on it pool
        their connections (opened as they are first needed)."""
        if self.sqlite:
            return
        settings = self._settings
        self._pool = AsyncConnectionPool(
            self._conninfo(),
            min_size=1,
            max_size=max(2, settings.worker_threads),
            timeout=settings.database_connect_timeout,
            open=False,
            kwargs=self._connection_options(),
        )
        self._pool_loop = asyncio.get_running_loop()
        self._pool_opened = False

    async def close_loop(self) -> None:
        """Close the app's pool (at the end of the app)."""
        pool, self._pool, self._pool_loop = self._pool, None, None
        if pool is not None:
            await pool.close()

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None
