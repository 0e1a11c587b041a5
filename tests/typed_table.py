"""The table real clients read in ``tests/test_clients*.py``: a MergeTree table of many types
(250,000 rows, ordered, read back as four engine blocks) on a running service, each value a
formula of its row number, and the rows as clickhouse-connect reads them."""

from __future__ import annotations

import datetime as dt
import decimal
import ipaddress
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient

from keyhouse.config import Settings
from tests.conftest import Org
from tests.services import create, stop, wait_for

ROWS = 250_000
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
        # What the clients are here for: an answer the engine makes of several blocks (a
        # client that reads a header or a document per block reads it wrong).
        counted = "SELECT uniqExact(blockNumber()) FROM (" + SELECT + ")"  # noqa: S608 (constants)
        blocks = http.post("/", content=counted.encode())
        assert int(blocks.text) >= 4, blocks.text
    yield endpoint, password
    stop(client, org, service["id"])


def _http(settings: Settings, endpoint: dict[str, Any], password: str) -> httpx.Client:
    return httpx.Client(
        base_url=f"https://{endpoint['host']}:{endpoint['port']}",
        auth=("default", password),
        verify=ssl.create_default_context(cafile=str(_ca(settings))),
        timeout=300,
    )


def _ca(settings: Settings) -> Path:
    return settings.data_dir / "tls" / "ca.pem"
