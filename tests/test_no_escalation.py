"""The no-escalation rule, case by case: a DENY cannot be lifted by the actor it restricts, a
lesser actor cannot restrict (or delete, or disable) a greater one, and refusals change nothing.

The rule (keyhouse.auth.policy): a change to anyone's access is allowed only if every affected
actor's effective permissions, DENY included, are within the caller's before and after it.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from keyhouse.models import Activity
from keyhouse.state import AppState
from tests.conftest import Org, create_key, invite_and_accept, key_auth, role_id

DELETE_KEYS = "control-plane:organization:delete-api-keys"
MANAGE = "control-plane:organization:manage"
VIEW = "control-plane:organization:view"


def _role(
    client: TestClient,
    org: Org,
    allow_deny: str,
    permissions: list[str],
    actors: list[str],
    auth: tuple[str, str] | None = None,
) -> Any:
    return client.post(
        org.url("/roles"),
        json={
            "name": f"r-{uuid.uuid4().hex[:8]}",
            "actors": actors,
            "policies": [
                {
                    "allowDeny": allow_deny,
                    "permissions": permissions,
                    "resources": [f"organization/{org.id}"],
                }
            ],
        },
        auth=auth or org.auth,
    )


def _activity_count(state: AppState, org: Org) -> int:
    with state.sessionmaker() as session:
        query = select(func.count()).select_from(Activity).where(Activity.organization_id == org.id)
        return int(session.scalar(query) or 0)


def _restricted_admin(client: TestClient, org: Org) -> tuple[dict[str, Any], dict[str, Any]]:
    """An Admin key, and a role that DENYs it deleting keys (made by the bootstrap admin)."""
    admin = create_key(client, org, name="restricted admin")
    deny = _role(client, org, "DENY", [DELETE_KEYS], [f"apiKey/{admin['key']['id']}"])
    assert deny.status_code == 200, deny.text
    return admin, deny.json()["result"]


def test_a_deny_cannot_be_lifted_by_the_key_it_restricts(
    client: TestClient, org: Org, state: AppState
) -> None:
    admin, deny = _restricted_admin(client, org)
    auth = key_auth(admin)
    victim = create_key(client, org, name="victim")["key"]
    assert client.delete(org.url(f"/keys/{victim['id']}"), auth=auth).status_code == 403
    before = _activity_count(state, org)

    # Removing itself from the DENY role, deleting the role, or emptying its policies.
    role_url = org.url(f"/roles/{deny['id']}")
    leave = client.patch(role_url, json={"actors": []}, auth=auth)
    assert leave.status_code == 403, leave.text
    assert "DENY that restricts you" in leave.json()["error"]
    assert client.delete(role_url, auth=auth).status_code == 403
    allow_instead = [
        {"allowDeny": "ALLOW", "permissions": [VIEW], "resources": [f"organization/{org.id}"]}
    ]
    assert client.patch(role_url, json={"policies": allow_instead}, auth=auth).status_code == 403
    # Nor by dropping the role from its own key's roles.
    own = org.url(f"/keys/{admin['key']['id']}")
    admin_role = role_id(client, org, "Admin")
    assert client.patch(own, json={"assignedRoleIds": [admin_role]}, auth=auth).status_code == 403

    assert client.get(role_url, auth=org.auth).json()["result"]["actors"] == [
        f"apiKey/{admin['key']['id']}"
    ]
    assert client.delete(org.url(f"/keys/{victim['id']}"), auth=auth).status_code == 403
    assert _activity_count(state, org) == before
    # Somebody the DENY does not restrict, holding as much, may lift it.
    assert client.delete(role_url, auth=org.auth).status_code == 200
    assert client.delete(org.url(f"/keys/{victim['id']}"), auth=auth).status_code == 200


def test_a_lesser_actor_cannot_restrict_a_greater_one(client: TestClient, org: Org) -> None:
    manager_role = _role(client, org, "ALLOW", [VIEW, MANAGE], []).json()["result"]
    manager = key_auth(create_key(client, org, assignedRoleIds=[manager_role["id"]]))
    admin = create_key(client, org, name="admin")
    actors = [f"apiKey/{admin['key']['id']}", f"user/{org.user_id}"]

    refused = _role(client, org, "DENY", [MANAGE], actors, auth=manager)
    assert refused.status_code == 403, refused.text
    assert "which you do not hold" in refused.json()["error"]
    # Nor by adding them to an existing role it may otherwise edit.
    empty = _role(client, org, "DENY", [MANAGE], [], auth=manager).json()["result"]
    url = org.url(f"/roles/{empty['id']}")
    assert client.patch(url, json={"actors": actors}, auth=manager).status_code == 403
    assert client.get(url, auth=org.auth).json()["result"]["actors"] == []
    assert client.get(org.url("/roles"), auth=key_auth(admin)).status_code == 200
    assert (
        client.patch(org.url(""), json={"name": "still admin"}, auth=key_auth(admin)).status_code
        == 200
    )


def test_a_key_manager_cannot_disable_or_delete_an_admin_key(client: TestClient, org: Org) -> None:
    key_manager = _role(
        client,
        org,
        "ALLOW",
        [
            VIEW,
            "control-plane:organization:view-api-keys",
            "control-plane:organization:update-api-keys",
            DELETE_KEYS,
        ],
        [],
    ).json()["result"]
    auth = key_auth(create_key(client, org, assignedRoleIds=[key_manager["id"]]))
    admin_key = org.url(f"/keys/{org.key_uuid}")
    assert client.delete(admin_key, auth=auth).status_code == 403
    assert client.patch(admin_key, json={"state": "disabled"}, auth=auth).status_code == 403
    assert client.get(org.url("/keys"), auth=org.auth).status_code == 200
    # A key within its own permissions it may delete.
    lesser = create_key(client, org, assignedRoleIds=[key_manager["id"]])["key"]
    assert client.delete(org.url(f"/keys/{lesser['id']}"), auth=auth).status_code == 200


def test_members_and_invitations_without_roles_are_valid(
    client: TestClient, org: Org, state: AppState
) -> None:
    # clickhousectl: `invitation create` without a role, `member update --clear-roles`.
    invited = client.post(
        org.url("/invitations"),
        json={"email": f"{uuid.uuid4().hex[:8]}@example.com"},
        auth=org.auth,
    )
    assert invited.status_code == 200, invited.text
    assert invited.json()["result"]["assignedRoles"] == []
    user_id = invite_and_accept(client, org, state)
    cleared = client.patch(
        org.url(f"/members/{user_id}"), json={"assignedRoleIds": []}, auth=org.auth
    )
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["result"]["assignedRoles"] == []
    assert cleared.json()["result"].get("role") is None


def test_the_last_admin_cannot_clear_their_roles(client: TestClient, org: Org) -> None:
    url = org.url(f"/members/{org.user_id}")
    assert client.patch(url, json={"assignedRoleIds": []}, auth=org.auth).status_code == 409
