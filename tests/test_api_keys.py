"""API keys: the lifecycle users know from ClickHouse Cloud's console, through the API."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from keyhouse.auth.credentials import secret_checksum_ok
from keyhouse.config import Settings
from keyhouse.models import Activity, ApiKey, Role
from keyhouse.state import AppState
from tests.conftest import Org, create_key, create_org, key_auth, make_client, role_id


def _future(days: int = 30) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(days=days)).isoformat()


def _sha256_b64(value: str) -> str:
    return base64.b64encode(hashlib.sha256(value.encode()).digest()).decode()


# --- creating -------------------------------------------------------------------------------


def test_create_returns_credentials_once(client: TestClient, org: Org) -> None:
    created = create_key(client, org, name="ci")
    key = created["key"]
    assert re.fullmatch(r"[0-9A-Za-z]{20}", created["keyId"])
    assert re.fullmatch(r"khs_[0-9A-Za-z]{49}", created["keySecret"])
    assert secret_checksum_ok(created["keySecret"])
    assert key["keySuffix"] == created["keyId"][-4:]
    assert uuid.UUID(key["id"]).version == 4
    assert key["id"] != created["keyId"]
    assert key["state"] == "enabled"
    assert key["roles"] == ["admin"]
    assert key["assignedRoles"][0]["roleName"] == "Admin"
    assert key["createdBy"] == {"type": "apiKey", "id": str(org.key_uuid), "name": org_key_name()}
    # Never again: neither get nor list carries the secret or the full key id.
    for response in (
        client.get(org.url(f"/keys/{key['id']}"), auth=org.auth),
        client.get(org.url("/keys"), auth=org.auth),
    ):
        assert created["keySecret"] not in response.text
        assert created["keyId"] not in response.text
        assert "keySecret" not in response.text


def org_key_name() -> str:
    return "Admin key (bootstrap)"


def test_new_key_works_at_once(client: TestClient, org: Org) -> None:
    created = create_key(client, org)
    assert client.get(org.url(), auth=key_auth(created)).status_code == 200


def test_only_peppered_hashes_are_stored(client: TestClient, org: Org, state: AppState) -> None:
    created = create_key(client, org)
    with state.sessionmaker() as session:
        row = session.get(ApiKey, uuid.UUID(created["key"]["id"]))
        assert row is not None
        stored = (row.key_id_hash, row.key_secret_hash)
    for value in (created["keyId"], created["keySecret"]):
        plain = hashlib.sha256(value.encode()).hexdigest()
        assert value not in stored
        assert plain not in stored
        assert _sha256_b64(value) not in stored


@pytest.mark.parametrize("body", [{"name": "x"}, {"name": "x", "assignedRoleIds": []}])
def test_a_key_without_roles_can_call_only_what_needs_no_permission(
    client: TestClient, org: Org, body: dict[str, Any]
) -> None:
    # clickhousectl's `key create --name X` sends assignedRoleIds: [] (the spec allows it).
    response = client.post(org.url("/keys"), json=body, auth=org.auth)
    assert response.status_code == 200, response.text
    created = response.json()["result"]
    assert created["key"]["assignedRoles"] == []
    assert created["key"]["roles"] == []
    auth = key_auth(created)
    assert client.get("/v1/whoami", auth=auth).status_code == 200
    listed = client.get("/v1/organizations", auth=auth).json()["result"]
    assert [o["id"] for o in listed] == [str(org.id)]
    assert client.get(org.url(""), auth=auth).status_code == 403
    assert client.get(org.url("/keys"), auth=auth).status_code == 403


def test_create_without_name_is_400(client: TestClient, org: Org) -> None:
    response = client.post(org.url("/keys"), json={"roles": ["admin"]}, auth=org.auth)
    assert response.status_code == 400
    assert "name" in response.json()["error"]


def test_create_with_assigned_role_ids(client: TestClient, org: Org) -> None:
    developer = role_id(client, org, "Developer")
    created = create_key(client, org, assignedRoleIds=[developer])
    assert created["key"]["assignedRoles"] == [
        {"roleId": developer, "roleName": "Developer", "roleType": "system"}
    ]
    assert created["key"]["roles"] == ["developer"]


def test_unknown_role_id_is_400(client: TestClient, org: Org) -> None:
    response = client.post(
        org.url("/keys"), json={"name": "x", "assignedRoleIds": [str(uuid.uuid4())]}, auth=org.auth
    )
    assert response.status_code == 400
    assert "assignedRoleIds" in response.json()["error"]


def test_role_of_another_organization_is_400(
    client: TestClient, org: Org, settings: Settings
) -> None:
    other = create_org(settings)
    foreign = role_id(client, other, "Admin")
    response = client.post(
        org.url("/keys"), json={"name": "x", "assignedRoleIds": [foreign]}, auth=org.auth
    )
    assert response.status_code == 400


def test_expire_at_in_the_past_is_400(client: TestClient, org: Org) -> None:
    response = client.post(
        org.url("/keys"),
        json={"name": "x", "roles": ["admin"], "expireAt": "2020-01-01T00:00:00Z"},
        auth=org.auth,
    )
    assert response.status_code == 400
    assert "expireAt" in response.json()["error"]


def test_created_disabled_key_cannot_authenticate(client: TestClient, org: Org) -> None:
    created = create_key(client, org, state="disabled")
    response = client.get(org.url(), auth=key_auth(created))
    assert response.status_code == 401
    assert response.json()["error"] == "UNAUTHORIZED: Key is not active"


def test_hash_data_import(client: TestClient, org: Org) -> None:
    key_id, secret = "IMPORTEDKEYID0000abcd", "my-own-secret-from-a-vault"
    response = client.post(
        org.url("/keys"),
        json={
            "name": "imported",
            "roles": ["developer"],
            "hashData": {
                "keyIdHash": _sha256_b64(key_id),
                "keyIdSuffix": key_id[-4:],
                "keySecretHash": _sha256_b64(secret),
            },
        },
        auth=org.auth,
    )
    assert response.status_code == 200, response.text
    result = response.json()["result"]
    assert "keyId" not in result
    assert "keySecret" not in result
    assert result["key"]["keySuffix"] == "abcd"
    assert client.get(org.url(), auth=(key_id, secret)).status_code == 200
    assert client.get(org.url(), auth=(key_id, secret + "x")).status_code == 401


def test_hash_data_that_is_not_a_sha256_digest_is_400(client: TestClient, org: Org) -> None:
    response = client.post(
        org.url("/keys"),
        json={
            "name": "imported",
            "roles": ["developer"],
            "hashData": {"keyIdHash": "abc", "keyIdSuffix": "abcd", "keySecretHash": "abc"},
        },
        auth=org.auth,
    )
    assert response.status_code == 400
    assert "keyIdHash" in response.json()["error"]


def test_quota_of_keys_per_organization(state: AppState, settings: Settings) -> None:
    limited = AppState.from_settings(settings.model_copy(update={"max_keys_per_organization": 3}))
    org = create_org(settings)
    with make_client(limited) as client:
        create_key(client, org)
        create_key(client, org)  # the bootstrap key is the first of three
        response = client.post(
            org.url("/keys"), json={"name": "one too many", "roles": ["admin"]}, auth=org.auth
        )
    limited.close()
    assert response.status_code == 409
    assert "api-keys-per-organization" in response.json()["error"]


# --- listing --------------------------------------------------------------------------------


def test_list_shows_the_console_columns(client: TestClient, org: Org) -> None:
    create_key(client, org, name="second", expireAt=_future())
    body = client.get(org.url("/keys"), auth=org.auth).json()
    keys = body["result"]
    assert [k["name"] for k in keys] == [org_key_name(), "second"]  # oldest first
    second = keys[1]
    for field in ("name", "keySuffix", "roles", "assignedRoles", "state", "expireAt", "createdBy"):
        assert field in second
    assert body["totalCount"] == 2
    assert body["nextCursor"] is None
    assert body["limit"] == 250


def test_list_paginates_with_limit_and_cursor(client: TestClient, org: Org) -> None:
    for index in range(4):
        create_key(client, org, name=f"k{index}")
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        body = client.get(org.url("/keys"), params=params, auth=org.auth).json()
        assert body["totalCount"] == 5
        seen += [k["name"] for k in body["result"]]
        pages += 1
        cursor = body["nextCursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == [org_key_name(), "k0", "k1", "k2", "k3"]


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 251}, {"cursor": "garbage!"}])
def test_bad_pagination_is_400(client: TestClient, org: Org, params: dict[str, str | int]) -> None:
    assert client.get(org.url("/keys"), params=params, auth=org.auth).status_code == 400


# --- updating -------------------------------------------------------------------------------


def test_patch_leaves_absent_fields_and_null_clears_expiry(client: TestClient, org: Org) -> None:
    expire_at = _future(10)
    key = create_key(client, org, name="a", expireAt=expire_at)["key"]
    url = org.url(f"/keys/{key['id']}")
    renamed = client.patch(url, json={"name": "b"}, auth=org.auth).json()["result"]
    assert renamed["name"] == "b"
    assert renamed["expireAt"] == key["expireAt"]
    cleared = client.patch(url, json={"expireAt": None}, auth=org.auth).json()["result"]
    assert "expireAt" not in cleared
    assert cleared["name"] == "b"


def test_patch_past_expiry_is_400(client: TestClient, org: Org) -> None:
    key = create_key(client, org)["key"]
    response = client.patch(
        org.url(f"/keys/{key['id']}"), json={"expireAt": "2001-01-01T00:00:00Z"}, auth=org.auth
    )
    assert response.status_code == 400


def test_patch_null_name_is_400(client: TestClient, org: Org) -> None:
    key = create_key(client, org)["key"]
    response = client.patch(org.url(f"/keys/{key['id']}"), json={"name": None}, auth=org.auth)
    assert response.status_code == 400
    assert "name" in response.json()["error"]


def test_patch_with_empty_roles_clears_them(client: TestClient, org: Org) -> None:
    # clickhousectl's `key update --clear-roles`.
    created = create_key(client, org)
    key = created["key"]
    response = client.patch(
        org.url(f"/keys/{key['id']}"), json={"assignedRoleIds": []}, auth=org.auth
    )
    assert response.status_code == 200, response.text
    assert response.json()["result"]["assignedRoles"] == []
    assert client.get(org.url("/keys"), auth=key_auth(created)).status_code == 403


def test_patch_replaces_roles_and_ip_list_wholesale(client: TestClient, org: Org) -> None:
    key = create_key(client, org, ipAccessList=[{"source": "10.0.0.0/8"}])["key"]
    url = org.url(f"/keys/{key['id']}")
    patched = client.patch(
        url,
        json={
            "roles": ["developer"],
            "ipAccessList": [{"source": "192.168.1.1", "description": "x"}],
        },
        auth=org.auth,
    ).json()["result"]
    assert patched["roles"] == ["developer"]
    assert patched["ipAccessList"] == [{"source": "192.168.1.1/32", "description": "x"}]


def test_expired_key_is_refused(client: TestClient, org: Org, state: AppState) -> None:
    created = create_key(client, org, expireAt=_future(1))
    with state.sessionmaker.begin() as session:
        row = session.get(ApiKey, uuid.UUID(created["key"]["id"]))
        assert row is not None
        row.expire_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    response = client.get(org.url(), auth=key_auth(created))
    assert response.status_code == 401
    assert response.json()["error"] == "UNAUTHORIZED: Key is not active"


def test_disable_and_enable_take_effect_on_the_next_request(client: TestClient, org: Org) -> None:
    created = create_key(client, org)
    url = org.url(f"/keys/{created['key']['id']}")
    assert client.patch(url, json={"state": "disabled"}, auth=org.auth).status_code == 200
    assert client.get(org.url(), auth=key_auth(created)).status_code == 401
    assert client.patch(url, json={"state": "enabled"}, auth=org.auth).status_code == 200
    assert client.get(org.url(), auth=key_auth(created)).status_code == 200


def test_re_roling_takes_effect_on_the_next_request(client: TestClient, org: Org) -> None:
    created = create_key(client, org)
    auth = key_auth(created)
    body = {"name": "by new key", "roles": ["developer"]}
    assert client.post(org.url("/keys"), json=body, auth=auth).status_code == 200
    url = org.url(f"/keys/{created['key']['id']}")
    assert client.patch(url, json={"roles": ["developer"]}, auth=org.auth).status_code == 200
    assert client.post(org.url("/keys"), json=body, auth=auth).status_code == 403


# --- deleting -------------------------------------------------------------------------------


def test_delete_cuts_the_key_off_at_once(client: TestClient, org: Org) -> None:
    created = create_key(client, org)
    response = client.delete(org.url(f"/keys/{created['key']['id']}"), auth=org.auth)
    assert response.status_code == 200
    assert set(response.json()) == {"status", "requestId"}
    response = client.get(org.url(), auth=key_auth(created))
    assert response.status_code == 401
    assert response.json()["error"] == "UNAUTHORIZED: Key is not found"
    assert client.get(org.url(f"/keys/{created['key']['id']}"), auth=org.auth).status_code == 404


def test_a_key_cannot_delete_itself(client: TestClient, org: Org) -> None:
    response = client.delete(org.url(f"/keys/{org.key_uuid}"), auth=org.auth)
    assert response.status_code == 400
    assert client.get(org.url(), auth=org.auth).status_code == 200


def test_unknown_key_is_404(client: TestClient, org: Org) -> None:
    missing = org.url(f"/keys/{uuid.uuid4()}")
    assert client.get(missing, auth=org.auth).status_code == 404
    assert client.patch(missing, json={"name": "x"}, auth=org.auth).status_code == 404
    assert client.delete(missing, auth=org.auth).status_code == 404


def test_keys_of_another_organization_are_invisible(
    client: TestClient, org: Org, settings: Settings
) -> None:
    other = create_org(settings)
    assert client.get(other.url("/keys"), auth=org.auth).status_code == 404
    # Even addressed through the caller's own organization, a foreign key is not found.
    foreign = org.url(f"/keys/{other.key_uuid}")
    assert client.get(foreign, auth=org.auth).status_code == 404
    assert client.delete(foreign, auth=org.auth).status_code == 404
    assert client.get(other.url(), auth=other.auth).status_code == 200


# --- usedAt ---------------------------------------------------------------------------------


def test_used_at_has_minute_precision_and_is_written_behind_once_a_minute(
    client: TestClient, org: Org, state: AppState
) -> None:
    from sqlalchemy import event

    created = create_key(client, org)
    updates: list[str] = []

    def count(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("UPDATE API_KEYS"):
            updates.append(statement)

    event.listen(state.engine, "before_cursor_execute", count)
    try:
        for _ in range(5):
            assert client.get(org.url(), auth=key_auth(created)).status_code == 200
        assert updates == []  # nothing written on the request path
        portal = client.portal
        assert portal is not None
        portal.call(state.usage.flush, state)
    finally:
        event.remove(state.engine, "before_cursor_execute", count)
    assert len(updates) == 1  # one statement for every key noted
    key = client.get(org.url(f"/keys/{created['key']['id']}"), auth=org.auth).json()["result"]
    used_at = dt.datetime.fromisoformat(key["usedAt"])
    created_at = dt.datetime.fromisoformat(key["createdAt"])
    # Minute precision, but never before the key existed (its first minute reads createdAt).
    assert used_at >= created_at
    assert (used_at.second, used_at.microsecond) == (0, 0) or used_at == created_at


def test_used_at_survives_a_clean_shutdown(org: Org, state: AppState) -> None:
    with make_client(state) as first:
        created = create_key(first, org)
        assert first.get(org.url(), auth=key_auth(created)).status_code == 200
    # The app stopped without waiting for its next flush; another one reads the key.
    with make_client(state) as second:
        path = org.url(f"/keys/{created['key']['id']}")
        assert second.get(path, auth=org.auth).json()["result"].get("usedAt")


# --- no escalation --------------------------------------------------------------------------


def _custom_role(state: AppState, org: Org, permissions: list[str]) -> uuid.UUID:
    """A custom role made directly in storage (the roles API comes with the access issue)."""
    with state.sessionmaker.begin() as session:
        role = Role(
            organization_id=org.id,
            name=f"custom-{uuid.uuid4().hex[:6]}",
            type="custom",
            policies=[
                {
                    "id": str(uuid.uuid4()),
                    "allowDeny": "ALLOW",
                    "permissions": permissions,
                    "resources": [f"organization/{org.id}"],
                }
            ],
        )
        session.add(role)
        session.flush()
        return role.id


def test_a_key_cannot_grant_more_than_it_holds(
    client: TestClient, org: Org, state: AppState
) -> None:
    key_manager = _custom_role(
        state,
        org,
        [
            "control-plane:organization:view",
            "control-plane:organization:view-api-keys",
            "control-plane:organization:create-api-keys",
            "control-plane:organization:update-api-keys",
        ],
    )
    manager = create_key(client, org, assignedRoleIds=[str(key_manager)])
    auth = key_auth(manager)
    # Its own role it may pass on; admin it may not.
    create_key(client, org, auth=auth, assignedRoleIds=[str(key_manager)])
    response = client.post(org.url("/keys"), json={"name": "x", "roles": ["admin"]}, auth=auth)
    assert response.status_code == 403
    assert "permissions its creator does not have" in response.json()["error"]
    # Nor may it re-role a key into admin, or touch a key that holds more than it does.
    weak = create_key(client, org, assignedRoleIds=[str(key_manager)])["key"]
    response = client.patch(org.url(f"/keys/{weak['id']}"), json={"roles": ["admin"]}, auth=auth)
    assert response.status_code == 403
    admin_key = org.url(f"/keys/{org.key_uuid}")
    assert client.patch(admin_key, json={"name": "pwned"}, auth=auth).status_code == 403


def test_developer_key_is_read_only(client: TestClient, org: Org) -> None:
    developer = key_auth(create_key(client, org, roles=["developer"]))
    assert client.get(org.url("/keys"), auth=developer).status_code == 200
    assert client.get(org.url("/activities"), auth=developer).status_code == 200
    body = {"name": "x", "roles": ["developer"]}
    assert client.post(org.url("/keys"), json=body, auth=developer).status_code == 403
    target = org.url(f"/keys/{org.key_uuid}")
    assert client.patch(target, json={"name": "x"}, auth=developer).status_code == 403
    assert client.delete(target, auth=developer).status_code == 403


def test_query_endpoints_key_has_no_management_access(client: TestClient, org: Org) -> None:
    query = key_auth(create_key(client, org, roles=["query_endpoints"]))
    listed = client.get("/v1/organizations", auth=query).json()["result"]
    assert [o["id"] for o in listed] == [str(org.id)]
    assert client.get(org.url(), auth=query).status_code == 403
    assert client.get(org.url("/keys"), auth=query).status_code == 403
    assert client.get("/v1/whoami", auth=query).status_code == 200


def test_refused_change_writes_nothing(client: TestClient, org: Org, state: AppState) -> None:
    developer = key_auth(create_key(client, org, roles=["developer"]))
    with state.sessionmaker() as session:
        before = session.scalars(select(Activity).where(Activity.organization_id == org.id)).all()
    client.post(org.url("/keys"), json={"name": "x", "roles": ["admin"]}, auth=developer)
    past = "2001-01-01T00:00:00Z"
    client.post(org.url("/keys"), json={"name": "x", "expireAt": past}, auth=org.auth)
    with state.sessionmaker() as session:
        after = session.scalars(select(Activity).where(Activity.organization_id == org.id)).all()
        keys = session.scalars(select(ApiKey).where(ApiKey.organization_id == org.id)).all()
    assert len(after) == len(before)
    assert len(keys) == 2


def test_concurrent_creates_never_overshoot_the_quota(settings: Settings) -> None:
    import concurrent.futures

    from keyhouse.api.errors import Conflict
    from keyhouse.api_keys.schemas import ApiKeyPostRequest
    from keyhouse.api_keys.service import create_key as create
    from keyhouse.roles.service import user_principal

    org = create_org(settings)
    racing = AppState.from_settings(settings)

    def attempt(index: int) -> str:
        try:
            with racing.sessionmaker.begin() as session:
                admin = user_principal(
                    session, user_id=org.user_id, name="admin", organization_id=org.id
                )
                create(
                    session,
                    admin,
                    ApiKeyPostRequest(name=f"race-{index}", roles=["developer"]),
                    pepper=racing.pepper,
                    max_keys=5,
                )
            return "created"
        except Conflict:
            return "refused"

    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(attempt, range(12)))
        with racing.sessionmaker() as session:
            stored = session.scalars(select(ApiKey).where(ApiKey.organization_id == org.id)).all()
    finally:
        racing.close()
    assert len(stored) == 5  # the bootstrap key and four of the twelve
    assert outcomes.count("created") == 4
