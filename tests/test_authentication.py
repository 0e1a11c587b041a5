"""HTTP Basic authentication, IP access lists, rate limits, and revocation across replicas."""

from __future__ import annotations

import base64
import uuid

import pytest
import redis
from fastapi.testclient import TestClient

from keyhouse.auth import credentials
from keyhouse.config import Settings
from keyhouse.state import AppState
from tests.conftest import REDIS_URL, Org, create_key, key_auth, make_client


def test_unknown_key_id_is_401_key_not_found(client: TestClient, org: Org) -> None:
    response = client.get(org.url(), auth=("NOSUCHKEYID000000000", org.key_secret))
    assert response.status_code == 401
    assert response.json()["error"] == "UNAUTHORIZED: Key is not found"


def test_wrong_secret_is_401_and_does_not_reveal_the_key_exists(
    client: TestClient, org: Org
) -> None:
    last = org.key_secret[-1]
    wrong = org.key_secret[:-1] + ("x" if last != "x" else "y")  # always a different secret
    response = client.get(org.url(), auth=(org.key_id, wrong))
    assert response.status_code == 401
    assert response.json()["error"] == "UNAUTHORIZED: Key is not found"
    assert org.key_secret not in response.text


@pytest.mark.parametrize(
    "header",
    ["Bearer abc", "Basic !!!notbase64", "Basic " + base64.b64encode(b"no-colon").decode()],
)
def test_malformed_authorization_is_401(client: TestClient, org: Org, header: str) -> None:
    response = client.get(org.url(), headers={"Authorization": header})
    assert response.status_code == 401


def test_unknown_key_id_does_the_same_secret_comparison(
    client: TestClient, org: Org, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[str, str]] = []
    real = credentials.hashes_equal

    def spy(a: str, b: str) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(credentials, "hashes_equal", spy)
    client.get(org.url(), auth=("NOSUCHKEYID000000000", "whatever"))
    client.get(org.url(), auth=(org.key_id, "whatever"))
    assert len(compared) == 2
    assert compared[0][1] == credentials.DUMMY_HASH
    assert compared[1][1] != credentials.DUMMY_HASH


@pytest.mark.one_database
def test_openapi_document_needs_no_auth(client: TestClient) -> None:
    assert client.get("/v1").status_code == 200
    assert client.get("/v1/openapi.json").status_code == 200


def test_whoami_for_a_key(client: TestClient, org: Org) -> None:
    result = client.get("/v1/whoami", auth=org.auth).json()["result"]
    assert result == {
        "actorType": "apiKey",
        "keyId": org.key_id,
        "name": "Admin key (bootstrap)",
        "organizationId": str(org.id),
    }


# --- IP access lists ------------------------------------------------------------------------


def test_omitted_ip_list_allows_from_anywhere(
    client: TestClient, org: Org, state: AppState
) -> None:
    created = create_key(client, org)
    with make_client(state, ip="203.0.113.9") as remote:
        assert remote.get(org.url(), auth=key_auth(created)).status_code == 200
    with make_client(state, ip="2001:db8::1") as remote6:
        assert remote6.get(org.url(), auth=key_auth(created)).status_code == 200


def test_explicit_empty_ip_list_denies_everywhere(client: TestClient, org: Org) -> None:
    created = create_key(client, org, ipAccessList=[])
    assert created["key"]["ipAccessList"] == []
    response = client.get(org.url(), auth=key_auth(created))
    assert response.status_code == 403
    assert "IP address" in response.json()["error"]


def test_ip_list_allows_only_listed_sources(client: TestClient, org: Org, state: AppState) -> None:
    created = create_key(
        client, org, ipAccessList=[{"source": "127.0.0.1"}, {"source": "2001:db8::/32"}]
    )
    auth = key_auth(created)
    assert client.get(org.url(), auth=auth).status_code == 200
    with make_client(state, ip="127.0.0.2") as other:
        assert other.get(org.url(), auth=auth).status_code == 403
    with make_client(state, ip="2001:db8:1::5") as v6:
        assert v6.get(org.url(), auth=auth).status_code == 200


@pytest.mark.parametrize("source", ["not-an-ip", "10.0.0.0/33", "1.2.3.4.5", ""])
def test_invalid_ip_entry_is_400(client: TestClient, org: Org, source: str) -> None:
    response = client.post(
        org.url("/keys"),
        json={"name": "x", "roles": ["admin"], "ipAccessList": [{"source": source}]},
        auth=org.auth,
    )
    assert response.status_code == 400
    assert "ipAccessList" in response.json()["error"]


def test_forwarded_for_is_used_only_behind_a_trusted_proxy(
    org: Org, settings: Settings, state: AppState
) -> None:
    with make_client(state) as client:
        created = create_key(client, org, ipAccessList=[{"source": "198.51.100.7"}])
    auth = key_auth(created)
    spoofed = {"X-Forwarded-For": "198.51.100.7"}
    # Not behind a trusted proxy: the header is ignored, the socket peer counts.
    with make_client(state, ip="10.1.1.1") as direct:
        assert direct.get(org.url(), auth=auth, headers=spoofed).status_code == 403
    proxied = AppState.from_settings(
        settings.model_copy(update={"trusted_proxies": ["10.0.0.0/8"]})
    )
    try:
        with make_client(proxied, ip="10.1.1.1") as via_proxy:
            assert via_proxy.get(org.url(), auth=auth, headers=spoofed).status_code == 200
            # The right-most untrusted hop is the client; a spoofed left part does not help.
            chain = {"X-Forwarded-For": "198.51.100.7, 203.0.113.1"}
            assert via_proxy.get(org.url(), auth=auth, headers=chain).status_code == 403
    finally:
        proxied.close()


# --- rate limiting --------------------------------------------------------------------------


def test_rate_limit_answers_429_with_reset_headers(settings: Settings, org: Org) -> None:
    limited = AppState.from_settings(settings.model_copy(update={"rate_limit": "3/10s"}))
    try:
        with make_client(limited) as client:
            statuses = [client.get(org.url(), auth=org.auth).status_code for _ in range(4)]
            response = client.get(org.url(), auth=org.auth)
    finally:
        limited.close()
    assert statuses == [200, 200, 200, 429]
    assert response.status_code == 429
    assert 1 <= int(response.headers["X-RateLimit-Reset"]) <= 10
    assert response.headers["Retry-After"] == response.headers["X-RateLimit-Reset"]
    assert response.json()["status"] == 429


def test_rate_limit_is_per_key(settings: Settings, org: Org, client: TestClient) -> None:
    other = key_auth(create_key(client, org))
    limited = AppState.from_settings(settings.model_copy(update={"rate_limit": "2/10s"}))
    try:
        with make_client(limited) as limited_client:
            for _ in range(2):
                limited_client.get(org.url(), auth=org.auth)
            assert limited_client.get(org.url(), auth=org.auth).status_code == 429
            assert limited_client.get(org.url(), auth=other).status_code == 200
    finally:
        limited.close()


def test_rate_limit_is_shared_by_replicas_through_redis(settings: Settings, org: Org) -> None:
    redis.Redis.from_url(REDIS_URL).ping()  # a missing Redis fails the test, never skips it
    shared = settings.model_copy(update={"rate_limit": "4/10s", "redis_url": REDIS_URL})
    replicas = [AppState.from_settings(shared), AppState.from_settings(shared)]
    try:
        with make_client(replicas[0]) as one, make_client(replicas[1]) as two:
            statuses = [
                (one if index % 2 else two).get(org.url(), auth=org.auth).status_code
                for index in range(5)
            ]
    finally:
        for replica in replicas:
            replica.close()
    assert statuses == [200, 200, 200, 200, 429]


# --- several replicas on one database -------------------------------------------------------


def test_delete_and_disable_take_effect_on_every_replica(settings: Settings, org: Org) -> None:
    replicas = [AppState.from_settings(settings), AppState.from_settings(settings)]
    try:
        with make_client(replicas[0]) as one, make_client(replicas[1]) as two:
            first = create_key(one, org)
            second = create_key(one, org)
            # Warm both replicas with the keys.
            for client in (one, two):
                assert client.get(org.url(), auth=key_auth(first)).status_code == 200
                assert client.get(org.url(), auth=key_auth(second)).status_code == 200
            one.delete(org.url(f"/keys/{first['key']['id']}"), auth=org.auth)
            one.patch(
                org.url(f"/keys/{second['key']['id']}"), json={"state": "disabled"}, auth=org.auth
            )
            assert two.get(org.url(), auth=key_auth(first)).status_code == 401
            assert two.get(org.url(), auth=key_auth(second)).status_code == 401
    finally:
        for replica in replicas:
            replica.close()


def test_a_random_uuid_org_is_404_not_403(client: TestClient, org: Org) -> None:
    response = client.get(f"/v1/organizations/{uuid.uuid4()}/keys", auth=org.auth)
    assert response.status_code == 404
