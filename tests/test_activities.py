"""The activity log: written in the change's transaction, filtered by date, scoped to the org."""

from __future__ import annotations

import datetime as dt
import uuid

from fastapi.testclient import TestClient

from keyhouse.config import Settings
from tests.conftest import Org, create_key, create_org


def _activities(client: TestClient, org: Org, **params: str) -> list[dict[str, object]]:
    response = client.get(org.url("/activities"), params=params, auth=org.auth)
    assert response.status_code == 200, response.text
    result: list[dict[str, object]] = response.json()["result"]
    return result


def test_key_changes_are_recorded_with_actor_ip_and_user_agent(
    client: TestClient, org: Org
) -> None:
    headers = {"User-Agent": "terraform-provider-clickhouse/3.0"}
    key = create_key(client, org, name="a")["key"]
    url = org.url(f"/keys/{key['id']}")
    client.patch(
        url,
        json={
            "name": "b",
            "state": "disabled",
            "roles": ["developer"],
            "expireAt": (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).isoformat(),
            "ipAccessList": [{"source": "10.0.0.1"}],
        },
        auth=org.auth,
        headers=headers,
    )
    client.delete(url, auth=org.auth, headers=headers)
    entries = [a for a in _activities(client, org) if a.get("targetKeyId") == key["id"]]
    assert [a["type"] for a in entries][0] == "key_delete"  # newest first
    assert entries[-1]["type"] == "key_create"
    updates = {a["keyUpdateType"] for a in entries if a["type"] == "openapi_key_update"}
    assert updates == {
        "name-changed",
        "state-changed",
        "role-changed",
        "date-changed",
        "ip-access-list-changed",
    }
    delete = entries[0]
    assert delete["actorType"] == "api"
    assert delete["actorId"] == str(org.key_uuid)
    assert delete["actorIpAddress"] == "127.0.0.1"
    assert delete["userAgent"] == "terraform-provider-clickhouse/3.0"
    assert delete["organizationId"] == str(org.id)


def test_unchanged_patch_records_nothing(client: TestClient, org: Org) -> None:
    key = create_key(client, org, name="same")["key"]
    before = len(_activities(client, org))
    client.patch(org.url(f"/keys/{key['id']}"), json={"name": "same"}, auth=org.auth)
    assert len(_activities(client, org)) == before


def test_filter_by_date(client: TestClient, org: Org) -> None:
    create_key(client, org)
    everything = _activities(client, org)
    assert everything
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    past = "2000-01-01T00:00:00Z"
    assert _activities(client, org, from_date=future) == []
    assert _activities(client, org, to_date=past) == []
    assert len(_activities(client, org, from_date=past, to_date=future)) == len(everything)
    response = client.get(
        org.url("/activities"), params={"from_date": future, "to_date": past}, auth=org.auth
    )
    assert response.status_code == 400
    bad = client.get(org.url("/activities"), params={"from_date": "yesterday"}, auth=org.auth)
    assert bad.status_code == 400
    assert "from_date" in bad.json()["error"]


def test_get_one_activity_and_other_orgs_are_404(
    client: TestClient, org: Org, settings: Settings
) -> None:
    first = _activities(client, org)[0]
    response = client.get(org.url(f"/activities/{first['id']}"), auth=org.auth)
    assert response.json()["result"] == first
    other = create_org(settings)
    foreign = _activities(client, other)[0]
    assert client.get(org.url(f"/activities/{foreign['id']}"), auth=org.auth).status_code == 404
    assert client.get(org.url(f"/activities/{uuid.uuid4()}"), auth=org.auth).status_code == 404
    assert client.get(org.url("/activities/nope"), auth=org.auth).status_code == 404
