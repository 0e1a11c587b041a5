"""The official roles routes (``/v1/organizations/{organizationId}/roles``): system and custom
roles with their ALLOW/DENY policies."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Path, Response
from sqlalchemy.orm import Session

from keyhouse.api.envelope import EmptyEnvelope, Envelope, ok
from keyhouse.auth.permissions import Permission
from keyhouse.auth.principal import Principal
from keyhouse.context import Context, RequireInOrganization
from keyhouse.models import Role
from keyhouse.roles import service
from keyhouse.roles.schemas import RBACRole, RoleCreateRequest, RoleUpdateRequest

router = APIRouter(prefix="/organizations/{organizationId}/roles", tags=["Role Management"])

CanView = Annotated[Context, Depends(RequireInOrganization(Permission.ORGANIZATION_VIEW))]
CanManage = Annotated[Context, Depends(RequireInOrganization(Permission.ORGANIZATION_MANAGE))]
RoleId = Annotated[uuid.UUID, Path(alias="roleId", description="ID of the role.")]


def _view(session: Session, role: Role) -> RBACRole:
    return RBACRole.from_row(role, service.role_actors(session, [role.id]).get(role.id, []))


@router.get("", operation_id="organizationRolesGetList", response_model=Envelope[list[RBACRole]])
async def list_roles(ctx: CanView) -> Response:
    def roles(session: Session, principal: Principal) -> list[RBACRole]:
        rows = service.list_roles(session, principal)
        actors = service.role_actors(session, [role.id for role in rows])
        return [RBACRole.from_row(role, actors.get(role.id, [])) for role in rows]

    return ok(await ctx.run(roles))


@router.post("", operation_id="organizationRolePost", response_model=Envelope[RBACRole])
async def create_role(ctx: CanManage, body: Annotated[RoleCreateRequest, Body()]) -> Response:
    def create(session: Session, principal: Principal) -> RBACRole:
        role = service.create_role(
            session, principal, name=body.name, actors=body.actors, policies=body.policies
        )
        return _view(session, role)

    return ok(await ctx.run(create))


@router.get("/{roleId}", operation_id="organizationRoleGet", response_model=Envelope[RBACRole])
async def get_role(ctx: CanView, role_id: RoleId) -> Response:
    def role(session: Session, principal: Principal) -> RBACRole:
        return _view(session, service.get_role(session, principal, role_id))

    return ok(await ctx.run(role))


@router.patch("/{roleId}", operation_id="organizationRolePatch", response_model=Envelope[RBACRole])
async def update_role(
    ctx: CanManage, role_id: RoleId, body: Annotated[RoleUpdateRequest, Body()]
) -> Response:
    def update(session: Session, principal: Principal) -> RBACRole:
        role = service.update_role(
            session,
            principal,
            role_id,
            name=body.name,
            actors=body.actors,
            policies=body.policies,
        )
        return _view(session, role)

    return ok(await ctx.run(update))


@router.delete("/{roleId}", operation_id="organizationRoleDelete", response_model=EmptyEnvelope)
async def delete_role(ctx: CanManage, role_id: RoleId) -> Response:
    def delete(session: Session, principal: Principal) -> None:
        service.delete_role(session, principal, role_id)

    await ctx.run(delete)
    return ok()
