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


def _access(client: TestClient, org: Org) -> dict[str, list[Policy]]:
    """Each actor's policies, read back through the Role Management API."""
    access: dict[str, list[Policy]] = {}
    for role in client.get(org.url("/roles"), auth=org.auth).json()["result"]:
        for actor in role["actors"]:
            access.setdefault(actor, []).extend(Policy.from_json(p) for p in role["policies"])
    return access


def _effective(policies: list[Policy], resources: list[str]) -> set[tuple[str, str]]:
    return {
        (permission, resource)
        for permission in [*PERMISSIONS, *BASE]
        for resource in resources
        if is_allowed(policies, permission, resource)
    }


@HYPOTHESIS
@given(data=st.data())
def test_no_change_by_anyone_lifts_a_deny_or_reaches_past_the_caller(
    client: TestClient, org: Org, data: st.DataObject
) -> None:
    """Random role graphs with DENY policies; the caller changes actors, policies, key roles, or
    deletes a role or a key. Accepted: every actor whose access changed held, and now holds,
    nothing the caller lacks (so the caller lifted no DENY on itself). Refused: nothing changed."""
    org_resource = f"organization/{org.id}"
    resources = [org_resource, *INSTANCES, f"instance/{uuid.UUID(int=3)}"]
    base = {
        "allowDeny": "ALLOW",
        "permissions": [
            *BASE,
            "control-plane:organization:view-api-keys",
            "control-plane:organization:update-api-keys",
            "control-plane:organization:delete-api-keys",
        ],
        "resources": [org_resource],
    }
    caller_role = _role(client, org, [base, *data.draw(policy_sets(org_resource))]).json()
    caller_key = create_key(
        client, org, name="caller", assignedRoleIds=[caller_role["result"]["id"]]
    )
    others = [create_key(client, org, name=f"k{i}", roles=["developer"])["key"] for i in range(2)]
    actors = [f"apiKey/{caller_key['key']['id']}", *(f"apiKey/{k['id']}" for k in others)]
    roles = []
    for index in range(2):
        body = {
            "name": f"g{index}-{uuid.uuid4().hex[:6]}",
            "actors": data.draw(st.lists(st.sampled_from(actors), unique=True), label="actors"),
            "policies": data.draw(policy_sets(org_resource), label="policies"),
        }
        roles.append(client.post(org.url("/roles"), json=body, auth=org.auth).json()["result"])
    role_ids = [role["id"] for role in roles]

    before = _access(client, org)
    caller_policies = before[actors[0]]
    op = data.draw(
        st.sampled_from(["actors", "policies", "delete-role", "key-roles", "delete-key"])
    )
    auth = key_auth(caller_key)
    if op == "actors":
        new = data.draw(st.lists(st.sampled_from(actors), unique=True), label="new actors")
        response = client.patch(
            org.url(f"/roles/{data.draw(st.sampled_from(role_ids))}"),
            json={"actors": new},
            auth=auth,
        )
    elif op == "policies":
        new_policies = data.draw(policy_sets(org_resource), label="new policies")
        response = client.patch(
            org.url(f"/roles/{data.draw(st.sampled_from(role_ids))}"),
            json={"policies": new_policies},
            auth=auth,
        )
    elif op == "delete-role":
        response = client.delete(
            org.url(f"/roles/{data.draw(st.sampled_from(role_ids))}"), auth=auth
        )
    elif op == "key-roles":
        target = data.draw(st.sampled_from([caller_key["key"], *others]))
        chosen = data.draw(st.lists(st.sampled_from(role_ids), unique=True), label="key roles")
        response = client.patch(
            org.url(f"/keys/{target['id']}"), json={"assignedRoleIds": chosen}, auth=auth
        )
    else:
        target = data.draw(st.sampled_from(others))
        response = client.delete(org.url(f"/keys/{target['id']}"), auth=auth)
    after = _access(client, org)

    if response.status_code != 200:
        assert response.status_code == 403, response.text
        assert after == before
        return
    caller = _effective(caller_policies, resources)
    for actor in set(before) | set(after):
        held = _effective(before.get(actor, []), resources)
        holds = _effective(after.get(actor, []), resources)
        if held != holds:
            assert held <= caller, (actor, held - caller)
            assert holds <= caller, (actor, holds - caller)
