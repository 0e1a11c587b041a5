"""Wire models (official ``RBACRole`` and ``RBACPolicy``)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import Field

from keyhouse.api.wire import MAX_LIST_ITEMS, Wire, WireRequest
from keyhouse.models import Role


class RBACPolicyTags(Wire):
    grants: list[str] | None = None
    role_v2: Literal["sql-console-readonly", "sql-console-admin"] | None = Field(
        default=None, alias="roleV2"
    )


class RBACPolicy(Wire):
    id: str
    role_id: str = Field(alias="roleId")
    tenant_id: str = Field(alias="tenantId")
    allow_deny: Literal["ALLOW", "DENY"] = Field(alias="allowDeny")
    permissions: list[str]
    resources: list[str]
    tags: RBACPolicyTags | None = None


class RBACRole(Wire):
    id: str
    tenant_id: str = Field(alias="tenantId")
    owner_id: str = Field(alias="ownerId")
    name: str
    type: Literal["system", "custom"]
    actors: list[str]
    policies: list[RBACPolicy]
    created_at: dt.datetime = Field(alias="createdAt")
    updated_at: dt.datetime = Field(alias="updatedAt")

    @classmethod
    def from_row(cls, role: Role, actors: list[str]) -> RBACRole:
        tenant = f"organization/{role.organization_id}"
        return cls(
            id=str(role.id),
            tenant_id=tenant,
            owner_id=tenant,
            name=role.name,
            type=role.type,
            actors=actors,
            policies=[_policy(role, tenant, policy) for policy in role.policies],
            created_at=role.created_at,
            updated_at=role.updated_at,
        )


def _policy(role: Role, tenant: str, policy: dict[str, Any]) -> RBACPolicy:
    return RBACPolicy(
        id=policy["id"],
        role_id=str(role.id),
        tenant_id=tenant,
        allow_deny=policy["allowDeny"],
        permissions=policy["permissions"],
        resources=policy["resources"],
        tags=RBACPolicyTags.model_validate(policy["tags"]) if policy.get("tags") else None,
    )


class RBACPolicyCreateRequest(Wire):
    allow_deny: Literal["ALLOW", "DENY"] = Field(alias="allowDeny")
    permissions: list[str] = Field(min_length=1, max_length=MAX_LIST_ITEMS)
    resources: list[str] = Field(min_length=1, max_length=MAX_LIST_ITEMS)
    tags: RBACPolicyTags | None = None


class RoleCreateRequest(WireRequest):
    name: str = Field(min_length=1, max_length=255)
    actors: list[str] = Field(max_length=MAX_LIST_ITEMS)
    policies: list[RBACPolicyCreateRequest] = Field(max_length=MAX_LIST_ITEMS)


class RoleUpdateRequest(WireRequest):
    """Absent fields are left as they are; given lists replace the whole list."""

    name: str | None = Field(default=None, min_length=1, max_length=255)
    actors: list[str] | None = Field(default=None, max_length=MAX_LIST_ITEMS)
    policies: list[RBACPolicyCreateRequest] | None = Field(default=None, max_length=MAX_LIST_ITEMS)
