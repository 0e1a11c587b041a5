"""A real Prometheus (Debian's package, `make prometheus`) against a real Keyhouse server: it
discovers the services through /prometheus/discovery with Basic auth, scrapes each one and
Keyhouse's own /metrics; a stopped service stays stopped while scraped. Then clickhousectl's
`service prometheus` and `org prometheus discovery`."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Server, free_port, serving
from tests.e2e.test_clickhousectl import _run, ctl


@pytest.fixture(scope="module")
def keyhouse(
    database_urls: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    with serving(database_urls["sqlite"], tmp_path_factory.mktemp("prometheus")) as (server, _):
        yield server


def _prometheus_config(server: Server) -> dict[str, Any]:
    auth = {"username": server.key_id, "password": server.key_secret}
    host = server.base_url.removeprefix("http://")
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                # As ClickHouse Cloud's documentation sets it up: Basic auth on the discovery
                # and on the scrapes, and the services' own labels kept.
                "job_name": "clickhouse",
                "honor_labels": True,
                "basic_auth": auth,
                "http_sd_configs": [
                    {
                        "url": server.url("/prometheus/discovery"),
                        "refresh_interval": "1s",
                        "basic_auth": auth,
                    }
                ],
            },
            {"job_name": "keyhouse", "static_configs": [{"targets": [host]}]},
        ],
    }


@pytest.fixture(scope="module")
def prometheus(keyhouse: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("prometheus")
    assert binary is not None, "Prometheus is needed: make test installs Debian's package"
    tmp = tmp_path_factory.mktemp("prometheus-server")
    config = tmp / "prometheus.yml"
    config.write_text(json.dumps(_prometheus_config(keyhouse)))  # (JSON is YAML)
    port = free_port()
    log = (tmp / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _until(lambda: _ready(url), what=f"Prometheus ready ({tmp / 'prometheus.log'})")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=15)
        log.close()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _until(check: Any, *, what: str, seconds: float = 60) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"never: {what}")


def _query(prometheus: str, promql: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=5)
    assert answer.status_code == 200, answer.text
    result: list[dict[str, Any]] = answer.json()["data"]["result"]
    return result


def _api(server: Server, method: str, path: str, **kwargs: Any) -> Any:
    response = httpx.request(method, server.url(path), auth=server.auth, timeout=30, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()["result"]


def _state(server: Server, service_id: str) -> str:
    return str(_api(server, "GET", f"/services/{service_id}")["state"])


def test_prometheus_discovers_and_scrapes_the_services_and_keyhouse(
    keyhouse: Server, prometheus: str
) -> None:
    live = _api(keyhouse, "POST", "/services", json={"name": "live"})["service"]["id"]
    parked = _api(keyhouse, "POST", "/services", json={"name": "parked"})["service"]["id"]
    _until(lambda: _state(keyhouse, live) == "running", what="live running")
    _until(lambda: _state(keyhouse, parked) == "running", what="parked running")
    _api(keyhouse, "PATCH", f"/services/{parked}/state", json={"command": "stop"})
    _until(lambda: _state(keyhouse, parked) == "stopped", what="parked stopped")
    _api(
        keyhouse,
        "POST",
        f"/services/{live}/serviceQueryEndpoint",
        json={
            "openApiKeys": [keyhouse.key_id],
            "roles": ["sql_console_admin"],
            "allowedOrigins": "",
        },
    )

    def both_seen() -> dict[str, dict[str, str]] | None:
        series = _query(prometheus, "ClickHouse_ServiceInfo")
        seen = {s["metric"]["clickhouse_service"]: s["metric"] for s in series}
        return seen if {live, parked} <= set(seen) else None

    seen = _until(both_seen, what="ClickHouse_ServiceInfo of both services")
    assert seen[live]["clickhouse_service_name"] == "live"
    assert seen[live]["clickhouse_org"] == keyhouse.org_id
    assert seen[parked]["clickhouse_cluster_status"] == "stopped"
    assert seen[parked]["scrape"] == "partial"

    promql = f'ClickHouseProfileEvents_Query{{clickhouse_service="{live}"}}'
    before = _until(lambda: _query(prometheus, promql), what="the live service's queries")
    counted = float(before[0]["value"][1])
    for sql in (
        "CREATE TABLE t (n UInt8) ENGINE = MergeTree ORDER BY n",
        "INSERT INTO t VALUES (1), (2)",
        *["SELECT 1"] * 3,
    ):
        ran = httpx.post(
            f"{keyhouse.base_url}/service/{live}/run",
            json={"sql": sql},
            auth=keyhouse.auth,
            timeout=30,
        )
        assert ran.status_code == 200, ran.text
    _until(
        lambda: float(_query(prometheus, promql)[0]["value"][1]) >= counted + 5,
        what="ClickHouseProfileEvents_Query rising after five queries",
    )
    # Scraped every second all along, the stopped service was never started.
    assert _state(keyhouse, parked) == "stopped"

    up = _until(lambda: _query(prometheus, 'up{job="keyhouse"} == 1'), what="Keyhouse scraped")
    assert up
    requests = _query(prometheus, 'keyhouse_requests_total{operation="instancePrometheusGet"}')
    assert requests, "Keyhouse's own metrics count the scrapes"

    # The Grafana dashboard's queries are valid PromQL (Prometheus answers each one), and
    # those of what happened here find series.
    dashboard = json.loads((Path(__file__).parents[2] / "docs/grafana/keyhouse.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$service", ".*")
            _query(prometheus, expr)
            if not any(
                word in expr for word in ("Failed", "rate_limited", "authentication", "backup")
            ):
                assert _until(lambda e=expr: _query(prometheus, e), what=f"series for {expr}")

    # clickhousectl 0.5.0 reads the same.
    text = _run(keyhouse, ("service", "prometheus", live), None)
    assert text.returncode == 0, text.stderr
    assert "ClickHouse_ServiceInfo" in text.stdout
    assert "ClickHouseProfileEvents_Query" in text.stdout
    groups = ctl(keyhouse, "org", "prometheus", "discovery", "--org-id", keyhouse.org_id)
    assert {g["labels"]["clickhouse_service_id"] for g in groups} == {live, parked}
