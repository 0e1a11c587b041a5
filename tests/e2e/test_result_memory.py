"""The process that serves every organization holds no whole result: a 2 GB result through
each door, in a streamed format and in a piped one (with a header), leaves its memory flat
(measured on a real ``keyhouse serve``, its resident set sampled while the result streams).
Found this way: an engine block of wide rows (65,409 rows of 1 kB) travelled as one 65 MB
frame, and each door grew the process by 200-375 MB."""

from __future__ import annotations

import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from tests.e2e.conftest import Server, serving

ROWS = 2_000_000
ROW_SQL = f"SELECT repeat('x', 999) AS s FROM numbers({ROWS})"  # noqa: S608
RESULT_BYTES = ROWS * 1000  # 2 GB as TabSeparated
FLAT = 100 * 1024**2  # what a door may add to the process's resident set while it answers


@pytest.fixture(scope="module")
def served(
    database_urls: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, int]]:
    """One server (its memory does not depend on the control plane's database)."""
    with serving(
        database_urls["sqlite"],
        tmp_path_factory.mktemp("memory"),
        KEYHOUSE_QUERY_MAX_RESULT_BYTES=str(4 * 1024**3),  # (the default is 1 GiB)
    ) as (server, process):
        yield server, _api_process(process.pid)


def _api_process(pid: int) -> int:
    """The process that serves requests: the server's one worker (granian's child; engines
    are that worker's children)."""
    children = [
        int(child)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    ]
    assert len(children) == 1, children
    return children[0]


def _resident(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _growth(pid: int, answer: Callable[[], int]) -> tuple[int, int]:
    """The bytes ``answer`` received, and the most the process's resident set grew meanwhile."""
    before = _resident(pid)
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.01):
            peak = max(peak, _resident(pid))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        received = answer()
    finally:
        done.set()
        sampler.join()
    return received, max(peak, _resident(pid)) - before


def _streamed(client: httpx.Client, method: str, url: str, **options: Any) -> int:
    size = 0
    with client.stream(method, url, **options) as response:
        assert response.status_code == 200, response.read()[:500]
        for chunk in response.iter_raw(1024 * 1024):
            size += len(chunk)
    return size


def test_a_2_gb_result_leaves_the_api_process_flat_through_every_door(
    served: tuple[Server, int],
) -> None:
    server, pid = served
    created = httpx.post(
        server.url("/services"),
        json={"name": f"mem-{uuid.uuid4().hex[:6]}", "ipAccessList": [{"source": "127.0.0.1"}]},
        auth=server.auth,
        timeout=30,
    ).json()["result"]
    service_id, password = created["service"]["id"], created["password"]
    deadline = time.monotonic() + 90
    while True:
        service = httpx.get(server.url(f"/services/{service_id}"), auth=server.auth).json()
        if service["result"]["state"] == "running":
            break
        assert time.monotonic() < deadline, service
        time.sleep(0.3)
    [endpoint] = service["result"]["endpoints"]
    bound = httpx.post(
        server.url(f"/services/{service_id}/serviceQueryEndpoint"),
        json={
            "openApiKeys": [server.key_id],
            "roles": ["sql_console_read_only"],
            "allowedOrigins": "https://app.example.com",
        },
        auth=server.auth,
    )
    assert bound.status_code == 200, bound.text
    [key] = httpx.get(server.url("/keys"), auth=server.auth).json()["result"]
    made = httpx.post(
        server.url(f"/services/{service_id}/query-api-endpoints"),
        json={
            "name": "a gigabyte",
            "sql": ROW_SQL,
            "database": "default",
            "apiKeyIds": [key["id"]],
            "roles": ["sql_console_read_only"],
            "allowedOrigins": ["https://app.example.com"],
        },
        auth=server.auth,
    )
    assert made.status_code == 201, made.text
    run_url = f"{server.base_url}/run/{made.json()['result']['id']}"
    ca = Path(server.env["KEYHOUSE_DATA_DIR"]) / "tls" / "ca.pem"
    port = httpx.Client(
        base_url=f"https://{endpoint['host']}:{endpoint['port']}",
        auth=("default", password),
        verify=ssl.create_default_context(cafile=str(ca)),
        timeout=300,
    )
    api = httpx.Client(auth=server.auth, timeout=300)
    doors: dict[str, Callable[[], int]] = {
        "ClickHouse HTTP interface": lambda: _streamed(port, "POST", "/", content=ROW_SQL),
        "... with wait_end_of_query": lambda: _streamed(
            port, "POST", "/", params={"wait_end_of_query": "1"}, content=ROW_SQL
        ),
        "Query API": lambda: _streamed(
            api,
            "POST",
            f"{server.base_url}/service/{service_id}/run",
            params={"format": "TabSeparated"},
            json={"sql": ROW_SQL},
        ),
        "endpoint, version 2": lambda: _streamed(
            api,
            "POST",
            run_url,
            params={"format": "TabSeparated"},
            json={},
            headers={"x-clickhouse-endpoint-version": "2"},
        ),
        # A format with a header: piped out of the engine, one document.
        "ClickHouse HTTP interface, CSVWithNames": lambda: _streamed(
            port, "POST", "/", params={"default_format": "CSVWithNames"}, content=ROW_SQL
        ),
    }
    with port, api:
        for door, answer in doors.items():
            received, grew = _growth(pid, answer)
            header = len(b'"s"\n') if "CSVWithNames" in door else 0
            quotes = 2 * ROWS if "CSVWithNames" in door else 0
            assert received == RESULT_BYTES + header + quotes, door
            assert grew < FLAT, f"{door}: +{grew / 1024**2:.0f} MB"
        # Version 1 is one JSON document ({"data": {"columns", "rows"}}), streamed as well.
        received, grew = _growth(pid, lambda: _streamed(api, "POST", run_url, json={}))
        assert received > RESULT_BYTES
        assert grew < FLAT, f"endpoint, version 1: +{grew / 1024**2:.0f} MB"
