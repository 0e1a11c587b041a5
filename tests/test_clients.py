"""ClickHouse clients nobody here wrote read a MergeTree table of many types (1M rows, ordered,
many engine blocks) through a service's ClickHouse HTTP interface, and each value is compared
with the formula that made it: clickhouse-connect (query, row-block stream, Arrow, pandas,
insert), aiochclient, clickhouse-sqlalchemy (http) and the official Node.js client
(@clickhouse/client from npm: JSON, streamed JSONEachRow, CSVWithNames, insert).

Each of them had read such results wrong before (a header or a document per engine block)."""

from __future__ import annotations

import datetime as dt
import decimal
import ipaddress
import json
import shutil
import ssl
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import clickhouse_connect
import httpx2 as httpx
import pytest
import sqlalchemy
from aiochclient import ChClient
from fastapi.testclient import TestClient

from keyhouse.config import Settings
from tests.conftest import Org
from tests.engine.test_supervisor import _run
from tests.services import create, wait_for

ROWS = 1_000_000
NODE = Path(__file__).parent / "clients" / "node"
COLUMNS = (
    "id UInt64, i32 Int32, f64 Float64, dec Decimal(18, 4), s String, fs FixedString(8), "
    "dt DateTime64(3, 'UTC'), d32 Date32, uuid UUID, ip4 IPv4, ip6 IPv6, nul Nullable(Int64), "
    "arr Array(UInt32), m Map(String, UInt64), t Tuple(UInt8, String), "
    "lc LowCardinality(String), e Enum8('a' = 1, 'b' = 2)"
)
# Row n of the table: each value a formula of n (the Node.js client's check.mjs has the same).
FILL = """INSERT INTO typed SELECT
    number, -toInt32(number), number / 8, toDecimal64(number, 4) / 10000,
    concat('s', toString(number)), toFixedString(leftPad(toString(number), 8, '0'), 8),
    fromUnixTimestamp64Milli(toInt64(number) * 1001, 'UTC'),
    addDays(toDate32('1950-01-01'), number % 40000),
    toUUID(concat('00000000-0000-0000-0000-', leftPad(lower(hex(number)), 12, '0'))),
    toIPv4(number), toIPv6(toIPv4(number)), if(number % 3 = 0, NULL, toInt64(number)),
    [toUInt32(number % 1000), toUInt32(number % 7)], map('k', number),
    tuple(toUInt8(number % 256), toString(number)), toString(number % 10),
    if(number % 2 = 0, 'a', 'b')
FROM numbers({rows})"""
NAMES = [
    "id", "i32", "f64", "dec", "s", "fs", "dt", "d32", "uuid", "ip4", "ip6", "nul", "arr", "m",
    "t", "lc", "e",
]  # fmt: skip
SELECT = "SELECT * FROM typed ORDER BY id"
EPOCH = dt.datetime(1970, 1, 1)  # noqa: DTZ001 (clients read DateTime64 as naive UTC)
DATE32_BASE = dt.date(1950, 1, 1)


def expected(n: int) -> tuple[Any, ...]:
    """Row ``n`` as clickhouse-connect reads it."""
    return (
        n,
        -n,
        n / 8,
        decimal.Decimal(n).scaleb(-4),
        f"s{n}",
        f"{n:08d}".encode(),
        EPOCH + dt.timedelta(milliseconds=n * 1001),
        DATE32_BASE + dt.timedelta(days=n % 40000),
        uuid.UUID(int=n),
        ipaddress.IPv4Address(n),
        ipaddress.IPv6Address(f"::ffff:{ipaddress.IPv4Address(n)}"),
        None if n % 3 == 0 else n,
        [n % 1000, n % 7],
        {"k": n},
        (n % 256, str(n)),
        str(n % 10),
        "a" if n % 2 == 0 else "b",
    )


@pytest.fixture
def typed(settings: Settings, client: TestClient, org: Org) -> Iterator[tuple[dict[str, Any], str]]:
    """A running service whose table ``typed`` holds ROWS rows; its endpoint and password."""
    created = create(client, org, ipAccessList=[{"source": "127.0.0.1/32"}])
    service = wait_for(client, org, created["service"]["id"], "running")
    [endpoint] = service["endpoints"]
    password = created["password"]
    with _http(settings, endpoint, password) as http:
        for sql in (
            f"CREATE TABLE typed ({COLUMNS}) ENGINE = MergeTree ORDER BY id",
            FILL.format(rows=ROWS),
        ):
            answered = http.post("/", content=sql.encode())
            assert answered.status_code == 200, answered.text
    yield endpoint, password
    client.patch(
        org.url(f"/services/{service['id']}/state"), json={"command": "stop"}, auth=org.auth
    )
    wait_for(client, org, service["id"], "stopped")


def _http(settings: Settings, endpoint: dict[str, Any], password: str) -> httpx.Client:
    return httpx.Client(
        base_url=f"https://{endpoint['host']}:{endpoint['port']}",
        auth=("default", password),
        verify=ssl.create_default_context(cafile=str(_ca(settings))),
        timeout=300,
    )


def _ca(settings: Settings) -> Path:
    return settings.data_dir / "tls" / "ca.pem"


def test_clickhouse_connect_reads_and_writes_every_type(
    settings: Settings, typed: tuple[dict[str, Any], str]
) -> None:
    endpoint, password = typed
    ch = clickhouse_connect.get_client(
        host=endpoint["host"],
        port=endpoint["port"],
        username="default",
        password=password,
        secure=True,
        ca_cert=str(_ca(settings)),
    )
    try:
        rows = ch.query(SELECT).result_rows
        assert len(rows) == ROWS
        assert all(row == expected(n) for n, row in enumerate(rows))
        streamed = 0
        with ch.query_row_block_stream(SELECT) as blocks:
            for block in blocks:
                for row in block:
                    assert row == expected(streamed)
                    streamed += 1
        assert streamed == ROWS
        arrow = ch.query_arrow(SELECT)
        assert arrow.num_rows == ROWS
        assert arrow.column("id").to_pylist() == list(range(ROWS))
        assert arrow.column("s").to_pylist() == [row[4] for row in rows]
        assert arrow.column("dec").to_pylist() == [row[3] for row in rows]
        assert arrow.column("arr").to_pylist() == [row[12] for row in rows]
        frame = ch.query_df(SELECT)
        assert len(frame) == ROWS
        assert frame["id"].tolist() == list(range(ROWS))
        assert frame["nul"].isna().sum() == (ROWS + 2) // 3
        # What it read goes back in (its Native insert), and the copy is the original.
        ch.command(f"CREATE TABLE copy ({COLUMNS}) ENGINE = MergeTree ORDER BY id")
        ch.insert("copy", rows[:200_000], column_names=NAMES)
        differing = ch.command(
            "SELECT count() FROM (SELECT * FROM copy EXCEPT SELECT * FROM typed WHERE id < 200000)"
        )
        assert (ch.command("SELECT count() FROM copy"), differing) == (200_000, 0)
    finally:
        ch.close()


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


def test_the_official_nodejs_client_reads_and_inserts(
    settings: Settings, typed: tuple[dict[str, Any], str]
) -> None:
    endpoint, password = typed
    node = shutil.which("node")
    assert node is not None, "Node.js is needed (the official client's test)"
    assert (NODE / "node_modules" / "@clickhouse" / "client").is_dir(), (
        "the Node.js client is not installed: make test runs npm ci in tests/clients/node"
    )
    url = f"https://{endpoint['host']}:{endpoint['port']}"
    ran = subprocess.run(
        [node, "check.mjs", url, password, str(_ca(settings)), "typed", str(ROWS)],
        cwd=NODE,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    report = json.loads(ran.stdout.strip().splitlines()[-1])
    assert report["mismatches"] == 0, report["firstMismatch"]
    assert report["found"] == {
        "json": ROWS,
        "jsonRowsField": ROWS,
        "jsonEachRow": ROWS,
        "csvHeaders": 1,
        "csv": ROWS,
        "inserted": {"c": 100_000, "s": 4_999_950_000},
    }


def test_the_expected_rows_are_the_formulas_the_engine_ran() -> None:
    """The formulas above, checked on a few rows by hand (a wrong formula would fail every
    client alike, and say so here first)."""
    row = expected(70_001)
    assert row[0:5] == (70_001, -70_001, 8750.125, decimal.Decimal("7.0001"), "s70001")
    assert row[6] == EPOCH + dt.timedelta(hours=19, minutes=27, seconds=51, milliseconds=1)
    assert row[8] == uuid.UUID("00000000-0000-0000-0000-000000011171")
    assert str(row[9]) == "0.1.17.113"
    assert row[11] is not None
    assert expected(70_002)[11] is None
