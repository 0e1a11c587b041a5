"""Wire models, named and shaped as the official spec's ``ApiKey*`` schemas.

``createdBy`` is a Keyhouse extension (the console's "creator" column).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Literal

from pydantic import Field, field_validator

from keyhouse.api.wire import (
    MAX_LIST_ITEMS,
    OptionalUtcDateTime,
    Wire,
    WireRequest,
)
from keyhouse.auth.credentials import is_sha256_b64
from keyhouse.auth.network import IpAccessListEntry as IpAccessListEntry
from keyhouse.auth.principal import RoleRef

KeyState = Literal["enabled", "disabled"]
LegacyRole = Literal["admin", "developer", "query_endpoints"]


class ApiKeyHashData(Wire):
    key_id_hash: str = Field(alias="keyIdHash")
    key_id_suffix: str = Field(alias="keyIdSuffix", min_length=4, max_length=4)
    key_secret_hash: str = Field(alias="keySecretHash")

    @field_validator("key_id_hash", "key_secret_hash")
    @classmethod
    def _digest(cls, value: str) -> str:
        if not is_sha256_b64(value):
            raise ValueError("must be the base64 encoding of a 32-byte SHA-256 digest")
        return value


class AssignedRole(Wire):
    role_id: uuid.UUID = Field(alias="roleId")
    role_name: str = Field(alias="roleName")
    role_type: Literal["system", "custom"] = Field(alias="roleType")

    @classmethod
    def from_ref(cls, ref: RoleRef) -> AssignedRole:
        """Built from stored data, without validating it again."""
        return cls.model_construct(
            role_id=ref.id,
            role_name=ref.name,
            role_type=ref.type,  # type: ignore[arg-type]
        )


class ApiKeyCreator(Wire):
    """Keyhouse extension: who created the key."""

    type: Literal["user", "apiKey", "system"]
    id: uuid.UUID | None = None
    name: str | None = None


class ApiKey(Wire):
    id: uuid.UUID
    name: str
    state: KeyState
    roles: list[LegacyRole] = Field(json_schema_extra={"deprecated": True})
    assigned_roles: list[AssignedRole] = Field(alias="assignedRoles")
    key_suffix: str = Field(alias="keySuffix")
    created_at: dt.datetime = Field(alias="createdAt")
    expire_at: dt.datetime | None = Field(default=None, alias="expireAt")
    used_at: dt.datetime | None = Field(default=None, alias="usedAt")
    ip_access_list: list[IpAccessListEntry] = Field(alias="ipAccessList")
    created_by: ApiKeyCreator | None = Field(default=None, alias="createdBy")


def _name(value: str | None) -> str | None:
    if value is None:
        return None
    if not value.strip():
        raise ValueError("must not be blank")
    return value.strip()


class ApiKeyPostRequest(WireRequest):
    name: str = Field(min_length=1, max_length=255)
    expire_at: OptionalUtcDateTime = Field(default=None, alias="expireAt")
    state: KeyState = "enabled"
    hash_data: ApiKeyHashData | None = Field(default=None, alias="hashData")
    roles: list[LegacyRole] | None = Field(default=None, json_schema_extra={"deprecated": True})
    assigned_role_ids: list[uuid.UUID] | None = Field(
        default=None, alias="assignedRoleIds", max_length=MAX_LIST_ITEMS
    )
    ip_access_list: list[IpAccessListEntry] | None = Field(
        default=None, alias="ipAccessList", max_length=MAX_LIST_ITEMS
    )

    _check_name = field_validator("name")(_name)


class ApiKeyPostResponse(Wire):
    key: ApiKey
    key_id: str | None = Field(default=None, alias="keyId")
    key_secret: str | None = Field(default=None, alias="keySecret")


class ApiKeyPatchRequest(WireRequest):
    """Absent fields are left as they are; ``"expireAt": null`` clears the expiry."""

    name: str | None = Field(default=None, min_length=1, max_length=255)
    roles: list[LegacyRole] | None = Field(default=None, json_schema_extra={"deprecated": True})
    assigned_role_ids: list[uuid.UUID] | None = Field(
        default=None, alias="assignedRoleIds", max_length=MAX_LIST_ITEMS
    )
    expire_at: OptionalUtcDateTime = Field(default=None, alias="expireAt")
    state: KeyState | None = None
    ip_access_list: list[IpAccessListEntry] | None = Field(default=None, alias="ipAccessList")

    _check_name = field_validator("name")(_name)

    @field_validator("name", "state", "roles", "assigned_role_ids", "ip_access_list", mode="wrap")
    @classmethod
    def _not_null(cls, value: object, handler: object) -> object:
        if value is None:
            raise ValueError("must not be null")
        return handler(value)  # type: ignore[operator]
