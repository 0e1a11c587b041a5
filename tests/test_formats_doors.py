"""Every output format, through each door of a running service (its ClickHouse HTTP interface,
the Query API and a Query API endpoint's version 2), answers the bytes the engine's own
one-shot query gives for a result of several blocks (only fields that legitimately differ
between two runs are taken from the answer: ``tests/engine/test_formats.py::_comparable``)."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient

from keyhouse.config import Settings
from tests.conftest import Org
from tests.engine.test_formats import MANY_BLOCKS, _comparable, _reference
from tests.services import bind, create, stop, wait_for

pytestmark = [pytest.mark.services, pytest.mark.one_database]  # (tests/conftest.py)


def test_every_format_through_every_door_is_the_engines_own_answer(
    settings: Settings, client: TestClient, org: Org, tmp_path: Path
) -> None:
    reference = tmp_path / "reference"
    formats = sorted(_reference(reference))
    created = create(client, org, ipAccessList=[{"source": "127.0.0.1/32"}])
    service = wait_for(client, org, created["service"]["id"], "running")
    service_id = service["id"]
    bind(client, org, service_id, [org.key_id])
    endpoint = client.post(
        org.url(f"/services/{service_id}/query-api-endpoints"),
        json={
            "name": "every format",
            "sql": MANY_BLOCKS,
            "database": "default",
            "apiKeyIds": [str(org.key_uuid)],
            "roles": ["sql_console_read_only"],
            "allowedOrigins": ["https://app.example.com"],
        },
        auth=org.auth,
    )
    assert endpoint.status_code == 201, endpoint.text
    run_url = f"/run/{endpoint.json()['result']['id']}"
    [port] = service["endpoints"]
    verify = ssl.create_default_context(cafile=str(settings.data_dir / "tls" / "ca.pem"))
    doors: dict[str, Any] = {
        "ClickHouse HTTP interface": lambda http, name: http.post(
            "/", params={"default_format": name}, content=MANY_BLOCKS.encode()
        ),
        "Query API": lambda http, name: client.post(
            f"/service/{service_id}/run",
            params={"format": name},
            json={"sql": MANY_BLOCKS},
            auth=org.auth,
        ),
        "endpoint, version 2": lambda http, name: client.post(
            run_url,
            params={"format": name},
            json={},
            auth=org.auth,
            headers={"x-clickhouse-endpoint-version": "2"},
        ),
    }
    different = []
    with httpx.Client(
        base_url=f"https://{port['host']}:{port['port']}",
        auth=("default", created["password"]),
        verify=verify,
        timeout=120,
    ) as http:
        for door, answer in doors.items():
            for name in formats:
                got = answer(http, name)
                expected = (reference / f"{name}.whole").read_bytes()
                if got.status_code != 200 or got.content != _comparable(
                    name, expected, got.content
                ):
                    different.append((door, name, got.status_code))
    assert different == []
    stop(client, org, service_id)
