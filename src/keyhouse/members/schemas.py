"""Wire models (official ``Member`` and ``MemberPatchRequest``)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Literal

from pydantic import Field

from keyhouse.api.wire import MAX_LIST_ITEMS, Wire, WireRequest
from keyhouse.api_keys.schemas import AssignedRole

LegacyMemberRole = Literal["admin", "developer"]


class Member(Wire):
    user_id: str = Field(alias="userId")
    name: str
    email: str
    role: LegacyMemberRole | None = Field(default=None, json_schema_extra={"deprecated": True})
    joined_at: dt.datetime = Field(alias="joinedAt")
    assigned_roles: list[AssignedRole] = Field(alias="assignedRoles")


class MemberPatchRequest(WireRequest):
    role: LegacyMemberRole | None = Field(default=None, json_schema_extra={"deprecated": True})
    assigned_role_ids: list[uuid.UUID] | None = Field(
        default=None, alias="assignedRoleIds", max_length=MAX_LIST_ITEMS
    )
