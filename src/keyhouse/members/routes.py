"""The official members routes (``/v1/organizations/{organizationId}/members``): list, get,
change a member's roles, remove."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Path, Response
from sqlalchemy.orm import Session

from keyhouse.api.envelope import EmptyEnvelope, Envelope, ok
from keyhouse.api_keys.schemas import AssignedRole
from keyhouse.auth.permissions import Permission
from keyhouse.auth.principal import Principal
from keyhouse.context import Context, RequireInOrganization
from keyhouse.members import service
from keyhouse.members.schemas import Member, MemberPatchRequest
from keyhouse.roles.service import legacy_member_role

router = APIRouter(prefix="/organizations/{organizationId}/members", tags=["User management"])

CanView = Annotated[Context, Depends(RequireInOrganization(Permission.ORGANIZATION_VIEW))]
CanManage = Annotated[Context, Depends(RequireInOrganization(Permission.ORGANIZATION_MANAGE))]
UserId = Annotated[uuid.UUID, Path(alias="userId", description="ID of the user.")]


def _view(member: service.MemberRecord) -> Member:
    return Member(
        user_id=str(member.user.id),
        name=member.user.name,
        email=member.user.email,
        role=legacy_member_role(member.roles),
        joined_at=member.membership.joined_at,
        assigned_roles=[AssignedRole.from_ref(r) for r in member.roles],
    )


@router.get("", operation_id="memberGetList", response_model=Envelope[list[Member]])
async def list_members(ctx: CanView) -> Response:
    def members(session: Session, principal: Principal) -> list[Member]:
        return [_view(member) for member in service.list_members(session, principal)]

    return ok(await ctx.run(members))


@router.get("/{userId}", operation_id="memberGet", response_model=Envelope[Member])
async def get_member(ctx: CanView, user_id: UserId) -> Response:
    def member(session: Session, principal: Principal) -> Member:
        return _view(service.get_member(session, principal, user_id))

    return ok(await ctx.run(member))


@router.patch("/{userId}", operation_id="memberUpdate", response_model=Envelope[Member])
async def update_member(
    ctx: CanManage, user_id: UserId, body: Annotated[MemberPatchRequest, Body()]
) -> Response:
    def update(session: Session, principal: Principal) -> Member:
        member = service.update_member_roles(
            session,
            principal,
            user_id,
            legacy_role=body.role,
            role_ids=body.assigned_role_ids,
        )
        return _view(member)

    return ok(await ctx.run(update))


@router.delete("/{userId}", operation_id="memberDelete", response_model=EmptyEnvelope)
async def remove_member(ctx: CanManage, user_id: UserId) -> Response:
    def delete(session: Session, principal: Principal) -> None:
        service.remove_member(session, principal, user_id)

    await ctx.run(delete)
    return ok()
