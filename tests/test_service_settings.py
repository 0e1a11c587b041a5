"""A service's ClickHouse settings (the official clickhouseSettings): checked by the engine
itself, stored, applied to every query of the service under the caller's own settings and
the operator's ceilings, kept across restarts, reset one by one."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from keyhouse.state import AppState
from tests.conftest import Org, create_key, key_auth
from tests.services import bind, create, run, stop, wait_for

pytestmark = pytest.mark.services  # (tests/conftest.py)


def _setting(client: TestClient, sid: str, org: Org, name: str, sql_suffix: str = "") -> str:
    answer = run(client, sid, org.auth, f"SELECT getSetting('{name}'){sql_suffix}")
    assert answer.status_code == 200, answer.text
    return str(answer.text.strip())


def _patch(client: TestClient, org: Org, sid: str, body: dict[str, Any]) -> Any:
    return client.patch(org.url(f"/services/{sid}/clickhouseSettings"), json=body, auth=org.auth)


def test_settings_are_checked_applied_to_every_query_and_kept(
    client: TestClient, org: Org, state: AppState
) -> None:
    sid = create(client, org)["service"]["id"]
    wait_for(client, org, sid, "running")
    bind(client, org, sid, [str(org.key_uuid)])
    url = org.url(f"/services/{sid}/clickhouseSettings")
    assert client.get(url, auth=org.auth).json()["result"] == {"settings": []}

    # As clickhousectl sends them: an object of JSON values.
    changed = _patch(
        client,
        org,
        sid,
        {"settings": {"max_threads": 3, "join_use_nulls": True, "compatibility": "24.8"}},
    )
    assert changed.status_code == 200, changed.text
    result = changed.json()["result"]
    assert result["settings"] == {
        "max_threads": "3",
        "join_use_nulls": "1",
        "compatibility": "24.8",
    }
    assert {w["name"] for w in result["warnings"]} == {"max_threads", "compatibility"}
    listed = client.get(url, auth=org.auth).json()["result"]["settings"]
    assert listed == [
        {"name": "compatibility", "value": "24.8"},
        {"name": "join_use_nulls", "value": "1"},
        {"name": "max_threads", "value": "3"},
    ]
    assert client.get(f"{url}/max_threads", auth=org.auth).json()["result"] == {
        "name": "max_threads",
        "value": "3",
    }
    # Every query runs with them; the caller's own settings win.
    assert _setting(client, sid, org, "max_threads") == "3"
    assert _setting(client, sid, org, "join_use_nulls") == "true"
    assert _setting(client, sid, org, "max_threads", " SETTINGS max_threads = 2") == "2"
    # As the vendored spec types it: a string holding the object.
    as_text = _patch(client, org, sid, {"settings": json.dumps({"max_threads": 5})})
    assert as_text.status_code == 200, as_text.text
    assert _setting(client, sid, org, "max_threads") == "5"

    # They survive a restart of the service.
    stop(client, org, sid)
    client.patch(org.url(f"/services/{sid}/state"), json={"command": "start"}, auth=org.auth)
    wait_for(client, org, sid, "running")
    assert _setting(client, sid, org, "max_threads") == "5"

    # Reset one: the engine's default again; resetting one never set is nothing.
    assert client.delete(f"{url}/max_threads", auth=org.auth).status_code == 200
    assert client.delete(f"{url}/max_threads", auth=org.auth).status_code == 200
    assert _setting(client, sid, org, "max_threads") != "5"
    default = client.get(f"{url}/max_threads", auth=org.auth).json()["result"]["value"]
    assert default.startswith("auto")
    assert [s["name"] for s in client.get(url, auth=org.auth).json()["result"]["settings"]] == [
        "compatibility",
        "join_use_nulls",
    ]
    stop(client, org, sid)


def test_what_the_engine_refuses_is_a_400_naming_the_setting_and_nothing_is_stored(
    client: TestClient, org: Org
) -> None:
    sid = create(client, org)["service"]["id"]
    for settings, named in (
        ({"max_threads": 2, "join_algorithm": "bogus"}, "join_algorithm"),
        ({"no_such_setting": 1}, "no_such_setting"),
        ({"max_threads": "many"}, "max_threads"),
        ({"max_execution_time": 5}, "max_execution_time"),  # the operator's ceiling
        ({"readonly": 1}, "readonly"),
        ({"max_threads": [1]}, "max_threads"),
    ):
        refused = _patch(client, org, sid, {"settings": settings})
        assert refused.status_code == 400, (settings, refused.text)
        assert f"settings.{named}" in refused.json()["error"]
    assert _patch(client, org, sid, {"settings": {}}).status_code == 400
    assert _patch(client, org, sid, {"settings": "not json"}).status_code == 400
    listed = client.get(org.url(f"/services/{sid}/clickhouseSettings"), auth=org.auth)
    assert listed.json()["result"] == {"settings": []}  # max_threads=2 was not kept either

    schema = client.get(org.url(f"/services/{sid}/clickhouseSettings/schema"), auth=org.auth)
    entries = {e["name"]: e for e in schema.json()["result"]["settings"]}
    assert entries["max_threads"]["type"] == "MaxThreads"
    assert entries["join_use_nulls"]["enum"] == [0, 1]
    assert "warning" in entries["compatibility"]
    assert "max_execution_time" not in entries
    assert "readonly" not in entries

    # A developer (read-only) key reads them and cannot set them.
    developer = key_auth(create_key(client, org, roles=["developer"]))
    assert (
        client.get(org.url(f"/services/{sid}/clickhouseSettings"), auth=developer).status_code
        == 200
    )
    denied = client.patch(
        org.url(f"/services/{sid}/clickhouseSettings"),
        json={"settings": {"max_threads": 2}},
        auth=developer,
    )
    assert denied.status_code == 403
    listed = client.get(org.url(f"/services/{sid}/clickhouseSettings"), auth=org.auth)
    assert listed.json()["result"] == {"settings": []}  # unchanged
    stop(client, org, sid)
