"""clickhousectl 0.5.0's ``query-api-endpoint`` and ``saved-query`` commands against a real
server, and running a saved endpoint with a listed, an unlisted and a revoked key."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx2 as httpx

from tests.e2e.conftest import Server
from tests.e2e.test_clickhousectl import ctl
from tests.e2e.test_clickhousectl_services import _wait


def _key(server: Server, name: str, role: str) -> dict[str, Any]:
    roles = {r["name"]: r["id"] for r in ctl(server, "org", "role", "list")}
    created: dict[str, Any] = ctl(
        server, "key", "create", "--name", name, "--role-id", roles[role], "--ip-allow", "0.0.0.0/0"
    )
    return created


def _definition(path: Path, **fields: Any) -> str:
    path.write_text(json.dumps(fields))
    return str(path)


def test_query_api_endpoints_and_saved_queries(server: Server, tmp_path: Path) -> None:
    service_id = ctl(server, "service", "create", "--name", f"ep-{uuid.uuid4().hex[:6]}")
    service_id = service_id.get("service", service_id)["id"]
    _wait(server, service_id, "running")
    listed_key = _key(server, "endpoint caller", "Developer")
    other_key = _key(server, "not listed", "Admin")

    definition = _definition(
        tmp_path / "endpoint.json",
        name="answer",
        sql="SELECT {n:UInt32} + 1 AS answer",
        database="default",
        parameters={"n": "41"},
        apiKeyIds=[listed_key["key"]["id"]],
        roles=["sql_console_read_only"],
        allowedOrigins=["https://app.example.com"],
    )
    endpoint = ctl(server, "query-api-endpoint", "create", service_id, "--file", definition)
    assert endpoint["ownerType"] == "queryApiEndpoint"
    listed = ctl(server, "query-api-endpoint", "list", service_id)
    assert endpoint["id"] in {item["id"] for item in listed["items"]}
    assert ctl(server, "query-api-endpoint", "get", service_id, endpoint["id"])["name"] == "answer"

    def call(auth: tuple[str, str], **params: str) -> httpx.Response:
        return httpx.post(endpoint["url"], json={}, params=params, auth=auth, timeout=60)

    listed_auth = (listed_key["keyId"], listed_key["keySecret"])
    answered = call(listed_auth)
    assert answered.status_code == 200, answered.text
    assert answered.json()["data"]["rows"] == [[42]]
    assert call(listed_auth, param_n="1").json()["data"]["rows"] == [[2]]
    assert call((other_key["keyId"], other_key["keySecret"])).status_code == 401

    updated_definition = _definition(
        tmp_path / "updated.json",
        name="answer",
        sql="SELECT {n:UInt32} * 2 AS doubled",
        database="default",
        apiKeyIds=[listed_key["key"]["id"], other_key["key"]["id"]],
        roles=["sql_console_read_only"],
    )
    updated = ctl(
        server,
        "query-api-endpoint",
        "update",
        service_id,
        endpoint["id"],
        "--file",
        updated_definition,
    )
    assert updated["parameters"] == {}
    assert call((other_key["keyId"], other_key["keySecret"]), param_n="4").json()["data"][
        "rows"
    ] == [[8]]

    # Revoked: refused on the very next request.
    ctl(server, "key", "delete", listed_key["key"]["id"])
    assert call(listed_auth, param_n="4").status_code == 401
    got = ctl(server, "query-api-endpoint", "get", service_id, endpoint["id"])
    assert got["apiKeyIds"] == [other_key["key"]["id"]]
    ctl(server, "query-api-endpoint", "delete", service_id, endpoint["id"])

    # Saved queries.
    saved = ctl(
        server,
        "saved-query",
        "create",
        service_id,
        "--name",
        "daily",
        "--sql",
        "SELECT 1",
        "--database",
        "default",
        "--param",
        "day=2026-11-27",
    )
    assert saved["parameters"] == {"day": "2026-11-27"}
    names = ctl(server, "saved-query", "list", service_id)["result"]
    assert "daily" in {item["name"] for item in names}
    again = ctl(
        server,
        "saved-query",
        "update",
        service_id,
        saved["id"],
        "--new-name",
        "nightly",
        "--sql",
        "SELECT 2",
        "--database",
        "default",
    )
    assert (again["name"], again["sql"]) == ("nightly", "SELECT 2")
    assert ctl(server, "saved-query", "get", service_id, saved["id"])["name"] == "nightly"
    ctl(server, "saved-query", "delete", service_id, saved["id"])
    left = ctl(server, "saved-query", "list", service_id)["result"]
    assert saved["id"] not in {item["id"] for item in left}
