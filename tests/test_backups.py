"""Backups: taken on schedule by the engine's own BACKUP (full, then incrementals), listed and
read through the official operations, configured, pruned by retention, and restored into a new
service (``POST .../services`` with ``backupId``)."""

from __future__ import annotations

import datetime as dt
import os
import signal
import threading
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from keyhouse import cli
from keyhouse.backups import schedule
from keyhouse.backups import service as backups_service
from keyhouse.db import utcnow
from keyhouse.models import Activity, Backup, Service
from keyhouse.runtime import Engines
from keyhouse.state import AppState
from tests.conftest import PEPPER, Org, create_key, create_org, key_auth, make_client
from tests.services import bind, create, run, stop, wait_for

pytestmark = pytest.mark.services  # (tests/conftest.py)

DAY = dt.timedelta(days=1)


def _engines(state: AppState) -> Engines:
    engines = state.engines
    assert isinstance(engines, Engines)
    return engines


def _tick(client: TestClient, state: AppState, now: dt.datetime) -> None:
    """One round of the backup schedule at ``now`` (a test clock), and the backups it began."""
    engines = _engines(state)
    portal = client.portal
    assert portal is not None
    portal.call(engines.backups.tick, set(engines._held), now)
    portal.call(engines.backups.wait)


def _backups(client: TestClient, org: Org, sid: str) -> list[dict[str, Any]]:
    response = client.get(org.url(f"/services/{sid}/backups"), auth=org.auth)
    assert response.status_code == 200, response.text
    result: list[dict[str, Any]] = response.json()["result"]
    return result


def _count(client: TestClient, sid: str, auth: tuple[str, str]) -> str:
    answer = run(client, sid, auth, "SELECT count() FROM t")
    assert answer.status_code == 200, answer.text
    return str(answer.text.strip())


def _service_with_rows(client: TestClient, org: Org, rows: int = 1000) -> str:
    sid = str(create(client, org)["service"]["id"])
    wait_for(client, org, sid, "running")
    bind(client, org, sid, [str(org.key_uuid)])
    run(client, sid, org.auth, "CREATE TABLE t (n UInt64) ENGINE = MergeTree ORDER BY n")
    run(client, sid, org.auth, "CREATE DATABASE other")
    run(client, sid, org.auth, "CREATE TABLE other.u (s String) ENGINE = MergeTree ORDER BY s")
    run(client, sid, org.auth, f"INSERT INTO t SELECT number FROM numbers({rows:d})")  # noqa: S608
    run(client, sid, org.auth, "INSERT INTO other.u VALUES ('kept')")
    return sid


def test_scheduled_backups_are_a_full_one_then_incrementals_and_restore_into_a_new_service(
    client: TestClient, org: Org, state: AppState
) -> None:
    sid = _service_with_rows(client, org)
    created = dt.datetime.fromisoformat(
        client.get(org.url(f"/services/{sid}"), auth=org.auth).json()["result"]["createdAt"]
    )
    _tick(client, state, created + dt.timedelta(hours=23))  # not due yet (default: every 24 h)
    assert _backups(client, org, sid) == []

    _tick(client, state, created + DAY + dt.timedelta(minutes=1))
    [full] = _backups(client, org, sid)
    assert full["status"] == "done", full
    assert full["type"] == "full"
    assert full["serviceId"] == sid
    assert full["sizeInBytes"] > 0
    assert full["finishedAt"] >= full["startedAt"]

    run(client, sid, org.auth, "INSERT INTO t SELECT number FROM numbers(5)")
    _tick(client, state, dt.datetime.fromisoformat(full["startedAt"]) + DAY)
    listed = _backups(client, org, sid)
    assert [b["type"] for b in listed] == ["incremental", "full"]  # the most recent first
    incremental = listed[0]
    assert incremental["status"] == "done"
    assert incremental["sizeInBytes"] < full["sizeInBytes"]  # only what changed
    one = client.get(org.url(f"/services/{sid}/backups/{incremental['id']}"), auth=org.auth)
    assert one.json()["result"]["id"] == incremental["id"]

    run(client, sid, org.auth, "INSERT INTO t SELECT number FROM numbers(7)")  # after it
    restored = create(client, org, backupId=incremental["id"])
    rid = restored["service"]["id"]
    wait_for(client, org, rid, "running")
    bind(client, org, rid, [str(org.key_uuid)])
    assert _count(client, rid, org.auth) == "1005"
    assert run(client, rid, org.auth, "SELECT s FROM other.u").text == "kept\n"
    assert _count(client, sid, org.auth) == "1012"  # the original goes on as it was
    # The restored service's backup directory holds none of the original's backups.
    assert _backups(client, org, rid) == []
    assert not list(_engines(state).supervisor.backup_path(uuid.UUID(rid)).iterdir())
    types = [a["type"] for a in client.get(org.url("/activities"), auth=org.auth).json()["result"]]
    assert "service_restore_backup" in types
    stop(client, org, rid)
    stop(client, org, sid)


def test_a_worker_killed_during_a_backup_leaves_an_error_backup_and_a_healthy_service(
    client: TestClient, org: Org, state: AppState, monkeypatch: pytest.MonkeyPatch
) -> None:
    sid = _service_with_rows(client, org)
    engines = _engines(state)
    runner = engines.backups
    watch = runner._watch
    killed: list[int] = []

    async def kill_first(service_id: uuid.UUID, operation: str, done: str) -> None:
        # The engine accepted BACKUP ... ASYNC: kill -9 its worker before the backup is seen.
        pid = engines.supervisor._workers[service_id].pid
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)
        await watch(service_id, operation, done)

    monkeypatch.setattr(runner, "_watch", kill_first)
    portal = client.portal
    assert portal is not None
    backup_id = portal.call(runner.take, uuid.UUID(sid))
    [backup] = _backups(client, org, sid)
    assert backup["id"] == str(backup_id)
    assert backup["status"] == "error"
    assert "finishedAt" in backup
    assert not (engines.supervisor.backup_path(uuid.UUID(sid)) / str(backup_id)).exists()
    monkeypatch.undo()
    # The service comes back with its data, and the next backup is a full one that works.
    wait_for(client, org, sid, "running")
    deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60)
    while run(client, sid, org.auth, "SELECT 1").status_code != 200:
        assert dt.datetime.now(dt.UTC) < deadline
    assert engines.supervisor._workers[uuid.UUID(sid)].pid not in killed
    assert _count(client, sid, org.auth) == "1000"
    again = portal.call(runner.take, uuid.UUID(sid))
    listed = _backups(client, org, sid)
    assert [(b["id"], b["status"], b["type"]) for b in listed] == [
        (str(again), "done", "full"),
        (str(backup_id), "error", "full"),
    ]
    stop(client, org, sid)


def test_restores_are_checked_before_anything_is_created(
    client: TestClient, org: Org, state: AppState
) -> None:
    sid = _service_with_rows(client, org, rows=10)
    portal = client.portal
    assert portal is not None
    backup_id = str(portal.call(_engines(state).backups.take, uuid.UUID(sid)))
    before = len(client.get(org.url("/services"), auth=org.auth).json()["result"])

    # Another organization's admin cannot restore (nor see) this organization's backup.
    other = create_org(state, "Other org")
    refused = client.post(
        other.url("/services"), json={"name": "thief", "backupId": backup_id}, auth=other.auth
    )
    assert refused.status_code == 404, refused.text
    assert refused.json()["error"] == "Backup not found"
    assert client.get(other.url(f"/services/{sid}/backups"), auth=other.auth).status_code == 404
    for wrong in (str(uuid.uuid4()), "not-a-uuid"):
        missing = client.post(
            org.url("/services"), json={"name": "x", "backupId": wrong}, auth=org.auth
        )
        assert missing.status_code == 404, missing.text
    elsewhere = client.post(
        org.url("/services"),
        json={"name": "x", "backupId": backup_id, "region": "eu-west-1"},
        auth=org.auth,
    )
    assert elsewhere.status_code == 400
    assert "region" in elsewhere.json()["error"]
    # A developer (read-only) key may list backups but not configure them.
    developer = key_auth(create_key(client, org, roles=["developer"]))
    assert client.get(org.url(f"/services/{sid}/backups"), auth=developer).status_code == 200
    denied = client.patch(
        org.url(f"/services/{sid}/backupConfiguration"),
        json={"backupPeriodInHours": 6},
        auth=developer,
    )
    assert denied.status_code == 403
    config = client.get(org.url(f"/services/{sid}/backupConfiguration"), auth=org.auth)
    assert config.json()["result"]["backupPeriodInHours"] == 24  # unchanged
    assert len(client.get(org.url("/services"), auth=org.auth).json()["result"]) == before
    stop(client, org, sid)


def test_the_backup_configuration_is_the_official_one(
    client: TestClient, org: Org, state: AppState
) -> None:
    sid = create(client, org)["service"]["id"]
    url = org.url(f"/services/{sid}/backupConfiguration")
    defaults = {"backupPeriodInHours": 24, "backupRetentionPeriodInHours": 24}
    assert client.get(url, auth=org.auth).json()["result"] == defaults
    changed = client.patch(
        url, json={"backupPeriodInHours": 6, "backupRetentionPeriodInHours": 72}, auth=org.auth
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["result"] == {
        "backupPeriodInHours": 6,
        "backupRetentionPeriodInHours": 72,
    }
    daily = client.patch(url, json={"backupStartTime": "03:15"}, auth=org.auth).json()["result"]
    assert daily == {
        "backupPeriodInHours": 24,  # a start time resets the period to a day
        "backupRetentionPeriodInHours": 72,
        "backupStartTime": "03:15",
    }
    other_days = client.patch(url, json={"backupPeriodInHours": 48}, auth=org.auth)
    assert other_days.json()["result"]["backupPeriodInHours"] == 48
    for body, field in (
        ({"backupRetentionPeriodInHours": 30}, "backupRetentionPeriodInHours"),
        ({"backupRetentionPeriodInHours": 2000}, "backupRetentionPeriodInHours"),
        ({"backupPeriodInHours": 0}, "backupPeriodInHours"),
        ({"backupPeriodInHours": 6}, "backupPeriodInHours"),  # with a start time: 24 or 48
        ({"backupStartTime": "25:00"}, "backupStartTime"),
    ):
        refused = client.patch(url, json=body, auth=org.auth)
        assert refused.status_code == 400, (body, refused.text)
        assert field in refused.json()["error"]
    reset = client.patch(
        url,
        json={
            "backupStartTime": None,
            "backupRetentionPeriodInHours": None,
            "backupPeriodInHours": None,
        },
        auth=org.auth,
    )
    assert reset.json()["result"] == defaults
    types = [a["type"] for a in client.get(org.url("/activities"), auth=org.auth).json()["result"]]
    assert types.count("service_update_backup_configuration") == 4
    stop(client, org, sid)


def test_retention_deletes_old_chains_records_and_files(
    client: TestClient, org: Org, state: AppState, monkeypatch: pytest.MonkeyPatch
) -> None:
    sid = _service_with_rows(client, org, rows=10)
    service_id = uuid.UUID(sid)
    runner = _engines(state).backups
    portal = client.portal
    assert portal is not None
    taken = [portal.call(runner.take, service_id) for _ in range(3)]  # a full one, two on it
    directory = _engines(state).supervisor.backup_path(service_id)
    assert all((directory / str(b)).is_dir() for b in taken)
    # Three days on (retention: one), with a new chain begun: the old chain goes whole.
    with state.sessionmaker.begin() as session:
        for backup in session.query(Backup).filter(Backup.service_id == service_id):
            backup.requested_at -= 3 * DAY
    monkeypatch.setattr(schedule, "CHAIN_LENGTH", 3)
    newest = portal.call(runner.take, service_id)  # (take prunes after it)
    assert [(b["id"], b["type"]) for b in _backups(client, org, sid)] == [(str(newest), "full")]
    assert not any((directory / str(b)).exists() for b in taken)
    assert (directory / str(newest)).is_dir()
    with state.sessionmaker() as session:
        deleted = session.query(Activity).filter(
            Activity.type == "backup_delete", Activity.service_id == sid
        )
        assert deleted.count() == 3
    # The newest chain stays, however old.
    assert portal.call(runner.prune, service_id, utcnow() + 100 * DAY) == []
    stop(client, org, sid)


def test_keyhouse_backups_take_asks_the_serving_process_and_waits(
    org: Org, state: AppState, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEYHOUSE_PEPPER", PEPPER)
    state.settings.backup_check_seconds = 0.2
    with make_client(state) as client:
        sid = _service_with_rows(client, org, rows=10)
        url = state.settings.database_url
        codes: list[int] = []
        taking = threading.Thread(
            target=lambda: codes.append(cli.main(["backups", "take", sid, "--database-url", url]))
        )
        taking.start()
        taking.join(120)
        assert codes == [0]
        out = capsys.readouterr().out
        [backup] = _backups(client, org, sid)
        assert backup["status"] == "done"
        assert f"{backup['id']}  done" in out
        assert "operator" in out
        assert cli.main(["backups", "list", sid, "--database-url", url]) == 0
        listed = capsys.readouterr().out
        assert backup["id"] in listed
        stop(client, org, sid)
        # A stopped service is not backed up: its data cannot change until it runs again.
        assert cli.main(["backups", "take", sid, "--database-url", url]) == 2
        assert "stopped" in capsys.readouterr().err


def test_a_stopped_service_due_a_backup_gets_a_note_instead(
    client: TestClient, org: Org, state: AppState
) -> None:
    sid = create(client, org)["service"]["id"]
    wait_for(client, org, sid, "running")
    stop(client, org, sid)
    with state.sessionmaker() as session:
        notes = backups_service.stopped_notes(session, utcnow() + 2 * DAY)
    assert "the service is stopped" in notes[uuid.UUID(sid)]
    _tick(client, state, utcnow() + 2 * DAY)
    assert _backups(client, org, sid) == []
    with state.sessionmaker() as session:
        row = session.get(Service, uuid.UUID(sid))
        assert row is not None
        assert row.backup_note is not None
        assert "stopped" in row.backup_note
