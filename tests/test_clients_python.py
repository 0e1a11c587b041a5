"""ClickHouse clients nobody here wrote read a MergeTree table of many types (250,000 rows,
ordered, several engine blocks; ``tests/typed_table.py``) through a service's ClickHouse HTTP
interface, and each value is compared with the formula that made it. Each of them had read such
results wrong before (a header or a document per engine block). Here: aiochclient and
clickhouse-sqlalchemy (http)."""

from __future__ import annotations

import ssl
from typing import Any

import aiohttp
import pytest
import sqlalchemy
from aiochclient import ChClient

from keyhouse.config import Settings
from tests.conftest import make_settings
from tests.engine.test_supervisor import _run
from tests.typed_table import (
    ROWS,
    SELECT,
    _ca,
    expected,
    typed,
)

pytestmark = [pytest.mark.services, pytest.mark.one_database]  # (tests/conftest.py)

__all__ = ["typed"]  # the fixture, used by name


@pytest.fixture
def settings(database_urls: dict[str, str], backend: str) -> Settings:
    """aiochclient converts some 15,000 rows/s in Python: on a loaded machine the table's rows
    can outlast the default 60 s query limit (a million did), and the engine, which waits for
    its reader as a server does, then ends the query with TIMEOUT_EXCEEDED mid-answer (seen once
    in a full run: the error line read as an empty row at row 843,776)."""
    return make_settings(database_urls[backend], services=True, query_max_execution_seconds=600)


def test_aiochclient_reads_every_type_it_knows(
    settings: Settings, typed: tuple[dict[str, Any], str]
) -> None:
    """aiochclient 2.7 knows no Date32 (its own limit: it refuses the type name)."""
    endpoint, password = typed

    def as_aiochclient(n: int) -> tuple[Any, ...]:
        row = list(expected(n))
        row[5] = row[5].decode()  # FixedString as text
        del row[7]  # Date32
        return tuple(row)

    async def read() -> int:
        context = ssl.create_default_context(cafile=str(_ca(settings)))
        connector = aiohttp.TCPConnector(ssl=context)
        async with aiohttp.ClientSession(connector=connector) as session:
            ch = ChClient(
                session,
                url=f"https://{endpoint['host']}:{endpoint['port']}",
                user="default",
                password=password,
            )
            n = 0
            async for record in ch.iterate("SELECT * EXCEPT d32 FROM typed ORDER BY id"):
                assert tuple(record.values()) == as_aiochclient(n)
                n += 1
            return n

    assert _run(read()) == ROWS


def test_clickhouse_sqlalchemy_reads_every_type(
    settings: Settings, typed: tuple[dict[str, Any], str]
) -> None:
    """clickhouse-sqlalchemy's http driver converts about 6,000 rows a second in Python (measured
    here: 177 s for the million): it reads the first 100,000, which span two engine blocks."""
    endpoint, password = typed
    rows = 100_000

    def as_sqlalchemy(n: int) -> tuple[Any, ...]:
        row = list(expected(n))
        row[5] = row[5].decode()
        row[7] = row[7].isoformat()  # the driver leaves Date32, UUID and composites as text
        row[8] = str(row[8])
        row[12] = f"[{n % 1000},{n % 7}]"
        row[13] = f"{{'k':{n}}}"
        row[14] = f"({n % 256},'{n}')"
        return tuple(row)

    engine = sqlalchemy.create_engine(
        f"clickhouse+http://default:{password}@{endpoint['host']}:{endpoint['port']}/default"
        f"?protocol=https&verify={_ca(settings)}"
    )
    try:
        with engine.connect() as connection:
            read = connection.execute(sqlalchemy.text(f"{SELECT} LIMIT {rows}"))
            got = [tuple(row) for row in read]
    finally:
        engine.dispose()
    assert len(got) == rows
    assert all(row == as_sqlalchemy(n) for n, row in enumerate(got))
