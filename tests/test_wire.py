"""The wire conventions: the official envelope on every response, errors included."""

from __future__ import annotations

import gc
import uuid

import pytest
from fastapi.testclient import TestClient

from keyhouse.app import create_app
from keyhouse.state import AppState
from tests.conftest import Org


def _is_uuid4(value: str) -> bool:
    return uuid.UUID(value).version == 4


def test_success_envelope_has_status_request_id_and_result(client: TestClient, org: Org) -> None:
    response = client.get(org.url(), auth=org.auth)
    body = response.json()
    assert response.status_code == 200
    assert set(body) == {"status", "requestId", "result"}
    assert body["status"] == 200
    assert _is_uuid4(body["requestId"])
    assert response.headers["x-request-id"] == body["requestId"]


def test_every_request_gets_a_fresh_request_id(client: TestClient, org: Org) -> None:
    ids = {client.get(org.url(), auth=org.auth).json()["requestId"] for _ in range(3)}
    assert len(ids) == 3


@pytest.mark.one_database
def test_unknown_route_is_404_in_the_envelope(client: TestClient) -> None:
    response = client.get("/v1/no/such/thing")
    body = response.json()
    assert response.status_code == 404
    assert body == {"status": 404, "requestId": body["requestId"], "error": "Not found"}
    assert response.headers["x-request-id"] == body["requestId"]


def test_wrong_method_is_405_in_the_envelope(client: TestClient, org: Org) -> None:
    response = client.put("/v1/organizations", auth=org.auth)
    assert response.status_code == 405
    assert response.json()["error"] == "Method not allowed"


def test_malformed_json_is_400(client: TestClient, org: Org) -> None:
    response = client.post(
        org.url("/keys"),
        content=b'{"name": ',
        headers={"content-type": "application/json"},
        auth=org.auth,
    )
    assert response.status_code == 400
    assert response.json()["error"] == "Malformed JSON in request body"


def test_field_of_the_wrong_type_is_400_naming_the_field(client: TestClient, org: Org) -> None:
    response = client.post(
        org.url("/keys"), json={"name": "k", "roles": ["admin"], "state": 7}, auth=org.auth
    )
    assert response.status_code == 400
    assert "state" in response.json()["error"]


def test_non_object_body_is_400_with_a_hint(client: TestClient, org: Org) -> None:
    response = client.post(org.url("/keys"), json=["a"], auth=org.auth)
    assert response.status_code == 400
    assert "JSON object" in response.json()["error"]


def test_malformed_uuid_in_path_is_400_naming_it(client: TestClient, org: Org) -> None:
    response = client.get("/v1/organizations/not-a-uuid", auth=org.auth)
    assert response.status_code == 400
    assert "organizationId" in response.json()["error"]


def test_missing_credentials_is_401_with_a_basic_challenge(client: TestClient, org: Org) -> None:
    response = client.get(org.url())
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic")
    assert response.json()["status"] == 401


def test_unexpected_error_is_500_without_internals(state: AppState) -> None:
    app = create_app(state.settings, state=state)

    @app.get("/v1/boom")
    def boom() -> None:
        raise RuntimeError("secret internal detail")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/v1/boom")
    body = response.json()
    assert response.status_code == 500
    assert body["error"] == "Internal server error"
    assert "secret" not in response.text
    assert response.headers["x-request-id"] == body["requestId"]


@pytest.mark.one_database
def test_healthz_needs_no_auth(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200


def test_a_served_app_freezes_its_heap_once_started(state: AppState) -> None:
    """The served process's app (``create_app_from_env``) moves what exists once it has started
    out of the collector's generations, so that a full collection does not scan it."""
    gc.unfreeze()
    try:
        with TestClient(create_app(state.settings, state=state)):
            assert gc.get_freeze_count() == 0  # tests' apps leave the heap alone
        with TestClient(create_app(state.settings, state=state, freeze_heap=True)) as client:
            assert gc.get_freeze_count() > 0
            assert client.get("/healthz").status_code == 200
    finally:
        gc.unfreeze()
