"""Who is calling: the authenticated actor, its policies, and where the request came from."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from keyhouse.auth.policy import Policy, is_allowed


@dataclass(frozen=True)
class RoleRef:
    id: uuid.UUID
    name: str
    type: str


@dataclass(frozen=True)
class Principal:
    # "apiKey" or "user" (the role actor prefixes) or "system" (offline CLI commands).
    actor_type: str
    actor_id: uuid.UUID | None
    organization_id: uuid.UUID
    name: str
    roles: tuple[RoleRef, ...] = ()
    policies: tuple[Policy, ...] = ()
    ip_address: str | None = None
    user_agent: str | None = None
    # The public keyId an apiKey principal authenticated with (never its secret).
    key_id: str | None = field(default=None, repr=False)

    def can(self, permission: str, resource: str) -> bool:
        return is_allowed(self.policies, permission, resource)

    @property
    def activity_actor_type(self) -> str:
        """The activity log's actor type: 'api' for keys, 'user', or 'system'."""
        return {"apiKey": "api", "user": "user"}.get(self.actor_type, "system")


def system_principal(organization_id: uuid.UUID, name: str) -> Principal:
    """The operator acting offline (``keyhouse`` CLI commands with database access): holds
    everything in the organization, as Admin does, and is recorded as the ``system`` actor."""
    from keyhouse.auth.permissions import ADMIN, SYSTEM_ROLES_BY_NAME

    policies = SYSTEM_ROLES_BY_NAME[ADMIN].policies(organization_id)
    return Principal(
        actor_type="system",
        actor_id=None,
        organization_id=organization_id,
        name=name,
        policies=tuple(Policy.from_json(p) for p in policies),
    )
