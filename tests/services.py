"""Helpers of the tests that run services: create one, wait for a state, bind keys to its
query endpoint, run SQL through the Query API."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

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
