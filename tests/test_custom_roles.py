"""Custom roles: the Role Management API, policy validation, and what a role's holder may do."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from keyhouse.config import Settings
from tests.conftest import Org, create_key, create_org, key_auth, role_id

VIEW_KEYS = ["control-plane:organization:view", "control-plane:organization:view-api-keys"]


def _policy(org: Org, permissions: list[str], allow: str = "ALLOW") -> dict[str, Any]:
    return {"allowDeny": allow, "permissions": permissions, "resources": [f"organization/{org.id}"]}


def _create_role(
    client: TestClient,
    org: Org,
    policies: list[dict[str, Any]],
    *,
    actors: list[str] | None = None,
    auth: tuple[str, str] | None = None,
    name: str | None = None,
) -> Any:
    return client.post(
        org.url("/roles"),
        json={
            "name": name or f"role-{uuid.uuid4().hex[:6]}",
            "actors": actors or [],
            "policies": policies,
        },
        auth=auth or org.auth,
    )


def test_create_get_patch_delete_a_custom_role(client: TestClient, org: Org) -> None:
    response = _create_role(client, org, [_policy(org, VIEW_KEYS)], name="Key readers")
    assert response.status_code == 200, response.text
    role = response.json()["result"]
    assert role["type"] == "custom"
    assert role["name"] == "Key readers"
    assert role["tenantId"] == f"organization/{org.id}"
    assert role["policies"][0]["permissions"] == VIEW_KEYS
    assert role["policies"][0]["roleId"] == role["id"]
    url = org.url(f"/roles/{role['id']}")
    assert client.get(url, auth=org.auth).json()["result"]["name"] == "Key readers"
    key = create_key(client, org, roles=["developer"])["key"]
    patched = client.patch(
        url, json={"name": "Readers", "actors": [f"apiKey/{key['id']}"]}, auth=org.auth
    ).json()["result"]
    assert patched["name"] == "Readers"
    assert patched["actors"] == [f"apiKey/{key['id']}"]
    assert patched["policies"] == role["policies"]  # absent: unchanged
    assert client.delete(url, auth=org.auth).status_code == 200
    assert client.get(url, auth=org.auth).status_code == 404
    # Keyhouse-only types: listed on request only, so closed-enum clients never meet them.
    listed = client.get(org.url("/activities"), auth=org.auth).json()["result"]
    assert not {"role_create", "role_update", "role_delete"} & {a["type"] for a in listed}
    extended = client.get(org.url("/activities?extensions=true"), auth=org.auth).json()["result"]
    assert {"role_create", "role_update", "role_delete"} <= {a["type"] for a in extended}
    role_change = next(a for a in extended if a["type"] == "role_create")
    assert client.get(org.url(f"/activities/{role_change['id']}"), auth=org.auth).status_code == 404
    by_id = org.url(f"/activities/{role_change['id']}?extensions=true")
    assert client.get(by_id, auth=org.auth).json()["result"]["type"] == "role_create"


def test_system_roles_cannot_be_changed_or_deleted(client: TestClient, org: Org) -> None:
    admin = org.url(f"/roles/{role_id(client, org, 'Admin')}")
    patch = client.patch(admin, json={"name": "Superuser"}, auth=org.auth)
    assert patch.status_code == 403
    assert "system role" in patch.json()["error"]
    assert client.delete(admin, auth=org.auth).status_code == 403


@pytest.mark.parametrize(
    ("policy", "named"),
    [
        ({"permissions": ["control-plane:organization:fly"]}, "control-plane:organization:fly"),
        ({"resources": ["organisation/123"]}, "organisation/123"),
        ({"resources": ["instance/not-a-uuid"]}, "instance/not-a-uuid"),
        ({"resources": [f"organization/{uuid.UUID(int=7)}"]}, "not this organization"),
        ({"allowDeny": "MAYBE"}, "allowDeny"),
        ({"permissions": []}, "permissions"),
    ],
)
def test_invalid_policies_are_400_naming_the_value(
    client: TestClient, org: Org, policy: dict[str, Any], named: str
) -> None:
    response = _create_role(client, org, [{**_policy(org, VIEW_KEYS), **policy}])
    assert response.status_code == 400
    assert named in response.json()["error"]


@pytest.mark.parametrize("actor", ["user/nope", "robot/123", f"apiKey/{uuid.UUID(int=9)}"])
def test_invalid_or_foreign_actors_are_400(client: TestClient, org: Org, actor: str) -> None:
    response = _create_role(client, org, [_policy(org, VIEW_KEYS)], actors=[actor])
    assert response.status_code == 400
    assert actor in response.json()["error"]


def test_actor_of_another_organization_is_400(
    client: TestClient, org: Org, settings: Settings
) -> None:
    other = create_org(settings)
    response = _create_role(
        client, org, [_policy(org, VIEW_KEYS)], actors=[f"apiKey/{other.key_uuid}"]
    )
    assert response.status_code == 400


def test_duplicate_name_is_409(client: TestClient, org: Org) -> None:
    assert _create_role(client, org, [_policy(org, VIEW_KEYS)], name="Dup").status_code == 200
    assert _create_role(client, org, [_policy(org, VIEW_KEYS)], name="Dup").status_code == 409
    assert _create_role(client, org, [_policy(org, VIEW_KEYS)], name="Admin").status_code == 409


def test_key_with_a_custom_read_only_role_is_refused_writes(client: TestClient, org: Org) -> None:
    reader = _create_role(client, org, [_policy(org, VIEW_KEYS)]).json()["result"]
    created = create_key(client, org, assignedRoleIds=[reader["id"]])
    assert created["key"]["assignedRoles"][0]["roleType"] == "custom"
    assert created["key"]["roles"] == []
    auth = key_auth(created)
    assert client.get(org.url("/keys"), auth=auth).status_code == 200
    response = client.post(org.url("/keys"), json={"name": "x", "roles": ["developer"]}, auth=auth)
    assert response.status_code == 403
    assert client.patch(org.url(), json={"name": "x"}, auth=auth).status_code == 403
    assert client.get(org.url("/activities"), auth=auth).status_code == 403


def test_deny_wins_over_allow(client: TestClient, org: Org) -> None:
    role = _create_role(
        client,
        org,
        [
            _policy(org, VIEW_KEYS),
            _policy(org, ["control-plane:organization:view-api-keys"], "DENY"),
        ],
    ).json()["result"]
    auth = key_auth(create_key(client, org, assignedRoleIds=[role["id"]]))
    assert client.get(org.url(), auth=auth).status_code == 200
    assert client.get(org.url("/keys"), auth=auth).status_code == 403


def test_role_changes_take_effect_on_the_next_request(client: TestClient, org: Org) -> None:
    role = _create_role(client, org, [_policy(org, VIEW_KEYS)]).json()["result"]
    auth = key_auth(create_key(client, org, assignedRoleIds=[role["id"]]))
    assert client.get(org.url("/keys"), auth=auth).status_code == 200
    url = org.url(f"/roles/{role['id']}")
    client.patch(
        url, json={"policies": [_policy(org, ["control-plane:organization:view"])]}, auth=org.auth
    )
    assert client.get(org.url("/keys"), auth=auth).status_code == 403
    client.delete(url, auth=org.auth)
    assert client.get(org.url(), auth=auth).status_code == 403


def test_no_escalation_through_custom_roles(client: TestClient, org: Org) -> None:
    manager = _create_role(
        client,
        org,
        [_policy(org, [*VIEW_KEYS, "control-plane:organization:manage"])],
    ).json()["result"]
    auth = key_auth(create_key(client, org, assignedRoleIds=[manager["id"]]))
    # It may create a role within its own permissions ...
    assert _create_role(client, org, [_policy(org, VIEW_KEYS)], auth=auth).status_code == 200
    # ... but not one that grants more, nor widen one, nor hand itself Admin's role.
    wider = _create_role(
        client, org, [_policy(org, ["control-plane:organization:delete-api-keys"])], auth=auth
    )
    assert wider.status_code == 403
    narrow = _create_role(client, org, [_policy(org, VIEW_KEYS)]).json()["result"]
    widen = client.patch(
        org.url(f"/roles/{narrow['id']}"),
        json={"policies": [_policy(org, ["control-plane:organization:create-api-keys"])]},
        auth=auth,
    )
    assert widen.status_code == 403
    strong = _create_role(
        client, org, [_policy(org, ["control-plane:organization:delete-api-keys"])]
    ).json()["result"]
    grab = client.patch(org.url(f"/roles/{strong['id']}"), json={"actors": []}, auth=auth)
    assert grab.status_code == 403
    assert client.delete(org.url(f"/roles/{strong['id']}"), auth=auth).status_code == 403
