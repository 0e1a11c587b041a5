"""Member business rules. An organization always keeps at least one admin (a member holding
the system Admin role); removing a member revokes their console sessions at once, while the API
keys they created stay (they belong to the organization) and keep showing their creator."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from keyhouse.activities.service import record
from keyhouse.api.errors import Conflict, NotFound
from keyhouse.auth.authorize import require
from keyhouse.auth.permissions import ADMIN, Permission
from keyhouse.auth.principal import Principal, RoleRef
from keyhouse.models import ConsoleSession, Membership, User
from keyhouse.roles.service import (
    Actor,
    access_of,
    assign_roles,
    check_access_change,
    holders_of,
    resolve_role_ids,
    roles_by_actor,
    system_role,
)

LAST_ADMIN = "An organization must keep at least one admin: make another member Admin first"


@dataclass(frozen=True)
class MemberRecord:
    user: User
    membership: Membership
    roles: list[RoleRef]


def list_members(session: Session, principal: Principal) -> list[MemberRecord]:
    require(principal, Permission.ORGANIZATION_VIEW)
    rows = session.execute(
        select(User, Membership)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.organization_id == principal.organization_id)
        .order_by(Membership.joined_at, User.email)
    ).all()
    roles = roles_by_actor(
        session, "user", [user.id for user, _ in rows], organization_id=principal.organization_id
    )
    return [MemberRecord(user, membership, roles[user.id]) for user, membership in rows]


def _find_member(session: Session, principal: Principal, user_id: uuid.UUID) -> MemberRecord:
    membership = session.get(Membership, (principal.organization_id, user_id))
    user = session.get(User, user_id) if membership else None
    if membership is None or user is None:
        raise NotFound("Member not found")
    roles = roles_by_actor(session, "user", [user_id], organization_id=principal.organization_id)[
        user_id
    ]
    return MemberRecord(user, membership, roles)


def get_member(session: Session, principal: Principal, user_id: uuid.UUID) -> MemberRecord:
    member = _find_member(session, principal, user_id)
    require(principal, Permission.ORGANIZATION_VIEW)
    return member


def _ensure_another_admin(session: Session, organization_id: uuid.UUID, user_id: uuid.UUID) -> None:
    admin = system_role(session, organization_id, ADMIN)
    admins = holders_of(session, admin.id, "user")
    if user_id in admins and not admins - {user_id}:
        raise Conflict(LAST_ADMIN)


def update_member_roles(
    session: Session,
    principal: Principal,
    user_id: uuid.UUID,
    *,
    legacy_role: str | None,
    role_ids: Sequence[uuid.UUID] | None,
) -> MemberRecord:
    """Replace the member's roles; an empty list leaves them a member with no permission."""
    member = _find_member(session, principal, user_id)
    require(principal, Permission.ORGANIZATION_MANAGE)
    if legacy_role is None and role_ids is None:
        return member
    org = principal.organization_id
    roles = resolve_role_ids(
        session, org, legacy_roles=[legacy_role] if legacy_role else None, role_ids=role_ids
    )
    # Whoever changes a member's roles must hold what the member holds, before and after.
    actor: Actor = ("user", user_id)
    before = access_of(session, org, [actor])
    check_access_change(principal, before, before)
    if ADMIN not in {role.name for role in roles if role.type == "system"}:
        _ensure_another_admin(session, org, user_id)
    assign_roles(session, "user", user_id, roles, organization_id=org)
    check_access_change(principal, before, access_of(session, org, [actor]))
    record(
        session,
        principal,
        "organization_member_update_roles",
        details=f"{member.user.email}: {', '.join(sorted(role.name for role in roles)) or '-'}",
    )
    return _find_member(session, principal, user_id)


def remove_member(session: Session, principal: Principal, user_id: uuid.UUID) -> None:
    member = _find_member(session, principal, user_id)
    require(principal, Permission.ORGANIZATION_MANAGE)
    org = principal.organization_id
    before = access_of(session, org, [("user", user_id)])
    check_access_change(principal, before, {})
    _ensure_another_admin(session, org, user_id)
    assign_roles(session, "user", user_id, [], organization_id=org)
    session.delete(member.membership)
    revoke_console_sessions(session, user_id)
    record(session, principal, "organization_member_delete", details=member.user.email)
    session.flush()


def revoke_console_sessions(session: Session, user_id: uuid.UUID) -> None:
    """Sign the user out everywhere, at once (sessions are checked server-side)."""
    session.execute(delete(ConsoleSession).where(ConsoleSession.user_id == user_id))
