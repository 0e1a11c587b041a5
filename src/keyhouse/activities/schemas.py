"""Wire models of the activity log (official ``Activity`` schema)."""

from __future__ import annotations

import datetime as dt
from typing import Literal, get_args

from pydantic import Field

from keyhouse.api.wire import Wire
from keyhouse.models import Activity as ActivityRow

# The official enum. Keyhouse's own types (custom role changes) are listed only on request
# (``extensions=true``), so a client that reads ``type`` as this closed enum never meets them.
ActivityType = Literal[
    "create_organization",
    "organization_update_name",
    "transfer_service_in",
    "transfer_service_out",
    "save_payment_method",
    "marketplace_subscription",
    "migrate_marketplace_billing_details_in",
    "migrate_marketplace_billing_details_out",
    "organization_update_tier",
    "organization_invite_create",
    "organization_invite_delete",
    "organization_member_join",
    "organization_member_add",
    "organization_member_leave",
    "organization_member_delete",
    "organization_member_update_role",
    "organization_member_update_roles",
    "organization_member_update_mfa_method",
    "organization_saml_connection_create",
    "organization_saml_connection_update",
    "user_login",
    "user_login_failed",
    "user_logout",
    "key_create",
    "key_delete",
    "openapi_key_update",
    "service_create",
    "service_start",
    "service_stop",
    "service_awaken",
    "service_idle",
    "service_running",
    "service_partially_running",
    "service_delete",
    "service_update_name",
    "service_update_ip_access_list",
    "service_update_autoscaling_memory",
    "service_update_autoscaling_idling",
    "service_update_password",
    "service_update_autoscaling_replicas",
    "service_update_max_allowable_replicas",
    "service_update_backup_configuration",
    "service_update_snapshot_configuration",
    "service_restore_backup",
    "service_update_release_channel",
    "service_update_gpt_usage_consent",
    "service_update_private_endpoints",
    "service_import_to_organization",
    "service_export_from_organization",
    "service_maintenance_start",
    "service_maintenance_end",
    "service_update_core_dump",
    "backup_delete",
]
OFFICIAL_TYPES = frozenset(get_args(ActivityType))
EXTENSION_TYPES = frozenset({"role_create", "role_update", "role_delete"})


class Activity(Wire):
    id: str
    created_at: dt.datetime = Field(alias="createdAt")
    type: ActivityType = Field(description="Type of the activity.")
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
        # Built from stored rows without validation: an extension type is shown as stored.
        return cls.model_construct(
            id=str(row.id),
            created_at=row.created_at,
            type=row.type,  # type: ignore[arg-type]
            actor_type=row.actor_type,  # type: ignore[arg-type]
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
