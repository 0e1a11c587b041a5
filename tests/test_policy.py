"""The policy evaluator and the no-escalation rule, including property-based checks."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from keyhouse.auth.permissions import Permission
from keyhouse.auth.policy import Policy, exceeding_grants, is_allowed, resource_covers

ORG = "organization/11111111-1111-1111-1111-111111111111"
RESOURCES = [ORG, "instance/*", "instance/a", "instance/b"]
PERMISSIONS = [str(p) for p in Permission]


def allow(permissions: list[str], resources: list[str]) -> Policy:
    return Policy(True, frozenset(permissions), tuple(resources))


def deny(permissions: list[str], resources: list[str]) -> Policy:
    return Policy(False, frozenset(permissions), tuple(resources))


def test_no_policy_means_no_access() -> None:
    assert not is_allowed([], "control-plane:organization:view", ORG)


def test_wildcard_covers_every_instance() -> None:
    assert resource_covers("instance/*", "instance/a")
    assert not resource_covers("instance/a", "instance/*")
    assert not resource_covers("instance/*", ORG)


def test_deny_wins_over_allow() -> None:
    policies = [allow(["control-plane:service:view"], ["instance/*"])]
    policies.append(deny(["control-plane:service:view"], ["instance/a"]))
    assert is_allowed(policies, "control-plane:service:view", "instance/b")
    assert not is_allowed(policies, "control-plane:service:view", "instance/a")
    # A deny on one instance also denies the wildcard as a whole.
    assert not is_allowed(policies, "control-plane:service:view", "instance/*")


def policies(allow: st.SearchStrategy[bool]) -> st.SearchStrategy[Policy]:
    return st.builds(
        Policy,
        allow,
        st.frozensets(st.sampled_from(PERMISSIONS[:6]), min_size=1, max_size=3),
        st.lists(st.sampled_from(RESOURCES), min_size=1, max_size=2).map(tuple),
    )


policy_strategy = policies(st.booleans())
# Generated as allows rather than filtered from the mix: filtering most lists out fails
# Hypothesis's health check on a slow run.
allow_strategy = policies(st.just(True))


@given(st.lists(policy_strategy, max_size=5), st.lists(policy_strategy, max_size=5))
def test_granted_within_actor_never_allows_what_the_actor_lacks(
    actor: list[Policy], granted: list[Policy]
) -> None:
    if exceeding_grants(actor, granted):
        return
    for permission in PERMISSIONS[:6]:
        for resource in RESOURCES:
            if is_allowed(granted, permission, resource):
                assert is_allowed(actor, permission, resource), (permission, resource)


@given(st.lists(allow_strategy, max_size=5))
def test_an_actor_without_denies_may_grant_its_own_policies(actor: list[Policy]) -> None:
    assert exceeding_grants(actor, actor) == []


@given(allow_strategy, st.lists(policy_strategy, max_size=4), st.randoms())
def test_nobody_may_grant_anything_while_holding_nothing(
    one_allow: Policy, others: list[Policy], order: random.Random
) -> None:
    granted = [one_allow, *others]
    order.shuffle(granted)
    assert exceeding_grants([], granted) != []
