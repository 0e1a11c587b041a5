"""``make bench`` (engine sandbox): what bubblewrap's sandbox costs an engine.

Two engine workers on one machine, one sandboxed (the default) and one not
(``KEYHOUSE_ENGINE_SANDBOX=off``), each queried straight over its own protocol (no API): the
start time, ``SELECT 1`` sequentially (p50) and rows/s streaming a large result, in interleaved
rounds, medians. Prints the figures and the differences of one run; it is not a test and never
fails on a figure.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from keyhouse.engine.sandbox import Sandbox
from keyhouse.engine.supervisor import EngineSupervisor

ROUNDS = int(os.environ.get("BENCH_SANDBOX_ROUNDS", "5"))
QUERIES = int(os.environ.get("BENCH_SANDBOX_QUERIES", "300"))
ROWS = int(os.environ.get("BENCH_QUERY_ROWS", "5000000"))
LARGE = f"SELECT number, toString(number) AS s FROM numbers({ROWS})"  # noqa: S608 (an int)


class Engine:
    def __init__(self, directory: Path, sandbox: Sandbox) -> None:
        self.supervisor = EngineSupervisor(directory, sandbox=sandbox)
        self.service = uuid.uuid4()
        self.starts: list[float] = []
        self.select_1: list[float] = []
        self.rows_per_s: list[float] = []

    async def start(self) -> None:
        started = time.perf_counter()
        await self.supervisor.start(self.service)
        self.starts.append(time.perf_counter() - started)

    async def stop(self) -> None:
        await self.supervisor.stop(self.service)

    async def _query(self, sql: str) -> int:
        request = {"sql": sql, "format": "TabSeparated"}
        chunks = await self.supervisor.query(self.service, request)
        return sum([chunk.count(b"\n") async for chunk in chunks])

    async def round(self) -> None:
        samples = []
        for _ in range(QUERIES):
            started = time.perf_counter()
            await self._query("SELECT 1")
            samples.append(time.perf_counter() - started)
        self.select_1.append(statistics.median(samples))
        started = time.perf_counter()
        rows = await self._query(LARGE)
        assert rows == ROWS, rows  # noqa: S101 (a benchmark's own sanity check)
        self.rows_per_s.append(rows / (time.perf_counter() - started))


async def run(directory: Path) -> tuple[Engine, Engine]:
    sandboxed = Engine(directory / "sandboxed", Sandbox())
    bare = Engine(directory / "bare", Sandbox(enabled=False))
    try:
        for _ in range(ROUNDS):
            for engine in (sandboxed, bare):
                await engine.start()
                await engine.round()
                await engine.stop()
    finally:
        for engine in (sandboxed, bare):
            await engine.supervisor.close()
    return sandboxed, bare


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="keyhouse-bench-sandbox-") as directory:
        sandboxed, bare = asyncio.run(run(Path(directory)))
    median = statistics.median
    print(
        f"\nEngine sandbox (medians of {ROUNDS} interleaved rounds; {QUERIES} sequential "
        f"SELECT 1 each; {ROWS:,} rows)"
    )
    for name, engine in (("sandboxed (bubblewrap)", sandboxed), ("no sandbox", bare)):
        print(
            f"  {name:24} start {median(engine.starts):.2f} s   "
            f"SELECT 1 p50 {median(engine.select_1) * 1000:.3f} ms   "
            f"{median(engine.rows_per_s):,.0f} rows/s"
        )
    overhead = (median(sandboxed.select_1) - median(bare.select_1)) * 1000
    ratio = median(sandboxed.rows_per_s) / median(bare.rows_per_s)
    print(f"  per-query overhead               {overhead:+.3f} ms (goal < 0.3)")
    print(f"  streaming sandboxed/bare         {ratio:.3f} (goal >= 0.95)")


if __name__ == "__main__":
    main()
