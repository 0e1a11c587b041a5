"""The one policy evaluator (a matching DENY wins over any ALLOW; no match is a refusal) and
the no-escalation rule built on it.

The rule: an actor may change another actor's access only if, after the change, no one gains a
permission the caller lacks, no DENY that restricts the caller is weakened, and the target's
effective permissions before the change are a subset of the caller's. Since a weakened DENY
means someone gains what the caller is denied, it reads as one check per affected actor:
``before <= caller`` and ``after <= caller``, compared as effective permissions, DENY included.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Policy:
    allow: bool
    permissions: frozenset[str]
    resources: tuple[str, ...]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Policy:
        return cls(
            allow=data["allowDeny"] == "ALLOW",
            permissions=frozenset(data["permissions"]),
            resources=tuple(data["resources"]),
        )


def resource_covers(pattern: str, target: str) -> bool:
    """``instance/*`` covers every ``instance/...``; anything else covers only itself."""
    if pattern == target:
        return True
    return pattern.endswith("/*") and target.startswith(pattern[:-1])


def is_allowed(policies: Iterable[Policy], permission: str, resource: str) -> bool:
    allowed = False
    for policy in policies:
        if permission not in policy.permissions:
            continue
        if policy.allow:
            allowed = allowed or any(resource_covers(r, resource) for r in policy.resources)
        # A DENY on any part of a wildcard target denies the wildcard as a whole.
        elif any(
            resource_covers(r, resource) or resource_covers(resource, r) for r in policy.resources
        ):
            return False
    return allowed


def exceeding_grants(actor: Iterable[Policy], granted: Iterable[Policy]) -> list[tuple[str, str]]:
    """The (permission, resource) pairs ``granted`` allows that ``actor`` does not hold."""
    actor = tuple(actor)
    missing = []
    for policy in granted:
        if not policy.allow:
            continue
        for permission in sorted(policy.permissions):
            for resource in policy.resources:
                if not is_allowed(actor, permission, resource):
                    missing.append((permission, resource))
    return missing


def _probes(policy_sets: Iterable[Sequence[Policy]], resources: Iterable[str]) -> list[str]:
    """Resources that decide every question about these policies: each one they name, the given
    ones, and one instance that none of them names (all such instances are answered alike)."""
    named = {r for policies in policy_sets for policy in policies for r in policy.resources}
    return sorted({*named, *resources, "instance/*", f"instance/{uuid.uuid4()}"})


def escalation(
    caller: Sequence[Policy],
    before: Sequence[Policy],
    after: Sequence[Policy],
    *,
    resources: Iterable[str] = (),
) -> tuple[str, str, str] | None:
    """Why changing an actor's policies from ``before`` to ``after`` exceeds ``caller``:
    ``("holds" | "gains", permission, resource)``, or None when the change is within the rule.
    ``resources`` adds resources to compare on (the caller's organization)."""
    sets = (caller, before, after)
    probes = _probes(sets, resources)
    permissions = sorted(
        {p for policies in sets for policy in policies for p in policy.permissions}
    )
    for kind, policies in (("holds", before), ("gains", after)):
        for permission in permissions:
            for resource in probes:
                if is_allowed(policies, permission, resource) and not is_allowed(
                    caller, permission, resource
                ):
                    return kind, permission, resource
    return None
