"""usageCost: what each service used, day by day, measured from its engine (engine time, its
data's and its backups' bytes) and priced with the operator's price table."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from fastapi.testclient import TestClient

from keyhouse.db import utcnow
from keyhouse.runtime import Engines
from keyhouse.state import AppState
from tests.conftest import Org, create_key, create_org, key_auth
from tests.services import bind, create, run, stop, wait_for

pytestmark = pytest.mark.services  # (tests/conftest.py)


def _engines(state: AppState) -> Engines:
    engines = state.engines
    assert isinstance(engines, Engines)
    return engines


def test_usage_is_measured_from_the_engines_and_priced_per_day(
    client: TestClient, org: Org, state: AppState
) -> None:
    state.settings.price_compute_unit_hour = 0.5
    state.settings.price_storage_gb_month = 30.0
    sid = create(
        client, org, name="measured", maxReplicaMemoryGb=16, tags=[{"key": "team", "value": "data"}]
    )["service"]["id"]
    wait_for(client, org, sid, "running")
    bind(client, org, sid, [str(org.key_uuid)])
    run(client, sid, org.auth, "CREATE TABLE t (n UInt64) ENGINE = MergeTree ORDER BY n")
    run(client, sid, org.auth, "INSERT INTO t SELECT number FROM numbers(100000)")
    portal = client.portal
    assert portal is not None
    engines = _engines(state)
    yesterday = utcnow() - dt.timedelta(days=1)
    portal.call(engines.sample_usage, yesterday, 7200.0)  # two hours, yesterday
    portal.call(engines.sample_usage, utcnow(), 1800.0)  # half an hour so far today
    today = utcnow().date()
    report = client.get(
        org.url("/usageCost"),
        params={
            "from_date": (today - dt.timedelta(days=1)).isoformat(),
            "to_date": today.isoformat(),
        },
        auth=org.auth,
    )
    assert report.status_code == 200, report.text
    result = report.json()["result"]
    records = [r for r in result["costs"] if r["entityId"] == sid]
    assert [(r["date"], r["entityType"]) for r in records] == [
        ((today - dt.timedelta(days=1)).isoformat(), "datawarehouse"),
        ((today - dt.timedelta(days=1)).isoformat(), "service"),
        (today.isoformat(), "datawarehouse"),
        (today.isoformat(), "service"),
    ]
    old_warehouse, old_compute, warehouse, compute = records
    # Compute: hours × units of 8 GiB (16 GiB: two) × 0.5 CHC.
    assert old_compute["metrics"] == {"computeCHC": 2.0}
    assert old_compute["keyhouseUsage"]["computeSeconds"] == 7200.0
    assert compute["metrics"]["computeCHC"] == 0.5
    assert compute["serviceId"] == sid
    assert warehouse["serviceId"] is None
    assert warehouse["dataWarehouseId"] == sid
    assert warehouse["entityName"] == "measured"
    stored = warehouse["keyhouseUsage"]["storageBytes"]
    assert stored > 100_000  # the table's parts, measured on disk
    days = 31 if today.month in (1, 3, 5, 7, 8, 10, 12) else (30 if today.month != 2 else 28)
    assert warehouse["metrics"]["storageCHC"] == pytest.approx(stored / 1e9 * 30 / days, abs=1e-6)
    assert old_warehouse["locked"] is True
    assert warehouse["locked"] is False
    assert result["grandTotalCHC"] == pytest.approx(
        sum(r["totalCHC"] for r in result["costs"]), abs=1e-5
    )

    # Tag filters; the 31-day bound; dates in order; view-billing.
    tagged = client.get(
        org.url("/usageCost"),
        params={
            "from_date": today.isoformat(),
            "to_date": today.isoformat(),
            "filter": "tag:team=web",
        },
        auth=org.auth,
    )
    assert tagged.json()["result"] == {"grandTotalCHC": 0.0, "costs": []}
    for start, end in (
        (today - dt.timedelta(days=31), today),
        (today, today - dt.timedelta(days=1)),
    ):
        wrong = client.get(
            org.url("/usageCost"),
            params={"from_date": start.isoformat(), "to_date": end.isoformat()},
            auth=org.auth,
        )
        assert wrong.status_code == 400, wrong.text
    querier = key_auth(create_key(client, org, roles=["query_endpoints"]))
    denied = client.get(
        org.url("/usageCost"),
        params={"from_date": today.isoformat(), "to_date": today.isoformat()},
        auth=querier,
    )
    assert denied.status_code == 403
    other = create_org(state, "Other")
    theirs = client.get(
        other.url("/usageCost"),
        params={"from_date": today.isoformat(), "to_date": today.isoformat()},
        auth=other.auth,
    )
    assert theirs.json()["result"]["costs"] == []

    # A stopped service costs its storage and no compute; a deleted one's records stay.
    stop(client, org, sid)
    tomorrow = utcnow() + dt.timedelta(days=1)
    portal.call(engines.sample_usage, tomorrow, 3600.0)
    assert client.delete(org.url(f"/services/{sid}"), auth=org.auth).status_code == 200
    later = client.get(
        org.url("/usageCost"),
        params={"from_date": tomorrow.date().isoformat(), "to_date": tomorrow.date().isoformat()},
        auth=org.auth,
    ).json()["result"]["costs"]
    by_type = {r["entityType"]: r for r in later if r["entityId"] == sid}
    assert by_type["service"]["metrics"]["computeCHC"] == 0.0
    assert by_type["datawarehouse"]["keyhouseUsage"]["storageBytes"] > 0
    assert uuid.UUID(by_type["service"]["serviceId"]) == uuid.UUID(sid)
