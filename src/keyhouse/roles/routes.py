from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response
from sqlalchemy.orm import Session

from keyhouse.api.envelope import Envelope, ok
from keyhouse.auth.dependencies import Context, RequireInOrganization
from keyhouse.auth.permissions import Permission
from keyhouse.auth.principal import Principal
from keyhouse.roles import service
from keyhouse.roles.schemas import RBACRole

router = APIRouter(prefix="/organizations/{organizationId}/roles", tags=["Role Management"])

CanView = Annotated[Context, Depends(RequireInOrganization(Permission.ORGANIZATION_VIEW))]


@router.get("", operation_id="organizationRolesGetList", response_model=Envelope[list[RBACRole]])
async def list_roles(ctx: CanView) -> Response:
    def roles(session: Session, principal: Principal) -> list[RBACRole]:
        rows = service.list_roles(session, principal)
        actors = service.role_actors(session, [role.id for role in rows])
        return [RBACRole.from_row(role, actors.get(role.id, [])) for role in rows]

    return ok(await ctx.run(roles))


@router.get("/{roleId}", operation_id="organizationRoleGet", response_model=Envelope[RBACRole])
async def get_role(ctx: CanView, role_id: Annotated[uuid.UUID, Path(alias="roleId")]) -> Response:
    def role(session: Session, principal: Principal) -> RBACRole:
        row = service.get_role(session, principal, role_id)
        return RBACRole.from_row(row, service.role_actors(session, [row.id]).get(row.id, []))

    return ok(await ctx.run(role))
