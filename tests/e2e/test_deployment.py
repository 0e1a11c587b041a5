"""A whole deployment on 127.0.0.1, as docs/deployment.md describes it: two ``keyhouse serve``
replicas (each its own data directory) on one PostgreSQL database and Redis, behind nginx
(Debian's package), and two ``keyhouse agent``s (different labels, data directories and ports)
that sync through nginx.

It shows: placement by region; a service created through one replica and queried through the
other (and with clickhouse-connect on its host's endpoint); a key disabled through one replica
refused at once through the other; the rate limit shared; and ``kill -9`` of the replica
holding the deployment's schedules: the other takes them over, and a scheduled backup of a
service on a host still happens."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import sqlalchemy as sa

from keyhouse.db import make_engine
from tests.conftest import REDIS_URL, migrated_databases
from tests.e2e.conftest import (
    Server,
    bootstrap,
    free_port,
    server_env,
    start_server,
    stop,
)
from tests.e2e.test_engine_hosts import (
    Agent,
    _hosts,
    _run,
    _service,
    _until,
    host_client,
    join_token,
)
from tests.e2e.test_engine_hosts import _create as create_on_host

LIMIT = 200  # requests per key per 10 s, shared by the replicas (Redis; the admin key polls)

NGINX = """
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/nginx-body;
    proxy_temp_path {tmp}/nginx-proxy;
    fastcgi_temp_path {tmp}/nginx-fastcgi;
    uwsgi_temp_path {tmp}/nginx-uwsgi;
    scgi_temp_path {tmp}/nginx-scgi;
    upstream keyhouse {{
        server 127.0.0.1:{first};
        server 127.0.0.1:{second};
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 1m;
        location / {{
            proxy_pass http://keyhouse;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_buffering off;
            proxy_read_timeout 300s;
        }}
    }}
}}
"""


@dataclass
class Deployment:
    front: Server  # through nginx
    replicas: list[Server]
    processes: list[subprocess.Popen[bytes]]
    agents: dict[str, Agent]
    database_url: str


@pytest.fixture
def deployment(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, worker_id_safe: str
) -> Iterator[Deployment]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    assert Path(nginx).exists(), "nginx is needed: make test installs Debian's package"
    database = migrated_databases(tmp_path_factory, f"{worker_id_safe}_deployment")["postgresql"]
    common = {
        "KEYHOUSE_REDIS_URL": REDIS_URL,
        "KEYHOUSE_HOST_SILENT_SECONDS": "5",
        "KEYHOUSE_BACKUP_CHECK_SECONDS": "1",
        "KEYHOUSE_TRUSTED_PROXIES": "127.0.0.1/32",
    }
    envs = [{**server_env(tmp_path / name), **common} for name in ("replica-1", "replica-2")]
    envs[1]["KEYHOUSE_PEPPER"] = envs[0]["KEYHOUSE_PEPPER"]  # (the same on every replica)
    boot = bootstrap(database, envs[0])
    processes: list[subprocess.Popen[bytes]] = []
    agents: dict[str, Agent] = {}
    nginx_process = None
    try:
        replicas = []
        for index, env in enumerate(envs):
            process, url = start_server(
                database, env, tmp_path / f"replica-{index}.log", "--rate-limit", f"{LIMIT}/10s"
            )
            processes.append(process)
            replicas.append(
                Server(
                    url,
                    database,
                    env,
                    boot["organizationId"],
                    boot["keyId"],
                    boot["keySecret"],
                    boot["password"],
                )  # fmt: skip
            )
        port = free_port()
        config = tmp_path / "nginx.conf"
        config.write_text(
            NGINX.format(
                tmp=tmp_path,
                port=port,
                first=replicas[0].base_url.rpartition(":")[2],
                second=replicas[1].base_url.rpartition(":")[2],
            )
        )
        nginx_process = subprocess.Popen(
            [nginx, "-c", str(config), "-p", str(tmp_path), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        front = dataclasses.replace(replicas[0], base_url=f"http://127.0.0.1:{port}")
        _until("nginx answers", lambda: _healthy(front.base_url), 30)
        token_file = join_token(front, tmp_path)
        for name, region in (("eu", "eu-west-1"), ("us", "us-east-1")):
            agent = Agent(
                tmp_path / f"agent-{name}",
                [f"region={region}", "provider=aws"],
                token_file,
                tmp_path / f"agent-{name}.log",
            )
            agent.start(front)
            agents[name] = agent
        _until("both hosts joined", lambda: len(_hosts(front)) == 2)
        yield Deployment(front, replicas, processes, agents, database)
    finally:
        for agent in agents.values():
            if agent.process is not None and agent.process.poll() is None:
                stop(agent.process)
        if nginx_process is not None:
            nginx_process.terminate()
            nginx_process.wait(timeout=15)
        for process in processes:
            if process.poll() is None:
                stop(process)


def _healthy(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _create(server: Server, region: str) -> tuple[str, str]:
    """A service bound to the server's key, running."""
    service_id, password = create_on_host(server, region)
    _until("running", lambda: _service(server, service_id)["state"] == "running")
    return service_id, password


def _schedule_holder(database_url: str, name: str) -> int:
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            holder = connection.execute(
                sa.text("SELECT holder FROM scheduler_leases WHERE name = :name"), {"name": name}
            ).scalar_one()
    finally:
        engine.dispose()
    return int(str(holder).split("/")[1])


def test_a_deployment_behind_nginx(deployment: Deployment) -> None:
    front, (first, second) = deployment.front, deployment.replicas
    eu, us = deployment.agents["eu"], deployment.agents["us"]

    # Placement by region; created through one replica, queried through the other.
    on_eu, password = _create(first, "eu-west-1")
    on_us, _ = _create(front, "us-east-1")
    placed = {host["id"]: [s["id"] for s in host["services"]] for host in _hosts(front)}
    assert placed == {eu.host_id: [on_eu], us.host_id: [on_us]}
    _run(first, on_eu, "CREATE TABLE t (x UInt32) ENGINE = MergeTree ORDER BY x")
    _run(first, on_eu, "INSERT INTO t SELECT number FROM numbers(500)")
    assert _run(second, on_eu, "SELECT count() FROM t") == "500"
    [endpoint] = _service(second, on_eu)["endpoints"]
    client = host_client(endpoint, password, eu)
    try:
        assert client.query("SELECT count() FROM t").result_rows == [(500,)]
    finally:
        client.close()

    # A key disabled through one replica is refused at once through the other.
    key = httpx.post(
        first.url("/keys"), json={"name": "disabled", "roles": ["admin"]}, auth=first.auth
    ).json()["result"]
    auth = (key["keyId"], key["keySecret"])
    assert httpx.get(second.url(), auth=auth).status_code == 200
    disabled = httpx.patch(
        first.url(f"/keys/{key['key']['id']}"), json={"state": "disabled"}, auth=first.auth
    )
    assert disabled.status_code == 200, disabled.text
    assert httpx.get(second.url(), auth=auth).status_code == 401

    # The rate limit is one, whichever replica answers.
    limited = httpx.post(
        front.url("/keys"), json={"name": "limited", "roles": ["admin"]}, auth=front.auth
    ).json()["result"]
    auth = (limited["keyId"], limited["keySecret"])
    statuses = [
        httpx.get((first, second)[n % 2].url(), auth=auth).status_code for n in range(LIMIT)
    ]
    assert statuses == [200] * LIMIT
    assert httpx.get(first.url(), auth=auth).status_code == 429
    assert httpx.get(second.url(), auth=auth).status_code == 429

    # kill -9 of the replica holding the schedules: the other takes them over, and a scheduled
    # backup of a service on a host still happens.
    holder = _schedule_holder(deployment.database_url, "host-backups")
    replica_pids = {
        index: {process.pid, *_children(process.pid)}
        for index, process in enumerate(deployment.processes)
    }
    [killed] = [index for index, pids in replica_pids.items() if holder in pids]
    for pid in sorted(replica_pids[killed]):  # (the server first: it would start a new worker)
        os.kill(pid, signal.SIGKILL)
    survivor = deployment.replicas[1 - killed]
    engine = make_engine(deployment.database_url)
    try:
        with engine.begin() as connection:  # the schedule is due: as if a day had passed
            connection.execute(
                sa.text("UPDATE services SET created_at = :at WHERE id = :id"),
                {"at": dt.datetime.now(dt.UTC) - dt.timedelta(hours=25), "id": on_eu},
            )
    finally:
        engine.dispose()

    def scheduled() -> list[dict[str, Any]]:
        backups = httpx.get(
            front.url(f"/services/{on_eu}/backups"), auth=front.auth, timeout=30
        ).json()["result"]
        return [backup for backup in backups if backup["status"] == "done"]

    [backup] = _until("a scheduled backup", scheduled, 120)
    assert backup["sizeInBytes"] > 0
    assert (eu.data_dir / "backups" / on_eu / backup["id"]).is_dir()
    new_holder = _schedule_holder(deployment.database_url, "host-backups")
    assert new_holder != holder
    assert new_holder in {deployment.processes[1 - killed].pid, *_children(
        deployment.processes[1 - killed].pid)}  # fmt: skip
    assert _run(survivor, on_eu, "SELECT count() FROM t") == "500"  # nginx: the survivor
    assert _run(front, on_eu, "SELECT count() FROM t") == "500"


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if parent == pid:
                found.add(int(entry.name))
    return found
