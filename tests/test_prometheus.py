"""Services' metrics as ClickHouse Cloud serves them (a service's, the organization's, HTTP
service discovery), and Keyhouse's own metrics at /metrics."""

from __future__ import annotations

import re
import uuid

import pytest
from fastapi.testclient import TestClient

from keyhouse.prometheus.exposition import EngineRow, Scraped, render
from keyhouse.runtime import Engines
from keyhouse.state import AppState
from tests.conftest import Org, alongside, create_key, create_org, key_auth
from tests.services import bind, create, run, stop, wait_for

_SAMPLE = re.compile(r"^(\w+)\{(.*)\} (\S+)$")


def _series(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """The exposition's samples by metric name (labels, value); checks each line's form."""
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) \w+ ", line), line
            continue
        match = _SAMPLE.match(line)
        assert match, line
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2)))
        found.setdefault(match.group(1), []).append((labels, float(match.group(3))))
    return found


@pytest.mark.one_database
def test_the_exposition_groups_each_family_and_escapes_labels() -> None:
    rows = [
        EngineRow("event", "Query", 7, "Number of queries"),
        EngineRow("metric", "MemoryTracking", 1024, 'Memory "tracked"\nby the server'),
        EngineRow("event", "bad-name", 1, "not a metric name"),
    ]
    running = Scraped("org", "s1", 'name "quoted"\\', "running", "26.9.2.1", rows)
    idle = Scraped("org", "s2", "idle one", "idle", "26.9.2.1", None)
    text = render([running, idle])
    lines = text.splitlines()
    # Each family once: its HELP and TYPE, then all its samples.
    assert lines.count("# TYPE ClickHouse_ServiceInfo untyped") == 1
    assert "# TYPE ClickHouseProfileEvents_Query counter" in lines
    assert "# TYPE ClickHouseMetrics_MemoryTracking gauge" in lines
    assert '# HELP ClickHouseMetrics_MemoryTracking Memory "tracked"\\nby the server' in lines
    series = _series(text)
    assert "bad-name" not in text
    info = {labels["clickhouse_service"]: labels for labels, _ in series["ClickHouse_ServiceInfo"]}
    assert info["s1"]["scrape"] == "full"
    assert info["s1"]["clickhouse_version"] == "26.9"
    assert info["s1"]["clickhouse_service_name"] == 'name \\"quoted\\"\\\\'
    assert info["s2"] == {
        "clickhouse_org": "org",
        "clickhouse_service": "s2",
        "clickhouse_service_name": "idle one",
        "clickhouse_cluster_status": "idle",
        "clickhouse_version": "26.9",
        "scrape": "partial",
    }
    [(labels, value)] = series["ClickHouseProfileEvents_Query"]
    assert value == 7
    assert labels["table"] == "system.events"
    assert labels["clickhouse_service"] == "s1"
    filtered = render(
        [
            Scraped(
                "org",
                "s1",
                "n",
                "running",
                None,
                [*rows, EngineRow("event", "ZooKeeperInit", 1, "not in the subset")],
            )
        ],
        filtered=True,
    )
    assert "ClickHouseProfileEvents_Query" in filtered
    assert "ZooKeeperInit" not in filtered


def _engines(state: AppState) -> Engines:
    engines = state.engines
    assert isinstance(engines, Engines)
    return engines


@pytest.mark.services
@pytest.mark.one_database
def test_a_service_is_scraped_with_its_engine_figures_and_an_idle_one_is_never_woken(
    client: TestClient, org: Org, state: AppState
) -> None:
    sid = create(client, org, idleTimeoutMinutes=5)["service"]["id"]
    wait_for(client, org, sid, "running")
    bind(client, org, sid, [str(org.key_uuid)])
    url = org.url(f"/services/{sid}/prometheus")

    def queries() -> float:
        scraped = client.get(url, auth=org.auth)
        assert scraped.status_code == 200, scraped.text
        assert scraped.headers["content-type"].startswith("text/plain")
        series = _series(scraped.text)
        [(info, _)] = series["ClickHouse_ServiceInfo"]
        assert info["scrape"] == "full"
        assert info["clickhouse_cluster_status"] == "running"
        [(labels, value)] = series["ClickHouseProfileEvents_Query"]
        assert labels["clickhouse_org"] == str(org.id)
        return value

    before = queries()
    for _ in range(3):
        assert run(client, sid, org.auth, "SELECT 1").status_code == 200
    assert queries() >= before + 3  # (the scrapes' own reads count too)
    gauges = _series(client.get(url, auth=org.auth).text)
    assert any(name.startswith("ClickHouseMetrics_") for name in gauges)
    small = client.get(url, params={"filtered_metrics": "true"}, auth=org.auth).text
    assert len(small) < len(client.get(url, auth=org.auth).text) / 3
    assert client.get(url, params={"filtered_metrics": "maybe"}, auth=org.auth).status_code == 400

    # Idle: only ClickHouse_ServiceInfo, and the engine stays down however often it is scraped.
    engines = _engines(state)
    engines._last_used[uuid.UUID(sid)] -= 6 * 60
    portal = client.portal
    assert portal is not None
    portal.call(engines._idle_once)
    for _ in range(3):
        idle = _series(client.get(url, auth=org.auth).text)
        assert list(idle) == ["ClickHouse_ServiceInfo"]
        [(info, _)] = idle["ClickHouse_ServiceInfo"]
        assert info["clickhouse_cluster_status"] == "idle"
        assert info["scrape"] == "partial"
    assert not engines.supervisor.running(uuid.UUID(sid))
    portal.call(engines._idle_once)  # a scrape is no use: still idle, nothing restarted
    service = client.get(org.url(f"/services/{sid}"), auth=org.auth).json()["result"]
    assert service["state"] == "idle"


@pytest.mark.services
def test_the_organization_scrape_and_discovery_cover_the_services_the_caller_may_view(
    client: TestClient, org: Org, state: AppState
) -> None:
    first = create(client, org, name="first")["service"]["id"]
    second = create(client, org, name="second")["service"]["id"]
    wait_for(client, org, first, "running")
    wait_for(client, org, second, "running")
    stop(client, org, second)
    text = client.get(org.url("/prometheus"), auth=org.auth).text
    info = {
        labels["clickhouse_service"]: labels
        for labels, _ in _series(text)["ClickHouse_ServiceInfo"]
    }
    assert info[first]["scrape"] == "full"
    assert info[second]["clickhouse_cluster_status"] == "stopped"
    assert info[second]["scrape"] == "partial"

    groups = client.get(org.url("/prometheus/discovery"), auth=org.auth)
    assert groups.status_code == 200
    listed = groups.json()  # a bare list, as Prometheus' HTTP discovery reads it
    assert [g["labels"]["clickhouse_discovery_service_name"] for g in listed] == [
        "first",
        "second",
    ]
    one = listed[0]
    assert one["targets"] == ["testserver"]
    assert one["labels"]["__metrics_path__"] == (
        f"/v1/organizations/{org.id}/services/{first}/prometheus"
    )
    assert one["labels"]["__param_filtered_metrics"] == "false"
    assert one["labels"]["clickhouse_org_id"] == str(org.id)
    assert one["labels"]["clickhouse_service_id"] == first
    filtered = client.get(
        org.url("/prometheus/discovery"), params={"filtered_metrics": "true"}, auth=org.auth
    ).json()
    assert {g["labels"]["__param_filtered_metrics"] for g in filtered} == {"true"}

    # A key with no control-plane permission reads nothing; another organization, a 404.
    querier = key_auth(create_key(client, org, roles=["query_endpoints"]))
    for path in (f"/services/{first}/prometheus", "/prometheus", "/prometheus/discovery"):
        assert client.get(org.url(path), auth=querier).status_code == 403
    other = create_org(state, "Other")
    assert (
        client.get(other.url(f"/services/{first}/prometheus"), auth=other.auth).status_code == 404
    )
    assert client.get(org.url("/prometheus"), auth=other.auth).status_code == 404
    assert first not in client.get(other.url("/prometheus"), auth=other.auth).text
    stop(client, org, first)


def test_keyhouse_metrics_are_read_from_loopback_or_with_the_token(
    client: TestClient, org: Org, state: AppState
) -> None:
    assert client.get(org.url("/keys"), auth=org.auth).status_code == 200
    assert client.get(org.url("/keys"), auth=("nobody", "wrong")).status_code == 401
    scraped = client.get("/metrics")
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    text = scraped.text
    assert re.search(
        r'keyhouse_requests_total\{method="GET",operation="openapiKeyGetList",status="200"\} '
        r"[1-9]",
        text,
    )
    assert (
        'keyhouse_request_duration_seconds_bucket{le="0.005",operation="openapiKeyGetList"}' in text
    )
    assert 'keyhouse_authentication_failures_total{door="api"} 1.0' in text

    outside = alongside(client, ip="203.0.113.9")
    refused = outside.get("/metrics")
    assert refused.status_code == 403
    assert "KEYHOUSE_METRICS_TOKEN" in refused.json()["error"]
    from pydantic import SecretStr

    state.settings.metrics_token = SecretStr("s3cret-token")
    try:
        assert outside.get("/metrics", headers={"authorization": "Bearer wrong"}).status_code == 403
        with_token = outside.get("/metrics", headers={"authorization": "Bearer s3cret-token"})
        assert with_token.status_code == 200
        assert "keyhouse_services" in with_token.text
    finally:
        state.settings.metrics_token = None
