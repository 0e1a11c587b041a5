"""Browser fixtures: Debian's Chromium driven by Playwright, against a real ``keyhouse serve``
started on an empty database (so the first-run setup page is what a newcomer sees)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from playwright.sync_api import Browser, Playwright, sync_playwright

from tests.conftest import BACKENDS, POSTGRES_ADMIN_DSN
from tests.e2e.conftest import server_env, start_server, stop

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-quic",
    "--no-first-run",
    "--disable-sync",
]


@dataclass
class ConsoleServer:
    base_url: str
    database_url: str
    env: dict[str, str]


def _empty_database(backend: str, tmp: Path, worker: str) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp}/console.db"
    name = f"keyhouse_console_{worker}"
    with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return (
        POSTGRES_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
        + f"/{name}"
    )


@pytest.fixture(scope="module", params=BACKENDS)
def console_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, worker_id_safe: str
) -> Iterator[ConsoleServer]:
    tmp = tmp_path_factory.mktemp("console")
    env = server_env(tmp)
    database_url = _empty_database(str(request.param), tmp, worker_id_safe)
    process, base_url = start_server(database_url, env, tmp / "server.log", "--rate-limit", "off")
    try:
        yield ConsoleServer(base_url, database_url, env)
    finally:
        stop(process)


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    assert shutil.which(CHROMIUM) or Path(CHROMIUM).exists(), "apt-get install chromium"
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield browser
    browser.close()
