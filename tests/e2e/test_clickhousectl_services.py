"""clickhousectl 0.5.0 against a real server: a service's life, and queries through the Query
API with the CLI's own "bind the key and retry" flow."""

from __future__ import annotations

import time
import uuid
from typing import Any

from tests.e2e.conftest import Server
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
