"""ClickHouse clients nobody here wrote read a MergeTree table of many types (250,000 rows,
ordered, several engine blocks; ``tests/typed_table.py``) through a service's ClickHouse HTTP
interface, and each value is compared with the formula that made it. Each of them had read such
results wrong before (a header or a document per engine block). Here: clickhouse-connect
(query, row-block stream, Arrow, pandas, insert)."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from typing import Any

import clickhouse_connect
import pytest

from keyhouse.config import Settings
from tests.typed_table import (
    COLUMNS,
    EPOCH,
    NAMES,
    ROWS,
    SELECT,
    _ca,
    expected,
    typed,
)

pytestmark = [pytest.mark.services, pytest.mark.one_database]  # (tests/conftest.py)

__all__ = ["typed"]  # the fixture, used by name


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
        compress=False,  # compression has its own test; here the values (and less CPU)
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
        ch.insert("copy", rows[:50_000], column_names=NAMES)
        differing = ch.command(
            "SELECT count() FROM (SELECT * FROM copy EXCEPT SELECT * FROM typed WHERE id < 50000)"
        )
        assert (ch.command("SELECT count() FROM copy"), differing) == (50_000, 0)
    finally:
        ch.close()


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
