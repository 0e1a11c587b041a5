"""``make bench`` (Query API): what the Query API costs on top of the engine.

(d) ``SELECT 1`` through ``POST /service/{id}/run`` on a real ``keyhouse serve`` (one client,
wrk -c1, p50) against (e) the same query sent straight to an engine worker over its own protocol
(sequential, p50); then rows/s streaming a large result both ways; in interleaved rounds,
medians. (f) clickhouse-connect reading the large result through the service's ClickHouse HTTP
interface (HTTPS) against (g) the same client reading it from an embedded engine directly (its
chDB backend, no network). (i) The engine's own in-process rates for the large result, the
reference issue 16 sets: chDB in this process, TabSeparated through its streaming API and
Parquet through its one-shot query (the fastest each offers for that format). Prints the
figures and ratios of one run; it is not a test and never fails on a figure.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import clickhouse_connect
import httpx2 as httpx
from clickhouse_connect.driver.client import Client

from keyhouse.engine.supervisor import EngineSupervisor

BIN = Path(sys.executable).parent
ROUNDS = int(os.environ.get("BENCH_QUERY_ROUNDS", "3"))
QUERIES = int(os.environ.get("BENCH_QUERY_QUERIES", "200"))
WRK_SECONDS = int(os.environ.get("BENCH_QUERY_SECONDS", "3"))
ROWS = int(os.environ.get("BENCH_QUERY_ROWS", "5000000"))
LARGE = f"SELECT number, toString(number) AS s FROM numbers({ROWS})"  # noqa: S608 (an int)


def _p50_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def through_keyhouse(tmp: Path, direct: Direct) -> dict[str, float]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("KEYHOUSE_")},
        "KEYHOUSE_PEPPER": "bench-pepper",
        "KEYHOUSE_DATA_DIR": str(tmp / "data"),
        "KEYHOUSE_QUERY_MAX_RESULT_BYTES": "0",
    }
    database = f"sqlite:///{tmp}/keyhouse.db"
    boot = json.loads(
        subprocess.run(
            [
                str(BIN / "keyhouse"),
                "bootstrap",
                "--org-name",
                "Bench",
                "--email",
                "b@example.com",
                "--service",
                "bench",
                "--json",
                "--database-url",
                database,
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    port = 18000 + os.getpid() % 1000
    server = subprocess.Popen(
        [
            str(BIN / "keyhouse"),
            "serve",
            "--port",
            str(port),
            "--rate-limit",
            "off",
            "--database-url",
            database,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    auth = (boot["keyId"], boot["keySecret"])
    sid = boot["serviceId"]
    try:
        with httpx.Client(base_url=base, auth=auth, timeout=120) as client:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    got = client.get(f"/v1/organizations/{boot['organizationId']}/services/{sid}")
                    if got.status_code == 200 and got.json()["result"]["state"] == "running":
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            client.post(
                f"/v1/organizations/{boot['organizationId']}/services/{sid}/serviceQueryEndpoint",
                json={
                    "openApiKeys": [boot["keyId"]],
                    "roles": ["sql_console_admin"],
                    "allowedOrigins": "*",
                },
            ).raise_for_status()
            run = f"/service/{sid}/run"
            body = json.dumps({"sql": "SELECT 1"})
            client.post(run, content=body).raise_for_status()
            # Interleaved rounds (d, then e, three times), medians: the machine's speed drifts
            # from minute to minute, and a ratio of figures taken minutes apart drifts with it.
            port_url = f"https://127.0.0.1:{int(boot['serviceAddress'].rsplit(':', 1)[1])}/"
            port_auth = ("default", boot["servicePassword"])
            d_p50, e_p50, d_rate, e_rate = [], [], [], []
            h_p50, p_rate, q_rate = [], [], []
            for _ in range(ROUNDS):
                d_p50.append(_wrk_p50_ms(f"{base}{run}", body, auth, tmp))
                h_p50.append(_wrk_p50_ms(port_url, "SELECT 1", port_auth, tmp))
                e_p50.append(direct.select_1_p50_ms())
                started = time.perf_counter()
                size = 0
                parquet = json.dumps({"sql": LARGE})
                with client.stream(
                    "POST", run, params={"format": "Parquet"}, content=parquet
                ) as response:
                    response.raise_for_status()
                    for chunk in response.iter_bytes():
                        size += len(chunk)
                assert size > ROWS, size
                p_rate.append(ROWS / (time.perf_counter() - started))
                q_rate.append(direct.large_rows_per_s("Parquet"))
                started = time.perf_counter()
                rows = 0
                with client.stream("POST", run, content=json.dumps({"sql": LARGE})) as response:
                    response.raise_for_status()
                    for chunk in response.iter_bytes():
                        rows += chunk.count(b"\n")
                assert rows == ROWS, rows
                d_rate.append(rows / (time.perf_counter() - started))
                e_rate.append(direct.large_rows_per_s())
            interface = clickhouse_connect.get_client(
                host="127.0.0.1",
                port=int(boot["serviceAddress"].rsplit(":", 1)[1]),
                username="default",
                password=boot["servicePassword"],
                secure=True,
                ca_cert=boot["caFile"],
            )
            try:
                connect_rows_per_s = _client_rows_per_s(interface)
            finally:
                interface.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {
        "d_p50_ms": statistics.median(d_p50),
        "e_p50_ms": statistics.median(e_p50),
        "d_rows_per_s": statistics.median(d_rate),
        "e_rows_per_s": statistics.median(e_rate),
        "connect_rows_per_s": connect_rows_per_s,
        "h_p50_ms": statistics.median(h_p50),
        "parquet_rows_per_s": statistics.median(p_rate),
        "engine_parquet_rows_per_s": statistics.median(q_rate),
    }


def _wrk_p50_ms(url: str, body: str, auth: tuple[str, str], tmp: Path) -> float:
    """p50 of one client sending POSTs back to back (wrk -c1: a C client, so that the figure
    is the server's and not the benchmark's HTTP library's)."""
    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    script = tmp / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(body)}\n"
        'wrk.headers["Content-Type"] = "text/plain;charset=UTF-8"\n'
        f'wrk.headers["Authorization"] = "Basic {token}"\n'
    )
    output = subprocess.run(
        ["wrk", "-t1", "-c1", f"-d{WRK_SECONDS}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "Non-2xx" in output:
        raise RuntimeError(output)
    value, unit = re.search(r"50%\s+([\d.]+)(us|ms|s)", output).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def _client_rows_per_s(client: Client) -> float:
    """clickhouse-connect reading LARGE as its users do, block by block (decoded to Python)."""
    client.query("SELECT 1")
    started = time.perf_counter()
    rows = 0
    with client.query_row_block_stream(LARGE) as blocks:
        for block in blocks:
            rows += len(block)
    elapsed = time.perf_counter() - started
    assert rows == ROWS, rows
    return rows / elapsed


def in_process() -> dict[str, float]:
    """(i): rows/s of the large result from chDB in this process, medians of ``ROUNDS``: as an
    embedded user reads it (TabSeparated through the streaming API, Parquet through the one-shot
    query) and through a pipe as the worker reads it (the engine's fastest, the stricter
    reference)."""
    import os
    import threading

    import chdb

    handle = chdb.connect(":memory:")  # type: ignore[no-untyped-call]

    def piped(fmt: str) -> int:
        read, write = os.pipe()
        size = 0

        def drain() -> None:
            nonlocal size
            while chunk := os.read(read, 1 << 20):
                size += len(chunk)

        reader = threading.Thread(target=drain)
        reader.start()
        try:
            handle.query(f"{LARGE}\nINTO OUTFILE '/proc/self/fd/{write}' APPEND", fmt)
        finally:
            os.close(write)
            reader.join()
            os.close(read)
        return size

    def rate(read: Callable[[], object]) -> float:
        samples = []
        for _ in range(ROUNDS):
            started = time.perf_counter()
            read()
            samples.append(ROWS / (time.perf_counter() - started))
        return statistics.median(samples)

    try:
        return {
            "tsv": rate(lambda: sum(len(c.bytes()) for c in handle.send_query(LARGE, "TSV"))),
            "tsv_piped": rate(lambda: piped("TSV")),
            "parquet": rate(lambda: handle.query(LARGE, "Parquet").bytes()),
            "parquet_piped": rate(lambda: piped("Parquet")),
        }
    finally:
        handle.close()


def embedded_client() -> float:
    client = clickhouse_connect.get_client(interface="chdb")
    try:
        return _client_rows_per_s(client)
    finally:
        client.close()


class Direct:
    """(e): an engine worker of its own, queried over its own protocol (no API), on an event
    loop kept for the whole run so that its rounds interleave with the API's."""

    def __init__(self, runner: asyncio.Runner, tmp: Path) -> None:
        self.runner = runner
        self.supervisor = EngineSupervisor(tmp / "direct")
        self.service = uuid.uuid4()
        runner.run(self.supervisor.start(self.service))
        for _ in range(20):
            runner.run(self._query("SELECT 1"))

    async def _query(self, sql: str, fmt: str = "TabSeparated") -> int:
        chunks = await self.supervisor.query(self.service, {"sql": sql, "format": fmt})
        if fmt != "TabSeparated":  # a file: its size, not its lines
            return sum([len(chunk) async for chunk in chunks])
        return sum([chunk.count(b"\n") async for chunk in chunks])

    def select_1_p50_ms(self) -> float:
        async def measure() -> float:
            samples = []
            for _ in range(QUERIES):
                started = time.perf_counter()
                await self._query("SELECT 1")
                samples.append(time.perf_counter() - started)
            return _p50_ms(samples)

        return self.runner.run(measure())

    def large_rows_per_s(self, fmt: str = "TabSeparated") -> float:
        started = time.perf_counter()
        counted = self.runner.run(self._query(LARGE, fmt))
        assert counted == ROWS or fmt != "TabSeparated", counted
        return ROWS / (time.perf_counter() - started)

    def close(self) -> None:
        self.runner.run(self.supervisor.close())


def main() -> None:
    with (
        tempfile.TemporaryDirectory(prefix="keyhouse-bench-query-") as directory,
        asyncio.Runner() as runner,
    ):
        tmp = Path(directory)
        direct = Direct(runner, tmp)
        try:
            api = through_keyhouse(tmp, direct)
        finally:
            direct.close()
        embedded = embedded_client()
        engine = in_process()
    print(
        f"\nQuery API (medians of {ROUNDS} interleaved rounds; one client: wrk -c1 "
        f"{WRK_SECONDS}s for d, {QUERIES} sequential for e; {ROWS:,} rows)"
    )
    print(
        f"  (d) through /service/{{id}}/run   p50 {api['d_p50_ms']:.2f} ms   "
        f"{api['d_rows_per_s']:,.0f} rows/s"
    )
    print(
        f"  (e) straight to the engine      p50 {api['e_p50_ms']:.2f} ms   "
        f"{api['e_rows_per_s']:,.0f} rows/s"
    )
    overhead = api["d_p50_ms"] - api["e_p50_ms"]
    print(f"  SELECT 1 overhead d-e           {overhead:.2f} ms (goal <= 1)")
    ratio = api["d_rows_per_s"] / api["e_rows_per_s"]
    print(f"  streaming d/e                   {ratio:.2f} (goal >= 0.9)")
    print(f"  Parquet through the Query API   {api['parquet_rows_per_s']:,.0f} rows/s")
    print(f"  Parquet straight to the engine  {api['engine_parquet_rows_per_s']:,.0f} rows/s")
    parquet = api["parquet_rows_per_s"] / api["engine_parquet_rows_per_s"]
    print(f"  Parquet API/engine              {parquet:.2f} (goal >= 0.9)")
    print(
        f"  (h) SELECT 1 on the service's HTTPS port   p50 {api['h_p50_ms']:.2f} ms; "
        f"overhead h-e {api['h_p50_ms'] - api['e_p50_ms']:.2f} ms (goal <= 1)"
    )
    print(f"\nThe engine's own in-process rate (i), {ROWS:,} rows")
    for name, label, door in (
        ("tsv", "TabSeparated, streaming API", "d_rows_per_s"),
        ("tsv_piped", "TabSeparated, piped", "d_rows_per_s"),
        ("parquet", "Parquet, one-shot", "parquet_rows_per_s"),
        ("parquet_piped", "Parquet, piped", "parquet_rows_per_s"),
    ):
        print(
            f"  {label:<30}{engine[name]:>14,.0f} rows/s   Query API / i "
            f"{api[door] / engine[name]:.2f} (goal >= 0.9)"
        )
    print(f"\nclickhouse-connect reading {ROWS:,} rows (Native, decoded block by block)")
    print(f"  (f) through the service's HTTPS interface   {api['connect_rows_per_s']:,.0f} rows/s")
    print(f"  (g) from an embedded engine directly        {embedded:,.0f} rows/s")
    print(
        f"  f/g                                         {api['connect_rows_per_s'] / embedded:.2f}"
    )


if __name__ == "__main__":
    main()
