"""``make bench``: requests/s and latency of (a) a raw-ASGI yardstick, (b) GET /healthz and
(c) an authenticated GET /v1/organizations/{id}/keys/{keyId}, on SQLite and PostgreSQL; then
c's p50 at one client, a list of 100 keys at one client, c's p50 at one client on a database
holding 100,000 more keys, and (SQLite) c with two worker processes.

Every server of the comparison runs at once and the figures are taken in interleaved rounds
(medians), wrk on loopback, the rate limit off; ``BENCH_DURATION`` (4s a figure),
``BENCH_ROUNDS`` (3), ``BENCH_CONNECTIONS`` (32) and ``BENCH_DATABASES`` (``sqlite,postgresql``)
tune it. Prints figures and ratios against the goals; it is not a test and never fails on a
figure.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import statistics
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
DURATION = os.environ.get("BENCH_DURATION", "4s")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
CONNECTIONS = os.environ.get("BENCH_CONNECTIONS", "32")
POSTGRES = "postgresql://127.0.0.1:5432/test"


def postgres_url(database: str) -> str:
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{database}"')
    return f"postgresql+psycopg://127.0.0.1:5432/{database}"


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


def _bootstrap(database_url: str, env: dict[str, str]) -> dict[str, str]:
    command = [str(BIN / "keyhouse"), "bootstrap", "--org-name", "Bench"]
    command += ["--email", "bench@example.com", "--database-url", database_url, "--json"]
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    boot: dict[str, str] = json.loads(output)
    return boot


def _keyhouse(database_url: str, port: int, env: dict[str, str], workers: int = 1) -> Server:
    command = [str(BIN / "keyhouse"), "serve", "--port", str(port)]
    command += ["--database-url", database_url, "--rate-limit", "off", "--workers", str(workers)]
    return Server(serve(command, env, f"http://127.0.0.1:{port}/healthz"), port)


class Server:
    def __init__(self, process: subprocess.Popen[bytes], port: int) -> None:
        self.process = process
        self.base = f"http://127.0.0.1:{port}"


def bench_database(name: str, database_url: str, large_url: str) -> dict[str, dict[str, float]]:
    """Every server of the comparison up at once, then rounds of every figure in turn, and
    each figure's median over the rounds: the machine's speed drifts from minute to minute,
    and a ratio of figures taken minutes apart drifts with it. ``large_url`` is a second
    database holding 100,000 more keys, served beside the first."""
    env = {**os.environ, "KEYHOUSE_PEPPER": PEPPER, "BENCH_DATABASE_URL": database_url}
    env["PYTHONPATH"] = str(ROOT / "bench")
    env["KEYHOUSE_MAX_KEYS_PER_ORGANIZATION"] = "1000"
    env["KEYHOUSE_SERVICES_ENABLED"] = "false"
    boot = _bootstrap(database_url, env)
    large_boot = _bootstrap(large_url, env)
    _add_keys(large_url, large_boot["organizationId"], 100_000)
    raw_port = 18099
    raw = serve(
        [str(BIN / "granian"), "--interface", "asgi", "--port", str(raw_port), "--no-ws"]
        + ["--log-level", "warning", "raw_app:app"],
        env,
        f"http://127.0.0.1:{raw_port}/",
    )
    servers = {"one": _keyhouse(database_url, 18098, env)}
    servers["large"] = _keyhouse(large_url, 18097, env)
    if name == "SQLite":
        servers["two"] = _keyhouse(database_url, 18096, env, workers=2)
    try:
        urls = {}
        for label, (server, booted) in {
            "one": (servers["one"], boot),
            "large": (servers["large"], large_boot),
        }.items():
            org = f"{server.base}/v1/organizations/{booted['organizationId']}"
            credentials = (booted["keyId"], booted["keySecret"])
            key_uuid = httpx.get(f"{org}/keys?limit=1", auth=credentials).json()["result"][0]["id"]
            urls[label] = (org, f"{org}/keys/{key_uuid}", credentials)
        org, get_key, credentials = urls["one"]
        for index in range(99):
            httpx.post(
                f"{org}/keys", json={"name": f"k{index}", "roles": ["developer"]}, auth=credentials
            ).raise_for_status()
        auth = _basic(credentials)
        large_auth = _basic(urls["large"][2])
        figures: dict[str, tuple[str, str | None, str]] = {
            "a raw ASGI": (f"http://127.0.0.1:{raw_port}/", auth, CONNECTIONS),
            "b /healthz": (f"{servers['one'].base}/healthz", None, CONNECTIONS),
            "c GET key": (get_key, auth, CONNECTIONS),
            "c, one client": (get_key, auth, "1"),
            "list 100 keys": (f"{org}/keys?limit=100", auth, "1"),
            "c, 100k keys": (urls["large"][1], large_auth, "1"),
        }
        if "two" in servers:
            figures["c, 2 workers"] = (
                get_key.replace(servers["one"].base, servers["two"].base),
                auth,
                CONNECTIONS,
            )
        rounds: dict[str, list[dict[str, float]]] = {label: [] for label in figures}
        for _ in range(ROUNDS):
            for label, (url, credential, connections) in figures.items():
                rounds[label].append(wrk(url, credential, connections))
    finally:
        stop(raw)
        for server in servers.values():
            stop(server.process)
    results = {
        label: {
            key: statistics.median(sample[key] for sample in samples)
            for key in ("rps", "p50", "p99")
        }
        for label, samples in rounds.items()
    }
    print(
        f"\n{name}: medians of {ROUNDS} interleaved rounds, wrk -t1 -c{CONNECTIONS} -d{DURATION} "
        "(one client: -c1), one worker unless said"
    )
    print(f"  {'':16} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for label, values in results.items():
        print(f"  {label:16} {values['rps']:9.0f} {values['p50']:8.2f} {values['p99']:8.2f}")
    a, b, c = (results[k]["rps"] for k in ("a raw ASGI", "b /healthz", "c GET key"))
    c_goal, p50_goal = (0.3, 0.5) if name == "SQLite" else (0.5, 1.0)
    print(f"  c/a = {c / a:.2f} (goal >= {c_goal})   c/b = {c / b:.2f} (goal >= 0.5)")
    print(
        f"  c p50 at one client {results['c, one client']['p50']:.2f} ms (goal <= {p50_goal})   "
        f"list of 100 keys p50 {results['list 100 keys']['p50']:.2f} ms (goal <= 5)"
    )
    flat = results["c, 100k keys"]["p50"] / results["c, one client"]["p50"]
    print(
        "  c p50 at one client, 100,100 keys in the database / 100 keys = "
        f"{flat:.2f} (goal: flat, ~1.0)"
    )
    if "c, 2 workers" in results:
        print(f"  two workers / one = {results['c, 2 workers']['rps'] / c:.2f} (goal >= 1.7)")
    return results


def _basic(credentials: tuple[str, str]) -> str:
    return base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()


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
    # As autovacuum (or an operator) would, later; and the writes flushed now, not during the
    # rounds that follow (a checkpoint of 100,000 rows skews the figures measured beside it).
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("VACUUM ANALYZE"))
            connection.execute(text("CHECKPOINT"))
        else:
            connection.execute(text("ANALYZE"))
            connection.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
    engine.dispose()


def main() -> None:
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    databases = os.environ.get("BENCH_DATABASES", "sqlite,postgresql").split(",")
    if "sqlite" in databases:
        with tempfile.TemporaryDirectory() as tmp:
            bench_database("SQLite", f"sqlite:///{tmp}/bench.db", f"sqlite:///{tmp}/large.db")
    if "postgresql" in databases:
        bench_database("PostgreSQL", postgres_url("keyhouse_bench"), postgres_url("keyhouse_large"))


if __name__ == "__main__":
    main()
