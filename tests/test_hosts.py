"""Engine hosts, from the control plane's side (on SQLite and PostgreSQL, in a database of
their own: a host takes every new service of its deployment). An agent joins only with a valid
join token and syncs only with its own secret; a new service goes to a host of its region and
provider with the memory for it, or gets a 409 naming why; a host's reports move its services'
states, and its silence turns them degraded; a host asks the gate only of its own services."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, update

from keyhouse.backups import service as backups
from keyhouse.cli import main
from keyhouse.db import utcnow
from keyhouse.engine.limits import QueryLimits
from keyhouse.engine.protocol import ClickHouseError
from keyhouse.hosts import service as hosts
from keyhouse.hosts.remote import RemoteHosts
from keyhouse.models import Backup, EngineHost, HostToken, Service, ServiceUsage
from keyhouse.services import placement
from keyhouse.services.engines import insert_request, query_request
from keyhouse.services.service import RunGrant
from keyhouse.services.states import Observed, State, on_report, on_silence
from keyhouse.state import AppState
from tests.conftest import (
    BACKENDS,
    PEPPER,
    Org,
    create_org,
    make_client,
    make_settings,
    migrated_databases,
)

CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


# --- the pure rules ---------------------------------------------------------------------


def _candidate(region: str | None, free: int, **extra: Any) -> placement.Candidate:
    labels = {"region": region, "provider": "aws"} if region else {}
    return placement.Candidate(
        extra.get("host_id", uuid.uuid4()),
        labels,
        free,
        extra.get("schedulable", True),
        extra.get("last_seen", dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)),
    )


def _choose(hosts: list[placement.Candidate], region: str = "eu", memory: int = 16) -> Any:
    fresh = dt.datetime(2026, 1, 1, 11, 59, tzinfo=dt.UTC)
    return placement.choose(
        hosts, region=region, provider="aws", memory_gb=memory, fresh_since=fresh
    )


def test_placement_takes_the_matching_host_with_the_most_memory_left() -> None:
    small, large = _candidate("eu", 20), _candidate("eu", 40)
    assert _choose([small, large, _candidate("us", 100)]) == large.host_id
    unlabelled = _candidate(None, 30)  # a host without region labels takes any region
    assert _choose([unlabelled], region="ap") == unlabelled.host_id


def test_placement_says_why_no_host_can_take_a_service() -> None:
    assert "No engine host serves region 'ap'" in _choose([_candidate("eu", 40)], region="ap")
    assert "has 16 GiB of memory free" in _choose([_candidate("eu", 8)])
    drained = _candidate("eu", 40, schedulable=False)
    assert "available now" in _choose([drained])
    silent = _candidate("eu", 40, last_seen=dt.datetime(2026, 1, 1, 11, tzinfo=dt.UTC))
    assert "available now" in _choose([silent])


def test_a_hosts_report_never_overrides_a_later_command() -> None:
    assert on_report(State.PROVISIONING, Observed.RUNNING) == State.RUNNING
    assert on_report(State.DEGRADED, Observed.RUNNING) == State.RUNNING
    assert on_report(State.STOPPING, Observed.RUNNING) is None  # the stop wins
    assert on_report(State.STOPPING, Observed.STOPPED) == State.STOPPED
    assert on_report(State.STARTING, Observed.STOPPED) is None  # the start wins
    assert on_report(State.RUNNING, Observed.FAILED) == State.FAILED
    assert on_report(State.STOPPED, Observed.FAILED) is None
    assert on_silence(State.RUNNING) == State.DEGRADED
    assert on_silence(State.STOPPED) is None


def test_a_moving_service_runs_queries_read_only_and_refuses_inserts() -> None:
    """While a drain moves a service (``frozen``), nothing is written that its copy would
    miss: every query runs with the engine's ``readonly``, and an insert is refused."""
    grant = RunGrant(uuid.uuid4(), "running", False, 16)
    limits = QueryLimits.from_settings(make_settings("sqlite://"))
    assert query_request(grant, limits, None, sql="SELECT 1", fmt="TSV")["readonly"] is False
    frozen = query_request(grant, limits, None, sql="SELECT 1", fmt="TSV", frozen=True)
    assert frozen["readonly"] is True
    assert "readonly" not in insert_request(grant, limits, None, sql="INSERT INTO t", fmt="TSV")
    with pytest.raises(ClickHouseError) as refused:
        insert_request(grant, limits, None, sql="INSERT INTO t", fmt="TSV", frozen=True)
    assert refused.value.code == 164
    assert "moving to another engine host" in refused.value.text


# --- through the control plane's routes --------------------------------------------------


@pytest.fixture(scope="module")
def hosts_databases(
    tmp_path_factory: pytest.TempPathFactory, worker_id_safe: str
) -> dict[str, str]:
    return migrated_databases(tmp_path_factory, f"{worker_id_safe}_hosts")


@pytest.fixture(params=BACKENDS)
def hosts_state(
    request: pytest.FixtureRequest, hosts_databases: dict[str, str]
) -> Iterator[AppState]:
    state = AppState.from_settings(make_settings(hosts_databases[request.param], services=True))
    yield state
    with state.sessionmaker.begin() as session:  # every test begins with no host
        session.execute(delete(Backup))
        session.execute(delete(ServiceUsage))
        session.execute(delete(Service))
        session.execute(delete(EngineHost))
        session.execute(delete(HostToken))
    state.close()


@pytest.fixture
def client(hosts_state: AppState) -> Iterator[TestClient]:
    with make_client(hosts_state) as client:
        yield client


def _token(state: AppState) -> tuple[uuid.UUID, str]:
    with state.sessionmaker.begin() as session:
        token, secret = hosts.new_token(session, state.pepper)
        return token.id, secret


def _description(**changes: Any) -> dict[str, Any]:
    body = {
        "name": "host-a",
        "labels": {"region": "eu-west-1", "provider": "aws"},
        "memory_gb": 32,
        "channel": "127.0.0.1:9999",
        "advertise": "127.0.0.1",
        "ca_pem": CA,
    }
    body.update(changes)
    return body


def _join(client: TestClient, state: AppState, **changes: Any) -> tuple[str, str]:
    _token_id, token = _token(state)
    response = client.post(
        "/internal/hosts/join",
        json=_description(**changes),
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 201, response.text
    result = response.json()["result"]
    return result["hostId"], result["secret"]


def _sync(client: TestClient, host: tuple[str, str], **report: Any) -> Any:
    host_id, secret = host
    return client.post(
        f"/internal/hosts/{host_id}/sync",
        json={**_description(), **report},
        headers={"Authorization": f"Bearer {secret}"},
    )


def _create(client: TestClient, org: Org, **body: Any) -> Any:
    body.setdefault("name", f"svc-{uuid.uuid4().hex[:6]}")
    body.setdefault("provider", "aws")
    body.setdefault("region", "eu-west-1")
    return client.post(org.url("/services"), json=body, auth=org.auth)


def test_an_agent_joins_only_with_a_valid_join_token(
    client: TestClient, hosts_state: AppState
) -> None:
    url = "/internal/hosts/join"
    refused = [
        client.post(url, json=_description()),
        client.post(url, json=_description(), headers={"Authorization": "Bearer khj_nope"}),
    ]
    token_id, token = _token(hosts_state)
    with hosts_state.sessionmaker.begin() as session:
        hosts.revoke_token(session, token_id)
    refused.append(
        client.post(url, json=_description(), headers={"Authorization": f"Bearer {token}"})
    )
    for response in refused:
        assert response.status_code == 401
        assert set(response.json()) == {"status", "requestId", "error"}
    _other_id, other = _token(hosts_state)
    bad = client.post(
        url, json=_description(channel="nowhere"), headers={"Authorization": f"Bearer {other}"}
    )
    assert bad.status_code == 400
    with hosts_state.sessionmaker() as session:
        assert session.query(EngineHost).count() == 0
        # only keyed hashes of join tokens are kept
        assert all(token not in row.token_hash for row in session.query(HostToken))


def test_join_token_and_host_secret_guesses_are_limited(
    hosts_databases: dict[str, str], hosts_state: AppState
) -> None:
    """Failed joins and syncs count against KEYHOUSE_AUTH_FAILURES_PER_IP: past it, 429, even
    with a valid token."""
    settings = make_settings(
        hosts_state.settings.database_url, services=True, auth_failures_per_ip="3/60s"
    )
    state = AppState.from_settings(settings)
    try:
        with make_client(state) as client:
            url = "/internal/hosts/join"
            for guess in range(3):
                bad = {"Authorization": f"Bearer khj_guess{guess}"}
                assert client.post(url, json=_description(), headers=bad).status_code == 401
            _token_id, token = _token(state)
            good = {"Authorization": f"Bearer {token}"}
            refused = client.post(url, json=_description(), headers=good)
            assert refused.status_code == 429
            assert "Retry-After" in refused.headers
    finally:
        state.close()


def test_a_host_syncs_only_with_its_own_secret(client: TestClient, hosts_state: AppState) -> None:
    first, second = _join(client, hosts_state), _join(client, hosts_state, name="host-b")
    assert _sync(client, first).status_code == 200
    assert _sync(client, (first[0], second[1])).status_code == 401  # another host's secret
    assert _sync(client, (first[0], "")).status_code == 401
    assert _sync(client, (str(uuid.uuid4()), first[1])).status_code == 401
    assert first[1] == hosts.host_secret(hosts_state.pepper, uuid.UUID(first[0]))


def test_a_new_service_goes_to_a_host_of_its_region_with_the_memory(
    client: TestClient, hosts_state: AppState
) -> None:
    org = create_org(hosts_state)
    eu = _join(client, hosts_state)
    us = _join(client, hosts_state, name="host-us", labels={"region": "us-east-1"})
    placed = {}
    for region in ("eu-west-1", "us-east-1"):
        response = _create(client, org, region=region)
        assert response.status_code == 200, response.text
        placed[region] = response.json()["result"]["service"]["id"]
    with hosts_state.sessionmaker() as session:
        hosts_of = {str(row.id): str(row.host_id) for row in session.query(Service)}
        assert hosts_of == {placed["eu-west-1"]: eu[0], placed["us-east-1"]: us[0]}
    nowhere = _create(client, org, region="ap-south-1")
    assert nowhere.status_code == 409
    assert "No engine host serves region 'ap-south-1'" in nowhere.json()["error"]
    assert _create(client, org, maxReplicaMemoryGb=16).status_code == 200  # 32 of 32 GiB
    full = _create(client, org, maxReplicaMemoryGb=8, minReplicaMemoryGb=8)
    assert full.status_code == 409
    assert "8 GiB of memory free" in full.json()["error"]
    with hosts_state.sessionmaker.begin() as session:
        session.execute(update(EngineHost).values(last_seen=utcnow() - dt.timedelta(hours=1)))
    silent = _create(client, org, region="us-east-1")
    assert silent.status_code == 409
    assert "silent" in silent.json()["error"]


def test_reports_move_a_services_state_and_silence_degrades_it(
    client: TestClient, hosts_state: AppState
) -> None:
    org = create_org(hosts_state)
    host = _join(client, hosts_state)
    created = _create(client, org).json()["result"]["service"]
    service_id = created["id"]
    assert created["state"] == "provisioning"
    answer = _sync(client, host, data=[service_id, str(uuid.uuid4())]).json()["result"]
    assert answer["services"] == [
        {
            "id": service_id,
            "run": True,
            "listen": True,
            "maxMemoryGb": 16,
            "settings": {},
            "incoming": False,
            "frozen": False,
            "restoring": False,
            "host": host[0],
            "movingTo": None,
            "generation": 1,
        }
    ]
    assert len(answer["remove"]) == 1
    assert answer["remove"][0] != service_id
    report = {service_id: {"state": "running", "version": "26.9.2.1", "port": 18123}}
    # (a sync carries the agent as it runs now: here, with a new advertised name)
    used = {"seconds": 60.0, "data_bytes": 4096, "backup_bytes": 512}
    sampled = {service_id: {**report[service_id], "usage": used}}
    _sync(client, host, services=sampled, advertise="engines-1.example.net")
    with hosts_state.sessionmaker() as session:  # (usageCost's record of the day)
        [usage] = session.query(ServiceUsage).filter_by(service_id=uuid.UUID(service_id)).all()
        assert (usage.compute_seconds, usage.storage_bytes, usage.backup_bytes) == (60.0, 4096, 512)
    seen = client.get(org.url(f"/services/{service_id}"), auth=org.auth).json()["result"]
    assert seen["state"] == "running"
    assert seen["clickhouseVersion"] == "26.9.2.1"
    assert seen["endpoints"] == [
        {"protocol": "https", "host": "engines-1.example.net", "port": 18123, "username": "default"}
    ]
    with hosts_state.sessionmaker.begin() as session:
        assert hosts.mark_silent(session, utcnow(), 15) == []  # just heard from
        moved = hosts.mark_silent(session, utcnow() + dt.timedelta(seconds=16), 15)
        assert [str(service) for service in moved] == [service_id]
    degraded = client.get(org.url(f"/services/{service_id}"), auth=org.auth).json()["result"]
    assert degraded["state"] == "degraded"
    _sync(client, host, services=report)  # back, with the service running
    back = client.get(org.url(f"/services/{service_id}"), auth=org.auth).json()["result"]
    assert back["state"] == "running"
    # Unused past its idle timeout (15 minutes), it goes idle: no engine, its port answers.
    unused = {service_id: {**report[service_id], "idle_seconds": 14 * 60}}
    _sync(client, host, services=unused)
    assert (
        client.get(org.url(f"/services/{service_id}"), auth=org.auth).json()["result"]["state"]
        == "running"
    )
    unused[service_id]["idle_seconds"] = 15 * 60
    _sync(client, host, services=unused)
    idle = _sync(client, host, services=unused).json()["result"]["services"][0]
    assert (idle["run"], idle["listen"]) == (False, True)
    assert (
        client.get(org.url(f"/services/{service_id}"), auth=org.auth).json()["result"]["state"]
        == "idle"
    )
    awake = client.patch(
        org.url(f"/services/{service_id}/state"), json={"command": "awake"}, auth=org.auth
    )
    assert awake.json()["result"]["state"] == "awaking"
    _sync(client, host, services=report)
    stop = client.patch(
        org.url(f"/services/{service_id}/state"), json={"command": "stop"}, auth=org.auth
    )
    assert stop.json()["result"]["state"] == "stopping"
    answer = _sync(client, host, services=report).json()["result"]  # a late "running"
    assert answer["services"][0]["run"] is False
    _sync(client, host, services={service_id: {"state": "stopped"}})
    final = client.get(org.url(f"/services/{service_id}"), auth=org.auth).json()["result"]
    assert final["state"] == "stopped"


def _done_backup(state: AppState, service_id: str) -> str:
    with state.sessionmaker.begin() as session:
        backup = Backup(service_id=uuid.UUID(service_id), status="done", size_bytes=1)
        session.add(backup)
        session.flush()
        return str(backup.id)


def test_a_service_restored_onto_a_host_runs_only_once_restored(
    client: TestClient, hosts_state: AppState
) -> None:
    org = create_org(hosts_state)
    in_process = _create(client, org).json()["result"]["service"]["id"]  # (no host yet)
    host = _join(client, hosts_state)
    on_host = _create(client, org).json()["result"]["service"]["id"]
    refused = _create(client, org, backupId=_done_backup(hosts_state, in_process))
    assert refused.status_code == 400
    assert "cannot be restored onto an engine host" in refused.json()["error"]
    created = _create(client, org, backupId=_done_backup(hosts_state, on_host))
    assert created.status_code == 200, created.text
    service_id = created.json()["result"]["service"]["id"]
    running = {service_id: {"state": "running", "port": 18124}}
    answer = _sync(client, host, services=running).json()["result"]
    [given] = [item for item in answer["services"] if item["id"] == service_id]
    assert (given["run"], given["restoring"]) == (True, True)
    assert _sync(client, host, services=running).status_code == 200
    state_now = client.get(org.url(f"/services/{service_id}"), auth=org.auth).json()["result"]
    assert state_now["state"] == "provisioning"  # its engine runs; its data is not in yet
    with hosts_state.sessionmaker.begin() as session:
        backups.restored(session, uuid.UUID(service_id))
    _sync(client, host, services=running)
    state_now = client.get(org.url(f"/services/{service_id}"), auth=org.auth).json()["result"]
    assert state_now["state"] == "running"


def test_a_report_on_an_older_version_of_what_a_host_was_told_moves_nothing(
    client: TestClient, hosts_state: AppState
) -> None:
    """A failed service started again: the host's report in the same breath still says
    failed, of the version before the start; it must not fail the start."""
    org = create_org(hosts_state)
    host = _join(client, hosts_state)
    service_id = _create(client, org).json()["result"]["service"]["id"]
    [given] = _sync(client, host).json()["result"]["services"]
    first = given["generation"]
    _sync(client, host, services={service_id: {"state": "failed", "generation": first,
                                               "failure": "kept crashing"}})  # fmt: skip
    url = org.url(f"/services/{service_id}")
    assert client.get(url, auth=org.auth).json()["result"]["state"] == "failed"
    [given] = _sync(client, host).json()["result"]["services"]  # told: stop it
    stopped = given["generation"]
    assert stopped > first
    started = client.patch(f"{url}/state", json={"command": "start"}, auth=org.auth)
    assert started.json()["result"]["state"] == "starting"
    late = {service_id: {"state": "failed", "generation": stopped}}  # (before it heard)
    [given] = _sync(client, host, services=late).json()["result"]["services"]
    assert client.get(url, auth=org.auth).json()["result"]["state"] == "starting"
    assert given["run"] is True
    assert given["generation"] > stopped
    running = {service_id: {"state": "running", "generation": given["generation"]}}
    _sync(client, host, services=running)
    assert client.get(url, auth=org.auth).json()["result"]["state"] == "running"


def test_every_process_sees_a_moving_or_restoring_service_as_such(
    client: TestClient, hosts_state: AppState
) -> None:
    """The route an API process reads for a service on a host says whether it is moving (its
    queries then run read-only) and whether its backup is still being restored (no query)."""
    org = create_org(hosts_state)
    hosts_joined = {_join(client, hosts_state)[0], _join(client, hosts_state, name="b")[0]}
    service_id = uuid.UUID(_create(client, org).json()["result"]["service"]["id"])
    with hosts_state.sessionmaker() as session:
        placed_on = str(session.get(Service, service_id).host_id)  # type: ignore[union-attr]
    [other] = hosts_joined - {placed_on}

    def placed() -> Any:
        async def read() -> Any:
            return await RemoteHosts(hosts_state).placed(service_id)

        return asyncio.run(read())

    first = placed()
    assert (str(first.route.host_id), first.frozen, first.restoring) == (placed_on, False, False)
    with hosts_state.sessionmaker.begin() as session:
        moving = session.get(Service, service_id)
        assert moving is not None
        moving.moving_to = uuid.UUID(other)
        moving.restore_from = uuid.uuid4()
    second = placed()
    assert (second.frozen, second.restoring) == (True, True)


def test_a_host_asks_the_gate_only_of_its_own_services(
    client: TestClient, hosts_state: AppState
) -> None:
    org = create_org(hosts_state)
    mine = _join(client, hosts_state)
    other = _join(client, hosts_state, name="host-us", labels={"region": "us-east-1"})
    created = _create(client, org, ipAccessList=[{"source": "0.0.0.0/0"}]).json()["result"]
    theirs = _create(client, org, region="us-east-1").json()["result"]["service"]["id"]
    service_id, password = created["service"]["id"], created["password"]

    def gate(host: tuple[str, str], service: str, secret: str, **extra: Any) -> Any:
        body = {"service": service, "user": "default", "password": secret, **extra}
        return client.post(
            f"/internal/hosts/{host[0]}/gate",
            json=body,
            headers={"Authorization": f"Bearer {host[1]}"},
        )

    assert gate(mine, theirs, password).status_code == 404
    assert gate(other, service_id, password).status_code == 404
    assert gate((mine[0], other[1]), service_id, password).status_code == 401
    wrong = gate(mine, service_id, "wrong", address="10.1.2.3").json()["result"]
    assert wrong["error"]["code"] == 516
    granted = gate(mine, service_id, password, address="10.1.2.3").json()["result"]
    assert granted == {
        "grant": {"readonly": False, "maxMemoryGb": 16, "roles": [], "state": "provisioning"},
        "admission": "run",
    }


def test_the_hosts_commands(
    hosts_state: AppState,
    capsys: pytest.CaptureFixture[str],
    client: TestClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = ["--database-url", hosts_state.settings.database_url]
    monkeypatch.setenv("KEYHOUSE_PEPPER", PEPPER)
    assert main(["hosts", "token", *url]) == 0
    printed = capsys.readouterr().out.splitlines()
    token_id, token = printed[0].split()[2], printed[1]
    joined = client.post(
        "/internal/hosts/join",
        json=_description(),
        headers={"Authorization": f"Bearer {token}"},
    )
    assert joined.status_code == 201
    host_id = joined.json()["result"]["hostId"]
    org = create_org(hosts_state)
    service_id = _create(client, org, name="on-host").json()["result"]["service"]["id"]
    assert main(["hosts", "list", *url]) == 0
    listing = capsys.readouterr().out
    assert host_id in listing
    assert "labels provider=aws,region=eu-west-1  memory 16/32 GiB" in listing
    assert f"{service_id}  provisioning  on-host" in listing
    assert main(["hosts", "remove", host_id, *url]) == 2  # services run on it
    assert "drain it first" in capsys.readouterr().err
    assert main(["hosts", "revoke", token_id, *url]) == 0
    assert main(["hosts", "tokens", *url]) == 0
    assert token_id in capsys.readouterr().out
    with hosts_state.sessionmaker.begin() as session:
        session.execute(delete(Service))
    assert main(["hosts", "remove", host_id, *url]) == 0
    assert main(["hosts", "list", "--json", *url]) == 0
    assert capsys.readouterr().out.strip().endswith("[]")
