"""The one policy evaluator: a matching DENY wins over any ALLOW; no match is a refusal."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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
