"""clickhousectl 0.5.0 against a real server: a service's life, and queries through the Query
API with the CLI's own "bind the key and retry" flow."""

from __future__ import annotations

import subprocess
import time
import uuid
from typing import Any

import pytest

from tests.e2e.conftest import BIN, Server, bootstrap, server_env, start_server, stop
from tests.e2e.test_clickhousectl import _run, ctl


def _wait(server: Server, service_id: str, state: str) -> dict[str, Any]:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        service: dict[str, Any] = ctl(server, "service", "get", service_id)
        if service["state"] == state:
            return service
        time.sleep(0.5)
    raise AssertionError(f"never {state}")


def test_service_lifecycle_and_queries(server: Server) -> None:
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    created = ctl(server, "service", "create", "--name", name)
    service = created.get("service", created)
    service_id = service["id"]
    assert _wait(server, service_id, "running")["clickhouseVersion"]
    assert service_id in {s["id"] for s in ctl(server, "service", "list")}

    # Not bound yet: the CLI binds its own key (whoami keyId) and retries, non-interactively.
    result = _run(
        server,
        (
            "service",
            "query",
            service_id,
            "-q",
            "CREATE TABLE t (a UInt8) ENGINE = MergeTree ORDER BY a",
        ),
        None,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    endpoint = ctl(server, "service", "query-endpoint", "get", service_id)
    assert endpoint["openApiKeys"]  # the key's UUID, not its key ID
    assert "-" in endpoint["openApiKeys"][0]
    insert = _run(server, ("service", "query", service_id, "-q", "INSERT INTO t VALUES (7)"), None)
    assert insert.returncode == 0, insert.stdout + insert.stderr
    rows = _run(server, ("--json", "service", "query", service_id, "-q", "SELECT a FROM t"), None)
    assert rows.returncode == 0, rows.stderr
    assert rows.stdout.strip() == '{"a":7}'

    ctl(server, "service", "stop", service_id)
    _wait(server, service_id, "stopped")
    stopped = _run(server, ("service", "query", service_id, "-q", "SELECT 1"), None)
    assert stopped.returncode != 0
    assert "stopped" in (stopped.stdout + stopped.stderr)
    ctl(server, "service", "start", service_id)
    _wait(server, service_id, "running")
    again = _run(server, ("service", "query", service_id, "-q", "SELECT a FROM t"), None)
    assert again.stdout.strip() == "7"
    ctl(server, "service", "stop", service_id)
    _wait(server, service_id, "stopped")
    ctl(server, "service", "delete", service_id)
    assert service_id not in {s["id"] for s in ctl(server, "service", "list")}


def test_rows_survive_a_restart_of_keyhouse(
    database_urls: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Service update and query-endpoint commands, then the server is stopped and started
    again on the same database and data: the service runs again and its rows are there."""
    tmp = tmp_path_factory.mktemp("restart")
    env = server_env(tmp)
    database_url = database_urls["sqlite"]
    boot = bootstrap(database_url, env)
    process, base_url = start_server(database_url, env, tmp / "server.log", "--rate-limit", "off")
    server = Server(
        base_url,
        database_url,
        env,
        boot["organizationId"],
        boot["keyId"],
        boot["keySecret"],
        boot["password"],
    )
    try:
        created = ctl(server, "service", "create", "--name", "durable")
        service_id = created.get("service", created)["id"]
        _wait(server, service_id, "running")
        renamed = ctl(server, "service", "update", service_id, "--new-name", "durable-2")
        assert renamed["name"] == "durable-2"
        bound = ctl(
            server,
            "service",
            "query-endpoint",
            "create",
            service_id,
            "--role",
            "sql_console_admin",
            "--open-api-key",
            boot["keyId"],
            "--allowed-origins",
            "*",
        )
        assert bound["roles"] == ["sql_console_admin"]
        assert ctl(server, "service", "query-endpoint", "get", service_id)["openApiKeys"]
        for sql in (
            "CREATE TABLE t (a UInt8) ENGINE = MergeTree ORDER BY a",
            "INSERT INTO t VALUES (3)",
        ):
            done = _run(server, ("service", "query", service_id, "-q", sql), None)
            assert done.returncode == 0, done.stdout + done.stderr
    finally:
        stop(process)
    process, base_url = start_server(database_url, env, tmp / "server2.log", "--rate-limit", "off")
    server = Server(
        base_url,
        database_url,
        env,
        boot["organizationId"],
        boot["keyId"],
        boot["keySecret"],
        boot["password"],
    )
    try:
        _wait(server, service_id, "running")
        rows = _run(server, ("service", "query", service_id, "-q", "SELECT a FROM t"), None)
        assert rows.stdout.strip() == "3", rows.stdout + rows.stderr
        ctl(server, "service", "query-endpoint", "delete", service_id)
        ctl(server, "service", "stop", service_id)
        _wait(server, service_id, "stopped")
        ctl(server, "service", "delete", service_id)
    finally:
        stop(process)


def test_backups_backup_config_and_a_restore_into_a_new_service(server: Server) -> None:
    """`keyhouse backups take` (the operator's) on the server's database, then clickhousectl's
    backup list/get, service backup-config get/update, and service create --backup-id."""
    created = ctl(server, "service", "create", "--name", f"kept-{uuid.uuid4().hex[:6]}")
    service_id = created.get("service", created)["id"]
    _wait(server, service_id, "running")
    for sql in (
        "CREATE TABLE t (a UInt8) ENGINE = MergeTree ORDER BY a",
        "INSERT INTO t VALUES (1), (2)",
    ):
        done = _run(server, ("service", "query", service_id, "-q", sql), None)
        assert done.returncode == 0, done.stdout + done.stderr
    take = subprocess.run(
        [
            str(BIN / "keyhouse"),
            "backups",
            "take",
            service_id,
            "--database-url",
            server.database_url,
        ],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert take.returncode == 0, take.stdout + take.stderr
    [backup] = ctl(server, "backup", "list", service_id)
    assert backup["status"] == "done"
    assert backup["type"] == "full"
    one = ctl(server, "backup", "get", service_id, backup["id"])
    assert one["id"] == backup["id"]
    assert one["sizeInBytes"] > 0

    config = ctl(server, "service", "backup-config", "get", service_id)
    assert config["backupPeriodInHours"] == 24
    changed = ctl(
        server,
        "service",
        "backup-config",
        "update",
        service_id,
        "--backup-retention-period-hours",
        "72",
        "--backup-start-time",
        "02:00",
    )
    assert changed["backupRetentionPeriodInHours"] == 72
    assert changed["backupStartTime"] == "02:00"
    cleared = ctl(
        server, "service", "backup-config", "update", service_id, "--clear-backup-start-time"
    )
    assert "backupStartTime" not in cleared or cleared["backupStartTime"] is None

    done = _run(server, ("service", "query", service_id, "-q", "INSERT INTO t VALUES (3)"), None)
    assert done.returncode == 0
    restored = ctl(server, "service", "create", "--name", "restored", "--backup-id", backup["id"])
    restored_id = restored.get("service", restored)["id"]
    _wait(server, restored_id, "running")
    rows = _run(server, ("service", "query", restored_id, "-q", "SELECT sum(a) FROM t"), None)
    assert rows.stdout.strip() == "3", rows.stdout + rows.stderr  # 1 + 2: not the 3 after it
    for sid in (restored_id, service_id):
        ctl(server, "service", "stop", sid)
        _wait(server, sid, "stopped")
        ctl(server, "service", "delete", sid)


def test_service_settings_list_get_schema_set_unset(server: Server) -> None:
    created = ctl(server, "service", "create", "--name", f"tuned-{uuid.uuid4().hex[:6]}")
    service_id = created.get("service", created)["id"]
    _wait(server, service_id, "running")
    applied = ctl(
        server,
        "service",
        "settings",
        "set",
        service_id,
        "--setting",
        "max_threads=3",
        "--setting",
        'compatibility="24.8"',
    )
    assert applied["settings"] == {"max_threads": "3", "compatibility": "24.8"}
    assert {w["name"] for w in applied["warnings"]} == {"max_threads", "compatibility"}
    listed = ctl(server, "service", "settings", "list", service_id)
    assert {s["name"]: s["value"] for s in listed["settings"]} == {
        "compatibility": "24.8",
        "max_threads": "3",
    }
    assert ctl(server, "service", "settings", "get", service_id, "max_threads")["value"] == "3"
    schema = ctl(server, "service", "settings", "schema", service_id)
    assert "max_threads" in {entry["name"] for entry in schema["settings"]}
    rows = _run(
        server, ("service", "query", service_id, "-q", "SELECT getSetting('max_threads')"), None
    )
    assert rows.stdout.strip() == "3", rows.stdout + rows.stderr
    refused = _run(
        server, ("service", "settings", "set", service_id, "--setting", 'max_threads="x"'), None
    )
    assert refused.returncode != 0
    assert "max_threads" in refused.stdout + refused.stderr
    ctl(server, "service", "settings", "unset", service_id, "max_threads")
    listed = ctl(server, "service", "settings", "list", service_id)
    assert [s["name"] for s in listed["settings"]] == ["compatibility"]
    ctl(server, "service", "stop", service_id)
    _wait(server, service_id, "stopped")
    ctl(server, "service", "delete", service_id)
