"""A service attached to a ClickHouse the operator already runs (``keyhouseAttach``, a Keyhouse
extension of the create request): the Query API, Query API endpoints and the service's own
ClickHouse HTTP interface proxy to it; stop and start only open and close the gate.

The attached server here is another service's ClickHouse HTTP interface: a real ClickHouse HTTP
interface over HTTPS, verified with Keyhouse's own CA."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from keyhouse.config import Settings
from tests.conftest import Org, create_key, key_auth, make_settings
from tests.services import bind, create, run, wait_for

pytestmark = [pytest.mark.services, pytest.mark.one_database]  # (tests/conftest.py)

LOOPBACK = [{"source": "127.0.0.1/32"}]


@pytest.fixture
def settings(database_urls: dict[str, str], backend: str) -> Settings:
    return make_settings(database_urls[backend], services=True, attach_allowed_hosts="127.0.0.1")


def _attach_to(endpoint: dict[str, Any], password: str) -> dict[str, Any]:
    return {
        "url": f"https://{endpoint['host']}:{endpoint['port']}",
        "username": endpoint["username"],
        "password": password,
    }


def test_an_attached_service_answers_the_query_api_and_saved_endpoints(
    client: TestClient, org: Org
) -> None:
    origin = create(client, org, ipAccessList=LOOPBACK)
    origin_service = wait_for(client, org, origin["service"]["id"], "running")
    attached = create(
        client,
        org,
        keyhouseAttach=_attach_to(origin_service["endpoints"][0], origin["password"]),
        ipAccessList=LOOPBACK,
    )
    assert "keyhouseAttach" not in attached["service"]
    assert origin["password"] not in str(attached)
    service = wait_for(client, org, attached["service"]["id"], "running")
    assert service["clickhouseVersion"] == origin_service["clickhouseVersion"]
    sid = service["id"]

    bind(client, org, sid, [str(org.key_uuid)])
    created = run(client, sid, org.auth, "CREATE TABLE t (a UInt32) ENGINE = MergeTree ORDER BY a")
    assert created.status_code == 200, created.text
    assert run(client, sid, org.auth, "INSERT INTO t VALUES (1), (2), (3)").status_code == 200
    # The rows are in the attached server: the origin service has them.
    bind(client, org, origin_service["id"], [str(org.key_uuid)])
    assert run(client, origin_service["id"], org.auth, "SELECT sum(a) FROM t").text == "6\n"
    error = run(client, sid, org.auth, "SELECT * FROM missing")
    assert error.status_code == 400
    assert error.headers["x-clickhouse-exception-code"] == "60"

    # A saved endpoint on the attached service, under a read-only database role.
    caller = create_key(client, org, name="caller", roles=["developer"])
    endpoint = client.post(
        org.url(f"/services/{sid}/query-api-endpoints"),
        json={
            "name": "over",
            "sql": "SELECT count() AS n FROM t WHERE a > {min:UInt32}",
            "database": "default",
            "parameters": {"min": "1"},
            "apiKeyIds": [caller["key"]["id"]],
            "roles": ["sql_console_read_only"],
        },
        auth=org.auth,
    ).json()["result"]
    answer = client.post(f"/run/{endpoint['id']}", json={}, auth=key_auth(caller))
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"]["rows"] == [[2]]

    # A read-only binding is read-only on the attached server too.
    bind(client, org, sid, [str(org.key_uuid)], role="sql_console_read_only")
    refused = run(client, sid, org.auth, "INSERT INTO t VALUES (4)")
    assert refused.status_code == 400
    assert refused.headers["x-clickhouse-exception-code"] == "164"  # READONLY

    # Stopping an attached service closes the gate; the server goes on.
    client.patch(org.url(f"/services/{sid}/state"), json={"command": "stop"}, auth=org.auth)
    wait_for(client, org, sid, "stopped")
    assert run(client, sid, org.auth, "SELECT 1").status_code == 206
    assert run(client, origin_service["id"], org.auth, "SELECT count() FROM t").text == "3\n"


def test_attaching_is_limited_to_the_hosts_the_operator_allows(
    client: TestClient, org: Org
) -> None:
    for url in ("https://10.1.2.3:8443", "ftp://127.0.0.1/", "https://user:pw@127.0.0.1:1/"):
        response = client.post(
            org.url("/services"),
            json={"name": "attached", "keyhouseAttach": {"url": url}},
            auth=org.auth,
        )
        assert response.status_code == 400, (url, response.text)


def test_attaching_over_plain_http_needs_the_operators_leave() -> None:
    """The server's password would cross the network in clear: https, unless the operator
    lists the host in KEYHOUSE_ATTACH_HTTP_HOSTS."""
    from keyhouse.api.errors import BadRequest
    from keyhouse.services.service import _attach_url

    with pytest.raises(BadRequest) as refused:
        _attach_url("http://ch.internal:8123", ["ch.internal"])
    assert "KEYHOUSE_ATTACH_HTTP_HOSTS" in refused.value.message
    allowed = _attach_url("http://ch.internal:8123", ["ch.internal"], ["ch.internal:8123"])
    assert allowed == "http://ch.internal:8123/"
    assert _attach_url("https://ch.internal:8443", ["ch.internal"]) == "https://ch.internal:8443/"


def test_an_attached_server_that_refuses_the_credentials_fails_the_service(
    client: TestClient, org: Org
) -> None:
    origin = create(client, org, ipAccessList=LOOPBACK)
    endpoint = wait_for(client, org, origin["service"]["id"], "running")["endpoints"][0]
    attached = create(client, org, keyhouseAttach=_attach_to(endpoint, "wrong password"))
    failed = wait_for(client, org, attached["service"]["id"], "failed")
    assert "wrong password" not in str(failed)
