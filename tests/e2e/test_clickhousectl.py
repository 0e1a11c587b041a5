"""The official CLI, clickhousectl 0.5.0, against a real Keyhouse server."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from typing import Any

from tests.e2e.conftest import BIN, Server


def _run(server: Server, args: tuple[str, ...], auth: tuple[str, str] | None) -> Any:
    key_id, secret = auth or server.auth
    command = [
        str(BIN / "clickhousectl"),
        "cloud",
        "--url",
        f"{server.base_url}/v1",
        "--api-key",
        key_id,
        "--api-secret",
        secret,
        *args,
    ]
    # The Query API is on the server itself; the CLI keeps state in its working directory.
    env = {**server.env, "CLICKHOUSE_CLOUD_QUERY_HOST": server.base_url}
    return subprocess.run(
        command,
        env=env,
        cwd=server.env["HOME"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def ctl(server: Server, *args: str, auth: tuple[str, str] | None = None) -> Any:
    """Run clickhousectl with --json; assert success and return the parsed output."""
    result = _run(server, ("--json", *args), auth)
    assert result.returncode == 0, f"{args}: {result.stdout} {result.stderr}"
    return json.loads(result.stdout) if result.stdout.strip() else None


def ctl_fails(server: Server, *args: str, auth: tuple[str, str]) -> str:
    """Run clickhousectl; assert it fails and return what it printed."""
    result = _run(server, args, auth)
    assert result.returncode != 0
    return str(result.stdout + result.stderr)


def test_org_list_and_get(server: Server) -> None:
    orgs = ctl(server, "org", "list")
    assert [o["id"] for o in orgs] == [server.org_id]
    org = ctl(server, "org", "get", "--org-id", server.org_id)
    assert org["name"] == "E2E org"


def test_org_quota_list_and_get(server: Server) -> None:
    quotas = ctl(server, "org", "quota", "list", "--org-id", server.org_id)
    by_code = {q["quotaCode"]: q for q in quotas}
    assert set(by_code) == {"services-per-organization", "replicas-per-warehouse"}
    one = ctl(server, "org", "quota", "get", "services-per-organization", "--org-id", server.org_id)
    assert one == by_code["services-per-organization"]
    assert (one["value"], one["usage"]) == (10, 0)


def test_org_role_list(server: Server) -> None:
    roles = ctl(server, "org", "role", "list")
    assert {"Admin", "Developer"} <= {r["name"] for r in roles}


def test_key_create_get_update_delete(server: Server) -> None:
    roles = {r["name"]: r["id"] for r in ctl(server, "org", "role", "list")}
    created = ctl(
        server,
        "key",
        "create",
        "--name",
        "from-clickhousectl",
        "--role-id",
        roles["Developer"],
        "--ip-allow",
        "127.0.0.1=loopback",
        "--expires-at",
        "2099-12-31T23:59:59Z",
    )
    key = created["key"]
    new_auth = (created["keyId"], created["keySecret"])
    # The new key works at once, with the CLI itself.
    assert [o["id"] for o in ctl(server, "org", "list", auth=new_auth)] == [server.org_id]
    listed = ctl(server, "key", "list")["result"]
    assert key["id"] in {k["id"] for k in listed}
    fetched = ctl(server, "key", "get", key["id"])
    assert fetched["name"] == "from-clickhousectl"
    assert fetched["ipAccessList"] == [{"source": "127.0.0.1/32", "description": "loopback"}]
    updated = ctl(server, "key", "update", key["id"], "--new-name", "renamed", "--clear-expiry")
    assert updated["name"] == "renamed"
    assert updated.get("expireAt") is None
    ctl(server, "key", "update", key["id"], "--state", "disabled")
    ctl_fails(server, "org", "list", auth=new_auth)
    ctl(server, "key", "delete", key["id"])
    assert key["id"] not in {k["id"] for k in ctl(server, "key", "list")["result"]}


def test_developer_key_cannot_create_keys_with_the_cli(server: Server) -> None:
    roles = {r["name"]: r["id"] for r in ctl(server, "org", "role", "list")}
    developer = ctl(
        server,
        "key",
        "create",
        "--name",
        "dev",
        "--role-id",
        roles["Developer"],
        "--ip-allow",
        "127.0.0.1",
    )
    auth = (developer["keyId"], developer["keySecret"])
    output = ctl_fails(
        server, "key", "create", "--name", "x", "--role-id", roles["Admin"], auth=auth
    )
    assert "403" in output or "FORBIDDEN" in output


def test_activity_list(server: Server) -> None:
    activities = ctl(server, "activity", "list")
    types = {a["type"] for a in activities}
    assert {"create_organization", "key_create"} <= types


def test_org_usage(server: Server) -> None:
    today = dt.datetime.now(dt.UTC).date()
    usage = ctl(
        server,
        "org",
        "usage",
        "--org-id",
        server.org_id,
        "--from-date",
        (today - dt.timedelta(days=30)).isoformat(),
        "--to-date",
        today.isoformat(),
    )
    assert usage["grandTotalCHC"] == 0
    assert isinstance(usage["costs"], list)
    too_long = _run(
        server,
        (
            "org",
            "usage",
            "--org-id",
            server.org_id,
            "--from-date",
            (today - dt.timedelta(days=31)).isoformat(),
            "--to-date",
            today.isoformat(),
        ),
        None,
    )
    assert too_long.returncode != 0
