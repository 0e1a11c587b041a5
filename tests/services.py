"""Helpers of the tests that run services: create one, wait for a state, bind keys to its
query endpoint, run SQL through the Query API."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError
from clickhouse_connect.driver.summary import QuerySummary
from fastapi.testclient import TestClient

from tests.conftest import Org


def create(client: TestClient, org: Org, **body: Any) -> dict[str, Any]:
    body.setdefault("name", f"svc {uuid.uuid4().hex[:6]}")
    response = client.post(org.url("/services"), json=body, auth=org.auth)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["result"]
    return result


def wait_for(client: TestClient, org: Org, service_id: str, state: str) -> dict[str, Any]:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        service: dict[str, Any] = client.get(
            org.url(f"/services/{service_id}"), auth=org.auth
        ).json()["result"]
        if service["state"] == state:
            return service
        assert service["state"] != "failed", service
        time.sleep(0.2)
    raise AssertionError(f"service {service_id} never reached {state}")


def stop(client: TestClient, org: Org, service_id: str) -> dict[str, Any]:
    """Stop the service and wait until it is stopped (its engine and port released)."""
    response = client.patch(
        org.url(f"/services/{service_id}/state"), json={"command": "stop"}, auth=org.auth
    )
    assert response.status_code == 200, response.text
    return wait_for(client, org, service_id, "stopped")


def bind(
    client: TestClient, org: Org, service_id: str, keys: list[str], role: str = "sql_console_admin"
) -> dict[str, Any]:
    response = client.post(
        org.url(f"/services/{service_id}/serviceQueryEndpoint"),
        json={"openApiKeys": keys, "roles": [role], "allowedOrigins": "*"},
        auth=org.auth,
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["result"]
    return result


def run(
    client: TestClient,
    service_id: str,
    auth: tuple[str, str],
    sql: str,
    fmt: str = "TabSeparated",
    **headers: str,
) -> Any:
    return client.post(
        f"/service/{service_id}/run",
        params={"format": fmt},
        # As clickhousectl sends it: JSON, labelled text/plain.
        content=json.dumps({"runId": str(uuid.uuid4()), "sql": sql}),
        headers={"content-type": "text/plain;charset=UTF-8", **headers},
        auth=auth,
    )


def _naive(text: str) -> dt.datetime:
    """A DateTime as the client reads it back: naive, in the server's time zone (UTC)."""
    return dt.datetime.fromisoformat(text + "+00:00").replace(tzinfo=None)


def clickhouse_round_trip(ch: Client) -> None:
    """What a clickhouse-connect user does first: create, insert several types, read back,
    a parameterised query, Arrow, and a server error as the client's own."""
    assert ch.ping()
    assert ch.query("SELECT 1").result_rows == [(1,)]
    ch.command(
        "CREATE TABLE events (id UInt64, name String, at DateTime, tags Array(String), "
        "score Nullable(Float64), kind LowCardinality(String)) ENGINE = MergeTree ORDER BY id"
    )
    rows = [
        (1, "first", _naive("2026-11-27 01:02:03"), ["a", "b"], 1.5, "click"),
        (2, "second", _naive("2026-11-27 04:05:06"), [], None, "view"),
        (3, "ünïcode", _naive("2026-01-01 00:00:00"), ["x"], -2.0, "click"),
    ]
    summary = ch.insert("events", rows, column_names=["id", "name", "at", "tags", "score", "kind"])
    assert summary.written_rows == 3
    back = ch.query("SELECT id, name, at, tags, score, kind FROM events ORDER BY id")
    assert back.result_rows == rows
    counted = ch.query(
        "SELECT count() FROM events WHERE kind = {kind:String}", parameters={"kind": "click"}
    )
    assert counted.result_rows == [(2,)]
    assert ch.query_arrow("SELECT id FROM events ORDER BY id").num_rows == 3

    with pytest.raises(DatabaseError) as missing:
        ch.query("SELECT * FROM no_such_table")
    assert "60" in str(missing.value)  # UNKNOWN_TABLE, the server's own code
    # A statement's figures, from the server's summary.
    copied = ch.command("INSERT INTO events SELECT * FROM events")
    assert isinstance(copied, QuerySummary)
    assert copied.written_rows == 3
