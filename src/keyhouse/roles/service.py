"""Role business rules: seeding, lookup, and resolving role ids for an actor."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from keyhouse.api.errors import BadRequest, NotFound
from keyhouse.auth.permissions import LEGACY_ROLE_TO_SYSTEM, SYSTEM_ROLES, SYSTEM_TO_LEGACY_ROLE
from keyhouse.auth.policy import Policy
from keyhouse.auth.principal import Principal, RoleRef
from keyhouse.models import Role, RoleAssignment


def seed_system_roles(session: Session, organization_id: uuid.UUID) -> dict[str, Role]:
    roles = {}
    for system_role in SYSTEM_ROLES:
        role = Role(
            organization_id=organization_id,
            name=system_role.name,
            type="system",
            policies=system_role.policies(organization_id),
        )
        session.add(role)
        roles[system_role.name] = role
    session.flush()
    return roles


def list_roles(session: Session, principal: Principal) -> Sequence[Role]:
    return session.scalars(
        select(Role)
        .where(Role.organization_id == principal.organization_id)
        .order_by(Role.type.desc(), Role.created_at, Role.name)
    ).all()


def get_role(session: Session, principal: Principal, role_id: uuid.UUID) -> Role:
    role = session.get(Role, role_id)
    if role is None or role.organization_id != principal.organization_id:
        raise NotFound("Role not found")
    return role


def role_actors(session: Session, role_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, list[str]]:
    actors: dict[uuid.UUID, list[str]] = {}
    ids = list(role_ids)
    if not ids:
        return actors
    rows = session.execute(
        select(RoleAssignment.role_id, RoleAssignment.actor_type, RoleAssignment.actor_id)
        .where(RoleAssignment.role_id.in_(ids))
        .order_by(RoleAssignment.actor_type, RoleAssignment.actor_id)
    )
    for role_id, actor_type, actor_id in rows:
        actors.setdefault(role_id, []).append(f"{actor_type}/{actor_id}")
    return actors


def actor_roles(
    session: Session, organization_id: uuid.UUID, actor_type: str, actor_id: uuid.UUID
) -> list[tuple[RoleRef, list[Policy]]]:
    """The roles held by one actor in one organization, with their parsed policies."""
    rows = session.execute(
        select(Role.id, Role.name, Role.type, Role.policies)
        .join(RoleAssignment, RoleAssignment.role_id == Role.id)
        .where(
            RoleAssignment.actor_type == actor_type,
            RoleAssignment.actor_id == actor_id,
            Role.organization_id == organization_id,
        )
        .order_by(Role.name)
    )
    return [
        (RoleRef(role_id, name, type_), [Policy.from_json(p) for p in policies])
        for role_id, name, type_, policies in rows
    ]


def resolve_role_ids(
    session: Session,
    organization_id: uuid.UUID,
    *,
    legacy_roles: Sequence[str] | None,
    role_ids: Sequence[uuid.UUID] | None,
) -> list[Role]:
    """Roles named by legacy ``roles`` and/or ``assignedRoleIds``, all in this organization."""
    wanted: list[Role] = []
    if legacy_roles:
        names = [LEGACY_ROLE_TO_SYSTEM[name] for name in dict.fromkeys(legacy_roles)]
        by_name = {
            role.name: role
            for role in session.scalars(
                select(Role).where(
                    Role.organization_id == organization_id,
                    Role.type == "system",
                    Role.name.in_(names),
                )
            )
        }
        wanted.extend(by_name[name] for name in names)
    if role_ids:
        unique_ids = list(dict.fromkeys(role_ids))
        found = {
            role.id: role
            for role in session.scalars(
                select(Role).where(Role.organization_id == organization_id, Role.id.in_(unique_ids))
            )
        }
        for role_id in unique_ids:
            if role_id not in found:
                raise BadRequest(f"assignedRoleIds: role {role_id} does not exist")
            wanted.append(found[role_id])
    return list({role.id: role for role in wanted}.values())


def assign_roles(
    session: Session,
    actor_type: str,
    actor_id: uuid.UUID,
    roles: Iterable[Role],
    *,
    organization_id: uuid.UUID,
) -> None:
    """Replace the actor's role assignments in this organization with ``roles``."""
    in_organization = select(Role.id).where(Role.organization_id == organization_id)
    session.execute(
        delete(RoleAssignment).where(
            RoleAssignment.actor_type == actor_type,
            RoleAssignment.actor_id == actor_id,
            RoleAssignment.role_id.in_(in_organization),
        )
    )
    for role in roles:
        session.add(RoleAssignment(role_id=role.id, actor_type=actor_type, actor_id=actor_id))
    session.flush()


def unassign_actor(session: Session, actor_type: str, actor_id: uuid.UUID) -> None:
    """Drop every role assignment of an actor that is going away."""
    session.execute(
        delete(RoleAssignment).where(
            RoleAssignment.actor_type == actor_type, RoleAssignment.actor_id == actor_id
        )
    )


def legacy_names(roles: Iterable[RoleRef | Role]) -> list[str]:
    """The deprecated ``roles`` field: the legacy names of the system roles held."""
    return sorted(
        SYSTEM_TO_LEGACY_ROLE[r.name]
        for r in roles
        if r.type == "system" and r.name in SYSTEM_TO_LEGACY_ROLE
    )
