from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response

from keyhouse.api.envelope import Envelope, ok
from keyhouse.auth.dependencies import Context, RequireInOrganization
from keyhouse.auth.permissions import Permission
from keyhouse.roles import service
from keyhouse.roles.schemas import RBACRole

router = APIRouter(prefix="/organizations/{organizationId}/roles", tags=["Role Management"])

CanView = Annotated[Context, Depends(RequireInOrganization(Permission.ORGANIZATION_VIEW))]


@router.get("", operation_id="organizationRolesGetList", response_model=Envelope[list[RBACRole]])
def list_roles(ctx: CanView) -> Response:
    roles = service.list_roles(ctx.session, ctx.principal)
    actors = service.role_actors(ctx.session, [role.id for role in roles])
    return ok([RBACRole.from_row(role, actors.get(role.id, [])) for role in roles])


@router.get("/{roleId}", operation_id="organizationRoleGet", response_model=Envelope[RBACRole])
def get_role(ctx: CanView, role_id: Annotated[uuid.UUID, Path(alias="roleId")]) -> Response:
    role = service.get_role(ctx.session, ctx.principal, role_id)
    actors = service.role_actors(ctx.session, [role.id])
    return ok(RBACRole.from_row(role, actors.get(role.id, [])))
