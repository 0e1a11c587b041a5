"""The official organization routes (list, get, update, quotas) and ``whoami``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Path, Request, Response
from pydantic import Field
from sqlalchemy.orm import Session

from keyhouse.api.envelope import Envelope, ok
from keyhouse.api.wire import Wire
from keyhouse.auth.permissions import Permission
from keyhouse.auth.principal import Principal
from keyhouse.context import AUTHENTICATED, Context, Require, RequireInOrganization
from keyhouse.organizations import service
from keyhouse.organizations.schemas import (
    Organization,
    OrganizationPatchRequest,
    OrganizationQuota,
)
from keyhouse.state import app_state

router = APIRouter(tags=["Organization"])


@router.get(
    "/organizations",
    operation_id="organizationGetList",
    response_model=Envelope[list[Organization]],
)
async def list_organizations(
    ctx: Annotated[Context, Depends(Require(AUTHENTICATED))],
) -> Response:
    """The caller's organization: any valid key may list its own, even one with no role."""

    def visible(session: Session, principal: Principal) -> list[Organization]:
        return [Organization.from_row(service.own_organization(session, principal))]

    return ok(await ctx.run(visible))


@router.get(
    "/organizations/{organizationId}",
    operation_id="organizationGet",
    response_model=Envelope[Organization],
)
async def get_organization(
    ctx: Annotated[Context, Depends(RequireInOrganization(Permission.ORGANIZATION_VIEW))],
) -> Response:
    def get(session: Session, principal: Principal) -> Organization:
        return Organization.from_row(service.get_organization(session, principal))

    return ok(await ctx.run(get))


@router.patch(
    "/organizations/{organizationId}",
    operation_id="organizationUpdate",
    response_model=Envelope[Organization],
)
async def update_organization(
    ctx: Annotated[Context, Depends(RequireInOrganization(Permission.ORGANIZATION_MANAGE))],
    body: Annotated[OrganizationPatchRequest, Body()],
) -> Response:
    def update(session: Session, principal: Principal) -> Organization:
        organization = service.update_organization(
            session,
            principal,
            name=body.name,
            enable_core_dumps=body.enable_core_dumps,
            private_endpoints_given="private_endpoints" in body.model_fields_set,
        )
        return Organization.from_row(organization)

    return ok(await ctx.run(update))


class WhoAmI(Wire):
    """Keyhouse follows the newer official spec's ``GET /v1/whoami`` for API keys."""

    actor_type: str = Field(alias="actorType")
    key_id: str | None = Field(default=None, alias="keyId")
    name: str
    organization_id: str = Field(alias="organizationId")


@router.get("/whoami", operation_id="whoami", response_model=Envelope[WhoAmI], tags=["Auth"])
async def whoami(ctx: Annotated[Context, Depends(Require(AUTHENTICATED))]) -> Response:
    def who(_session: Session, principal: Principal) -> WhoAmI:
        return WhoAmI(
            actor_type=principal.actor_type,
            key_id=principal.key_id,
            name=principal.name,
            organization_id=str(principal.organization_id),
        )

    return ok(await ctx.run(who))


def _quota(found: service.QuotaView) -> OrganizationQuota:
    return OrganizationQuota(
        quota_code=found.code,
        name=found.name,
        description=found.description,
        scope=found.scope,
        value=found.value,
        usage=found.usage,
        adjustable=found.adjustable,
    )


@router.get(
    "/organizations/{organizationId}/quotas",
    operation_id="organizationQuotasGetList",
    response_model=Envelope[list[OrganizationQuota]],
)
async def list_quotas(
    request: Request,
    ctx: Annotated[Context, Depends(RequireInOrganization(Permission.ORGANIZATION_VIEW))],
) -> Response:
    """The quotas Keyhouse enforces on the organization, with current usage where counted."""
    limit = app_state(request).settings.max_services_per_organization

    def listed(session: Session, principal: Principal) -> list[OrganizationQuota]:
        return [_quota(q) for q in service.quotas(session, principal, max_services=limit)]

    return ok(await ctx.run(listed))


@router.get(
    "/organizations/{organizationId}/quotas/{quotaCode}",
    operation_id="organizationQuotaGet",
    response_model=Envelope[OrganizationQuota],
)
async def get_quota(
    request: Request,
    ctx: Annotated[Context, Depends(RequireInOrganization(Permission.ORGANIZATION_VIEW))],
    quota_code: Annotated[str, Path(alias="quotaCode", max_length=64)],
) -> Response:
    """One quota by its code; 404 when Keyhouse does not enforce it on the organization."""
    limit = app_state(request).settings.max_services_per_organization

    def one(session: Session, principal: Principal) -> OrganizationQuota:
        return _quota(service.quota(session, principal, quota_code, max_services=limit))

    return ok(await ctx.run(one))
