"""Organization quotas (``GET .../quotas``, ``GET .../quotas/{quotaCode}``): the limits Keyhouse
enforces, with their current usage, in the official ``OrganizationQuota`` shape."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from keyhouse.auth.principal import system_principal
from keyhouse.services import service
from keyhouse.services.schemas import ServicePostRequest
from keyhouse.state import AppState
from tests.conftest import Org, create_key, create_org, key_auth


def _add_service(state: AppState, org: Org, name: str) -> None:
    """A service row, as a create commits it (its engine is not this test's business)."""
    with state.sessionmaker.begin() as session:
        _created(session, org, name)


def _created(session: Session, org: Org, name: str) -> None:
    service.create_service(
        session,
        system_principal(org.id, "test"),
        ServicePostRequest(name=name),
        pepper=b"p" * 32,
        defaults=service.ServiceDefaults("aws", "us-east-1", max_services=10),
    )


def _quotas(client: TestClient, org: Org, auth: tuple[str, str] | None = None) -> Any:
    response = client.get(org.url("/quotas"), auth=auth or org.auth)
    assert response.status_code == 200, response.text
    return {quota["quotaCode"]: quota for quota in response.json()["result"]}


def test_the_quotas_are_the_limits_keyhouse_enforces_with_their_usage(
    client: TestClient, org: Org, state: AppState
) -> None:
    quotas = _quotas(client, org)
    assert set(quotas) == {"services-per-organization", "replicas-per-warehouse"}
    services = quotas["services-per-organization"]
    assert services["value"] == state.settings.max_services_per_organization
    assert (services["usage"], services["scope"], services["adjustable"]) == (
        0,
        "organization",
        True,
    )
    replicas = quotas["replicas-per-warehouse"]
    assert (replicas["value"], replicas["scope"], replicas["adjustable"]) == (1, "warehouse", False)
    assert "usage" not in replicas  # counted per warehouse: no organization-wide usage

    _add_service(state, org, "one")
    _add_service(state, org, "two")
    assert _quotas(client, org)["services-per-organization"]["usage"] == 2
    other = create_org(state)
    assert _quotas(client, other)["services-per-organization"]["usage"] == 0


def test_one_quota_by_its_code_and_a_404_for_one_not_enforced(client: TestClient, org: Org) -> None:
    one = client.get(org.url("/quotas/services-per-organization"), auth=org.auth)
    assert one.status_code == 200
    assert one.json()["result"] == _quotas(client, org)["services-per-organization"]
    for code in ("postgres-services-per-organization", "no-such-quota"):
        missing = client.get(org.url(f"/quotas/{code}"), auth=org.auth)
        assert missing.status_code == 404, missing.text
        assert missing.json()["status"] == 404


def test_a_viewer_reads_the_quotas_of_their_own_organization_only(
    client: TestClient, org: Org, state: AppState
) -> None:
    developer = key_auth(create_key(client, org, roles=["developer"]))
    assert set(_quotas(client, org, developer)) == {
        "services-per-organization",
        "replicas-per-warehouse",
    }
    # A key with no control-plane role (the legacy query_endpoints role) is refused.
    reader = key_auth(create_key(client, org, roles=["query_endpoints"]))
    for path in ("/quotas", "/quotas/services-per-organization"):
        refused = client.get(org.url(path), auth=reader)
        assert refused.status_code == 403, refused.text
        assert "control-plane:organization:view" in refused.json()["error"]
    other = create_org(state)
    assert client.get(other.url("/quotas"), auth=org.auth).status_code == 404
    assert (
        client.get(other.url("/quotas/services-per-organization"), auth=org.auth).status_code == 404
    )
