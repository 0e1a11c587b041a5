"""Wire models (official ``Organization`` and ``OrganizationPatchRequest``)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import Field, field_validator

from keyhouse.api.wire import Wire, WireRequest
from keyhouse.models import Organization as OrganizationRow


class Organization(Wire):
    id: str
    created_at: dt.datetime = Field(alias="createdAt")
    name: str
    private_endpoints: list[dict[str, Any]] = Field(default_factory=list, alias="privateEndpoints")
    byoc_config: list[dict[str, Any]] = Field(default_factory=list, alias="byocConfig")
    enable_core_dumps: bool = Field(alias="enableCoreDumps")

    @classmethod
    def from_row(cls, row: OrganizationRow) -> Organization:
        return cls(
            id=str(row.id),
            created_at=row.created_at,
            name=row.name,
            enable_core_dumps=row.enable_core_dumps,
        )


class OrganizationPatchRequest(WireRequest):
    name: str | None = Field(default=None, min_length=1, max_length=255)
    private_endpoints: dict[str, Any] | None = Field(default=None, alias="privateEndpoints")
    enable_core_dumps: bool | None = Field(default=None, alias="enableCoreDumps")

    @field_validator("name")
    @classmethod
    def _strip(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be blank")
        return value.strip() if value is not None else None


class OrganizationQuota(Wire):
    """A limit Keyhouse enforces on an organization (the official ``OrganizationQuota``)."""

    quota_code: Literal[
        "services-per-organization", "postgres-services-per-organization", "replicas-per-warehouse"
    ] = Field(alias="quotaCode")
    name: str
    description: str
    scope: Literal["organization", "warehouse"]
    value: int = Field(ge=0)
    usage: int | None = Field(default=None, ge=0)
    adjustable: bool
