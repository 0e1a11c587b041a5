"""Services on real engines, through the official Service API and the Query API.

Each service is a chDB worker process with its own data directory. Creating one answers
``provisioning`` with the password shown once, then it runs; the Query API runs SQL for the API
keys bound to the service's query endpoint, read-only when the binding says so; stop, start,
idle and wake are real; data survives a stop; a running service cannot be deleted.
"""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from keyhouse.config import Settings
from keyhouse.state import AppState
from tests.conftest import Org, create_key, key_auth
from tests.services import bind, create, run, wait_for
from tests.test_clickhouse_http import LOOPBACK, _raw

pytestmark = pytest.mark.services  # (tests/conftest.py)


def test_a_service_is_a_running_engine_queried_through_the_query_api(
    client: TestClient, org: Org, state: AppState
) -> None:
    created = create(client, org, tags=[{"key": "team", "value": "data"}])
    service = created["service"]
    assert service["state"] == "provisioning"
    assert len(created["password"]) >= 16
    assert service["provider"] == "aws"
    assert service["region"] == "us-east-1"
    assert service["autoscalingMode"] == "vertical"
    running = wait_for(client, org, service["id"], "running")
    assert running["clickhouseVersion"].count(".") >= 2  # the engine's own version

    listed = client.get(org.url("/services"), params={"filter": "tag:team=data"}, auth=org.auth)
    assert [s["id"] for s in listed.json()["result"]] == [service["id"]]
    other = client.get(org.url("/services"), params={"filter": "tag:team=web"}, auth=org.auth)
    assert other.json()["result"] == []

    # Not bound yet: refused (clickhousectl then binds its key and retries).
    assert run(client, service["id"], org.auth, "SELECT 1").status_code == 403
    whoami = client.get("/v1/whoami", auth=org.auth).json()["result"]
    bound = bind(client, org, service["id"], [whoami["keyId"]])  # the Basic key ID is accepted
    assert bound["openApiKeys"] == [str(org.key_uuid)]  # ... and stored as the key's UUID
    assert bound["roles"] == ["sql_console_admin"]

    sid = service["id"]
    assert (
        run(
            client,
            sid,
            org.auth,
            "CREATE TABLE t (a UInt8, s String) ENGINE = MergeTree ORDER BY a",
        ).status_code
        == 200
    )
    assert run(client, sid, org.auth, "INSERT INTO t VALUES (1, 'x'), (2, 'y')").status_code == 200
    rows = run(client, sid, org.auth, "SELECT a, s FROM t ORDER BY a", "JSONEachRow")
    assert rows.status_code == 200
    assert rows.text == '{"a":1,"s":"x"}\n{"a":2,"s":"y"}\n'
    assert run(client, sid, org.auth, "SELECT count() FROM t").text == "2\n"

    error = run(client, sid, org.auth, "SELECT * FROM missing_table")
    assert error.status_code == 400
    assert error.headers["x-clickhouse-exception-code"] == "60"
    assert "missing_table" in error.json()["error"]


@pytest.mark.one_database
def test_the_query_api_answers_a_result_of_many_blocks_as_one_document(
    client: TestClient, org: Org
) -> None:
    sid = create(client, org)["service"]["id"]
    wait_for(client, org, sid, "running")
    bind(client, org, sid, [str(org.key_uuid)])
    sql = "SELECT number AS n FROM numbers(300000)"
    assert json.loads(run(client, sid, org.auth, sql, "JSON").content)["rows"] == 300_000
    csv = run(client, sid, org.auth, sql, "CSVWithNames").text
    assert csv.splitlines() == ['"n"', *map(str, range(300_000))]


@pytest.mark.one_database
def test_a_read_only_binding_cannot_write(client: TestClient, org: Org) -> None:
    service = create(client, org)["service"]
    wait_for(client, org, service["id"], "running")
    reader = create_key(client, org, name="reader", roles=["query_endpoints"])
    bind(client, org, service["id"], [reader["key"]["id"]], role="sql_console_read_only")
    auth = key_auth(reader)
    assert run(client, service["id"], auth, "SELECT 1").text == "1\n"
    refused = run(client, service["id"], auth, "CREATE TABLE t (a UInt8) ENGINE = Memory")
    assert refused.status_code == 400
    # ACCESS_DENIED, by the engine: the read-only role holds no CREATE (and readonly is set).
    assert refused.headers["x-clickhouse-exception-code"] == "497"
    lifted = run(client, service["id"], auth, "SELECT 1 SETTINGS readonly = 0")
    assert lifted.status_code == 400
    # The binding is all it has: no management access.
    assert client.get(org.url("/keys"), auth=auth).status_code == 403
    assert client.get(org.url(f"/services/{service['id']}"), auth=auth).status_code == 403


@pytest.mark.one_database
def test_a_read_only_binding_sees_and_kills_only_its_own_queries_and_keeps_its_role(
    client: TestClient, org: Org, settings: Settings
) -> None:
    """It runs under the read-only database role, not the admin role with ``readonly``: the
    engine's one user may list and KILL all of its queries and switch to any of its roles; a
    read-only caller sees and stops its own queries only, and cannot switch."""
    created = create(client, org, ipAccessList=LOOPBACK)
    service = wait_for(client, org, created["service"]["id"], "running")
    sid = service["id"]
    reader = create_key(client, org, name="reader", roles=["query_endpoints"])
    auth = key_auth(reader)
    bind(client, org, sid, [reader["key"]["id"]], role="sql_console_read_only")
    assert run(client, sid, auth, "SELECT currentRoles()").text == "['sql_console_read_only']\n"

    marker = uuid.uuid4().hex
    other = f"SELECT sleep(1), '{marker}' FROM numbers(3) SETTINGS max_block_size = 1"  # noqa: S608
    with (
        _raw(settings, service["endpoints"][0], created["password"]) as admin,
        ThreadPoolExecutor(1) as pool,
    ):
        running = pool.submit(admin.post, "/", content=other.encode())  # the admin's query
        deadline = time.monotonic() + 30
        while marker not in admin.post("/", content=b"SELECT query FROM system.processes").text:
            assert time.monotonic() < deadline
            assert not running.done()
            time.sleep(0.05)
        seen = run(client, sid, auth, "SELECT query FROM system.processes")
        assert seen.status_code == 200
        assert marker not in seen.text
        assert "system.processes" in seen.text  # its own query only
        assert marker not in run(client, sid, auth, "SHOW PROCESSLIST").text
        assert run(client, sid, auth, "KILL QUERY WHERE 1 SYNC").status_code == 200
        for switch in ("SET ROLE kh_admin", "SET ROLE DEFAULT", "SET ROLE NONE"):
            refused = run(client, sid, auth, switch)
            assert refused.status_code == 400, switch
            assert refused.headers["x-clickhouse-exception-code"] == "497"
        users = run(client, sid, auth, "SELECT name FROM system.users")
        assert users.headers["x-clickhouse-exception-code"] == "497"
        answered = running.result(timeout=60)
    assert answered.status_code == 200, answered.text  # the KILL reached its own query only
    assert answered.text.count(marker) == 3


def test_stop_start_and_delete(client: TestClient, org: Org, state: AppState) -> None:
    service = create(client, org)["service"]
    sid = service["id"]
    wait_for(client, org, sid, "running")
    bind(client, org, sid, [str(org.key_uuid)])
    run(client, sid, org.auth, "CREATE TABLE t (a UInt8) ENGINE = MergeTree ORDER BY a")
    run(client, sid, org.auth, "INSERT INTO t VALUES (42)")

    assert client.delete(org.url(f"/services/{sid}"), auth=org.auth).status_code == 409
    stopping = client.patch(
        org.url(f"/services/{sid}/state"), json={"command": "stop"}, auth=org.auth
    )
    assert stopping.json()["result"]["state"] == "stopping"
    wait_for(client, org, sid, "stopped")
    stopped = run(client, sid, org.auth, "SELECT 1")
    assert stopped.status_code == 206
    assert stopped.json() == {"data": "Service is stopped"}
    awake = client.patch(
        org.url(f"/services/{sid}/state"), json={"command": "awake"}, auth=org.auth
    )
    assert awake.status_code == 400

    starting = client.patch(
        org.url(f"/services/{sid}/state"), json={"command": "start"}, auth=org.auth
    )
    assert starting.json()["result"]["state"] == "starting"
    wait_for(client, org, sid, "running")
    assert run(client, sid, org.auth, "SELECT a FROM t").text == "42\n"  # data survived

    client.patch(org.url(f"/services/{sid}/state"), json={"command": "stop"}, auth=org.auth)
    wait_for(client, org, sid, "stopped")
    data = state.settings.data_dir / "services" / sid
    assert data.exists()
    assert client.delete(org.url(f"/services/{sid}"), auth=org.auth).status_code == 200
    assert client.get(org.url(f"/services/{sid}"), auth=org.auth).status_code == 404
    _wait_gone(data)
    types = [a["type"] for a in client.get(org.url("/activities"), auth=org.auth).json()["result"]]
    assert {"service_create", "service_stop", "service_start", "service_delete"} <= set(types)


def _wait_gone(path: Path) -> None:
    for _ in range(100):
        if not path.exists():
            return
        time.sleep(0.1)
    raise AssertionError(f"{path} was not removed")


@pytest.mark.one_database
def test_an_idle_service_asks_before_waking(
    client: TestClient, org: Org, state: AppState, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = create(client, org, idleTimeoutMinutes=5)["service"]
    sid = service["id"]
    wait_for(client, org, sid, "running")
    # A key that may only query (Member + Query Endpoints) wakes it too: waking is querying.
    querier = create_key(client, org, roles=["query_endpoints"])
    bind(client, org, sid, [querier["key"]["id"]])
    auth = key_auth(querier)
    engines = state.engines
    assert engines is not None
    engines._last_used[uuid.UUID(sid)] -= 6 * 60  # six minutes without a query
    portal = client.portal
    assert portal is not None
    portal.call(engines._idle_once)
    assert (
        client.get(org.url(f"/services/{sid}"), auth=org.auth).json()["result"]["state"] == "idle"
    )
    assert not engines.supervisor.running(uuid.UUID(sid))

    asked = run(client, sid, auth, "SELECT 1")
    assert asked.status_code == 206
    assert asked.json() == {"data": "Confirm wake service"}
    # The wake is part of the query's request: one rate-limit slot of the key's.
    slots: list[str] = []
    check = state.rate_limiter.check

    def counted(actor: str) -> None:
        slots.append(actor)
        check(actor)

    monkeypatch.setattr(state.rate_limiter, "check", counted)
    woken = run(client, sid, auth, "SELECT 1", **{"wake-service": "true"})
    assert slots == [querier["key"]["id"]]
    assert woken.status_code == 200, woken.text
    assert woken.text == "1\n"
    assert (
        client.get(org.url(f"/services/{sid}"), auth=org.auth).json()["result"]["state"]
        == "running"
    )


def test_service_permissions_are_checked_on_the_instance(client: TestClient, org: Org) -> None:
    service = create(client, org)["service"]
    sid = service["id"]
    developer = key_auth(create_key(client, org, roles=["developer"]))
    assert client.get(org.url(f"/services/{sid}"), auth=developer).status_code == 200
    assert (
        client.post(org.url("/services"), json={"name": "nope"}, auth=developer).status_code == 403
    )
    stop = client.patch(org.url(f"/services/{sid}/state"), json={"command": "stop"}, auth=developer)
    assert stop.status_code == 403
    # Service admin on this one instance only: manages it, but cannot create services.
    admin_of_one = client.post(
        org.url("/roles"),
        json={
            "name": "one service",
            "actors": [],
            "policies": [
                {
                    "allowDeny": "ALLOW",
                    "permissions": ["control-plane:service:view", "control-plane:service:manage"],
                    "resources": [f"instance/{sid}"],
                }
            ],
        },
        auth=org.auth,
    ).json()["result"]
    scoped = key_auth(create_key(client, org, assignedRoleIds=[admin_of_one["id"]]))
    assert client.get(org.url(f"/services/{sid}"), auth=scoped).status_code == 200
    renamed = client.patch(org.url(f"/services/{sid}"), json={"name": "renamed"}, auth=scoped)
    assert renamed.status_code == 200, renamed.text
    other = create(client, org)["service"]
    assert client.get(org.url(f"/services/{other['id']}"), auth=scoped).status_code == 403
    listed = client.get(org.url("/services"), auth=scoped).json()["result"]
    assert [s["id"] for s in listed] == [sid]
    assert client.post(org.url("/services"), json={"name": "x"}, auth=scoped).status_code == 403
    # Another organization's service is not found, whatever the caller holds.
    assert (
        client.get(f"/v1/organizations/{uuid.uuid4()}/services/{sid}", auth=org.auth).status_code
        == 404
    )
    for service_id in (sid, other["id"]):
        client.patch(
            org.url(f"/services/{service_id}/state"), json={"command": "stop"}, auth=org.auth
        )


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "encryptionKey": "k"},
        {"name": "x", "byocId": "b"},
        {"name": "x", "privateEndpointIds": ["pe"]},
        {"name": "x", "numReplicas": 3},
        {"name": "x", "region": "mars-1"},
        {"name": "bad/name"},
        {"name": "x", "idleTimeoutMinutes": 1},
    ],
)
def test_what_keyhouse_cannot_honour_is_a_400(
    client: TestClient, org: Org, body: dict[str, Any]
) -> None:
    response = client.post(org.url("/services"), json=body, auth=org.auth)
    assert response.status_code == 400, response.text


def test_passwords_are_generated_or_set_from_a_hash(client: TestClient, org: Org) -> None:
    service = create(client, org)["service"]
    url = org.url(f"/services/{service['id']}/password")
    generated = client.patch(url, json={}, auth=org.auth).json()["result"]
    assert len(generated["password"]) >= 16
    import base64
    import hashlib

    digest = base64.b64encode(hashlib.sha256(b"my own password").digest()).decode()
    hashed = client.patch(url, json={"newPasswordHash": digest}, auth=org.auth)
    assert hashed.status_code == 200
    assert hashed.json()["result"].get("password") is None
    assert client.patch(url, json={"newPasswordHash": "nope"}, auth=org.auth).status_code == 400
    client.patch(
        org.url(f"/services/{service['id']}/state"), json={"command": "stop"}, auth=org.auth
    )


def test_query_endpoint_binding(client: TestClient, org: Org) -> None:
    service = create(client, org)["service"]
    url = org.url(f"/services/{service['id']}/serviceQueryEndpoint")
    assert client.get(url, auth=org.auth).status_code == 404
    first = client.post(
        url, json={"openApiKeys": [], "roles": ["sql_console_admin"]}, auth=org.auth
    )
    assert first.status_code == 400  # allowedOrigins is required on creation
    unknown = client.post(
        url,
        json={
            "openApiKeys": ["NOSUCHKEY0000000000"],
            "roles": ["sql_console_admin"],
            "allowedOrigins": "*",
        },
        auth=org.auth,
    )
    assert unknown.status_code == 400
    bind(client, org, service["id"], [str(org.key_uuid)])
    assert client.get(url, auth=org.auth).json()["result"]["allowedOrigins"] == "*"
    assert client.delete(url, auth=org.auth).status_code == 200
    assert client.get(url, auth=org.auth).status_code == 404
    client.patch(
        org.url(f"/services/{service['id']}/state"), json={"command": "stop"}, auth=org.auth
    )


@pytest.mark.one_database
def test_scaling_is_stored_and_caps_query_memory(state: AppState, org: Org) -> None:
    from tests.conftest import make_client

    roomy = AppState.from_settings(
        state.settings.model_copy(update={"query_max_memory_bytes": 64 * 1024**3})
    )
    with make_client(roomy) as client:
        _check_scaling(client, org)
    roomy.close()


def _check_scaling(client: TestClient, org: Org) -> None:
    service = create(client, org)["service"]
    sid = service["id"]
    wait_for(client, org, sid, "running")
    bind(client, org, sid, [str(org.key_uuid)])
    scaled = client.patch(
        org.url(f"/services/{sid}/replicaScaling"),
        json={"minReplicaMemoryGb": 8, "maxReplicaMemoryGb": 8, "idleTimeoutMinutes": 30},
        auth=org.auth,
    )
    assert scaled.status_code == 200, scaled.text
    result = scaled.json()["result"]
    assert (result["maxReplicaMemoryGb"], result["idleTimeoutMinutes"]) == (8, 30)
    assert result["currentScaling"]["effectiveMaxReplicaMemoryGb"] == 8
    cap = run(client, sid, org.auth, "SELECT getSetting('max_memory_usage')")
    assert cap.text.strip() == str(8 * 1024**3)
    idle = client.patch(
        org.url(f"/services/{sid}/scaling"), json={"idleScaling": False}, auth=org.auth
    )
    assert idle.json()["result"]["idleScaling"] is False
    for body in (
        {"numReplicas": 2},
        {"minReplicas": 1, "maxReplicas": 2},
        {"autoscalingMode": "horizontal"},
    ):
        refused = client.patch(org.url(f"/services/{sid}/replicaScaling"), json=body, auth=org.auth)
        assert refused.status_code == 400, body
    client.patch(org.url(f"/services/{sid}/state"), json={"command": "stop"}, auth=org.auth)


def test_services_come_back_after_a_restart_of_keyhouse(state: AppState, org: Org) -> None:
    from tests.conftest import make_client

    with make_client(state) as client:
        sid = create(client, org)["service"]["id"]
        wait_for(client, org, sid, "running")
        bind(client, org, sid, [str(org.key_uuid)])
        run(client, sid, org.auth, "CREATE TABLE t (a UInt8) ENGINE = MergeTree ORDER BY a")
        run(client, sid, org.auth, "INSERT INTO t VALUES (5)")
    # The app stopped (and its engines with it); a new one starts them again.
    with make_client(state) as client:
        wait_for(client, org, sid, "running")
        assert run(client, sid, org.auth, "SELECT a FROM t").text == "5\n"
        client.patch(org.url(f"/services/{sid}/state"), json={"command": "stop"}, auth=org.auth)
        wait_for(client, org, sid, "stopped")


@pytest.mark.one_database
def test_member_with_query_endpoints_runs_queries_and_nothing_else(
    client: TestClient, org: Org
) -> None:
    """ "Organization role Member + service role Query Endpoints", as the console page says."""
    sid = create(client, org)["service"]["id"]
    wait_for(client, org, sid, "running")
    roles = {
        r["name"]: r["id"] for r in client.get(org.url("/roles"), auth=org.auth).json()["result"]
    }
    member = create_key(
        client, org, assignedRoleIds=[roles["Member"], roles["Basic service API reader"]]
    )
    auth = key_auth(member)
    assert run(client, sid, auth, "SELECT 1").status_code == 403  # not bound yet
    bind(client, org, sid, [member["key"]["id"]], role="sql_console_read_only")
    assert run(client, sid, auth, "SELECT 1").text == "1\n"
    write = run(client, sid, auth, "CREATE TABLE w (a UInt8) ENGINE = Memory")
    assert (
        write.headers["x-clickhouse-exception-code"] == "497"
    )  # the read-only role's ACCESS_DENIED
    other = create(client, org)["service"]["id"]
    wait_for(client, org, other, "running")
    assert run(client, other, auth, "SELECT 1").status_code == 403  # bound to one service only
    client.patch(org.url(f"/services/{other}/state"), json={"command": "stop"}, auth=org.auth)
    endpoint = client.get(org.url(f"/services/{sid}/serviceQueryEndpoint"), auth=auth)
    assert endpoint.status_code == 200  # it may see the binding
    rebind = {"openApiKeys": [], "roles": ["sql_console_admin"], "allowedOrigins": "*"}
    refused: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", f"/services/{sid}", None),
        ("GET", "/keys", None),
        ("PATCH", f"/services/{sid}/state", {"command": "stop"}),
        ("POST", f"/services/{sid}/serviceQueryEndpoint", rebind),
    ]
    for method, path, body in refused:
        assert client.request(method, org.url(path), json=body, auth=auth).status_code == 403, path
    client.patch(org.url(f"/services/{sid}/state"), json={"command": "stop"}, auth=org.auth)


@pytest.mark.one_database
def test_a_killed_worker_comes_back_with_its_data_while_the_api_answers(
    client: TestClient, org: Org, state: AppState
) -> None:
    import os
    import signal

    sid = create(client, org)["service"]["id"]
    wait_for(client, org, sid, "running")
    bind(client, org, sid, [str(org.key_uuid)])
    run(client, sid, org.auth, "CREATE TABLE t (a UInt8) ENGINE = MergeTree ORDER BY a")
    run(client, sid, org.auth, "INSERT INTO t VALUES (9)")
    engines = state.engines
    assert engines is not None
    worker = engines.supervisor._workers[uuid.UUID(sid)]
    os.kill(worker.pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    answer = None
    while time.monotonic() < deadline:
        assert (
            client.get(org.url("/services"), auth=org.auth).status_code == 200
        )  # answers throughout
        answer = run(client, sid, org.auth, "SELECT a FROM t")
        if answer.status_code == 200:
            break
        assert answer.status_code in (400, 503), answer.text
        time.sleep(0.2)
    assert answer is not None
    assert answer.text == "9\n"
    assert engines.supervisor._workers[uuid.UUID(sid)].pid != worker.pid
    assert (
        client.get(org.url(f"/services/{sid}"), auth=org.auth).json()["result"]["state"]
        == "running"
    )
    client.patch(org.url(f"/services/{sid}/state"), json={"command": "stop"}, auth=org.auth)


@pytest.mark.one_database
def test_cors_follows_the_query_endpoints_allowed_origins(client: TestClient, org: Org) -> None:
    sid = create(client, org)["service"]["id"]
    wait_for(client, org, sid, "running")
    url = org.url(f"/services/{sid}/serviceQueryEndpoint")
    client.post(
        url,
        json={
            "openApiKeys": [str(org.key_uuid)],
            "roles": ["sql_console_read_only"],
            "allowedOrigins": "https://app.example.com",
        },
        auth=org.auth,
    )
    preflight = {"origin": "https://app.example.com", "access-control-request-method": "POST"}
    allowed = client.options(f"/service/{sid}/run", headers=preflight)
    assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "POST" in allowed.headers["access-control-allow-methods"]
    other = client.options(
        f"/service/{sid}/run", headers={**preflight, "origin": "https://evil.example"}
    )
    assert "access-control-allow-origin" not in other.headers
    ran = run(client, sid, org.auth, "SELECT 1", origin="https://app.example.com")
    assert ran.headers["access-control-allow-origin"] == "https://app.example.com"
    refused = run(client, sid, org.auth, "SELECT 1", origin="https://evil.example")
    assert "access-control-allow-origin" not in refused.headers
    client.patch(org.url(f"/services/{sid}/state"), json={"command": "stop"}, auth=org.auth)


def test_an_organization_holds_at_most_its_service_quota(state: AppState, org: Org) -> None:
    """Services per organization (``KEYHOUSE_MAX_SERVICES_PER_ORGANIZATION``, default 10):
    each runs an engine with its memory and disk on this host; the next create is a 409."""
    from keyhouse.api.errors import Conflict
    from keyhouse.auth.principal import system_principal
    from keyhouse.config import Settings
    from keyhouse.services import service as services
    from keyhouse.services.schemas import ServicePostRequest

    assert Settings.model_fields["max_services_per_organization"].default == 10
    quota = state.settings.model_copy(update={"max_services_per_organization": 2})
    defaults = services.ServiceDefaults.from_settings(quota)
    admin = system_principal(org.id, "test")
    with state.sessionmaker() as session:
        for name in ("first", "second"):
            services.create_service(
                session,
                admin,
                ServicePostRequest(name=name),
                pepper=state.pepper,
                defaults=defaults,
            )
        with pytest.raises(Conflict) as refused:
            services.create_service(
                session,
                admin,
                ServicePostRequest(name="third"),
                pepper=state.pepper,
                defaults=defaults,
            )
        assert "services-per-organization" in refused.value.message
        session.rollback()


def test_allowed_origins_match_scheme_host_and_port_exactly() -> None:
    """``*`` answers any page with ``*`` (never echoing its origin with credentials); other
    entries match an origin's scheme, host and port exactly, a bare host meaning https."""
    from keyhouse.services.service import allowed_origin

    listed = "https://app.example.com, intranet.example:8443"
    assert allowed_origin("*", "https://evil.example") == "*"
    assert allowed_origin("*", "null") == "*"
    assert allowed_origin(listed, "https://app.example.com") == "https://app.example.com"
    assert allowed_origin(listed, "https://APP.example.com:443") == "https://APP.example.com:443"
    assert allowed_origin(listed, "https://intranet.example:8443") is not None
    for refused in (
        "http://app.example.com",  # another scheme
        "https://app.example.com:8443",  # another port
        "http://intranet.example:8443",  # a bare host is https only
        "https://app.example.com.evil.example",
        "null",
        "",
        None,
    ):
        assert allowed_origin(listed, refused) is None, refused


@pytest.mark.one_database
def test_a_query_endpoint_open_to_any_origin_never_allows_credentials(
    client: TestClient, org: Org
) -> None:
    sid = create(client, org)["service"]["id"]
    client.post(
        org.url(f"/services/{sid}/serviceQueryEndpoint"),
        json={"openApiKeys": [], "roles": ["sql_console_read_only"], "allowedOrigins": "*"},
        auth=org.auth,
    )
    preflight = client.options(
        f"/service/{sid}/run",
        headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
    )
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in preflight.headers
