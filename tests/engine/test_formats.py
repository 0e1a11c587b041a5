"""Every output format answers exactly what the engine's own one-shot query gives, however many
blocks the result has, and streams as the engine formats it: piped out of the engine (chDB's
streaming API formats each block as a document of its own: a JSON answer of 200,000 rows came
back as three JSON documents, a CSVWithNames one with its header three times, a Parquet one as
three files; its one-shot query holds the whole answer in memory)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from keyhouse.engine.protocol import ClickHouseError
from keyhouse.engine.supervisor import EngineSupervisor
from keyhouse.engine.worker import returns_rows
from tests.engine.test_supervisor import _collect, _with_one_service

# Several blocks (the engine's blocks hold 65,409 rows here), several types.
MANY_BLOCKS = (
    "SELECT number, toString(number) AS s, toDecimal64(number, 2) AS d, "
    "[number, number + 1] AS a, toDate32('2026-01-01') + number % 1000 AS day "
    "FROM numbers(150000)"
)

# The engine's own one-shot answers, from a process of their own (chDB is never loaded into a
# process that starts engines), for each output format.
_REFERENCE = """
import json, sys, chdb
out, query = sys.argv[1], sys.argv[2]
handle = chdb.connect(":memory:")
handle.query("SET max_threads = 1")
names = handle.query(
    "SELECT name FROM system.formats WHERE is_output ORDER BY name", "TSV"
).bytes().decode().split()
answers = []
for name in names:
    try:
        whole = handle.query(query, name).bytes()
    except Exception:  # a format that needs a schema or a setting: not this test's
        handle.close()  # (a handle may keep a failed query's output and prefix the next)
        handle = chdb.connect(":memory:")
        handle.query("SET max_threads = 1")
        continue
    open(f"{out}/{name}.whole", "wb").write(whole)
    answers.append(name)
print(json.dumps(answers))
"""


def _reference(directory: Path) -> list[str]:
    directory.mkdir()
    done = subprocess.run(  # noqa: S603 (this interpreter, this test's script)
        [sys.executable, "-c", _REFERENCE, str(directory), MANY_BLOCKS],
        capture_output=True,
        check=True,
        timeout=240,
    )
    answers: list[str] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return answers


def test_every_format_through_the_worker_is_the_engines_own_answer(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    answers = _reference(reference)
    assert {"JSON", "CSVWithNames", "Parquet", "Arrow", "ORC", "Values", "XML"} <= set(answers)

    async def scenario(supervisor: EngineSupervisor, service: uuid.UUID) -> None:
        different = []
        for name in sorted(answers):
            # One thread: the engine cuts blocks the same way in every run (Pretty formats draw
            # a table per block; under load, several threads cut them differently).
            got = await _collect(
                supervisor, service, sql=MANY_BLOCKS, format=name, settings={"max_threads": 1}
            )
            if got != _comparable(name, (reference / f"{name}.whole").read_bytes(), got):
                different.append(name)
        assert different == [], different
        # The query's own FORMAT clause: answered whole, whatever format the request names.
        clause = f"{MANY_BLOCKS} FORMAT JSON"
        got = await _collect(supervisor, service, sql=clause, format="TabSeparated")
        assert json.loads(got)["rows"] == 150_000
        # Comments, parentheses, a trailing semicolon, the word FORMAT in a string.
        assert (reference / "TSV.whole").read_bytes() == await _collect(
            supervisor, service, sql=f"{MANY_BLOCKS} -- FORMAT JSON", format="TSV"
        )
        for sql in (
            f"/* a /* nested */ comment */ -- and a line\n({MANY_BLOCKS}) -- trailing",
            f"{MANY_BLOCKS};  ",
            f"{MANY_BLOCKS} WHERE s != 'FORMAT CSV'",
        ):
            got = await _collect(supervisor, service, sql=sql, format="JSONCompact")
            assert json.loads(got)["rows"] == 150_000, sql

    _with_one_service(tmp_path / "service", scenario)


def _comparable(name: str, expected: bytes, got: bytes) -> bytes:
    """The fields that legitimately differ between two runs of one query: JSON statistics
    (elapsed time) and XML's, taken from the answer being compared."""
    if name in {
        "JSON",
        "JSONCompact",
        "JSONStrings",
        "JSONCompactStrings",
        "JSONColumnsWithMetadata",
    }:
        mine, theirs = json.loads(expected), json.loads(got)
        if "statistics" in mine:
            mine["statistics"]["elapsed"] = theirs["statistics"]["elapsed"]
        return got if mine == theirs else expected
    if name.endswith("WithProgress"):  # progress lines hold the elapsed time
        lines = [line for line in expected.splitlines() if b'"progress"' not in line]
        mine = [line for line in got.splitlines() if b'"progress"' not in line]
        return got if lines == mine else expected
    if name == "Avro":  # each file has a random sync marker (its last 16 bytes)
        return expected.replace(expected[-16:], got[-16:])
    if name == "XML":
        head, _, _ = expected.partition(b"<statistics>")
        return got if got.startswith(head) else expected
    return expected


def test_only_a_query_that_returns_rows_is_piped() -> None:
    for sql in (
        "SELECT 1",
        "  with 1 AS x SELECT x",
        "((SELECT 1))",
        "-- a line\n# another\n#!and one\nSELECT 1",
        "/* a /* nested */ comment */ SHOW TABLES",
        "FROM t SELECT x",
        "DESCRIBE t",
        "EXPLAIN SELECT 1",
        "EXISTS t",
    ):
        assert returns_rows(sql), sql
    for sql in (
        "INSERT INTO t VALUES (1)",
        "/* SELECT */ INSERT INTO t SELECT 1",
        "/* /* */ SELECT */ INSERT INTO t VALUES (1)",  # the comment ends at its last */
        "/* never closed SELECT 1",
        "-- only a comment, SELECT 1",
        "CREATE TABLE t AS SELECT 1",
        "SET ROLE x",
        "",
        "1",
    ):
        assert not returns_rows(sql), sql


def test_an_answer_streams_as_its_reader_reads_and_ends_when_the_reader_leaves(
    tmp_path: Path,
) -> None:
    """A JSON answer of 1.3 GB is piped: the engine writes while the reader reads, waits while
    it does not (the query is still running after the first piece), and ends once the reader
    has gone (a one-shot query would format the whole answer first, in the worker's memory)."""
    big = "SELECT number, toString(number) AS s FROM numbers(50000000)"

    async def running(supervisor: EngineSupervisor, service: uuid.UUID) -> int:
        sql = "SELECT count() FROM system.processes WHERE query LIKE '%numbers(50000000)%'"
        counted = await _collect(supervisor, service, sql=f"{sql} AND query NOT LIKE '%count()%'")
        return int(counted)

    async def scenario(supervisor: EngineSupervisor, service: uuid.UUID) -> None:
        chunks = await supervisor.query(service, {"sql": big, "format": "JSON"})
        assert isinstance(chunks, AsyncIterator)
        first = b""
        async for chunk in chunks:
            first += chunk
            if len(first) > 1000:
                break
        assert first.startswith(b'{\n\t"meta":')
        await asyncio.sleep(0.5)
        assert await running(supervisor, service) == 1  # waiting for its reader
        await chunks.aclose()
        for _ in range(100):  # the query ends at its next write
            if await running(supervisor, service) == 0:
                break
            await asyncio.sleep(0.1)
        assert await running(supervisor, service) == 0
        assert await _collect(supervisor, service, sql="SELECT 2") == b"2\n"

    _with_one_service(tmp_path, scenario)


def test_a_query_that_fails_part_way_leaves_nothing_in_its_session(tmp_path: Path) -> None:
    """The engine keeps a failed one-shot query's output in the handle and prefixed it to the
    next answer: in an HTTP session, ``SELECT 1`` answered the failed query's rows."""

    async def scenario(supervisor: EngineSupervisor, service: uuid.UUID) -> None:
        session = {"session_id": uuid.uuid4().hex}
        failing = "SELECT throwIf(number = 70000) FROM numbers(100000)"
        for name in ("JSON", "TabSeparated"):
            with pytest.raises(ClickHouseError) as failed:
                await _collect(supervisor, service, sql=failing, format=name, **session)
            assert failed.value.code == 395
            assert await _collect(supervisor, service, sql="SELECT 1", **session) == b"1\n"

    _with_one_service(tmp_path, scenario)
