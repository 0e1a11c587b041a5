"""Wire models of the activity log (official ``Activity`` schema)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field

from keyhouse.api.wire import Wire
from keyhouse.models import Activity as ActivityRow


class Activity(Wire):
    id: str
    created_at: dt.datetime = Field(alias="createdAt")
    type: str = Field(description="Type of the activity.")
    actor_type: Literal["user", "support", "system", "api"] = Field(alias="actorType")
    actor_id: str | None = Field(default=None, alias="actorId")
    actor_details: str | None = Field(default=None, alias="actorDetails")
    actor_ip_address: str | None = Field(default=None, alias="actorIpAddress")
    organization_id: str = Field(alias="organizationId")
    service_id: str | None = Field(default=None, alias="serviceId")
    user_agent: str | None = Field(default=None, alias="userAgent")
    target_key_id: str | None = Field(default=None, alias="targetKeyId")
    key_update_type: str | None = Field(default=None, alias="keyUpdateType")
    details: str | None = Field(default=None, description="Keyhouse extension: what changed.")

    @classmethod
    def from_row(cls, row: ActivityRow) -> Activity:
        return cls(
            id=str(row.id),
            created_at=row.created_at,
            type=row.type,
            actor_type=row.actor_type,
            actor_id=row.actor_id,
            actor_details=row.actor_details,
            actor_ip_address=row.actor_ip_address,
            organization_id=str(row.organization_id),
            service_id=row.service_id,
            user_agent=row.user_agent,
            target_key_id=row.target_key_id,
            key_update_type=row.key_update_type,
            details=row.details,
        )
