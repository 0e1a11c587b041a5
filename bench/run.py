"""``make bench``: requests/s and latency of (a) a raw-ASGI yardstick, (b) GET /healthz and
(c) an authenticated GET /v1/organizations/{id}/keys/{keyId}, on SQLite and PostgreSQL; then
c's p50 at one client, a list of 100 keys at one client, c's p50 with 100,000 keys in the
database, and (SQLite) c with two worker processes.

One run, wrk on loopback, the rate limit off; ``BENCH_DURATION`` (10s), ``BENCH_CONNECTIONS``
(32) and ``BENCH_DATABASES`` (``sqlite,postgresql``) narrow it. Prints figures and ratios against
the goals; it is not a test and never fails on a figure.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx2 as httpx
import psycopg

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
PEPPER = "bench-pepper"
DURATION = os.environ.get("BENCH_DURATION", "10s")
CONNECTIONS = os.environ.get("BENCH_CONNECTIONS", "32")
POSTGRES = "postgresql://127.0.0.1:5432/test"


def postgres_url() -> str:
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute('DROP DATABASE IF EXISTS "keyhouse_bench" WITH (FORCE)')
        conn.execute('CREATE DATABASE "keyhouse_bench"')
    return "postgresql+psycopg://127.0.0.1:5432/keyhouse_bench"


def wait_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("server exited")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


def wrk(url: str, auth: str | None, connections: str = CONNECTIONS) -> dict[str, float]:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{DURATION}", "--latency", url]
    if auth:
        command[1:1] = ["-H", f"Authorization: Basic {auth}"]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if non_2xx:
        raise RuntimeError(f"{url}: {non_2xx.group(1)} non-2xx responses")

    def percentile(name: str) -> float:
        value, unit = re.search(rf"{name}%\s+([\d.]+)(us|ms|s)", output).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return {"rps": rps, "p50": percentile("50"), "p99": percentile("99")}


def serve(command: list[str], env: dict[str, str], health: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_healthy(health, process)
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(timeout=15)


def bench_database(name: str, database_url: str) -> dict[str, dict[str, float]]:
    env = {**os.environ, "KEYHOUSE_PEPPER": PEPPER, "BENCH_DATABASE_URL": database_url}
    env["PYTHONPATH"] = str(ROOT / "bench")
    boot = json.loads(
        subprocess.run(
            [
                str(BIN / "keyhouse"),
                "bootstrap",
                "--org-name",
                "Bench",
                "--email",
                "bench@example.com",
                "--database-url",
                database_url,
                "--json",
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    auth = base64.b64encode(f"{boot['keyId']}:{boot['keySecret']}".encode()).decode()
    results: dict[str, dict[str, float]] = {}
    port = "18099"
    raw = serve(
        [
            str(BIN / "granian"),
            "--interface",
            "asgi",
            "--port",
            port,
            "--no-ws",
            "--log-level",
            "warning",
            "raw_app:app",
        ],
        env,
        f"http://127.0.0.1:{port}/",
    )
    try:
        results["a raw ASGI"] = wrk(f"http://127.0.0.1:{port}/", auth)
    finally:
        stop(raw)
    port = "18098"
    command = [
        str(BIN / "keyhouse"),
        "serve",
        "--port",
        port,
        "--database-url",
        database_url,
        "--rate-limit",
        "off",
    ]
    env["KEYHOUSE_MAX_KEYS_PER_ORGANIZATION"] = "1000"
    env["KEYHOUSE_SERVICES_ENABLED"] = "false"
    base = f"http://127.0.0.1:{port}"
    org = f"{base}/v1/organizations/{boot['organizationId']}"
    credentials = (boot["keyId"], boot["keySecret"])
    server = serve(command, env, f"{base}/healthz")
    try:
        key_uuid = httpx.get(f"{org}/keys", auth=credentials).json()["result"][0]["id"]
        get_key = f"{org}/keys/{key_uuid}"
        results["b /healthz"] = wrk(f"{base}/healthz", None)
        results["c GET key"] = wrk(get_key, auth)
        results["c, one client"] = wrk(get_key, auth, "1")
        for index in range(99):
            httpx.post(
                f"{org}/keys", json={"name": f"k{index}", "roles": ["developer"]}, auth=credentials
            ).raise_for_status()
        results["list 100 keys"] = wrk(f"{org}/keys?limit=100", auth, "1")
        results["c, 100 keys"] = wrk(get_key, auth, "1")
        _add_keys(database_url, boot["organizationId"], 100_000)
        results["c, 100k keys"] = wrk(get_key, auth, "1")
    finally:
        stop(server)
    if name == "SQLite":
        two = serve([*command, "--workers", "2"], env, f"{base}/healthz")
        try:
            results["c, 2 workers"] = wrk(get_key, auth)
        finally:
            stop(two)
    print(
        f"\n{name}: wrk -t1 -c{CONNECTIONS} -d{DURATION} (one client: -c1), one worker unless said"
    )
    print(f"  {'':16} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for label, figures in results.items():
        print(f"  {label:16} {figures['rps']:9.0f} {figures['p50']:8.2f} {figures['p99']:8.2f}")
    a, b, c = (results[k]["rps"] for k in ("a raw ASGI", "b /healthz", "c GET key"))
    c_goal, p50_goal = (0.3, 0.5) if name == "SQLite" else (0.5, 1.0)
    print(f"  c/a = {c / a:.2f} (goal >= {c_goal})   c/b = {c / b:.2f} (goal >= 0.5)")
    print(
        f"  c p50 at one client {results['c, one client']['p50']:.2f} ms (goal <= {p50_goal})   "
        f"list of 100 keys p50 {results['list 100 keys']['p50']:.2f} ms (goal <= 5)"
    )
    flat = results["c, 100k keys"]["p50"] / results["c, 100 keys"]["p50"]
    print(f"  c p50 with 100,000 keys / with 100 keys = {flat:.2f} (goal: flat, ~1.0)")
    if "c, 2 workers" in results:
        print(f"  two workers / one = {results['c, 2 workers']['rps'] / c:.2f} (goal >= 1.7)")
    return results


def _add_keys(database_url: str, organization_id: str, count: int) -> None:
    """Keys of the organization straight into the table (as many as an old installation may
    hold): unique random lookup hashes, no roles."""
    from sqlalchemy import create_engine, insert, text

    from keyhouse.db import normalize_database_url, utcnow
    from keyhouse.models import API_KEYS

    engine = create_engine(normalize_database_url(database_url))
    now = utcnow()
    rows = [
        {
            "id": uuid.uuid4(),
            "organization_id": uuid.UUID(organization_id),
            "name": f"bulk {index}",
            "key_id_hash": secrets.token_hex(32),
            "key_secret_hash": secrets.token_hex(32),
            "key_suffix": "bulk",
            "state": "enabled",
            "created_at": now,
        }
        for index in range(count)
    ]
    with engine.begin() as connection:
        for start in range(0, count, 5000):
            connection.execute(insert(API_KEYS), rows[start : start + 5000])
    with engine.begin() as connection:
        connection.execute(text("ANALYZE"))  # as autovacuum (or an operator) would, later
    engine.dispose()


def main() -> None:
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    databases = os.environ.get("BENCH_DATABASES", "sqlite,postgresql").split(",")
    if "sqlite" in databases:
        with tempfile.TemporaryDirectory() as tmp:
            bench_database("SQLite", f"sqlite:///{tmp}/bench.db")
    if "postgresql" in databases:
        bench_database("PostgreSQL", postgres_url())


if __name__ == "__main__":
    main()
