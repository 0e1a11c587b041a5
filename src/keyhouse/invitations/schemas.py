"""Wire models (official ``Invitation`` and ``InvitationPostRequest``).

``acceptUrl`` is a Keyhouse extension, present only in the create response and only when no
SMTP server is configured (otherwise the link is emailed and shown nowhere).
"""

from __future__ import annotations

import datetime as dt
import uuid

from pydantic import Field

from keyhouse.api.wire import MAX_LIST_ITEMS, Wire, WireRequest
from keyhouse.api_keys.schemas import AssignedRole
from keyhouse.members.schemas import LegacyMemberRole


class Invitation(Wire):
    role: LegacyMemberRole | None = Field(default=None, json_schema_extra={"deprecated": True})
    id: uuid.UUID
    email: str
    created_at: dt.datetime = Field(alias="createdAt")
    expire_at: dt.datetime = Field(alias="expireAt")
    assigned_roles: list[AssignedRole] = Field(alias="assignedRoles")
    accept_url: str | None = Field(default=None, alias="acceptUrl")


class InvitationPostRequest(WireRequest):
    email: str = Field(min_length=3, max_length=320)
    role: LegacyMemberRole | None = Field(default=None, json_schema_extra={"deprecated": True})
    assigned_role_ids: list[uuid.UUID] | None = Field(
        default=None, alias="assignedRoleIds", max_length=MAX_LIST_ITEMS
    )
