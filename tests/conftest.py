"""Shared fixtures: every storage test runs on SQLite and on PostgreSQL.

PostgreSQL (127.0.0.1:5432, database ``test``, trust auth) and Redis (127.0.0.1:6379) must be
running: a missing server fails the run, it is never skipped. Each xdist worker gets its own
PostgreSQL database and SQLite file, migrated once; tests isolate themselves by creating their
own organizations.

Services (engines) are off unless a test asks for them with ``@pytest.mark.services``; the
services such a test created are deleted from the database after it (its app has stopped their
engines), so that no later test's app starts them again, and any engine a test leaves running
fails that test. End-to-end servers have databases of their own (``tests/e2e/conftest.py``).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hypothesis
import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from keyhouse.app import create_app
from keyhouse.bootstrap import bootstrap
from keyhouse.config import Settings
from keyhouse.db import make_engine
from keyhouse.migrations import upgrade
from keyhouse.state import AppState

POSTGRES_ADMIN_DSN = os.environ.get("KEYHOUSE_TEST_POSTGRES", "postgresql://127.0.0.1:5432/test")
REDIS_URL = os.environ.get("KEYHOUSE_TEST_REDIS", "redis://127.0.0.1:6379/0")
PEPPER = "test-pepper-not-secret"
BACKENDS = ["sqlite", "postgresql"]

# Property tests check what holds, not how fast: no per-example deadline, and no failing on a
# slow data generation (the machine's load, not the code, decides those on a 2-core runner).
hypothesis.settings.register_profile(
    "keyhouse", deadline=None, suppress_health_check=[hypothesis.HealthCheck.too_slow]
)
hypothesis.settings.load_profile("keyhouse")


def _postgres_database(worker: str) -> str:
    name = f"keyhouse_test_{worker}"
    with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_DSN.rsplit("/", 1)[0]
    return f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)


def worker_pids(service: uuid.UUID | str | None = None) -> list[int]:
    """The engine workers this test process started (for ``service`` alone if given), found
    by their command line (the service's id is in their socket's and data's paths)."""
    me = str(os.getpid()).encode()
    wanted = uuid.UUID(str(service)).hex.encode() if service is not None else b""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes()
            parent = (entry / "stat").read_bytes().rsplit(b")", 1)[1].split()[1]
        except (OSError, IndexError):
            continue
        if parent == me and b"keyhouse.engine.worker" in command and wanted in command:
            pids.append(int(entry.name))
    return pids


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "services: the test's apps run services (engines); off otherwise"
    )
    config.addinivalue_line(
        "markers",
        "one_database: behaviour that does not depend on storage (engines, the route table), "
        "run on SQLite only",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``one_database`` tests run on SQLite alone (the storage set of services, create, start,
    stop, delete, restart survival, reconcile and the CRUD, runs on both databases): their
    PostgreSQL variants are deselected, and the run's summary counts them."""
    kept, dropped = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_postgres = callspec is not None and callspec.params.get("backend") == "postgresql"
        if on_postgres and item.get_closest_marker("one_database") is not None:
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def wants_services(request: pytest.FixtureRequest) -> bool:
    return request.node.get_closest_marker("services") is not None


# After a services test: its services go (their endpoints, bindings and leases with them).
_SETTLE = "DELETE FROM services"


@pytest.fixture(autouse=True)
def no_engine_outlives_its_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """Whatever starts an engine stops it: one still running after its test was lost by its
    app (it would hold its service's data; its process, never waited for, warns later in
    whichever test runs then). A services test's services are deleted after it, whatever state
    it left them in: the next test's app would otherwise start them again at its start-up
    (seconds of someone else's engine work in an unrelated test)."""
    before = set(worker_pids())
    urls: dict[str, str] = (
        request.getfixturevalue("database_urls") if wants_services(request) else {}
    )
    yield
    for url in urls.values():
        engine = make_engine(url)
        try:
            with engine.begin() as connection:
                connection.execute(text(_SETTLE))
        finally:
            engine.dispose()
    left = sorted(set(worker_pids()) - before)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"engine workers left running after the test: {left}"


@pytest.fixture(scope="session", autouse=True)
def fast_password_hashing() -> None:
    """argon2id at its cheapest: tests make many users; the cost itself is not under test."""
    from argon2 import PasswordHasher

    from keyhouse.users.service import use_password_hasher

    use_password_hasher(PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))


@pytest.fixture(scope="session")
def worker_id_safe(worker_id: str) -> str:
    return worker_id.replace("-", "_")


@pytest.fixture(scope="session")
def database_urls(tmp_path_factory: pytest.TempPathFactory, worker_id_safe: str) -> dict[str, str]:
    return migrated_databases(tmp_path_factory, worker_id_safe)


def migrated_databases(tmp_path_factory: pytest.TempPathFactory, name: str) -> dict[str, str]:
    """A SQLite file and a PostgreSQL database of their own (``name``), migrated."""
    sqlite_file = tmp_path_factory.mktemp("db") / "keyhouse.db"
    urls = {
        "sqlite": f"sqlite:///{sqlite_file}",
        "postgresql": _postgres_database(name),
    }
    for url in urls.values():
        upgrade(url)
    return urls


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# Services' engines keep their data here during the run (one directory per xdist worker).
TEST_DATA_DIR = Path(tempfile.mkdtemp(prefix="keyhouse-test-data-"))
atexit.register(shutil.rmtree, TEST_DATA_DIR, True)


def make_settings(database_url: str, *, services: bool = False, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "pepper": PEPPER,
        "rate_limit": "off",
        "data_dir": TEST_DATA_DIR,
        "services_enabled": services,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(
    request: pytest.FixtureRequest, database_urls: dict[str, str], backend: str
) -> Settings:
    return make_settings(database_urls[backend], services=wants_services(request))


@pytest.fixture
def state(settings: Settings) -> Iterator[AppState]:
    state = AppState.from_settings(settings)
    yield state
    state.close()


@pytest.fixture
def session(state: AppState) -> Iterator[Session]:
    with state.sessionmaker() as session:
        yield session


class _Serving(TestClient):
    """The client whose ``with`` runs the one app of its state (its lifespan, on its event loop)."""

    def __enter__(self) -> _Serving:
        state = self.app.state.keyhouse  # type: ignore[attr-defined]
        assert id(state) not in _SERVING, "one app per state: this state is served already"
        super().__enter__()
        _SERVING[id(state)] = self
        return self

    def __exit__(self, *exc_info: Any) -> None:
        _SERVING.pop(id(self.app.state.keyhouse), None)  # type: ignore[attr-defined]
        super().__exit__(*exc_info)


class _Alongside(TestClient):
    """Another client of the app that serves a state (another address, its own cookies): its
    requests run on that app's event loop, as a second client of a served process does."""

    def __init__(self, serving: TestClient, ip: str, app: Any = None) -> None:
        super().__init__(app or serving.app, client=(ip, 50000))
        self.serving = serving

    @contextlib.contextmanager
    def _portal_factory(self) -> Iterator[Any]:
        assert self.serving.portal is not None, "the app this client talks to has stopped"
        yield self.serving.portal

    def __enter__(self) -> _Alongside:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


# The client serving each state (by id), while its ``with`` lasts.
_SERVING: dict[int, TestClient] = {}


def make_client(state: AppState, ip: str = "127.0.0.1") -> TestClient:
    """A client of ``state``'s app: the app's own when none serves the state yet (enter it with
    ``with``), else another client of the app that does (one app, one event loop per state, as
    in a served process)."""
    serving = _SERVING.get(id(state))
    if serving is not None:
        return _Alongside(serving, ip)
    return _Serving(create_app(state.settings, state=state), client=(ip, 50000))


def alongside(client: TestClient, ip: str = "127.0.0.1", app: Any = None) -> TestClient:
    """Another client of ``client``'s app (or of ``app``, an ASGI app wrapping it), on its loop."""
    return _Alongside(client, ip, app)


@pytest.fixture
def client(state: AppState) -> Iterator[TestClient]:
    with make_client(state) as client:
        yield client


@dataclass
class Org:
    """An organization created through bootstrap, with its admin key's credentials."""

    id: uuid.UUID
    user_id: uuid.UUID
    key_uuid: uuid.UUID
    key_id: str
    key_secret: str

    @property
    def auth(self) -> tuple[str, str]:
        return (self.key_id, self.key_secret)

    def url(self, path: str = "") -> str:
        return f"/v1/organizations/{self.id}{path}"


def create_org(settings: Settings | AppState, name: str = "Test org") -> Org:
    """An organization, its admin and an admin key; through ``settings``' database, or through
    an app's state (its own connections: no engine and pool made for one organization)."""
    email = f"admin-{uuid.uuid4().hex[:12]}@example.com"
    state = settings if isinstance(settings, AppState) else None
    result = bootstrap(
        settings.settings if isinstance(settings, AppState) else settings,
        org_name=name,
        email=email,
        user_name="Admin",
        password="correct horse battery",
        state=state,
    )
    return Org(
        result.organization_id, result.user_id, result.key_uuid, result.key_id, result.key_secret
    )


@pytest.fixture
def org(state: AppState) -> Org:
    return create_org(state)


def basic(key_id: str, secret: str) -> dict[str, str]:
    token = base64.b64encode(f"{key_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def create_key(
    client: TestClient, org: Org, auth: tuple[str, str] | None = None, **body: Any
) -> dict[str, Any]:
    """POST a key (default: an admin key from anywhere) and return the result; asserts 200."""
    body.setdefault("name", "test key")
    if "roles" not in body and "assignedRoleIds" not in body:
        body["roles"] = ["admin"]
    response = client.post(org.url("/keys"), json=body, auth=auth or org.auth)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["result"]
    return result


def key_auth(created: dict[str, Any]) -> tuple[str, str]:
    return (created["keyId"], created["keySecret"])


def role_id(client: TestClient, org: Org, name: str) -> str:
    roles = client.get(org.url("/roles"), auth=org.auth).json()["result"]
    return str(next(role["id"] for role in roles if role["name"] == name))


@pytest.fixture(scope="session")
def official_spec() -> dict[str, Any]:
    import json

    # Vendored in the repository (see reference/README.md): nothing reads outside it.
    path = Path(__file__).resolve().parents[1] / "reference/clickhouse-cloud-openapi.json"
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def invite_and_accept(
    client: TestClient,
    org: Org,
    state: AppState,
    *,
    email: str | None = None,
    role_ids: list[str] | None = None,
    role: str | None = "developer",
) -> str:
    """Invite someone through the API and accept through the service; returns the user id."""
    from keyhouse.invitations.service import accept_invitation

    email = email or f"member-{uuid.uuid4().hex[:10]}@example.com"
    body: dict[str, Any] = {"email": email}
    if role_ids is not None:
        body["assignedRoleIds"] = role_ids
    elif role is not None:
        body["role"] = role
    response = client.post(org.url("/invitations"), json=body, auth=org.auth)
    assert response.status_code == 200, response.text
    token = response.json()["result"]["acceptUrl"].split("token=", 1)[1]
    with state.sessionmaker.begin() as session:
        accepted = accept_invitation(
            session, pepper=state.pepper, token=token, name="Member", password="long enough pw"
        )
    return str(accepted.user_id)
