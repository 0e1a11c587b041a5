"""Members: list, get, change roles, remove; an organization always keeps an admin."""

from __future__ import annotations

import uuid

from fastapi.testclient import TestClient
from sqlalchemy import select

from keyhouse.models import ConsoleSession
from keyhouse.state import AppState
from tests.conftest import Org, create_key, invite_and_accept, key_auth, role_id


def test_bootstrap_admin_is_listed(client: TestClient, org: Org) -> None:
    members = client.get(org.url("/members"), auth=org.auth).json()["result"]
    assert len(members) == 1
    admin = members[0]
    assert admin["userId"] == str(org.user_id)
    assert admin["role"] == "admin"
    assert admin["assignedRoles"][0]["roleName"] == "Admin"
    assert admin["email"].endswith("@example.com")
    got = client.get(org.url(f"/members/{org.user_id}"), auth=org.auth).json()["result"]
    assert got == admin


def test_unknown_member_is_404(client: TestClient, org: Org) -> None:
    assert client.get(org.url(f"/members/{uuid.uuid4()}"), auth=org.auth).status_code == 404


def test_change_roles_with_ids_or_legacy_role(
    client: TestClient, org: Org, state: AppState
) -> None:
    user_id = invite_and_accept(client, org, state)
    url = org.url(f"/members/{user_id}")
    assert client.get(url, auth=org.auth).json()["result"]["role"] == "developer"
    billing = role_id(client, org, "Billing")
    updated = client.patch(url, json={"assignedRoleIds": [billing]}, auth=org.auth).json()
    assert [r["roleName"] for r in updated["result"]["assignedRoles"]] == ["Billing"]
    assert "role" not in updated["result"]
    promoted = client.patch(url, json={"role": "admin"}, auth=org.auth).json()["result"]
    assert promoted["role"] == "admin"
    activities = client.get(org.url("/activities"), auth=org.auth).json()["result"]
    assert "organization_member_update_roles" in {a["type"] for a in activities}


def test_the_last_admin_cannot_be_demoted_or_removed(
    client: TestClient, org: Org, state: AppState
) -> None:
    url = org.url(f"/members/{org.user_id}")
    demote = client.patch(url, json={"role": "developer"}, auth=org.auth)
    assert demote.status_code == 409
    assert "at least one admin" in demote.json()["error"]
    assert client.delete(url, auth=org.auth).status_code == 409
    # With a second admin, the first may go.
    invite_and_accept(client, org, state, role="admin")
    assert client.patch(url, json={"role": "developer"}, auth=org.auth).status_code == 200


def test_removing_a_member_revokes_sessions_but_not_their_keys(
    client: TestClient, org: Org, state: AppState
) -> None:
    from keyhouse.roles.service import user_principal

    user_id = uuid.UUID(invite_and_accept(client, org, state, role="admin"))
    with state.sessionmaker.begin() as session:
        session.add(ConsoleSession(user_id=user_id, token_hash=uuid.uuid4().hex * 2))
        # A key the member created (as the console would, acting as that user).
        from keyhouse.api_keys.schemas import ApiKeyPostRequest
        from keyhouse.api_keys.service import create_key as create

        member = user_principal(
            session, user_id=user_id, name="member@example.com", organization_id=org.id
        )
        created = create(
            session,
            member,
            ApiKeyPostRequest(name="member's key", roles=["developer"]),
            pepper=state.pepper,
            max_keys=100,
        )
    auth = (created.key_id or "", created.key_secret or "")
    assert client.delete(org.url(f"/members/{user_id}"), auth=org.auth).status_code == 200
    assert client.get(org.url(f"/members/{user_id}"), auth=org.auth).status_code == 404
    with state.sessionmaker() as session:
        left = session.scalars(select(ConsoleSession).where(ConsoleSession.user_id == user_id))
        assert left.all() == []
    assert client.get(org.url(), auth=auth).status_code == 200
    key = client.get(org.url(f"/keys/{created.key.id}"), auth=org.auth).json()["result"]
    assert key["createdBy"] == {"type": "user", "id": str(user_id), "name": "member@example.com"}
    activities = client.get(org.url("/activities"), auth=org.auth).json()["result"]
    assert "organization_member_delete" in {a["type"] for a in activities}


def test_a_developer_key_cannot_change_members(
    client: TestClient, org: Org, state: AppState
) -> None:
    user_id = invite_and_accept(client, org, state)
    developer = key_auth(create_key(client, org, roles=["developer"]))
    url = org.url(f"/members/{user_id}")
    assert client.get(url, auth=developer).status_code == 200
    assert client.patch(url, json={"role": "admin"}, auth=developer).status_code == 403
    assert client.delete(url, auth=developer).status_code == 403


def test_no_escalation_through_member_roles(client: TestClient, org: Org, state: AppState) -> None:
    manager = client.post(
        org.url("/roles"),
        json={
            "name": "People manager",
            "actors": [],
            "policies": [
                {
                    "allowDeny": "ALLOW",
                    "permissions": [
                        "control-plane:organization:view",
                        "control-plane:organization:manage",
                    ],
                    "resources": [f"organization/{org.id}"],
                }
            ],
        },
        auth=org.auth,
    ).json()["result"]
    auth = key_auth(create_key(client, org, assignedRoleIds=[manager["id"]]))
    user_id = invite_and_accept(client, org, state, role_ids=[manager["id"]])
    url = org.url(f"/members/{user_id}")
    # Admin is more than the manager holds; so is touching the bootstrap admin.
    assert client.patch(url, json={"role": "admin"}, auth=auth).status_code == 403
    admin_url = org.url(f"/members/{org.user_id}")
    assert (
        client.patch(admin_url, json={"assignedRoleIds": [manager["id"]]}, auth=auth).status_code
        == 403
    )
    assert client.delete(admin_url, auth=auth).status_code == 403
    invite = client.post(
        org.url("/invitations"), json={"email": "boss@example.com", "role": "admin"}, auth=auth
    )
    assert invite.status_code == 403
