"""The official invitations routes (``/v1/organizations/{organizationId}/invitations``)."""

from __future__ import annotations

import uuid
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Body, Depends, Path, Request, Response
from sqlalchemy.orm import Session

from keyhouse import mail
from keyhouse.api.envelope import EmptyEnvelope, Envelope, ok
from keyhouse.api_keys.schemas import AssignedRole
from keyhouse.auth.permissions import Permission
from keyhouse.auth.principal import Principal
from keyhouse.context import Context, RequireInOrganization
from keyhouse.invitations import service
from keyhouse.invitations.schemas import Invitation, InvitationPostRequest
from keyhouse.models import Invitation as InvitationRow
from keyhouse.models import Organization
from keyhouse.roles.service import legacy_member_role
from keyhouse.state import app_state

router = APIRouter(prefix="/organizations/{organizationId}/invitations", tags=["User management"])

CanView = Annotated[Context, Depends(RequireInOrganization(Permission.ORGANIZATION_VIEW))]
CanManage = Annotated[Context, Depends(RequireInOrganization(Permission.ORGANIZATION_MANAGE))]
InvitationId = Annotated[uuid.UUID, Path(alias="invitationId", description="ID of the invitation.")]


def _view(session: Session, row: InvitationRow, accept_url: str | None = None) -> Invitation:
    roles = service.roles_of(session, row)
    return Invitation(
        role=legacy_member_role(roles),
        id=row.id,
        email=row.email,
        created_at=row.created_at,
        expire_at=row.expire_at,
        assigned_roles=[AssignedRole.from_ref(r) for r in roles],
        accept_url=accept_url,
    )


@router.get("", operation_id="invitationGetList", response_model=Envelope[list[Invitation]])
async def list_invitations(ctx: CanView) -> Response:
    def invitations(session: Session, principal: Principal) -> list[Invitation]:
        return [_view(session, row) for row in service.list_invitations(session, principal)]

    return ok(await ctx.run(invitations))


@router.post("", operation_id="invitationCreate", response_model=Envelope[Invitation])
async def create_invitation(
    request: Request, ctx: CanManage, body: Annotated[InvitationPostRequest, Body()]
) -> Response:
    state = app_state(request)
    settings = state.settings
    base_url = (settings.public_url or str(request.base_url)).rstrip("/")

    def create(session: Session, principal: Principal) -> Invitation:
        created = service.create_invitation(
            session,
            principal,
            email=body.email,
            legacy_role=body.role,
            role_ids=body.assigned_role_ids,
            pepper=state.pepper,
            ttl_days=settings.invitation_ttl_days,
        )
        link = f"{base_url}{service.ACCEPT_PATH}?{urlencode({'token': created.token})}"
        if settings.smtp_url is None:
            return _view(session, created.invitation, accept_url=link)
        organization = session.get(Organization, principal.organization_id)
        name = organization.name if organization else "an organization"
        # Sent before the commit: if the mail server refuses, no invitation is left behind.
        mail.send(
            settings.smtp_url.get_secret_value(),
            sender=settings.smtp_from,
            to=created.invitation.email,
            subject=f"You are invited to {name} on Keyhouse",
            body=(
                f"You have been invited to join {name} on Keyhouse.\n\n"
                f"Accept the invitation: {link}\n\n"
                f"The link works once and expires on {created.invitation.expire_at:%Y-%m-%d}.\n"
            ),
        )
        return _view(session, created.invitation)

    return ok(await ctx.run(create))


@router.get("/{invitationId}", operation_id="invitationGet", response_model=Envelope[Invitation])
async def get_invitation(ctx: CanView, invitation_id: InvitationId) -> Response:
    def invitation(session: Session, principal: Principal) -> Invitation:
        return _view(session, service.get_invitation(session, principal, invitation_id))

    return ok(await ctx.run(invitation))


@router.delete("/{invitationId}", operation_id="invitationDelete", response_model=EmptyEnvelope)
async def delete_invitation(ctx: CanManage, invitation_id: InvitationId) -> Response:
    def delete(session: Session, principal: Principal) -> None:
        service.delete_invitation(session, principal, invitation_id)

    await ctx.run(delete)
    return ok()
