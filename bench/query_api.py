"""``make bench`` (Query API): what the Query API costs on top of the engine.

(d) ``SELECT 1`` through ``POST /service/{id}/run`` on a real ``keyhouse serve`` (one client,
wrk -c1, p50) against (e) the same query sent straight to an engine worker over its own protocol
(sequential, p50); then rows/s streaming a large result both ways. (f) clickhouse-connect
reading the
large result through the service's ClickHouse HTTP interface (HTTPS) against (g) the same client
reading it from an embedded engine directly (its chDB backend, no network). Prints the figures
and ratios of one run; it is not a test and never fails on a figure.
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
from pathlib import Path

import clickhouse_connect
import httpx2 as httpx
from clickhouse_connect.driver.client import Client

from keyhouse.engine.supervisor import EngineSupervisor

BIN = Path(sys.executable).parent
ROUNDS = int(os.environ.get("BENCH_QUERY_ROUNDS", "300"))
WRK_SECONDS = int(os.environ.get("BENCH_QUERY_SECONDS", "5"))
ROWS = int(os.environ.get("BENCH_QUERY_ROWS", "5000000"))
LARGE = f"SELECT number, toString(number) AS s FROM numbers({ROWS})"  # noqa: S608 (an int)


def _p50_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def through_keyhouse(tmp: Path) -> dict[str, float]:
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
            p50_ms = _wrk_p50_ms(f"{base}{run}", body, auth, tmp)
            started = time.perf_counter()
            rows = 0
            with client.stream("POST", run, content=json.dumps({"sql": LARGE})) as response:
                response.raise_for_status()
                for chunk in response.iter_bytes():
                    rows += chunk.count(b"\n")
            elapsed = time.perf_counter() - started
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
    assert rows == ROWS, rows
    return {
        "p50_ms": p50_ms,
        "rows_per_s": rows / elapsed,
        "connect_rows_per_s": connect_rows_per_s,
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


def embedded_client() -> float:
    client = clickhouse_connect.get_client(interface="chdb")
    try:
        return _client_rows_per_s(client)
    finally:
        client.close()


def straight_to_the_engine(tmp: Path) -> dict[str, float]:
    async def measure() -> dict[str, float]:
        supervisor = EngineSupervisor(tmp / "direct")
        service = uuid.uuid4()
        try:
            await supervisor.start(service)

            async def query(sql: str) -> int:
                chunks = await supervisor.query(service, {"sql": sql, "format": "TabSeparated"})
                return sum([chunk.count(b"\n") async for chunk in chunks])

            for _ in range(20):
                await query("SELECT 1")
            samples = []
            for _ in range(ROUNDS):
                started = time.perf_counter()
                await query("SELECT 1")
                samples.append(time.perf_counter() - started)
            started = time.perf_counter()
            rows = await query(LARGE)
            elapsed = time.perf_counter() - started
        finally:
            await supervisor.close()
        assert rows == ROWS, rows
        return {"p50_ms": _p50_ms(samples), "rows_per_s": rows / elapsed}

    return asyncio.run(measure())


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="keyhouse-bench-query-") as directory:
        tmp = Path(directory)
        api = through_keyhouse(tmp)
        direct = straight_to_the_engine(tmp)
        embedded = embedded_client()
    print(f"\nQuery API (one client: wrk -c1 for d, {ROUNDS} sequential for e; {ROWS:,} rows)")
    print(
        f"  (d) through /service/{{id}}/run   p50 {api['p50_ms']:.2f} ms   "
        f"{api['rows_per_s']:,.0f} rows/s"
    )
    print(
        f"  (e) straight to the engine      p50 {direct['p50_ms']:.2f} ms   "
        f"{direct['rows_per_s']:,.0f} rows/s"
    )
    print(f"  SELECT 1 overhead d-e           {api['p50_ms'] - direct['p50_ms']:.2f} ms")
    print(f"  streaming d/e                   {api['rows_per_s'] / direct['rows_per_s']:.2f}")
    print(f"\nclickhouse-connect reading {ROWS:,} rows (Native, decoded block by block)")
    print(f"  (f) through the service's HTTPS interface   {api['connect_rows_per_s']:,.0f} rows/s")
    print(f"  (g) from an embedded engine directly        {embedded:,.0f} rows/s")
    print(
        f"  f/g                                         {api['connect_rows_per_s'] / embedded:.2f}"
    )


if __name__ == "__main__":
    main()
