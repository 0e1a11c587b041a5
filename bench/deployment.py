"""``make bench``, the deployment's figures (docs/deployment.md), on PostgreSQL:

(a) GET /v1/organizations/{id}/keys/{keyId} through nginx (Debian's) in front of two
    ``keyhouse serve`` replicas, over the same through nginx in front of one of them (goal:
    1.7x or more; wrk -t1 -c``BENCH_CONNECTIONS``, the rate limit off);
(b) the Query API's ``SELECT 1`` (wrk -c1, p50) on a service on an engine host (``keyhouse
    agent`` on this machine, reached over its TLS channel) over one whose engine runs in the
    replica itself (goal: 1 ms or less more).

Every server runs at once and the figures are taken in interleaved rounds (medians). Prints
figures and ratios against the goals; it is not a test and never fails on a figure.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2 as httpx

from query_api import _wrk_p50_ms
from run import BIN, PEPPER, ROUNDS, _bootstrap, _keyhouse, postgres_url, stop, wrk

NGINX = """
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream both {{ server 127.0.0.1:{first}; server 127.0.0.1:{second}; keepalive 64; }}
    upstream one {{ server 127.0.0.1:{first}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{both_port};
        location / {{ proxy_pass http://both; proxy_http_version 1.1;
                     proxy_set_header Connection ""; }}
    }}
    server {{
        listen 127.0.0.1:{one_port};
        location / {{ proxy_pass http://one; proxy_http_version 1.1;
                     proxy_set_header Connection ""; }}
    }}
}}
"""
PORTS = iter(range(18500, 18600))


def _service(base: str, org: str, auth: tuple[str, str], key_id: str, name: str) -> str:
    url = f"{base}/v1/organizations/{org}/services"
    created = httpx.post(url, json={"name": name}, auth=auth, timeout=30).json()["result"]
    service_id: str = created["service"]["id"]
    deadline = time.monotonic() + 120
    while httpx.get(f"{url}/{service_id}", auth=auth).json()["result"]["state"] != "running":
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} never ran")
        time.sleep(0.3)
    httpx.post(
        f"{url}/{service_id}/serviceQueryEndpoint",
        json={"roles": ["sql_console_admin"], "openApiKeys": [key_id], "allowedOrigins": ""},
        auth=auth,
    ).raise_for_status()
    return service_id


def _cpu() -> tuple[int, int]:
    """This machine's (idle, total) CPU ticks so far (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return fields[3] + fields[4], sum(fields)


def main() -> None:
    if shutil.which("wrk") is None or not (
        shutil.which("nginx") or Path("/usr/sbin/nginx").exists()
    ):
        sys.exit("wrk and nginx are needed: apt-get install wrk nginx")
    tmp = Path(tempfile.mkdtemp(prefix="keyhouse-bench-deployment-"))
    database = postgres_url("keyhouse_bench_deployment")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYHOUSE_")}
    env.update({"KEYHOUSE_PEPPER": PEPPER, "KEYHOUSE_DATA_DIR": str(tmp / "data")})
    subprocess.run([str(BIN / "keyhouse"), "db", "upgrade", "--database-url", database],
                   env=env, check=True, capture_output=True)  # fmt: skip
    boot = _bootstrap(database, env)
    auth = (boot["keyId"], boot["keySecret"])
    credential = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    servers, processes = [], []
    try:
        for index in range(2):
            replica_env = {**env, "KEYHOUSE_DATA_DIR": str(tmp / f"data-{index}")}
            servers.append(_keyhouse(database, next(PORTS), replica_env))
        both_port, one_port = next(PORTS), next(PORTS)
        config = tmp / "nginx.conf"
        config.write_text(NGINX.format(
            tmp=tmp, first=servers[0].base.rpartition(":")[2],
            second=servers[1].base.rpartition(":")[2], both_port=both_port, one_port=one_port,
        ))  # fmt: skip
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        processes.append(subprocess.Popen([nginx, "-c", str(config), "-p", str(tmp), "-g",
                                           "daemon off;"]))  # fmt: skip
        time.sleep(1)

        # (b) first: a service in the replica, then an engine host and a service on it.
        local = _service(servers[0].base, boot["organizationId"], auth, auth[0], "local")
        token = subprocess.run(
            [str(BIN / "keyhouse"), "hosts", "token", "--database-url", database],
            env=env, capture_output=True, text=True, check=True,
        ).stdout.splitlines()[1]  # fmt: skip
        (tmp / "token").write_text(token)
        processes.append(subprocess.Popen(
            [str(BIN / "keyhouse"), "agent", "--server", servers[0].base, "--token-file",
             str(tmp / "token"), "--data-dir", str(tmp / "agent"), "--listen", "127.0.0.1:0",
             "--advertise", "127.0.0.1"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))  # fmt: skip
        time.sleep(3)
        remote = _service(servers[0].base, boot["organizationId"], auth, auth[0], "remote")

        org = f"/v1/organizations/{boot['organizationId']}"
        keys = httpx.get(f"{servers[0].base}{org}/keys?limit=1", auth=auth).json()["result"]
        key_path = f"{org}/keys/{keys[0]['id']}"
        rounds: dict[str, list[float]] = {
            "two": [], "one": [], "local": [], "remote": [], "idle": []
        }  # fmt: skip
        for _ in range(ROUNDS):
            before = _cpu()
            rounds["two"].append(wrk(f"http://127.0.0.1:{both_port}{key_path}", credential)["rps"])
            after = _cpu()
            rounds["idle"].append((after[0] - before[0]) / max(1, after[1] - before[1]))
            rounds["one"].append(wrk(f"http://127.0.0.1:{one_port}{key_path}", credential)["rps"])
            for name, service_id in (("local", local), ("remote", remote)):
                url = f"{servers[0].base}/service/{service_id}/run?format=TabSeparated"
                rounds[name].append(_wrk_p50_ms(url, json.dumps({"sql": "SELECT 1"}), auth, tmp))
        two, one = statistics.median(rounds["two"]), statistics.median(rounds["one"])
        local_ms, remote_ms = (
            statistics.median(rounds["local"]),
            statistics.median(rounds["remote"]),
        )
        print(f"\npostgresql: medians of {ROUNDS} interleaved rounds")
        print(f"(a) GET key through nginx, two replicas: {two:,.0f} req/s; one: {one:,.0f} req/s;"
              f" {two / one:.2f}x (goal >= 1.7x); the machine's CPU idle meanwhile: "
              f"{statistics.median(rounds['idle']):.0%} of {os.cpu_count()} cores")  # fmt: skip
        print(
            f"(b) Query API SELECT 1, p50: engine in the replica {local_ms:.2f} ms; on an engine"
            f" host {remote_ms:.2f} ms; +{remote_ms - local_ms:.2f} ms (goal <= 1 ms)"
        )
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=15)
        for server in servers:
            stop(server.process)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
