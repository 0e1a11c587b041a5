"""Invitation business rules.

One open invitation per email per organization (409 otherwise; an expired one is replaced).
The acceptance token carries 256 bits, travels only in the link, and is stored as a peppered
hash; accepting it is single-use (the invitation is deleted) and creates the user, or attaches
an existing one, with the invited roles.
"""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from keyhouse.activities.service import record
from keyhouse.api.errors import Conflict, NotFound
from keyhouse.auth import credentials
from keyhouse.auth.authorize import find_in_organization, require
from keyhouse.auth.permissions import Permission
from keyhouse.auth.principal import Principal, RoleRef
from keyhouse.db import utcnow
from keyhouse.models import Invitation, Membership, Organization, Role, User
from keyhouse.roles.service import (
    assign_roles,
    check_access_change,
    check_grantable,
    policies_of,
    resolve_role_ids,
)
from keyhouse.users.service import get_or_create_user, normalize_email

ACCEPT_PATH = "/console/invitations/accept"


@dataclass(frozen=True)
class CreatedInvitation:
    invitation: Invitation
    token: str


def _new_token() -> str:
    """256 random bits, URL-safe, never starting with "-" (which a command line would take for
    an option: `keyhouse invitations accept TOKEN`)."""
    while True:
        token = secrets.token_urlsafe(32)
        if not token.startswith("-"):
            return token


def _hash(pepper: bytes, token: str) -> str:
    return credentials.hash_value(pepper, token)


def roles_of(session: Session, invitation: Invitation) -> list[RoleRef]:
    roles = _roles(session, invitation)
    return sorted((RoleRef(r.id, r.name, r.type) for r in roles), key=lambda r: r.name)


def _roles(session: Session, invitation: Invitation) -> list[Role]:
    ids = [uuid.UUID(role_id) for role_id in invitation.role_ids]
    return list(
        session.scalars(
            select(Role).where(Role.id.in_(ids), Role.organization_id == invitation.organization_id)
        )
    )


def list_invitations(session: Session, principal: Principal) -> Sequence[Invitation]:
    require(principal, Permission.ORGANIZATION_VIEW)
    return session.scalars(
        select(Invitation)
        .where(Invitation.organization_id == principal.organization_id)
        .order_by(Invitation.created_at, Invitation.email)
    ).all()


def get_invitation(session: Session, principal: Principal, invitation_id: uuid.UUID) -> Invitation:
    invitation = find_in_organization(session, principal, Invitation, invitation_id, "Invitation")
    require(principal, Permission.ORGANIZATION_VIEW)
    return invitation


def create_invitation(
    session: Session,
    principal: Principal,
    *,
    email: str,
    legacy_role: str | None,
    role_ids: Sequence[uuid.UUID] | None,
    pepper: bytes,
    ttl_days: int,
) -> CreatedInvitation:
    require(principal, Permission.ORGANIZATION_MANAGE)
    email = normalize_email(email)
    org = principal.organization_id
    roles = resolve_role_ids(
        session, org, legacy_roles=[legacy_role] if legacy_role else None, role_ids=role_ids
    )
    check_grantable(principal, roles, what="An invitation")
    member = session.scalar(
        select(User.id)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.organization_id == org, User.email == email)
    )
    if member is not None:
        raise Conflict(f"{email} is already a member of this organization")
    now = utcnow()
    existing = session.scalar(
        select(Invitation).where(Invitation.organization_id == org, Invitation.email == email)
    )
    if existing is not None:
        if existing.expire_at > now:
            raise Conflict(f"{email} already has an open invitation to this organization")
        session.delete(existing)
        session.flush()
    token = _new_token()
    invitation = Invitation(
        organization_id=org,
        email=email,
        role_ids=[str(role.id) for role in roles],
        token_hash=_hash(pepper, token),
        created_at=now,
        expire_at=now + dt.timedelta(days=ttl_days),
        created_by_type=principal.actor_type,
        created_by_id=principal.actor_id,
    )
    session.add(invitation)
    session.flush()
    record(session, principal, "organization_invite_create", details=email)
    return CreatedInvitation(invitation, token)


def delete_invitation(session: Session, principal: Principal, invitation_id: uuid.UUID) -> None:
    invitation = find_in_organization(session, principal, Invitation, invitation_id, "Invitation")
    require(principal, Permission.ORGANIZATION_MANAGE)
    # Withdrawing an invitation changes the access someone was offered: the rule applies.
    offered = {("invitation", invitation.id): policies_of(_roles(session, invitation))}
    check_access_change(principal, offered, {})
    record(session, principal, "organization_invite_delete", details=invitation.email)
    session.delete(invitation)
    session.flush()


@dataclass(frozen=True)
class Accepted:
    organization_id: uuid.UUID
    organization_name: str
    user_id: uuid.UUID
    email: str


def find_by_token(session: Session, *, pepper: bytes, token: str) -> Invitation:
    invitation = session.scalar(
        select(Invitation).where(Invitation.token_hash == _hash(pepper, token))
    )
    if invitation is None or invitation.expire_at <= utcnow():
        raise NotFound("This invitation does not exist, was already used, or has expired")
    return invitation


def accept_invitation(
    session: Session, *, pepper: bytes, token: str, name: str, password: str
) -> Accepted:
    invitation = find_by_token(session, pepper=pepper, token=token)
    org = session.get(Organization, invitation.organization_id)
    assert org is not None  # noqa: S101 (cascade deletes invitations with their organization)
    user = get_or_create_user(session, email=invitation.email, name=name, password=password)
    if session.get(Membership, (org.id, user.id)) is not None:
        raise Conflict(f"{user.email} is already a member of this organization")
    roles = _roles(session, invitation)
    session.add(Membership(organization_id=org.id, user_id=user.id))
    assign_roles(session, "user", user.id, roles, organization_id=org.id)
    session.delete(invitation)
    joined = Principal(actor_type="user", actor_id=user.id, organization_id=org.id, name=user.email)
    record(session, joined, "organization_member_join", details=user.email)
    session.flush()
    return Accepted(org.id, org.name, user.id, user.email)
