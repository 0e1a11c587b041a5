"""clickhouse-connect against ``keyhouse serve``: a service created through the API is reached
at the address its ``endpoints`` list, over HTTPS verified with the CA Keyhouse made."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import clickhouse_connect
import httpx2 as httpx
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from tests.e2e.conftest import Server
from tests.services import clickhouse_round_trip


def _running(server: Server, service_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        service: dict[str, Any] = httpx.get(
            server.url(f"/services/{service_id}"), auth=server.auth, timeout=10
        ).json()["result"]
        if service["state"] == "running":
            return service
        time.sleep(0.3)
    raise AssertionError("the service never ran")


def test_clickhouse_connect_against_keyhouse_serve(server: Server) -> None:
    created = httpx.post(
        server.url("/services"),
        json={"name": f"cc-{uuid.uuid4().hex[:6]}", "ipAccessList": [{"source": "127.0.0.1"}]},
        auth=server.auth,
        timeout=30,
    ).json()["result"]
    service = _running(server, created["service"]["id"])
    [endpoint] = service["endpoints"]
    ca = Path(server.env["KEYHOUSE_DATA_DIR"]) / "tls" / "ca.pem"
    options: dict[str, Any] = {
        "host": endpoint["host"],
        "port": endpoint["port"],
        "username": endpoint["username"],
        "secure": True,
        "ca_cert": str(ca),
    }
    client = clickhouse_connect.get_client(password=created["password"], compress="lz4", **options)
    try:
        clickhouse_round_trip(client)
    finally:
        client.close()
    with pytest.raises(DatabaseError):
        clickhouse_connect.get_client(password="wrong", **options)
