"""A service is a database, not a door into the host: SQL on a service, sent by someone who
legitimately holds the service's password or a key bound to its admin database role, reaches
nothing outside its own data. Each attack below is one an unsandboxed engine answered (see the
README's threat model): reading the pepper, the control-plane database, the server's
environment, TLS keys, another service's files or /etc/passwd; reaching the control-plane
database, Redis or any port over the network; writing files outside the service. Through both
doors (the service's ClickHouse HTTP interface and the Query API), on SQLite and PostgreSQL
control planes, while ordinary use keeps working."""

# ruff: noqa: S608 (the attacks are SQL built from the server's paths)

from __future__ import annotations

import socket
import sysconfig
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from keyhouse.config import Settings
from keyhouse.migrations import upgrade
from keyhouse.state import AppState
from tests.conftest import Org, create_org, make_client, make_settings
from tests.services import bind, create, run, wait_for
from tests.test_clickhouse_http import _raw

pytestmark = pytest.mark.services  # (tests/conftest.py)

LOOPBACK = [{"source": "127.0.0.1/32", "description": "this machine"}]
SITE_PACKAGES = Path(sysconfig.get_paths()["purelib"])  # code there runs in every worker
CANARY = f"canary-{uuid.uuid4().hex}"  # in the server's environment: never in an answer


class _Listener:
    """A TCP port on loopback that records every connection made to it."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@dataclass
class Target:
    """What the attacks aim at: the server's secrets and paths, and a listener."""

    data_dir: Path
    pepper: str
    outside: Path  # a directory outside the data directory: nothing may appear in it
    other_service: Path  # another service's data file
    other_backup: Path  # a file of another service's backup
    listener: _Listener
    secrets: list[str] = field(default_factory=list)


def _attacks(target: Target) -> list[tuple[str, str]]:
    """(name, SQL): each must fail or return nothing of the host's."""
    data, port, outside = target.data_dir, target.listener.port, target.outside
    loopback = f"127.0.0.1:{port}"
    return [
        ("pepper file", f"SELECT * FROM file('{data / 'keyhouse.pepper'}', 'RawBLOB')"),
        ("control-plane file", f"SELECT * FROM file('{data / 'keyhouse.db'}', 'RawBLOB')"),
        ("control-plane sqlite()", f"SELECT * FROM sqlite('{data / 'keyhouse.db'}', 'api_keys')"),
        ("TLS key", f"SELECT * FROM file('{data / 'tls' / 'server-key.pem'}', 'RawBLOB')"),
        ("server environment", "SELECT * FROM file('/proc/1/environ', 'RawBLOB')"),
        ("own environment", "SELECT * FROM file('/proc/self/environ', 'RawBLOB')"),
        ("another service", f"SELECT * FROM file('{target.other_service}', 'RawBLOB')"),
        ("another service's backup", f"SELECT * FROM file('{target.other_backup}', 'RawBLOB')"),
        (
            "RESTORE from another service's backups",
            f"RESTORE ALL FROM Disk('backups', '../{target.other_backup.parent.parent.name}/"
            f"{target.other_backup.parent.name}')",
        ),
        ("BACKUP to a file outside", f"BACKUP DATABASE default TO File('{outside / 'b'}')"),
        ("/etc/passwd", "SELECT * FROM file('/etc/passwd', 'LineAsString')"),
        ("glob over the data", f"SELECT * FROM file('{data}/**', 'RawBLOB')"),
        (
            "postgresql()",
            "SELECT * FROM postgresql('127.0.0.1:5432', 'test', 'api_keys', 'postgres', '')",
        ),
        (
            "INSERT INTO FUNCTION postgresql()",
            "INSERT INTO FUNCTION postgresql('127.0.0.1:5432', 'test', 'kh_attack', 'postgres', "
            "'') SELECT 1",
        ),
        ("mysql()", "SELECT * FROM mysql('127.0.0.1:3306', 'test', 't', 'root', '')"),
        ("redis()", "SELECT * FROM redis('127.0.0.1:6379', 'k', 'k String, v String')"),
        ("url()", f"SELECT * FROM url('http://{loopback}/', 'RawBLOB')"),
        ("s3()", f"SELECT * FROM s3('http://{loopback}/bucket/key', 'RawBLOB')"),
        ("hdfs()", f"SELECT * FROM hdfs('hdfs://{loopback}/x', 'RawBLOB')"),
        ("url() to Redis", "SELECT * FROM url('http://127.0.0.1:6379/', 'RawBLOB')"),
        (
            "ENGINE = URL",
            f"CREATE TABLE IF NOT EXISTS kh_url (s String) ENGINE = URL('http://{loopback}/', "
            "'RawBLOB')",
        ),
        ("reading ENGINE = URL", "SELECT * FROM kh_url"),
        (
            "ENGINE = File",
            "CREATE TABLE IF NOT EXISTS kh_file (s String) ENGINE = File(LineAsString, "
            "'/etc/passwd')",
        ),
        ("reading ENGINE = File", "SELECT * FROM kh_file"),
        (
            "HTTP dictionary",
            "CREATE DICTIONARY IF NOT EXISTS kh_dict (k UInt64, v String) PRIMARY KEY k "
            f"SOURCE(HTTP(url 'http://{loopback}/' format 'TSV')) LAYOUT(FLAT()) LIFETIME(0)",
        ),
        ("reading the HTTP dictionary", "SELECT dictGet('kh_dict', 'v', toUInt64(1))"),
        (
            "INSERT INTO FUNCTION file() outside",
            f"INSERT INTO FUNCTION file('{outside / 'written.txt'}', 'RawBLOB') SELECT 'x'",
        ),
        (
            "a .pth file in the runtime",
            f"INSERT INTO FUNCTION file('{SITE_PACKAGES / 'kh_attack.pth'}', 'RawBLOB') "
            "SELECT 'import os'",
        ),
        ("INTO OUTFILE", f"SELECT 'x' INTO OUTFILE '{outside / 'outfile.txt'}'"),
        (
            "FROM INFILE",
            "CREATE TABLE IF NOT EXISTS kh_lines (s String) ENGINE = MergeTree ORDER BY s",
        ),
        ("reading FROM INFILE", "INSERT INTO kh_lines FROM INFILE '/etc/passwd' FORMAT RawBLOB"),
        ("what FROM INFILE read", "SELECT * FROM kh_lines"),
    ]


def _assert_contained(
    target: Target, send: Callable[[str], tuple[int, bytes]], site_packages: Path
) -> None:
    key = target.data_dir / "tls" / "server-key.pem"  # made when the app started
    secrets = [*target.secrets, key.read_text().splitlines()[1]]
    leaks = []
    for name, sql in _attacks(target):
        status, body = send(sql)
        text = body.decode(errors="replace")
        for secret in secrets:
            if secret in text:
                leaks.append(f"{name}: the answer ({status}) holds {secret[:12]}...")
        if "root:x:0:0" in text:
            leaks.append(f"{name}: /etc/passwd came back")
    assert target.listener.connections == 0, "the loopback listener was reached"
    assert list(target.outside.iterdir()) == [], "a file was written outside the service"
    assert not (site_packages / "kh_attack.pth").exists()
    assert leaks == []


@pytest.fixture
def target(
    tmp_path: Path, backend: str, database_urls: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Settings, Target]]:
    """A server laid out as in production: the SQLite database, the pepper file and the TLS
    key in the data directory, a secret in the server's environment."""
    monkeypatch.setenv("KEYHOUSE_TEST_CANARY", CANARY)
    data = tmp_path / "data"
    data.mkdir()
    url = f"sqlite:///{data / 'keyhouse.db'}" if backend == "sqlite" else database_urls[backend]
    if backend == "sqlite":
        upgrade(url)
    settings = make_settings(
        url,
        services=True,
        data_dir=data,
        pepper=None,
        pepper_file=data / "keyhouse.pepper",
        # An HTTP dictionary obeys no grant: its (refused) connection is retried until the
        # query's time limit.
        query_max_execution_seconds=5,
    )
    pepper = settings.pepper_bytes().decode()
    other = data / "services" / str(uuid.uuid4()) / "secret.bin"
    other.parent.mkdir(parents=True)
    other.write_text(f"another tenant's {CANARY}")
    other_backup = data / "backups" / other.parent.name / str(uuid.uuid4()) / ".backup"
    other_backup.parent.mkdir(parents=True)
    other_backup.write_text(f"<config><kh>{CANARY}</kh></config>")
    outside = tmp_path / "outside"
    outside.mkdir()
    listener = _Listener()
    try:
        yield (
            settings,
            Target(data, pepper, outside, other, other_backup, listener, [pepper, CANARY]),
        )
    finally:
        listener.close()


@pytest.fixture
def attacked(target: tuple[Settings, Target]) -> Iterator[tuple[TestClient, Org, Target]]:
    settings, secrets = target
    state = AppState.from_settings(settings)
    try:
        with make_client(state) as client:
            yield client, create_org(settings), secrets
    finally:
        state.close()


def _ordinary_use_works(send: Callable[[str], tuple[int, bytes]]) -> None:
    for sql in (
        "CREATE TABLE kh_ok (id UInt64, s String) ENGINE = MergeTree ORDER BY id",
        "INSERT INTO kh_ok SELECT number, toString(number) FROM numbers(1000)",
    ):
        status, body = send(sql)
        assert status == 200, body
    assert send("SELECT count(), sum(id) FROM kh_ok") == (200, b"1000\t499500\n")


def test_the_clickhouse_http_interface_reaches_nothing_outside_the_service(
    target: tuple[Settings, Target], attacked: tuple[TestClient, Org, Target]
) -> None:
    settings, aimed = target  # the same server as ``attacked``'s (one fixture per test)
    client, org, _ = attacked
    created = create(client, org, ipAccessList=LOOPBACK)
    service = wait_for(client, org, created["service"]["id"], "running")
    [endpoint] = service["endpoints"]
    with _raw(settings, endpoint, created["password"], timeout=60) as http:

        def send(sql: str) -> tuple[int, bytes]:
            answer = http.post("/", content=sql.encode())
            return answer.status_code, answer.content

        _ordinary_use_works(send)
        _assert_contained(aimed, send, SITE_PACKAGES)
    _stop(client, org, service["id"])


def test_the_query_api_with_the_admin_role_reaches_nothing_outside_the_service(
    attacked: tuple[TestClient, Org, Target],
) -> None:
    client, org, target = attacked
    service_id = create(client, org)["service"]["id"]
    wait_for(client, org, service_id, "running")
    bind(client, org, service_id, [str(org.key_uuid)], role="sql_console_admin")

    def send(sql: str) -> tuple[int, bytes]:
        answer = run(client, service_id, org.auth, sql)
        return answer.status_code, answer.content

    _ordinary_use_works(send)
    _assert_contained(target, send, SITE_PACKAGES)
    _stop(client, org, service_id)


def _stop(client: TestClient, org: Org, service_id: str) -> None:
    answer = client.patch(
        org.url(f"/services/{service_id}/state"), json={"command": "stop"}, auth=org.auth
    )
    assert answer.status_code == 200, answer.text
    wait_for(client, org, service_id, "stopped")
