"""Database plumbing: the declarative base, engine construction, aware UTC datetimes, and the
answer to a database that cannot be reached (``database_unavailable``)."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from sqlalchemy import DateTime, MetaData, create_engine, event
from sqlalchemy.engine import Dialect, Engine, make_url
from sqlalchemy.orm import DeclarativeBase, sessionmaker
from sqlalchemy.orm import Session as Session
from sqlalchemy.types import TypeDecorator

from keyhouse.api.envelope import request_id_var
from keyhouse.api.errors import ServiceUnavailable

log = logging.getLogger("keyhouse.database")
RETRY_AFTER_SECONDS = "5"

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Stores aware datetimes; always returns them aware in UTC (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        return value.astimezone(dt.UTC)

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def normalize_database_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs and use the psycopg 3 driver for them."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(
    url: str,
    *,
    pool_size: int = 5,
    connect_timeout: float = 5,
    statement_timeout: float = 30,
) -> Engine:
    """An engine whose pool holds ``pool_size`` connections (plus a few for bursts).

    Nothing waits forever: connecting gives up after ``connect_timeout`` seconds, and so does
    waiting for a pooled connection; a statement (PostgreSQL) or a wait for SQLite's write lock
    gives up after ``statement_timeout``. On PostgreSQL, TCP keepalives and ``tcp_user_timeout``
    notice a silent network cut instead of hanging on it.
    """
    url = normalize_database_url(url)
    parsed = make_url(url)
    pool = {"pool_size": pool_size, "max_overflow": 4, "pool_timeout": connect_timeout}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            _private_file(database)
        engine = create_engine(url, connect_args={"timeout": statement_timeout}, **pool)
        event.listen(engine, "connect", _sqlite_pragmas(statement_timeout))
        return engine
    statement_ms = int(statement_timeout * 1000)
    connect_args = {
        "connect_timeout": max(1, round(connect_timeout)),
        "options": f"-c statement_timeout={statement_ms} -c lock_timeout={statement_ms}",
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
        "tcp_user_timeout": statement_ms,
    }
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args, **pool)


def _private_file(database: str) -> None:
    """The SQLite file readable by the server alone (0600; SQLite gives its -wal and -shm
    files the database's mode), in a directory made 0700 when Keyhouse creates it: it holds
    every key's hash and the sealed passwords of attached servers."""
    import os
    from pathlib import Path

    path = Path(database)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        # Created here only when new: closing a descriptor of a file that this process has
        # open through SQLite would drop SQLite's own locks on it (POSIX locks are per process).
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        path.chmod(0o600)


def _sqlite_pragmas(busy_timeout: float) -> Any:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        cursor.close()

    return on_connect


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=True)


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
