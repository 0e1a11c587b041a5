"""End-to-end fixtures: a real ``keyhouse serve`` process per database for the session, and an
organization of its own for each test module."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from tests.conftest import BACKENDS, PEPPER, migrated_databases

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    base_url: str
    database_url: str
    env: dict[str, str]
    org_id: str
    key_id: str
    key_secret: str
    password: str

    @property
    def auth(self) -> tuple[str, str]:
        return (self.key_id, self.key_secret)

    def url(self, path: str = "") -> str:
        return f"{self.base_url}/v1/organizations/{self.org_id}{path}"


def server_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYHOUSE_", "CLICKHOUSE"))}
    env.update(
        {
            "KEYHOUSE_PEPPER": PEPPER,
            "KEYHOUSE_DATA_DIR": str(tmp / "data"),
            "DO_NOT_TRACK": "1",
            "HOME": str(tmp),
        }
    )
    return env


def bootstrap(database_url: str, env: dict[str, str]) -> dict[str, Any]:
    output = subprocess.run(
        [
            str(BIN / "keyhouse"),
            "bootstrap",
            "--org-name",
            "E2E org",
            "--email",
            f"e2e-{uuid.uuid4().hex[:10]}@example.com",
            "--database-url",
            database_url,
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    data: dict[str, Any] = json.loads(output.stdout)
    return data


def start_server(
    database_url: str, env: dict[str, str], log: Path, *extra: str
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    with log.open("wb") as output:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [
                str(BIN / "keyhouse"),
                "serve",
                "--port",
                str(port),
                "--database-url",
                database_url,
                *extra,
            ],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"keyhouse serve exited: {log.read_text()}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return process, base_url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"keyhouse serve did not become healthy: {log.read_text()}")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def serving(
    database_url: str, tmp: Path, **settings: str
) -> Iterator[tuple[Server, subprocess.Popen[bytes]]]:
    """A bootstrapped ``keyhouse serve`` on ``database_url`` with its data under ``tmp``, and
    ``settings`` in its environment."""
    env = {**server_env(tmp), **settings}
    boot = bootstrap(database_url, env)
    process, base_url = start_server(database_url, env, tmp / "server.log", "--rate-limit", "off")
    try:
        yield (
            Server(
                base_url,
                database_url,
                env,
                boot["organizationId"],
                boot["keyId"],
                boot["keySecret"],
                boot["password"],
            ),
            process,
        )
    finally:
        stop(process)


@pytest.fixture(scope="session")
def database_urls(tmp_path_factory: pytest.TempPathFactory, worker_id_safe: str) -> dict[str, str]:
    """End-to-end servers' databases, their own (the in-process tests' are tests/conftest.py's:
    a services test deletes the services there after it, and must never reach a server's)."""
    return migrated_databases(tmp_path_factory, f"{worker_id_safe}_e2e")


@pytest.fixture(scope="session", params=BACKENDS)
def served(
    request: pytest.FixtureRequest,
    database_urls: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    """One ``keyhouse serve`` per database for the whole session (of this test process)."""
    with serving(database_urls[request.param], tmp_path_factory.mktemp("e2e")) as (server, _):
        yield server


@pytest.fixture(scope="module")
def server(served: Server, tmp_path_factory: pytest.TempPathFactory) -> Server:
    """The session's server, with an organization (and a home directory) of the module's own:
    no module sees another's keys, members or services."""
    env = {**served.env, "HOME": str(tmp_path_factory.mktemp("home"))}
    boot = bootstrap(served.database_url, env)
    return Server(
        served.base_url,
        served.database_url,
        env,
        boot["organizationId"],
        boot["keyId"],
        boot["keySecret"],
        boot["password"],
    )
