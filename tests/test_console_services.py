"""The console's Services page: create (the password shown once), bind a key, run SQL in the
console and see the rows as a table, stop, delete; a read-only person cannot write."""

from __future__ import annotations

import re
import time
import uuid

import pytest
from fastapi.testclient import TestClient

from keyhouse.state import AppState
from tests.conftest import Org, create_key, invite_and_accept, make_client
from tests.services import bind, create, run, stop, wait_for

pytestmark = [pytest.mark.services, pytest.mark.one_database]  # (tests/conftest.py)


def _signed_in(state: AppState, email: str, password: str) -> TestClient:
    client = make_client(state)
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/console/login").text)
    assert token
    response = client.post(
        "/console/login",
        data={"email": email, "password": password, "csrf_token": token.group(1)},
        follow_redirects=False,
    )
    assert response.status_code == 303
    return client


def _token(client: TestClient, path: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text)
    assert match
    return match.group(1)


def _state_of(client: TestClient, org: Org, service_id: str) -> str:
    return str(
        client.get(org.url(f"/services/{service_id}"), auth=org.auth).json()["result"]["state"]
    )


def _wait(client: TestClient, org: Org, service_id: str, state: str) -> None:
    for _ in range(450):
        if _state_of(client, org, service_id) == state:
            return
        time.sleep(0.2)
    raise AssertionError(f"not {state}")


def test_services_page_create_query_stop_delete(
    client: TestClient, org: Org, state: AppState
) -> None:
    email = client.get(org.url(f"/members/{org.user_id}"), auth=org.auth).json()["result"]["email"]
    with _signed_in(state, email, "correct horse battery") as console:
        page = f"/console/o/{org.id}/services"
        name = f"console-{uuid.uuid4().hex[:6]}"
        created = console.post(page, data={"name": name, "csrf_token": _token(console, page)})
        assert created.status_code == 200
        password = re.search(r'data-testid="service-password">([^<]+)<', created.text)
        assert password
        assert len(password.group(1)) >= 16
        service = next(
            s
            for s in client.get(org.url("/services"), auth=org.auth).json()["result"]
            if s["name"] == name
        )
        sid = service["id"]
        assert password.group(1) not in console.get(page).text  # shown once
        _wait(client, org, sid, "running")

        bind = console.post(
            f"{page}/{sid}/endpoint",
            data={
                "key": str(org.key_uuid),
                "role": "sql_console_admin",
                "csrf_token": _token(console, page),
            },
            follow_redirects=False,
        )
        assert bind.status_code == 303
        endpoint = client.get(org.url(f"/services/{sid}/serviceQueryEndpoint"), auth=org.auth)
        assert endpoint.json()["result"]["openApiKeys"] == [str(org.key_uuid)]
        assert endpoint.json()["result"]["allowedOrigins"] == ""  # no page elsewhere by default
        # A second key with another role would re-role the first: refused, nothing changes.
        other = create_key(client, org, name="second")
        rerole = console.post(
            f"{page}/{sid}/endpoint",
            data={
                "key": other["key"]["id"],
                "role": "sql_console_read_only",
                "csrf_token": _token(console, page),
            },
            follow_redirects=False,
        )
        assert rerole.status_code == 400
        after = client.get(org.url(f"/services/{sid}/serviceQueryEndpoint"), auth=org.auth)
        assert after.json()["result"] == endpoint.json()["result"]

        sql = f"{page}/{sid}/sql"
        for statement in (
            "CREATE TABLE t (a UInt8, s String) ENGINE = MergeTree ORDER BY a",
            "INSERT INTO t VALUES (1, 'one'), (2, 'two')",
        ):
            done = console.post(sql, data={"sql": statement, "csrf_token": _token(console, sql)})
            assert done.status_code == 200, done.text
        shown = console.post(
            sql, data={"sql": "SELECT a, s FROM t ORDER BY a", "csrf_token": _token(console, sql)}
        )
        assert 'data-testid="sql-result"' in shown.text
        assert "<th>a <span" in shown.text
        assert re.search(r'<td class="mono">two</td>', shown.text)
        wrong = console.post(sql, data={"sql": "SELECT nope", "csrf_token": _token(console, sql)})
        assert wrong.status_code == 400
        assert "nope" in wrong.text

        stop = console.post(
            f"{page}/{sid}/state",
            data={"command": "stop", "csrf_token": _token(console, page)},
            follow_redirects=False,
        )
        assert stop.status_code == 303
        _wait(client, org, sid, "stopped")
        gone = console.post(
            f"{page}/{sid}/delete",
            data={"csrf_token": _token(console, page)},
            follow_redirects=False,
        )
        assert gone.status_code == 303
        assert client.get(org.url(f"/services/{sid}"), auth=org.auth).status_code == 404


def test_a_developer_runs_sql_read_only_and_cannot_manage(
    client: TestClient, org: Org, state: AppState
) -> None:
    sid = client.post(
        org.url("/services"), json={"name": f"ro-{uuid.uuid4().hex[:6]}"}, auth=org.auth
    ).json()["result"]["service"]["id"]
    _wait(client, org, sid, "running")
    roles = {
        r["name"]: r["id"] for r in client.get(org.url("/roles"), auth=org.auth).json()["result"]
    }
    # Developer plus SQL console access on this one service: reads, never writes.
    sql_reader = client.post(
        org.url("/roles"),
        json={
            "name": f"sql {uuid.uuid4().hex[:4]}",
            "actors": [],
            "policies": [
                {
                    "allowDeny": "ALLOW",
                    "permissions": ["sql-console:database:access"],
                    "resources": [f"instance/{sid}"],
                }
            ],
        },
        auth=org.auth,
    ).json()["result"]["id"]
    email = f"dev-{uuid.uuid4().hex[:6]}@example.com"
    invite_and_accept(client, org, state, email=email, role_ids=[roles["Developer"], sql_reader])
    with _signed_in(state, email, "long enough pw") as console:
        sql = f"/console/o/{org.id}/services/{sid}/sql"
        page = console.get(sql)
        assert "Read only" in page.text
        read = console.post(
            sql, data={"sql": "SELECT 40 + 2 AS answer", "csrf_token": _token(console, sql)}
        )
        alert = re.search(r'role="alert">([^<]*)<', read.text)
        assert '<td class="mono">42</td>' in read.text, (
            alert.group(1) if alert else read.text[-300:]
        )
        write = console.post(
            sql,
            data={
                "sql": "CREATE TABLE x (a UInt8) ENGINE = Memory",
                "csrf_token": _token(console, sql),
            },
        )
        assert write.status_code == 400
        assert "ACCESS_DENIED" in write.text  # it runs under the read-only database role
        services_page = f"/console/o/{org.id}/services"
        stop = console.post(
            f"{services_page}/{sid}/state",
            data={"command": "stop", "csrf_token": _token(console, services_page)},
        )
        assert stop.status_code == 403
        assert _state_of(client, org, sid) == "running"
        # Backups & settings: readable, and each change refused by the domain, nothing changed.
        backups_page = f"{services_page}/{sid}/backups"
        assert console.get(backups_page).status_code == 200
        configured = console.post(
            f"{backups_page}/config",
            data={"period": "6", "retention": "48", "csrf_token": _token(console, backups_page)},
        )
        assert configured.status_code == 403
        setting = console.post(
            f"{services_page}/{sid}/settings",
            data={"name": "max_threads", "value": "2", "csrf_token": _token(console, backups_page)},
        )
        assert setting.status_code == 403
        config = client.get(org.url(f"/services/{sid}/backupConfiguration"), auth=org.auth)
        assert config.json()["result"] == {
            "backupPeriodInHours": 24,
            "backupRetentionPeriodInHours": 24,
        }
        settings = client.get(org.url(f"/services/{sid}/clickhouseSettings"), auth=org.auth)
        assert settings.json()["result"] == {"settings": []}
    client.patch(org.url(f"/services/{sid}/state"), json={"command": "stop"}, auth=org.auth)


def test_query_api_endpoints_in_the_console(client: TestClient, org: Org, state: AppState) -> None:
    sid = client.post(
        org.url("/services"),
        json={"name": f"ep-{uuid.uuid4().hex[:6]}", "ipAccessList": [{"source": "127.0.0.1"}]},
        auth=org.auth,
    ).json()["result"]["service"]["id"]
    _wait(client, org, sid, "running")
    email = client.get(org.url(f"/members/{org.user_id}"), auth=org.auth).json()["result"]["email"]
    with _signed_in(state, email, "correct horse battery") as console:
        services_page = console.get(f"/console/o/{org.id}/services").text
        assert 'data-testid="clickhouse-address">https://127.0.0.1:' in services_page
        assert 'data-testid="ca-file">' in services_page
        page = f"/console/o/{org.id}/services/{sid}/endpoints"
        made = console.post(
            page,
            data={
                "name": "answer",
                "sql": "SELECT {n:UInt8} + 1 AS answer",
                "database": "default",
                "role": "sql_console_read_only",
                "api_keys": [str(org.key_uuid)],
                "csrf_token": _token(console, page),
            },
        )
        assert made.status_code == 200, made.text
        listed = client.get(org.url(f"/services/{sid}/query-api-endpoints"), auth=org.auth)
        [endpoint] = listed.json()["result"]
        assert endpoint["ownerType"] == "user"  # made in the console: read-only to the API
        url = f"/run/{endpoint['id']}"
        assert url in made.text
        assert "curl -u" in made.text
        called = client.post(url, json={"queryVariables": {"n": 41}}, auth=org.auth)
        assert called.json()["data"]["rows"] == [[42]]
        portal = client.portal
        assert portal is not None
        portal.call(state.endpoint_calls.flush, state)  # (written behind the request)
        assert "Not called yet" not in console.get(page).text  # the call is listed
        api_delete = client.delete(
            org.url(f"/services/{sid}/query-api-endpoints/{endpoint['id']}"), auth=org.auth
        )
        assert api_delete.status_code == 409
        deleted = console.post(
            f"{page}/{endpoint['id']}/delete",
            data={"csrf_token": _token(console, page)},
            follow_redirects=False,
        )
        assert deleted.status_code == 303
        assert (
            client.get(org.url(f"/services/{sid}/query-api-endpoints"), auth=org.auth).json()[
                "result"
            ]
            == []
        )
    client.patch(org.url(f"/services/{sid}/state"), json={"command": "stop"}, auth=org.auth)


def test_backups_settings_and_metrics_in_the_console(
    client: TestClient, org: Org, state: AppState
) -> None:
    sid = create(client, org, name="kept")["service"]["id"]
    wait_for(client, org, sid, "running")
    bind(client, org, sid, [str(org.key_uuid)])
    run(client, sid, org.auth, "CREATE TABLE t (n UInt8) ENGINE = MergeTree ORDER BY n")
    run(client, sid, org.auth, "INSERT INTO t VALUES (1), (2)")
    engines = state.engines
    assert engines is not None
    portal = client.portal
    assert portal is not None
    backup_id = portal.call(engines.backups.take, uuid.UUID(sid))
    email = client.get(org.url(f"/members/{org.user_id}"), auth=org.auth).json()["result"]["email"]
    with _signed_in(state, email, "correct horse battery") as console:
        page = f"/console/o/{org.id}/services/{sid}/backups"
        shown = console.get(page)
        assert shown.status_code == 200
        assert f'data-backup="{backup_id}"' in shown.text
        assert "Restore into a new service" in shown.text

        # The configuration: saved as the API saves it, refused as the API refuses it.
        saved = console.post(
            f"{page}/config",
            data={
                "period": "12",
                "retention": "48",
                "start_time": "",
                "csrf_token": _token(console, page),
            },
            follow_redirects=False,
        )
        assert saved.status_code == 303
        config = client.get(org.url(f"/services/{sid}/backupConfiguration"), auth=org.auth)
        assert config.json()["result"] == {
            "backupPeriodInHours": 12,
            "backupRetentionPeriodInHours": 48,
        }
        wrong = console.post(
            f"{page}/config",
            data={"period": "12", "retention": "30", "csrf_token": _token(console, page)},
        )
        assert "backupRetentionPeriodInHours" in wrong.text

        # A setting, checked by the engine, then reset.
        base = f"/console/o/{org.id}/services/{sid}"
        refused = console.post(
            f"{base}/settings",
            data={"name": "max_threads", "value": "lots", "csrf_token": _token(console, page)},
        )
        assert refused.status_code == 400
        assert "settings.max_threads" in refused.text
        done = console.post(
            f"{base}/settings",
            data={"name": "max_threads", "value": "3", "csrf_token": _token(console, page)},
            follow_redirects=False,
        )
        assert done.status_code == 303
        assert 'data-setting="max_threads"' in console.get(page).text
        assert run(client, sid, org.auth, "SELECT getSetting('max_threads')").text == "3\n"
        console.post(
            f"{base}/settings/max_threads/delete",
            data={"csrf_token": _token(console, page)},
            follow_redirects=False,
        )
        assert 'data-setting="max_threads"' not in console.get(page).text

        metrics = console.get(f"{base}/metrics")
        assert metrics.status_code == 200
        assert "ClickHouse_ServiceInfo" in metrics.text
        assert "ClickHouseProfileEvents_Query" in metrics.text

        # Restore into a new service: its password shown once, its rows those of the backup.
        restored = console.post(
            f"{page}/{backup_id}/restore",
            data={"name": "restored", "csrf_token": _token(console, page)},
        )
        assert restored.status_code == 200
        assert 'data-testid="service-password"' in restored.text
    new = next(
        s["id"]
        for s in client.get(org.url("/services"), auth=org.auth).json()["result"]
        if s["name"] == "restored"
    )
    wait_for(client, org, new, "running")
    bind(client, org, new, [str(org.key_uuid)])
    assert run(client, new, org.auth, "SELECT sum(n) FROM t").text == "3\n"
    stop(client, org, new)
    stop(client, org, sid)
