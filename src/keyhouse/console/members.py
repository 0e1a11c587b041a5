"""The Members page: members, their roles, invitations."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from keyhouse.api.errors import ApiError, BadRequest, Forbidden
from keyhouse.auth.permissions import Permission
from keyhouse.console.web import (
    Acting,
    SignInRequired,
    acting,
    base_url,
    can,
    error_page,
    form_action,
    friendly,
    grantable,
    login_redirect,
    page,
    read_form,
    redirect,
)
from keyhouse.invitations import service as invitations
from keyhouse.members import service as members
from keyhouse.state import app_state

router = APIRouter(prefix="/console")


@dataclass(frozen=True)
class _InvitationView:
    row: Any
    email: str
    roles: list[Any]


def _members_context(session: Session, a: Acting) -> dict[str, Any]:
    open_invitations = [
        _InvitationView(row, row.email, invitations.roles_of(session, row))
        for row in invitations.list_invitations(session, a.principal)
    ]
    return {
        "members": members.list_members(session, a.principal),
        "invitations": open_invitations,
        "grantable": grantable(session, a),
        "can_manage": can(a, Permission.ORGANIZATION_MANAGE),
    }


@router.get("/o/{org_id}/members")
async def members_page(request: Request, org_id: uuid.UUID) -> Response:
    return await page(request, org_id, _members_context, "members.html", "members")


@router.post("/o/{org_id}/members/invite")
async def invite(request: Request, org_id: uuid.UUID) -> Response:
    state = app_state(request)
    try:
        form = await read_form(request)
    except ApiError as error:
        return error_page(request, error)
    email = str(form.get("email") or "")

    def work(session: Session, a: Acting) -> dict[str, Any]:
        try:
            role_id = uuid.UUID(str(form.get("role") or ""))
        except ValueError:
            raise BadRequest("Choose a role") from None
        created = invitations.create_invitation(
            session,
            a.principal,
            email=email,
            legacy_role=None,
            role_ids=[role_id],
            pepper=state.pepper,
            ttl_days=state.settings.invitation_ttl_days,
        )
        link = f"{base_url(request)}{invitations.ACCEPT_PATH}?token={quote(created.token)}"
        if state.settings.smtp_url is not None:
            from keyhouse import mail

            mail.send(
                state.settings.smtp_url.get_secret_value(),
                sender=state.settings.smtp_from,
                to=created.invitation.email,
                subject=f"You are invited to {a.org.name} on Keyhouse",
                body=f"Accept the invitation to {a.org.name}: {link}\n",
            )
            link = ""
        return {"link": link, "email": created.invitation.email}

    try:
        result = await acting(request, org_id, work)
    except SignInRequired:
        return login_redirect(request)
    except ApiError as error:
        return await page(
            request,
            org_id,
            _members_context,
            "members.html",
            "members",
            status=error.status,
            error=friendly(error),
        )
    if not result["link"]:
        return redirect(f"/console/o/{org_id}/members?msg=invited")
    return await page(
        request,
        org_id,
        _members_context,
        "members.html",
        "members",
        accept_url=result["link"],
        invited_email=result["email"],
    )


@router.post("/o/{org_id}/members/{user_id}/roles")
async def change_member_role(request: Request, org_id: uuid.UUID, user_id: uuid.UUID) -> Response:
    def work(session: Session, a: Acting, form: dict[str, Any]) -> None:
        try:
            role_id = uuid.UUID(str(form.get("role") or ""))
        except ValueError:
            raise BadRequest("Choose a role") from None
        members.update_member_roles(
            session, a.principal, user_id, legacy_role=None, role_ids=[role_id]
        )

    return await form_action(
        request, org_id, f"/console/o/{org_id}/members?msg=member-updated", work
    )


@router.get("/o/{org_id}/members/{user_id}/remove")
async def remove_member_page(request: Request, org_id: uuid.UUID, user_id: uuid.UUID) -> Response:
    def work(session: Session, a: Acting) -> dict[str, Any]:
        member = members.get_member(session, a.principal, user_id)
        if not can(a, Permission.ORGANIZATION_MANAGE):
            raise Forbidden("Your role cannot remove members")
        return {
            "title": f"Remove {member.user.email}",
            "warning": (
                f"{member.user.name} loses access to {a.org.name} and is signed out at once. "
                "API keys they created keep working."
            ),
        }

    return await page(
        request,
        org_id,
        work,
        "confirm.html",
        "members",
        action=f"/console/o/{org_id}/members/{user_id}/remove",
        button="Remove member",
        cancel=f"/console/o/{org_id}/members",
    )


@router.post("/o/{org_id}/members/{user_id}/remove")
async def remove_member(request: Request, org_id: uuid.UUID, user_id: uuid.UUID) -> Response:
    def work(session: Session, a: Acting, form: dict[str, Any]) -> None:
        members.remove_member(session, a.principal, user_id)

    return await form_action(
        request, org_id, f"/console/o/{org_id}/members?msg=member-removed", work
    )


@router.post("/o/{org_id}/invitations/{invitation_id}/delete")
async def delete_invitation(
    request: Request, org_id: uuid.UUID, invitation_id: uuid.UUID
) -> Response:
    def work(session: Session, a: Acting, form: dict[str, Any]) -> None:
        invitations.delete_invitation(session, a.principal, invitation_id)

    return await form_action(
        request, org_id, f"/console/o/{org_id}/members?msg=invitation-deleted", work
    )
