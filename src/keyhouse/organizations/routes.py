from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Response
from pydantic import BaseModel, ConfigDict, Field

from keyhouse.api.envelope import Envelope, ok
from keyhouse.auth.dependencies import AUTHENTICATED, Context, Require, RequireInOrganization
from keyhouse.auth.permissions import Permission, organization_resource
from keyhouse.organizations import service
from keyhouse.organizations.schemas import Organization, OrganizationPatchRequest

router = APIRouter(tags=["Organization"])


@router.get(
    "/organizations",
    operation_id="organizationGetList",
    response_model=Envelope[list[Organization]],
)
def list_organizations(
    ctx: Annotated[Context, Depends(Require(AUTHENTICATED))],
) -> Response:
    """The organizations the caller can view: for a key, its own (if it may view it)."""
    principal = ctx.principal
    if not principal.can(
        Permission.ORGANIZATION_VIEW, organization_resource(principal.organization_id)
    ):
        return ok([])
    return ok([Organization.from_row(service.get_organization(ctx.session, principal))])


@router.get(
    "/organizations/{organizationId}",
    operation_id="organizationGet",
    response_model=Envelope[Organization],
)
def get_organization(
    ctx: Annotated[Context, Depends(RequireInOrganization(Permission.ORGANIZATION_VIEW))],
) -> Response:
    return ok(Organization.from_row(service.get_organization(ctx.session, ctx.principal)))


@router.patch(
    "/organizations/{organizationId}",
    operation_id="organizationUpdate",
    response_model=Envelope[Organization],
)
def update_organization(
    ctx: Annotated[Context, Depends(RequireInOrganization(Permission.ORGANIZATION_MANAGE))],
    body: Annotated[OrganizationPatchRequest, Body()],
) -> Response:
    organization = service.update_organization(
        ctx.session,
        ctx.principal,
        name=body.name,
        enable_core_dumps=body.enable_core_dumps,
        private_endpoints_given="private_endpoints" in body.model_fields_set,
    )
    return ok(Organization.from_row(organization))


class WhoAmI(BaseModel):
    """Keyhouse follows the newer official spec's ``GET /v1/whoami`` for API keys."""

    model_config = ConfigDict(populate_by_name=True)

    actor_type: str = Field(alias="actorType")
    key_id: str | None = Field(default=None, alias="keyId")
    name: str
    organization_id: str = Field(alias="organizationId")


@router.get("/whoami", operation_id="whoami", response_model=Envelope[WhoAmI], tags=["Auth"])
def whoami(ctx: Annotated[Context, Depends(Require(AUTHENTICATED))]) -> Response:
    principal = ctx.principal
    return ok(
        WhoAmI(
            actor_type=principal.actor_type,
            key_id=principal.key_id,
            name=principal.name,
            organization_id=str(principal.organization_id),
        )
    )
