"""Two ``keyhouse serve`` processes on one PostgreSQL database and one data directory (replicas
on one machine) run each service's engine in exactly one of them: the other answers that
service's queries through it (it had once started an engine of its own: rows inserted through
one replica were absent from the other). When the holder is killed (-9), the other takes the
service over and serves its data."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.e2e.conftest import Server, serving, start_server, stop


@pytest.fixture
def replicas(
    database_urls: dict[str, str], tmp_path: Path
) -> Iterator[tuple[Server, Server, int, int]]:
    """Two servers on one database and one data directory, and their PIDs."""
    # Renewed every 2 s: a loaded machine must stall a server for 4 s before the other one
    # may take its service over while it lives.
    lease = {"KEYHOUSE_ENGINE_LEASE_SECONDS": "6"}
    with serving(database_urls["postgresql"], tmp_path, **lease) as (first, process):
        second_process, second_url = start_server(
            first.database_url, first.env, tmp_path / "second.log", "--rate-limit", "off"
        )
        try:
            second = Server(
                second_url,
                first.database_url,
                first.env,
                first.org_id,
                first.key_id,
                first.key_secret,
                first.password,
            )
            yield first, second, process.pid, second_process.pid
        finally:
            stop(second_process)


def _processes() -> dict[int, tuple[int, bytes]]:
    """Every process of this machine: its parent's PID and its command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
                found[int(entry.name)] = (parent, (entry / "cmdline").read_bytes())
            except OSError:
                continue
    return found


def _tree(pid: int) -> set[int]:
    """``pid`` and all its descendants."""
    processes = _processes()
    found, grew = {pid}, True
    while grew:
        more = {child for child, (parent, _) in processes.items() if parent in found} - found
        found |= more
        grew = bool(more)
    return found


def _engines_of(service_id: str) -> set[int]:
    return {
        pid
        for pid, (_, command) in _processes().items()
        if b"keyhouse.engine.worker" in command and service_id.encode() in command
    }


def _run(server: Server, service_id: str, sql: str) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/service/{service_id}/run",
        params={"format": "TabSeparated"},
        content=json.dumps({"sql": sql}),
        auth=server.auth,
        timeout=60,
    )


def test_each_service_runs_in_one_replica_and_moves_when_it_dies(
    replicas: tuple[Server, Server, int, int],
) -> None:
    first, second, first_pid, second_pid = replicas
    created = httpx.post(
        first.url("/services"),
        json={"name": f"replicated-{uuid.uuid4().hex[:6]}", "ipAccessList": []},
        auth=first.auth,
        timeout=30,
    )
    assert created.status_code == 200, created.text
    service_id = created.json()["result"]["service"]["id"]
    bound = httpx.post(
        first.url(f"/services/{service_id}/serviceQueryEndpoint"),
        json={"openApiKeys": [first.key_id], "roles": ["sql_console_admin"], "allowedOrigins": "*"},
        auth=first.auth,
    )
    assert bound.status_code == 200, bound.text
    deadline = time.monotonic() + 90
    while (answer := _run(first, service_id, "SELECT 1")).status_code != 200:
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.3)
    made = _run(first, service_id, "CREATE TABLE t (n UInt32) ENGINE = MergeTree ORDER BY n")
    assert made.status_code == 200, made.text
    inserted = _run(first, service_id, "INSERT INTO t SELECT number FROM numbers(777)")
    assert inserted.status_code == 200, inserted.text

    # One engine, in the first server's process tree; the second answers through it.
    time.sleep(2)  # (a few of the second's lease rounds: it must not take the service)
    engines = _engines_of(service_id)
    assert len(engines) >= 1
    assert engines <= _tree(first_pid)
    through = _run(second, service_id, "SELECT count() FROM t")
    assert through.status_code == 200, through.text
    assert through.text == "777\n"
    assert _engines_of(service_id) == engines  # (no second engine)

    # The holder dies (kill -9 of the server's processes; its engine ends on its own): the
    # second takes over and serves the same data.
    # The server first (it would start a new worker for one that died), then the rest.
    processes = _processes()
    for pid in [first_pid, *(_tree(first_pid) - engines - {first_pid})]:
        if not processes.get(pid, (0, b""))[1].startswith((b"bwrap", b"/usr/bin/bwrap")):
            with contextlib.suppress(ProcessLookupError):  # (a process that ended meanwhile)
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 90
    while (answer := _run(second, service_id, "SELECT count() FROM t")).status_code != 200:
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.5)
    assert answer.text == "777\n"
    assert _engines_of(service_id) <= _tree(second_pid)
