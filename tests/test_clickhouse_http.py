"""Every running service has a ClickHouse HTTP interface (HTTPS, listed in its ``endpoints``)
that the official Python client, clickhouse-connect, uses as it uses ClickHouse itself."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import clickhouse_connect
import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError
from fastapi.testclient import TestClient

from keyhouse.config import Settings
from tests.conftest import Org
from tests.services import clickhouse_round_trip, create, wait_for

LOOPBACK = [{"source": "127.0.0.1/32", "description": "this machine"}]


@contextlib.contextmanager
def _connected(
    settings: Settings, endpoint: dict[str, Any], password: str, **options: Any
) -> Iterator[Client]:
    client = _connect(settings, endpoint, password, **options)
    try:
        yield client
    finally:
        client.close()


def _connect(settings: Settings, endpoint: dict[str, Any], password: str, **options: Any) -> Client:
    return clickhouse_connect.get_client(
        host=endpoint["host"],
        port=endpoint["port"],
        username=endpoint["username"],
        password=password,
        secure=True,
        ca_cert=str(settings.data_dir / "tls" / "ca.pem"),
        **options,
    )


@pytest.fixture
def running(client: TestClient, org: Org) -> tuple[dict[str, Any], str]:
    created = create(client, org, ipAccessList=LOOPBACK)
    service = wait_for(client, org, created["service"]["id"], "running")
    return service, created["password"]


def test_clickhouse_connect_creates_inserts_and_reads_back(
    settings: Settings, running: tuple[dict[str, Any], str]
) -> None:
    service, password = running
    [endpoint] = service["endpoints"]
    assert endpoint["protocol"] == "https"
    assert endpoint["username"] == "default"
    with _connected(settings, endpoint, password, compress="lz4") as ch:
        clickhouse_round_trip(ch)


def test_a_wrong_password_is_refused(
    settings: Settings, running: tuple[dict[str, Any], str]
) -> None:
    service, _ = running
    with pytest.raises(DatabaseError) as refused:
        _connect(settings, service["endpoints"][0], "not the password")
    assert "516" in str(refused.value)  # AUTHENTICATION_FAILED


def test_an_address_outside_the_ip_access_list_is_refused(
    client: TestClient, org: Org, settings: Settings
) -> None:
    created = create(client, org, ipAccessList=[{"source": "10.9.8.7/32"}])
    service = wait_for(client, org, created["service"]["id"], "running")
    with pytest.raises(DatabaseError) as refused:
        _connect(settings, service["endpoints"][0], created["password"])
    assert "195" in str(refused.value)  # IP_ADDRESS_NOT_ALLOWED
