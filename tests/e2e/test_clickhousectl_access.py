"""clickhousectl 0.5.0 against a real server: members, invitations and custom roles."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Mapping
from pathlib import Path

import httpx2 as httpx

from tests.e2e.conftest import BIN, Server
from tests.e2e.test_clickhousectl import ctl, ctl_fails


def _role_file(directory: Path, body: Mapping[str, object]) -> str:
    path = directory / f"{uuid.uuid4().hex}.json"
    path.write_text(json.dumps(body))
    return str(path)


def _accept(server: Server, accept_url: str, name: str) -> None:
    token = accept_url.split("token=", 1)[1]
    subprocess.run(
        [
            str(BIN / "keyhouse"),
            "invitations",
            "accept",
            token,
            "--name",
            name,
            "--password-stdin",
            "--database-url",
            server.database_url,
        ],
        input="a long enough password\n",
        env=server.env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )


def test_invitation_create_list_get_delete(server: Server) -> None:
    roles = {r["name"]: r["id"] for r in ctl(server, "org", "role", "list")}
    email = f"invitee-{uuid.uuid4().hex[:6]}@example.com"
    created = ctl(server, "invitation", "create", "--email", email, "--role-id", roles["Developer"])
    assert created["email"] == email
    listed = ctl(server, "invitation", "list")
    assert created["id"] in {i["id"] for i in listed}
    got = ctl(server, "invitation", "get", created["id"])
    assert got["assignedRoles"][0]["roleName"] == "Developer"
    ctl(server, "invitation", "delete", created["id"])
    assert created["id"] not in {i["id"] for i in ctl(server, "invitation", "list")}


def test_member_list_get_update_remove(server: Server) -> None:
    roles = {r["name"]: r["id"] for r in ctl(server, "org", "role", "list")}
    email = f"member-{uuid.uuid4().hex[:6]}@example.com"
    invitation = httpx.post(
        server.url("/invitations"), json={"email": email, "role": "developer"}, auth=server.auth
    ).json()["result"]
    _accept(server, invitation["acceptUrl"], "E2E Member")
    members = ctl(server, "member", "list")
    member = next(m for m in members if m["email"] == email)
    assert ctl(server, "member", "get", member["userId"])["name"] == "E2E Member"
    updated = ctl(server, "member", "update", member["userId"], "--role-id", roles["Billing"])
    assert [r["roleName"] for r in updated["assignedRoles"]] == ["Billing"]
    ctl(server, "member", "remove", member["userId"])
    assert email not in {m["email"] for m in ctl(server, "member", "list")}


def test_custom_role_lifecycle_and_a_read_only_key(server: Server, tmp_path: Path) -> None:
    org_resource = f"organization/{server.org_id}"
    name = f"Readers {uuid.uuid4().hex[:4]}"
    body = {
        "name": name,
        "actors": [],
        "policies": [
            {
                "allowDeny": "ALLOW",
                "permissions": [
                    "control-plane:organization:view",
                    "control-plane:organization:view-api-keys",
                ],
                "resources": [org_resource],
            }
        ],
    }
    created = ctl(server, "org", "role", "create", "--file", _role_file(tmp_path, body))
    assert created["type"] == "custom"
    assert ctl(server, "org", "role", "get", created["id"])["name"] == name
    renamed = ctl(
        server,
        "org",
        "role",
        "update",
        created["id"],
        "--file",
        _role_file(tmp_path, {"name": name + " v2"}),
    )
    assert renamed["name"] == name + " v2"
    key = ctl(
        server,
        "key",
        "create",
        "--name",
        "custom-reader",
        "--role-id",
        created["id"],
        "--ip-allow",
        "127.0.0.1",
    )
    auth = (key["keyId"], key["keySecret"])
    assert ctl(server, "key", "list", auth=auth)["result"]
    output = ctl_fails(
        server, "key", "create", "--name", "nope", "--role-id", created["id"], auth=auth
    )
    assert "403" in output or "FORBIDDEN" in output
    ctl(server, "key", "delete", key["key"]["id"])
    ctl(server, "org", "role", "delete", created["id"])
    assert created["id"] not in {r["id"] for r in ctl(server, "org", "role", "list")}


def test_keys_members_and_invitations_without_roles(server: Server) -> None:
    """What the spec allows and the CLI sends: `key create` with no role, `--clear-roles`,
    and an invitation with no role."""
    created = ctl(server, "key", "create", "--name", "no-role", "--ip-allow", "127.0.0.1")
    assert created["key"]["assignedRoles"] == []
    auth = (created["keyId"], created["keySecret"])
    assert ctl(server, "org", "list", auth=auth)[0]["id"] == server.org_id
    roles = {r["name"]: r["id"] for r in ctl(server, "org", "role", "list")}
    developer = ctl(server, "key", "create", "--name", "to-clear", "--role-id", roles["Developer"])
    cleared = ctl(server, "key", "update", developer["key"]["id"], "--clear-roles")
    assert cleared["assignedRoles"] == []

    email = f"norole-{uuid.uuid4().hex[:6]}@example.com"
    invitation = ctl(server, "invitation", "create", "--email", email)
    assert invitation["assignedRoles"] == []
    ctl(server, "invitation", "delete", invitation["id"])

    member_email = f"member-{uuid.uuid4().hex[:6]}@example.com"
    invited = httpx.post(
        server.url("/invitations"),
        json={"email": member_email, "role": "developer"},
        auth=server.auth,
    ).json()["result"]
    _accept(server, invited["acceptUrl"], "Cleared Member")
    member = next(m for m in ctl(server, "member", "list") if m["email"] == member_email)
    updated = ctl(server, "member", "update", member["userId"], "--clear-roles")
    assert updated["assignedRoles"] == []
    for key in (created, developer):
        ctl(server, "key", "delete", key["key"]["id"])
