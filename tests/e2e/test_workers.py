"""``keyhouse serve --workers 2`` with services on (PostgreSQL, Redis): the services'
end-to-end tests pass against it (clickhousectl's lifecycle, backups and a restore, settings;
clickhouse-connect), whichever worker each connection lands on. A service's engine runs in the
worker that holds it; the other worker pipes its queries there and hands it its engine work."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest

from keyhouse.services import leases
from tests.conftest import REDIS_URL
from tests.e2e.conftest import Server, bootstrap, server_env, start_server, stop

# The same tests, against this module's server.
from tests.e2e.test_clickhouse_connect import (  # noqa: F401
    test_clickhouse_connect_against_keyhouse_serve,
)
from tests.e2e.test_clickhousectl_services import (  # noqa: F401
    test_backups_backup_config_and_a_restore_into_a_new_service,
    test_service_lifecycle_and_queries,
    test_service_settings_list_get_schema_set_unset,
)


@pytest.fixture(scope="module")
def server(
    database_urls: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("workers")
    env = {**server_env(tmp), "KEYHOUSE_REDIS_URL": REDIS_URL}
    database_url = database_urls["postgresql"]
    boot = bootstrap(database_url, env)
    process, base_url = start_server(
        database_url, env, tmp / "server.log", "--rate-limit", "off", "--workers", "2"
    )
    try:
        yield Server(
            base_url,
            database_url,
            env,
            boot["organizationId"],
            boot["keyId"],
            boot["keySecret"],
            boot["password"],
        )
    finally:
        stop(process)


def test_every_worker_answers_every_service(server: Server) -> None:
    """Fresh connections (each may land on either worker): every insert and every read is
    answered, by the one engine."""
    created = httpx.post(
        server.url("/services"), json={"name": f"w-{uuid.uuid4().hex[:6]}"}, auth=server.auth
    ).json()["result"]
    service_id = created["service"]["id"]
    deadline = time.monotonic() + 90
    while (
        httpx.get(server.url(f"/services/{service_id}"), auth=server.auth).json()["result"]["state"]
        != "running"
    ):
        assert time.monotonic() < deadline, "never running"
        time.sleep(0.3)
    bound = httpx.post(
        server.url(f"/services/{service_id}/serviceQueryEndpoint"),
        json={"roles": ["sql_console_admin"], "openApiKeys": [server.key_id], "allowedOrigins": ""},
        auth=server.auth,
    )
    assert bound.status_code == 200, bound.text

    def run(sql: str) -> str:
        response = httpx.post(
            f"{server.base_url}/service/{service_id}/run?format=TabSeparated",
            json={"sql": sql},
            auth=server.auth,
            headers={"Connection": "close"},
            timeout=90,
        )
        assert response.status_code == 200, response.text
        return response.text.strip()

    run("CREATE TABLE t (x UInt32) ENGINE = MergeTree ORDER BY x")
    for value in range(16):
        run(f"INSERT INTO t VALUES ({value})")  # noqa: S608 (a number)
    assert {run("SELECT count(), sum(x) FROM t") for _ in range(8)} == {"16\t120"}
    channels = leases.channels_dir(Path(server.env["KEYHOUSE_DATA_DIR"]))
    assert len(list(channels.glob("*.sock"))) == 2  # one per worker
