"""System roles seeded per organization, and what each one may do."""

from __future__ import annotations

import uuid

from fastapi.testclient import TestClient

from keyhouse.auth.permissions import SYSTEM_ROLES
from keyhouse.config import Settings
from tests.conftest import Org, create_org, role_id


def test_every_system_role_is_seeded(client: TestClient, org: Org) -> None:
    roles = client.get(org.url("/roles"), auth=org.auth).json()["result"]
    assert {r["name"] for r in roles} == {r.name for r in SYSTEM_ROLES}
    assert {r["type"] for r in roles} == {"system"}
    for role in roles:
        assert role["tenantId"] == f"organization/{org.id}"
        for policy in role["policies"]:
            assert policy["roleId"] == role["id"]
            assert policy["allowDeny"] == "ALLOW"


def test_admin_role_lists_its_actors(client: TestClient, org: Org) -> None:
    admin = role_id(client, org, "Admin")
    role = client.get(org.url(f"/roles/{admin}"), auth=org.auth).json()["result"]
    assert f"apiKey/{org.key_uuid}" in role["actors"]
    assert f"user/{org.user_id}" in role["actors"]
    everywhere = {r for p in role["policies"] for r in p["resources"]}
    assert everywhere == {f"organization/{org.id}", "instance/*"}


def test_developer_role_holds_only_view_permissions(client: TestClient, org: Org) -> None:
    developer = role_id(client, org, "Developer")
    role = client.get(org.url(f"/roles/{developer}"), auth=org.auth).json()["result"]
    permissions = {p for policy in role["policies"] for p in policy["permissions"]}
    assert permissions
    assert all(p.split(":")[-1].startswith("view") for p in permissions)


def test_roles_of_another_organization_are_404(
    client: TestClient, org: Org, settings: Settings
) -> None:
    other = create_org(settings)
    foreign = role_id(client, other, "Admin")
    assert client.get(org.url(f"/roles/{foreign}"), auth=org.auth).status_code == 404
    assert client.get(org.url(f"/roles/{uuid.uuid4()}"), auth=org.auth).status_code == 404
