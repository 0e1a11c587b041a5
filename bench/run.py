"""``make bench``: requests/s and latency of (a) a raw-ASGI yardstick, (b) GET /healthz and
(c) an authenticated GET /v1/organizations/{id}/keys/{keyId}, on SQLite and PostgreSQL.

One run, wrk on loopback, one server process each, the rate limit off. Prints figures and the
ratios c/a and c/b; it is not a test and never fails on a figure.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
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


def wrk(url: str, auth: str | None) -> dict[str, float]:
    command = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{DURATION}", "--latency", url]
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
    server = serve(
        [
            str(BIN / "keyhouse"),
            "serve",
            "--port",
            port,
            "--database-url",
            database_url,
            "--rate-limit",
            "off",
        ],
        env,
        f"http://127.0.0.1:{port}/healthz",
    )
    try:
        base = f"http://127.0.0.1:{port}"
        key_uuid = httpx.get(
            f"{base}/v1/organizations/{boot['organizationId']}/keys",
            auth=(boot["keyId"], boot["keySecret"]),
        ).json()["result"][0]["id"]
        results["b /healthz"] = wrk(f"{base}/healthz", None)
        results["c GET key"] = wrk(
            f"{base}/v1/organizations/{boot['organizationId']}/keys/{key_uuid}", auth
        )
    finally:
        stop(server)
    print(f"\n{name}: wrk -t1 -c{CONNECTIONS} -d{DURATION}, one granian worker each")
    print(f"  {'':14} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for label, figures in results.items():
        print(f"  {label:14} {figures['rps']:9.0f} {figures['p50']:8.2f} {figures['p99']:8.2f}")
    a, b, c = (results[k]["rps"] for k in ("a raw ASGI", "b /healthz", "c GET key"))
    print(f"  c/a = {c / a:.2f} (goal >= 0.5)   c/b = {c / b:.2f} (goal >= 0.7)")
    return results


def main() -> None:
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    with tempfile.TemporaryDirectory() as tmp:
        bench_database("SQLite", f"sqlite:///{tmp}/bench.db")
    bench_database("PostgreSQL", postgres_url())


if __name__ == "__main__":
    main()
