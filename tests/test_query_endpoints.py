"""Query API endpoints and saved queries.

An endpoint is saved SQL on a service published at ``/run/{id}``: only the API keys bound to it
may run it, under the database roles it names; deleting a key unbinds it at once. Endpoints
and saved queries are managed at the paths clickhousectl 0.5.0 and the Terraform provider use,
with cursor pagination and 409 on a duplicate name.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient

from keyhouse.api.errors import Unauthorized
from keyhouse.auth.principal import Principal
from keyhouse.models import QueryApiEndpoint, Service
from keyhouse.query_endpoints.service import wake_for_endpoint
from keyhouse.query_endpoints.version1 import version_1_document
from keyhouse.state import AppState
from tests.conftest import Org, create_key, key_auth, role_id
from tests.engine.test_supervisor import _run
from tests.services import bind, create, run, stop, wait_for

pytestmark = pytest.mark.services  # (tests/conftest.py)


def _endpoint(org: Org, service_id: str, key_ids: list[str], **body: Any) -> dict[str, Any]:
    return {
        "name": f"endpoint {uuid.uuid4().hex[:6]}",
        "sql": "SELECT {n:UInt32} + 1 AS answer, {s:String} AS text",
        "database": "default",
        "parameters": {"n": "41", "s": "default"},
        "apiKeyIds": key_ids,
        "roles": ["sql_console_read_only"],
        "allowedOrigins": ["https://app.example.com"],
        **body,
    }


@pytest.fixture
def running(client: TestClient, org: Org) -> str:
    service_id: str = create(client, org)["service"]["id"]
    wait_for(client, org, service_id, "running")
    return service_id


@pytest.mark.one_database
def test_an_endpoint_runs_its_sql_for_its_keys_only(
    client: TestClient, org: Org, running: str
) -> None:
    caller = create_key(client, org, name="caller", roles=["developer"])
    stranger = create_key(client, org, name="stranger", roles=["admin"])
    path = org.url(f"/services/{running}/query-api-endpoints")
    created = client.post(path, json=_endpoint(org, running, [caller["key"]["id"]]), auth=org.auth)
    assert created.status_code == 201, created.text
    endpoint = created.json()["result"]
    assert endpoint["ownerType"] == "queryApiEndpoint"
    assert endpoint["apiKeyIds"] == [caller["key"]["id"]]
    assert endpoint["url"].endswith(f"/run/{endpoint['id']}")
    url = f"/run/{endpoint['id']}"

    # Version 1 (default): the columns-and-rows JSON, with the saved defaults.
    answer = client.post(url, json={}, auth=key_auth(caller))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "data": {
            "columns": [{"name": "answer", "type": "UInt64"}, {"name": "text", "type": "String"}],
            "rows": [[42, "default"]],
        }
    }
    # queryVariables override the defaults, and param_<name> overrides both.
    varied = client.post(
        url,
        params={"param_s": "from the query string"},
        json={"queryVariables": {"n": 1, "s": "from the body"}},
        auth=key_auth(caller),
    )
    assert varied.json()["data"]["rows"] == [[2, "from the query string"]]
    # Version 2 streams in the format asked for; GET works too.
    streamed = client.get(
        url,
        params={"format": "CSV", "param_n": "9"},
        headers={"x-clickhouse-endpoint-version": "2"},
        auth=key_auth(caller),
    )
    assert streamed.status_code == 200
    assert streamed.text == '10,"default"\n'

    # Another key of the organization, even an admin's, is not one of the endpoint's keys.
    assert client.post(url, json={}, auth=key_auth(stranger)).status_code == 401
    assert client.post(url, json={}, auth=(caller["keyId"], "wrong")).status_code == 401
    assert client.post(f"/run/{uuid.uuid4()}", json={}, auth=key_auth(caller)).status_code == 404

    # A key that is disabled, or deleted, is refused on the very next call.
    key_path = org.url(f"/keys/{caller['key']['id']}")
    client.patch(key_path, json={"state": "disabled"}, auth=org.auth)
    assert client.post(url, json={}, auth=key_auth(caller)).status_code == 401
    client.patch(key_path, json={"state": "enabled"}, auth=org.auth)
    assert client.post(url, json={}, auth=key_auth(caller)).status_code == 200
    assert client.delete(key_path, auth=org.auth).status_code == 200
    assert client.post(url, json={}, auth=key_auth(caller)).status_code == 401
    # ... and leaves every binding.
    got = client.get(f"{path}/{endpoint['id']}", auth=org.auth).json()["result"]
    assert got["apiKeyIds"] == []


@pytest.mark.one_database
def test_an_endpoint_runs_under_its_database_roles_never_more(
    client: TestClient, org: Org, running: str
) -> None:
    caller = create_key(client, org, name="caller", roles=["developer"])
    bind(client, org, running, [str(org.key_uuid)])
    run(client, running, org.auth, "CREATE TABLE t (a UInt8) ENGINE = MergeTree ORDER BY a")
    path = org.url(f"/services/{running}/query-api-endpoints")
    key_ids = [caller["key"]["id"]]

    def endpoint(sql: str, roles: list[str]) -> str:
        body = _endpoint(org, running, key_ids, sql=sql, roles=roles, parameters={})
        response = client.post(path, json=body, auth=org.auth)
        assert response.status_code == 201, response.text
        return f"/run/{response.json()['result']['id']}"

    reader = endpoint("INSERT INTO t VALUES (1)", ["sql_console_read_only"])
    refused = client.post(reader, json={}, auth=key_auth(caller))
    assert refused.status_code == 400
    assert refused.headers["x-clickhouse-exception-code"] == "497"  # ACCESS_DENIED
    writer = endpoint("INSERT INTO t VALUES (2)", ["sql_console_admin"])
    assert client.post(writer, json={}, auth=key_auth(caller)).status_code == 200
    counted = endpoint("SELECT count() AS n FROM t", ["sql_console_read_only"])
    assert client.post(counted, json={}, auth=key_auth(caller)).json()["data"]["rows"] == [[1]]
    # Only the engine's own roles are nameable, never its internal admin role: a 400 at once.
    for role in ("no_such_role", "kh_admin"):
        body = _endpoint(org, running, key_ids, sql="SELECT 1", roles=[role], parameters={})
        unknown = client.post(path, json=body, auth=org.auth)
        assert unknown.status_code == 400, unknown.text
        assert repr(role) in unknown.json()["error"]


def test_nobody_binds_a_key_to_more_database_access_than_they_hold(
    client: TestClient, org: Org, running: str
) -> None:
    """A "Service API admin" manages bindings and endpoints but has no SQL console admin
    access: it may name the read-only database role, never one that can write."""
    api_admin = create_key(
        client,
        org,
        name="service api admin",
        assignedRoleIds=[role_id(client, org, "Service API admin")],
    )
    path = org.url(f"/services/{running}/query-api-endpoints")
    key_ids = [api_admin["key"]["id"]]
    for role in ("sql_console_admin", "default_role"):
        body = _endpoint(org, running, key_ids, sql="SELECT 1", roles=[role], parameters={})
        refused = client.post(path, json=body, auth=key_auth(api_admin))
        assert refused.status_code == 403, refused.text
        binding = client.post(
            org.url(f"/services/{running}/serviceQueryEndpoint"),
            json={"openApiKeys": key_ids, "roles": [role], "allowedOrigins": ""},
            auth=key_auth(api_admin),
        )
        assert binding.status_code in (400, 403), binding.text  # the binding's enum has no
        # default_role: a 400 there
    # Refused whole: no endpoint was made, the service has no binding.
    assert client.get(path, auth=org.auth).json()["result"] == []
    no_binding = client.get(org.url(f"/services/{running}/serviceQueryEndpoint"), auth=org.auth)
    assert no_binding.status_code == 404
    reader = _endpoint(
        org, running, key_ids, sql="SELECT 1", roles=["sql_console_read_only"], parameters={}
    )
    assert client.post(path, json=reader, auth=key_auth(api_admin)).status_code == 201
    bound = client.post(
        org.url(f"/services/{running}/serviceQueryEndpoint"),
        json={"openApiKeys": key_ids, "roles": ["sql_console_read_only"], "allowedOrigins": ""},
        auth=key_auth(api_admin),
    )
    assert bound.status_code == 200, bound.text


def test_endpoints_are_managed_with_pagination_replace_and_conflicts(
    client: TestClient, org: Org
) -> None:
    service_id = create(client, org)["service"]["id"]
    path = org.url(f"/services/{service_id}/query-api-endpoints")
    keys = [str(org.key_uuid)]
    ids = []
    for index in range(3):
        body = _endpoint(org, service_id, keys, name=f"e{index}")
        ids.append(client.post(path, json=body, auth=org.auth).json()["result"]["id"])
    duplicate = client.post(path, json=_endpoint(org, service_id, keys, name="e0"), auth=org.auth)
    assert duplicate.status_code == 409

    # As clickhousectl 0.5.0 reads it: the page is the result, nextCursor is on the envelope.
    first = client.get(path, params={"limit": 2}, auth=org.auth).json()
    assert len(first["result"]) == 2
    assert "sql" not in first["result"][0]
    rest = client.get(path, params={"limit": 2, "cursor": first["nextCursor"]}, auth=org.auth)
    assert len(rest.json()["result"]) == 1
    assert "nextCursor" not in rest.json()
    assert sorted(i["id"] for i in first["result"] + rest.json()["result"]) == sorted(ids)
    assert client.get(path, params={"cursor": "nope"}, auth=org.auth).status_code == 400

    # PUT is a full replace: omitted parameters and origins become empty.
    replaced = client.put(
        f"{path}/{ids[0]}",
        json={
            "name": "renamed",
            "sql": "SELECT 2",
            "database": "default",
            "apiKeyIds": keys,
            "roles": ["sql_console_admin"],
        },
        auth=org.auth,
    )
    assert replaced.status_code == 200, replaced.text
    result = replaced.json()["result"]
    assert (result["name"], result["parameters"], result["allowedOrigins"]) == ("renamed", {}, [])

    bad: list[dict[str, Any]] = [
        {**_endpoint(org, service_id, keys), "apiKeyIds": []},
        {**_endpoint(org, service_id, keys), "roles": []},
        {**_endpoint(org, service_id, keys), "sql": "   "},
        {**_endpoint(org, service_id, keys), "apiKeyIds": [str(uuid.uuid4())]},
        {**_endpoint(org, service_id, keys), "name": "a\x00b"},
    ]
    for body in bad:
        response = client.post(path, json=body, auth=org.auth)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["status"] == 400

    assert client.delete(f"{path}/{ids[1]}", auth=org.auth).status_code == 200
    assert client.get(f"{path}/{ids[1]}", auth=org.auth).status_code == 404
    # Another service's endpoint is not found through this one.
    other = create(client, org)["service"]["id"]
    assert (
        client.get(
            org.url(f"/services/{other}/query-api-endpoints/{ids[0]}"), auth=org.auth
        ).status_code
        == 404
    )


def test_reading_and_managing_endpoints_need_their_permissions(
    client: TestClient, org: Org
) -> None:
    service_id = create(client, org)["service"]["id"]
    path = org.url(f"/services/{service_id}/query-api-endpoints")
    body = _endpoint(org, service_id, [str(org.key_uuid)])
    developer = key_auth(create_key(client, org, name="dev", roles=["developer"]))
    member = key_auth(create_key(client, org, name="no role", roles=[]))
    assert client.post(path, json=body, auth=developer).status_code == 403
    assert client.post(path, json=body, auth=org.auth).status_code == 201
    assert client.get(path, auth=developer).status_code == 200
    assert client.get(path, auth=member).status_code == 403
    saved = org.url(f"/services/{service_id}/saved-queries")
    query = {"name": "q", "sql": "SELECT 1", "database": "default"}
    assert client.post(saved, json=query, auth=developer).status_code == 403
    assert client.get(saved, auth=developer).status_code == 200


def test_saved_queries(client: TestClient, org: Org) -> None:
    service_id = create(client, org)["service"]["id"]
    path = org.url(f"/services/{service_id}/saved-queries")
    body = {"name": "daily", "sql": "SELECT 1", "database": "default", "parameters": {"a": "1"}}
    created = client.post(path, json=body, auth=org.auth)
    assert created.status_code == 200, created.text
    query = created.json()["result"]
    assert {k: query[k] for k in body} == body
    assert client.post(path, json=body, auth=org.auth).status_code == 409
    for index in range(2):
        client.post(path, json={**body, "name": f"more {index}"}, auth=org.auth)
    page = client.get(path, params={"limit": 2}, auth=org.auth).json()
    assert len(page["result"]) == 2
    assert set(page["result"][0]) == {"id", "name", "database"}
    last = client.get(path, params={"cursor": page["nextCursor"]}, auth=org.auth).json()
    assert len(last["result"]) == 1
    assert "nextCursor" not in last

    replaced = client.put(
        f"{path}/{query['id']}",
        json={"name": "daily", "sql": "SELECT 2", "database": "default"},
        auth=org.auth,
    )
    assert replaced.json()["result"]["parameters"] == {}  # an omitted map is empty
    clash = client.put(
        f"{path}/{query['id']}",
        json={"name": "more 0", "sql": "SELECT 2", "database": "default"},
        auth=org.auth,
    )
    assert clash.status_code == 409
    assert client.delete(f"{path}/{query['id']}", auth=org.auth).status_code == 200
    assert client.get(f"{path}/{query['id']}", auth=org.auth).status_code == 404


@pytest.mark.one_database
def test_endpoint_cors_comes_from_its_allowed_origins(client: TestClient, org: Org) -> None:
    service_id = create(client, org)["service"]["id"]
    path = org.url(f"/services/{service_id}/query-api-endpoints")
    body = _endpoint(org, service_id, [str(org.key_uuid)])
    endpoint = client.post(path, json=body, auth=org.auth).json()["result"]
    url = f"/run/{endpoint['id']}"
    allowed = client.options(url, headers={"Origin": "https://app.example.com"})
    assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
    other = client.options(url, headers={"Origin": "https://evil.example.com"})
    assert "access-control-allow-origin" not in other.headers


@pytest.mark.one_database
def test_a_stopped_service_does_not_run_endpoints(
    client: TestClient, org: Org, running: str
) -> None:
    path = org.url(f"/services/{running}/query-api-endpoints")
    endpoint = client.post(
        path, json=_endpoint(org, running, [str(org.key_uuid)]), auth=org.auth
    ).json()["result"]
    client.patch(org.url(f"/services/{running}/state"), json={"command": "stop"}, auth=org.auth)
    wait_for(client, org, running, "stopped")
    stopped = client.post(f"/run/{endpoint['id']}", json={}, auth=org.auth)
    assert stopped.status_code == 206
    assert json.loads(stopped.text) == {"data": "Service is stopped"}


@pytest.mark.one_database
def test_only_an_endpoints_keys_wake_its_service(
    client: TestClient, org: Org, state: AppState
) -> None:
    """The domain function checks the binding itself, whatever front end calls it."""
    service_id = create(client, org)["service"]["id"]
    path = org.url(f"/services/{service_id}/query-api-endpoints")
    body = _endpoint(org, service_id, [str(org.key_uuid)])
    endpoint = client.post(path, json=body, auth=org.auth).json()["result"]
    stranger = create_key(client, org, name="stranger", roles=["admin"])
    with state.sessionmaker.begin() as session:
        session.get(Service, uuid.UUID(service_id)).state = "idle"  # type: ignore[union-attr]
    caller = Principal(
        actor_type="apiKey",
        actor_id=uuid.UUID(stranger["key"]["id"]),
        organization_id=org.id,
        name="stranger",
    )
    with state.sessionmaker() as session, pytest.raises(Unauthorized):
        wake_for_endpoint(session, caller, uuid.UUID(endpoint["id"]))
    with state.sessionmaker() as session:
        assert session.get(Service, uuid.UUID(service_id)).state == "idle"  # type: ignore[union-attr]


@pytest.mark.one_database
def test_version_1_streams_any_size_and_holds_nothing_whole(client: TestClient, org: Org) -> None:
    """Version 1 is one JSON document made of the engine's rows as they come (it used to be
    built whole in the API process, and stopped at a bound); its rows are version 2's."""
    service_id = create(client, org)["service"]["id"]
    wait_for(client, org, service_id, "running")
    body = _endpoint(
        org,
        service_id,
        [str(org.key_uuid)],
        sql="SELECT number, toString(number) AS s, [number, 1] AS a FROM numbers(200000)",
        parameters={},
    )
    created = client.post(
        org.url(f"/services/{service_id}/query-api-endpoints"), json=body, auth=org.auth
    )
    assert created.status_code == 201, created.text
    url = f"/run/{created.json()['result']['id']}"
    whole = client.post(url, json={}, auth=org.auth)
    assert whole.status_code == 200, whole.text[:200]
    document = whole.json()
    assert document["data"]["columns"] == [
        {"name": "number", "type": "UInt64"},
        {"name": "s", "type": "String"},
        {"name": "a", "type": "Array(UInt64)"},
    ]
    streamed = client.post(
        url,
        json={},
        params={"format": "JSONCompactEachRow"},
        auth=org.auth,
        headers={"x-clickhouse-endpoint-version": "2"},
    )
    assert streamed.status_code == 200
    rows = [json.loads(line) for line in streamed.text.splitlines()]
    assert len(rows) == 200_000
    assert document["data"]["rows"] == rows
    stop(client, org, service_id)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64])
def test_version_1_is_the_same_document_however_the_engine_cuts_its_answer(size: int) -> None:
    answer = b'["n", "s"]\n["UInt8", "String"]\n[1, "a\\nb"]\n[2, ", "]\n[3, "]"]\n'
    pieces = [b""] + [answer[i : i + size] for i in range(0, len(answer), size)]

    async def chunks() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    async def document() -> bytes:
        return b"".join([part async for part in version_1_document(chunks())])

    assert json.loads(_run(document())) == {
        "data": {
            "columns": [{"name": "n", "type": "UInt8"}, {"name": "s", "type": "String"}],
            "rows": [[1, "a\nb"], [2, ", "], [3, "]"]],
        }
    }


def test_version_1_of_a_statement_has_no_columns() -> None:
    async def nothing() -> AsyncIterator[bytes]:
        yield b""

    async def document() -> bytes:
        return b"".join([part async for part in version_1_document(nothing())])

    assert json.loads(_run(document())) == {"data": {"columns": [], "rows": []}}


def test_concurrent_runs_lose_no_call_from_the_endpoints_last_calls(
    client: TestClient, org: Org, running: str, state: AppState
) -> None:
    """Calls are recorded behind the requests and merged under a row lock (each run used to
    rewrite the list in its own transaction: concurrent runs wrote over each other's)."""
    caller = create_key(client, org, name="caller", roles=["developer"])
    path = org.url(f"/services/{running}/query-api-endpoints")
    created = client.post(path, json=_endpoint(org, running, [caller["key"]["id"]]), auth=org.auth)
    endpoint_id = created.json()["result"]["id"]
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(
                lambda _: client.post(f"/run/{endpoint_id}", json={}, auth=key_auth(caller)),
                range(8),
            )
        )
    assert [answer.status_code for answer in answers] == [200] * 8
    portal = client.portal
    assert portal is not None
    assert portal.call(state.endpoint_calls.flush, state) == 8
    with state.sessionmaker() as session:
        endpoint = session.get(QueryApiEndpoint, uuid.UUID(endpoint_id))
        assert endpoint is not None
        assert [call["key"] for call in endpoint.last_calls] == ["caller"] * 8
    assert portal.call(state.endpoint_calls.flush, state) == 0  # nothing twice
