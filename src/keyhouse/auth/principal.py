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
