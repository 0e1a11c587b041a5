"""Organizations: list, get, patch."""

from __future__ import annotations

from fastapi.testclient import TestClient

from keyhouse.config import Settings
from tests.conftest import Org, create_key, create_org, key_auth


def test_list_shows_only_the_callers_organization(
    client: TestClient, settings: Settings, org: Org
) -> None:
    create_org(settings, name="Someone else")
    result = client.get("/v1/organizations", auth=org.auth).json()["result"]
    assert [o["id"] for o in result] == [str(org.id)]
    assert result[0]["name"] == "Test org"
    assert result[0]["privateEndpoints"] == []
    assert result[0]["createdAt"].endswith("Z")


def test_get_another_organization_is_404_without_data(
    client: TestClient, settings: Settings, org: Org
) -> None:
    other = create_org(settings, name="Other")
    response = client.get(other.url(), auth=org.auth)
    assert response.status_code == 404
    assert "Other" not in response.text


def test_patch_renames_and_records_activity(client: TestClient, org: Org) -> None:
    response = client.patch(org.url(), json={"name": "Renamed"}, auth=org.auth)
    assert response.status_code == 200
    assert response.json()["result"]["name"] == "Renamed"
    assert client.get(org.url(), auth=org.auth).json()["result"]["name"] == "Renamed"
    types = [a["type"] for a in client.get(org.url("/activities"), auth=org.auth).json()["result"]]
    assert "organization_update_name" in types


def test_patch_blank_name_is_400(client: TestClient, org: Org) -> None:
    response = client.patch(org.url(), json={"name": "  "}, auth=org.auth)
    assert response.status_code == 400
    assert "name" in response.json()["error"]


def test_patch_private_endpoints_is_400_not_silently_ignored(client: TestClient, org: Org) -> None:
    response = client.patch(org.url(), json={"privateEndpoints": {"add": []}}, auth=org.auth)
    assert response.status_code == 400
    assert "privateEndpoints" in response.json()["error"]


def test_developer_key_cannot_patch(client: TestClient, org: Org) -> None:
    developer = key_auth(create_key(client, org, roles=["developer"]))
    assert client.get(org.url(), auth=developer).status_code == 200
    response = client.patch(org.url(), json={"name": "Nope"}, auth=developer)
    assert response.status_code == 403
    assert "control-plane:organization:manage" in response.json()["error"]
