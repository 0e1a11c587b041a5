"""Property-based: whatever roles an actor holds, what it creates never allows more than it has.

Hypothesis draws random ALLOW/DENY policy sets for the actor's custom role and for the role it
tries to grant; the API must accept exactly when the grant stays within the actor's own
permissions, and a granted key must never be allowed something its creator is not.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyhouse.auth.policy import Policy, exceeding_grants, is_allowed
from tests.conftest import Org, create_key, key_auth

INSTANCES = ["instance/*", f"instance/{uuid.UUID(int=1)}", f"instance/{uuid.UUID(int=2)}"]
PERMISSIONS = [
    "control-plane:organization:view-billing",
    "control-plane:organization:view-activities",
    "control-plane:service:view",
    "control-plane:service:manage",
]
# What the actor always needs in order to make the calls at all.
BASE = [
    "control-plane:organization:view",
    "control-plane:organization:create-api-keys",
    "control-plane:organization:manage",
]


def policy_sets(org_resource: str) -> st.SearchStrategy[list[dict[str, Any]]]:
    policy = st.fixed_dictionaries(
        {
            "allowDeny": st.sampled_from(["ALLOW", "DENY"]),
            "permissions": st.lists(
                st.sampled_from(PERMISSIONS), min_size=1, max_size=3, unique=True
            ),
            "resources": st.lists(
                st.sampled_from([org_resource, *INSTANCES]), min_size=1, max_size=2, unique=True
            ),
        }
    )
    return st.lists(policy, min_size=1, max_size=4)


def _role(client: TestClient, org: Org, policies: list[dict[str, Any]], auth: Any = None) -> Any:
    return client.post(
        org.url("/roles"),
        json={"name": f"r-{uuid.uuid4().hex[:8]}", "actors": [], "policies": policies},
        auth=auth or org.auth,
    )


HYPOTHESIS = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@HYPOTHESIS
@given(data=st.data())
def test_keys_and_roles_never_grant_more_than_their_creator(
    client: TestClient, org: Org, data: st.DataObject
) -> None:
    org_resource = f"organization/{org.id}"
    base = {"allowDeny": "ALLOW", "permissions": BASE, "resources": [org_resource]}
    actor_policies = [base, *data.draw(policy_sets(org_resource), label="actor")]
    target_policies = data.draw(policy_sets(org_resource), label="target")

    actor_role = _role(client, org, actor_policies).json()["result"]
    actor = key_auth(create_key(client, org, assignedRoleIds=[actor_role["id"]]))
    target = _role(client, org, target_policies).json()["result"]  # made by the admin

    actor_parsed = [Policy.from_json(p) for p in actor_policies]
    target_parsed = [Policy.from_json(p) for p in target_policies]
    within = exceeding_grants(actor_parsed, target_parsed) == []

    response = client.post(
        org.url("/keys"), json={"name": "k", "assignedRoleIds": [target["id"]]}, auth=actor
    )
    assert response.status_code == (200 if within else 403), response.text
    assert _role(client, org, target_policies, auth=actor).status_code == (200 if within else 403)
    if within:
        for permission in PERMISSIONS:
            for resource in [org_resource, *INSTANCES]:
                if is_allowed(target_parsed, permission, resource):
                    assert is_allowed(actor_parsed, permission, resource)
