"""A control plane (``keyhouse serve`` on PostgreSQL) and two engine hosts (``keyhouse agent``,
different labels, data directories and ports), all real processes on 127.0.0.1, in a database
of their own (a host takes every new service of its deployment).

New services go to the host of their region; the Query API on the control plane and
clickhouse-connect on the host's advertised endpoint (verified against the host's own CA) reach
the same rows. ``kill -9`` of one agent turns its service ``degraded`` within the threshold,
leaves the other host's service running, and a restart brings the service back ``running`` on
the same endpoint with every row. ``keyhouse hosts drain`` moves the service to a third host
(a backup there, a restore on the new host): its rows, a new endpoint clients work on, writes
again, and the old copy gone. The agent's channel answers nothing to a connection without the
host's secret."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import clickhouse_connect
import httpx2 as httpx
import pytest
import sqlalchemy as sa

from keyhouse.db import make_engine
from keyhouse.engine import protocol
from keyhouse.hosts import channel
from keyhouse.models import Service
from tests.conftest import migrated_databases
from tests.e2e.conftest import BIN, Server, serving, stop

SILENT = 3  # KEYHOUSE_HOST_SILENT_SECONDS


@dataclass
class Agent:
    data_dir: Path
    labels: list[str]
    token_file: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self, server: Server) -> None:
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                [
                    str(BIN / "keyhouse"),
                    "agent",
                    "--server",
                    server.base_url,
                    "--token-file",
                    str(self.token_file),
                    "--data-dir",
                    str(self.data_dir),
                    "--listen",
                    "127.0.0.1:0",
                    "--advertise",
                    "127.0.0.1",
                    "--memory-gb",
                    "32",
                    *[arg for label in self.labels for arg in ("--label", label)],
                ],
                env={k: v for k, v in server.env.items() if k != "KEYHOUSE_DATA_DIR"},
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    @property
    def host_id(self) -> str:
        return str(json.loads((self.data_dir / "host.json").read_text())["host_id"])


def host_client(endpoint: dict[str, Any], password: str, agent: Agent) -> Any:
    """clickhouse-connect on a service's endpoint on ``agent``'s host (its own CA)."""
    return clickhouse_connect.get_client(
        host=endpoint["host"],
        port=endpoint["port"],
        username="default",
        password=password,
        secure=True,
        ca_cert=str(agent.data_dir / "tls" / "ca.pem"),
    )


def _keyhouse(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    """A ``keyhouse`` command on the server's database."""
    return subprocess.run(
        [str(BIN / "keyhouse"), *args, "--database-url", server.database_url],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def join_token(server: Server, directory: Path) -> Path:
    """A file holding a new join token (``keyhouse hosts token``)."""
    made = _keyhouse(server, "hosts", "token")
    assert made.returncode == 0, made.stderr
    token_file = directory / "join-token"
    token_file.write_text(made.stdout.splitlines()[1])
    return token_file


def _hosts(server: Server) -> list[dict[str, Any]]:
    listed = _keyhouse(server, "hosts", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    hosts: list[dict[str, Any]] = json.loads(listed.stdout)
    return hosts


def _until(what: str, check: Any, seconds: float = 90) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"never: {what}")


@pytest.fixture
def deployment(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, worker_id_safe: str
) -> Iterator[tuple[Server, Agent, Agent, Agent]]:
    database = migrated_databases(tmp_path_factory, f"{worker_id_safe}_hosts_e2e")["postgresql"]
    with serving(
        database,
        tmp_path,
        KEYHOUSE_HOST_SILENT_SECONDS=str(SILENT),
        KEYHOUSE_BACKUP_CHECK_SECONDS="1",
    ) as (server, _):
        token_file = join_token(server, tmp_path)
        agents = [
            Agent(tmp_path / name, labels, token_file, tmp_path / f"{name}.log")
            for name, labels in (
                ("eu", ["region=eu-west-1", "provider=aws"]),
                ("us", ["region=us-east-1", "provider=aws"]),
                ("eu-2", ["region=eu-west-1", "provider=aws"]),  # started for the drain
            )
        ]
        try:
            for agent in agents[:2]:
                agent.start(server)
            _until("both hosts joined", lambda: len(_hosts(server)) == 2)
            yield server, agents[0], agents[1], agents[2]
        finally:
            for agent in agents:
                if agent.process is not None and agent.process.poll() is None:
                    stop(agent.process)


def _service(server: Server, service_id: str) -> dict[str, Any]:
    response = httpx.get(server.url(f"/services/{service_id}"), auth=server.auth, timeout=10)
    result: dict[str, Any] = response.json()["result"]
    return result


def _create(server: Server, region: str) -> tuple[str, str]:
    created = httpx.post(
        server.url("/services"),
        json={
            "name": f"on-{region}-{uuid.uuid4().hex[:4]}",
            "provider": "aws",
            "region": region,
            "ipAccessList": [{"source": "127.0.0.1"}],
        },
        auth=server.auth,
        timeout=30,
    )
    assert created.status_code == 200, created.text
    result = created.json()["result"]
    service_id = result["service"]["id"]
    _bind(server, service_id)
    return service_id, result["password"]


def _bind(server: Server, service_id: str) -> None:
    """The server's key on the service's Query API endpoint, as its admin."""
    bound = httpx.post(
        server.url(f"/services/{service_id}/serviceQueryEndpoint"),
        json={
            "roles": ["sql_console_admin"],
            "openApiKeys": [server.key_id],
            "allowedOrigins": "",
        },
        auth=server.auth,
        timeout=30,
    )
    assert bound.status_code == 200, bound.text


def _run(server: Server, service_id: str, sql: str) -> str:
    response = httpx.post(
        f"{server.base_url}/service/{service_id}/run?format=TabSeparated",
        json={"sql": sql},
        auth=server.auth,
        timeout=90,
    )
    assert response.status_code == 200, response.text
    return response.text.strip()


def test_services_on_engine_hosts(deployment: tuple[Server, Agent, Agent, Agent]) -> None:
    server, eu, us, eu2 = deployment
    on_eu, eu_password = _create(server, "eu-west-1")
    on_us, _ = _create(server, "us-east-1")
    for service_id in (on_eu, on_us):
        _until("running", lambda s=service_id: _service(server, s)["state"] == "running")
    placed = {host["id"]: [s["id"] for s in host["services"]] for host in _hosts(server)}
    assert placed == {eu.host_id: [on_eu], us.host_id: [on_us]}

    # The Query API through the control plane, and clickhouse-connect on the host's endpoint.
    _run(server, on_eu, "CREATE TABLE t (x UInt32) ENGINE = MergeTree ORDER BY x")
    _run(server, on_eu, "INSERT INTO t SELECT number FROM numbers(1000)")
    _run(server, on_us, "CREATE TABLE u (x UInt32) ENGINE = MergeTree ORDER BY x")
    # SQL on a host is sandboxed as on the control plane: the agent's own secret, its TLS key
    # and the other services' data are out of its reach.
    secret = json.loads((eu.data_dir / "host.json").read_text())["secret"]
    for path in (eu.data_dir / "host.json", eu.data_dir / "tls" / "server-key.pem", "/etc/shadow"):
        reached = httpx.post(
            f"{server.base_url}/service/{on_eu}/run?format=TabSeparated",
            json={"sql": f"SELECT * FROM file('{path}', 'RawBLOB')"},  # noqa: S608 (the attack)
            auth=server.auth,
            timeout=90,
        )
        assert reached.status_code != 200, reached.text
        assert secret not in reached.text
        assert "PRIVATE KEY" not in reached.text
    [endpoint] = _service(server, on_eu)["endpoints"]
    assert endpoint["host"] == "127.0.0.1"

    def rows() -> Any:
        client = host_client(endpoint, eu_password, eu)
        try:
            return client.query("SELECT count(), sum(x) FROM t").result_rows[0]
        finally:
            client.close()

    assert rows() == (1000, 499500)

    # kill -9 of the eu agent: its service degraded within the threshold, the other untouched.
    assert eu.process is not None
    os.kill(eu.process.pid, signal.SIGKILL)
    eu.process.wait()
    killed = time.monotonic()
    _until("degraded", lambda: _service(server, on_eu)["state"] == "degraded", SILENT * 4)
    assert time.monotonic() - killed < SILENT * 4
    assert _service(server, on_us)["state"] == "running"
    _run(server, on_us, "INSERT INTO u VALUES (1), (2)")
    assert _run(server, on_us, "SELECT count() FROM u") == "2"

    # Back: running again, on the same endpoint, with every row.
    eu.start(server)
    _until("running again", lambda: _service(server, on_eu)["state"] == "running")
    assert _service(server, on_eu)["endpoints"] == [endpoint]
    assert _run(server, on_eu, "SELECT count(), sum(x) FROM t") == "1000\t499500"
    assert rows() == (1000, 499500)

    # A backup on the host (asked for; the schedule's runner takes it there).
    first = _backup(server, on_eu)
    assert first["status"] == "done", first
    assert first["sizeInBytes"] > 0
    assert (eu.data_dir / "backups" / on_eu / first["id"]).is_dir()

    # A new service from that backup, on a host: its rows as they were then.
    restored = httpx.post(
        server.url("/services"),
        json={
            "name": "restored",
            "provider": "aws",
            "region": "eu-west-1",
            "backupId": first["id"],
        },  # fmt: skip
        auth=server.auth,
        timeout=30,
    )
    assert restored.status_code == 200, restored.text
    from_backup = restored.json()["result"]["service"]["id"]
    _until("restored", lambda: _service(server, from_backup)["state"] == "running")
    _bind(server, from_backup)
    assert _run(server, from_backup, "SELECT count(), sum(x) FROM t") == "1000\t499500"

    # Drain the eu host: the service moves to the second eu host, with its rows.
    eu2.start(server)
    _until("the third host joined", lambda: len(_hosts(server)) == 3)
    drained = _keyhouse(server, "hosts", "drain", eu.host_id)
    assert drained.returncode == 0, drained.stdout + drained.stderr
    assert drained.stdout.count(f"moved to host {eu2.host_id}") == 2
    _until("running on the new host", lambda: _service(server, on_eu)["state"] == "running")
    moved = _until(
        "its new endpoint",
        lambda: [e for e in _service(server, on_eu)["endpoints"] if e != endpoint],
    )
    assert _run(server, on_eu, "SELECT count(), sum(x) FROM t") == "1000\t499500"
    endpoint, eu = moved[0], eu2  # clients work again, on the new endpoint
    assert rows() == (1000, 499500)
    _run(server, on_eu, "INSERT INTO t VALUES (1000)")  # writes again
    assert rows() == (1001, 500500)
    by_id = {host["id"]: host for host in _hosts(server)}
    assert {s["id"] for s in by_id[eu2.host_id]["services"]} == {on_eu, from_backup}
    assert by_id[deployment[1].host_id]["schedulable"] is False
    assert by_id[deployment[1].host_id]["services"] == []
    old_copy = deployment[1].data_dir / "services" / on_eu
    _until("the old copy removed", lambda: not old_copy.exists(), 30)
    # Its backups came along: the next one is an incremental on the last, on the new host.
    assert (eu2.data_dir / "backups" / on_eu / first["id"]).is_dir()
    second = _backup(server, on_eu)
    assert second["status"] == "done", second
    assert (eu2.data_dir / "backups" / on_eu / second["id"]).is_dir()

    # Idle on its host: no engine, but its port answers, and a client's query wakes it.
    _set(server, on_eu, idle_timeout_minutes=0)  # (the API's least is minutes away)
    _until("idle", lambda: _service(server, on_eu)["state"] == "idle", 30)
    _set(server, on_eu, idle_timeout_minutes=15)
    _until("its engine stopped", lambda: not _engine_running(on_eu), 30)
    assert rows() == (1001, 500500)  # woken by the query
    assert _service(server, on_eu)["state"] == "running"

    # The channel: nothing for a connection without the host's secret.
    [listed] = [host for host in _hosts(server) if host["id"] == eu.host_id]
    address, _, port = listed["channel"].rpartition(":")
    context = ssl.create_default_context(cafile=str(eu.data_dir / "tls" / "ca.pem"))
    for hello in (
        {"host": eu.host_id, "secret": "guess", "op": "pipe", "service": on_eu},
        {"host": str(uuid.uuid4()), "secret": "", "op": "sync"},
    ):
        with (
            socket.create_connection((address, int(port)), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=address) as tls,
        ):
            tls.sendall(protocol.json_frame(channel.HELLO, hello))
            tls.sendall(protocol.json_frame(protocol.REQUEST, {"op": "query", "sql": "SELECT 1"}))
            assert _read_all(tls) == b""  # closed, unanswered
    with socket.create_connection((address, int(port)), timeout=10) as plain:
        plain.sendall(protocol.json_frame(protocol.REQUEST, {"op": "query", "sql": "SELECT 1"}))
        assert b"SELECT" not in _read_all(plain)  # no TLS: no protocol at all


def _set(server: Server, service_id: str, **values: Any) -> None:
    engine = make_engine(server.database_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                sa.update(Service).where(Service.id == uuid.UUID(service_id)).values(**values)
            )
    finally:
        engine.dispose()


def _engine_running(service_id: str) -> bool:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"keyhouse.engine.worker" in command and service_id.encode() in command:
                return True
    return False


def _backup(server: Server, service_id: str) -> dict[str, Any]:
    """``keyhouse backups take``, then the backup as the API lists it."""
    taken = _keyhouse(server, "backups", "take", service_id, "--wait", "120")
    assert taken.returncode == 0, taken.stdout + taken.stderr
    backup_id = taken.stdout.splitlines()[-1].split()[0]
    response = httpx.get(
        server.url(f"/services/{service_id}/backups/{backup_id}"), auth=server.auth, timeout=10
    )
    result: dict[str, Any] = response.json()["result"]
    return result


def _read_all(sock: socket.socket) -> bytes:
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except (ssl.SSLError, ConnectionResetError, TimeoutError):
        pass
    return received
