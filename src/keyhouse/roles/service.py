"""Role business rules: seeding, custom roles, assignments, and the no-escalation check."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from keyhouse.activities.service import record
from keyhouse.api.errors import BadRequest, Conflict, Forbidden, NotFound
from keyhouse.auth.permissions import (
    LEGACY_ROLE_TO_SYSTEM,
    SYSTEM_ROLES,
    SYSTEM_TO_LEGACY_ROLE,
    Permission,
)
from keyhouse.auth.policy import Policy, exceeding_grants
from keyhouse.auth.principal import Principal, RoleRef
from keyhouse.db import utcnow
from keyhouse.models import ROLE_ASSIGNMENTS, ROLES, ApiKey, Membership, Role, RoleAssignment
from keyhouse.roles.schemas import RBACPolicyCreateRequest

KNOWN_PERMISSIONS = frozenset(str(p) for p in Permission)
_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_INSTANCE = re.compile(rf"^instance/(\*|{_UUID})$")
_ORGANIZATION = re.compile(rf"^organization/({_UUID})$")
_ACTOR = re.compile(rf"^(user|apiKey)/({_UUID})$")


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


def roles_by_actor(
    session: Session,
    actor_type: str,
    actor_ids: Sequence[uuid.UUID],
    *,
    organization_id: uuid.UUID | None = None,
) -> dict[uuid.UUID, list[RoleRef]]:
    """The roles each of ``actor_ids`` holds (in one organization, if given), in one query."""
    roles: dict[uuid.UUID, list[RoleRef]] = {actor_id: [] for actor_id in actor_ids}
    if not roles:
        return roles
    query = (
        select(ROLE_ASSIGNMENTS.c.actor_id, ROLES.c.id, ROLES.c.name, ROLES.c.type)
        .join(ROLES, ROLES.c.id == ROLE_ASSIGNMENTS.c.role_id)
        .where(
            ROLE_ASSIGNMENTS.c.actor_type == actor_type,
            ROLE_ASSIGNMENTS.c.actor_id.in_(roles),
        )
        .order_by(ROLES.c.name)
    )
    if organization_id is not None:
        query = query.where(ROLES.c.organization_id == organization_id)
    for actor_id, role_id, name, role_type in session.connection().execute(query):
        roles[actor_id].append(RoleRef(role_id, name, role_type))
    return roles


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


def legacy_member_role(roles: Iterable[RoleRef | Role]) -> str | None:
    """The deprecated ``role`` of a member or invitation: admin, developer, or none."""
    names = [name for name in legacy_names(roles) if name in ("admin", "developer")]
    return names[0] if names else None


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


def check_grantable(principal: Principal, roles: Iterable[Role], *, what: str = "A key") -> None:
    """403 unless every permission ``roles`` allow is one ``principal`` holds itself."""
    granted = [Policy.from_json(p) for role in roles for p in role.policies]
    missing = exceeding_grants(principal.policies, granted)
    if missing:
        permission, resource = missing[0]
        raise Forbidden(
            f"FORBIDDEN: {what} cannot hold permissions its creator does not have "
            f"({permission} on {resource})"
        )


def _check_policies(
    organization_id: uuid.UUID, policies: Sequence[RBACPolicyCreateRequest]
) -> list[dict[str, Any]]:
    checked = []
    for index, policy in enumerate(policies):
        where = f"policies[{index}]"
        for permission in policy.permissions:
            if permission not in KNOWN_PERMISSIONS:
                raise BadRequest(f"{where}.permissions: unknown permission {permission!r}")
        for resource in policy.resources:
            organization = _ORGANIZATION.match(resource)
            if organization:
                if uuid.UUID(organization.group(1)) != organization_id:
                    raise BadRequest(f"{where}.resources: {resource!r} is not this organization")
            elif not _INSTANCE.match(resource):
                raise BadRequest(
                    f"{where}.resources: malformed resource {resource!r} (expected "
                    "organization/<uuid>, instance/<uuid> or instance/*)"
                )
        checked.append(
            {
                "id": str(uuid.uuid4()),
                "allowDeny": policy.allow_deny,
                "permissions": list(dict.fromkeys(policy.permissions)),
                "resources": [r.lower() for r in dict.fromkeys(policy.resources)],
                "tags": policy.tags.model_dump(by_alias=True, exclude_none=True)
                if policy.tags
                else None,
            }
        )
    return checked


def _check_actors(
    session: Session, organization_id: uuid.UUID, actors: Sequence[str]
) -> list[tuple[str, uuid.UUID]]:
    parsed = []
    for actor in dict.fromkeys(actors):
        match = _ACTOR.match(actor)
        if not match:
            raise BadRequest(
                f"actors: malformed actor {actor!r} (expected user/<uuid> or apiKey/<uuid>)"
            )
        kind, actor_id = match.group(1), uuid.UUID(match.group(2))
        if kind == "user":
            exists = session.get(Membership, (organization_id, actor_id)) is not None
        else:
            key = session.get(ApiKey, actor_id)
            exists = key is not None and key.organization_id == organization_id
        if not exists:
            raise BadRequest(f"actors: {actor!r} is not in this organization")
        parsed.append((kind, actor_id))
    return parsed


def _set_actors(session: Session, role: Role, actors: Sequence[tuple[str, uuid.UUID]]) -> None:
    session.execute(delete(RoleAssignment).where(RoleAssignment.role_id == role.id))
    for kind, actor_id in actors:
        session.add(RoleAssignment(role_id=role.id, actor_type=kind, actor_id=actor_id))
    session.flush()


def _check_name(
    session: Session, organization_id: uuid.UUID, name: str, role_id: uuid.UUID | None
) -> str:
    name = name.strip()
    if not name:
        raise BadRequest("name: must not be blank")
    existing = session.scalar(
        select(Role.id).where(Role.organization_id == organization_id, Role.name == name)
    )
    if existing is not None and existing != role_id:
        raise Conflict(f"A role named {name!r} already exists in this organization")
    return name


def create_role(
    session: Session,
    principal: Principal,
    *,
    name: str,
    actors: Sequence[str],
    policies: Sequence[RBACPolicyCreateRequest],
) -> Role:
    org = principal.organization_id
    role = Role(
        organization_id=org,
        name=_check_name(session, org, name, None),
        type="custom",
        policies=_check_policies(org, policies),
    )
    check_grantable(principal, [role], what="A role")
    parsed_actors = _check_actors(session, org, actors)
    session.add(role)
    session.flush()
    _set_actors(session, role, parsed_actors)
    record(session, principal, "role_create", details=f"role {role.id} ({role.name})")
    return role


def _custom(session: Session, principal: Principal, role_id: uuid.UUID) -> Role:
    role = get_role(session, principal, role_id)
    if role.type == "system":
        raise Forbidden(f"FORBIDDEN: {role.name} is a system role; system roles cannot be changed")
    return role


def update_role(
    session: Session,
    principal: Principal,
    role_id: uuid.UUID,
    *,
    name: str | None,
    actors: Sequence[str] | None,
    policies: Sequence[RBACPolicyCreateRequest] | None,
) -> Role:
    org = principal.organization_id
    role = _custom(session, principal, role_id)
    # Whoever changes a role must hold what it grants, before and after the change.
    check_grantable(principal, [role], what="A role")
    if name is not None:
        role.name = _check_name(session, org, name, role.id)
    if policies is not None:
        role.policies = _check_policies(org, policies)
        check_grantable(principal, [role], what="A role")
    if actors is not None:
        _set_actors(session, role, _check_actors(session, org, actors))
    role.updated_at = utcnow()
    session.flush()
    record(session, principal, "role_update", details=f"role {role.id} ({role.name})")
    return role


def delete_role(session: Session, principal: Principal, role_id: uuid.UUID) -> None:
    role = _custom(session, principal, role_id)
    check_grantable(principal, [role], what="A role")
    record(session, principal, "role_delete", details=f"role {role.id} ({role.name})")
    session.delete(role)
    session.flush()


def system_role(session: Session, organization_id: uuid.UUID, name: str) -> Role:
    role = session.scalar(
        select(Role).where(
            Role.organization_id == organization_id, Role.type == "system", Role.name == name
        )
    )
    if role is None:
        raise NotFound(f"System role {name} not found")
    return role


def holders_of(session: Session, role_id: uuid.UUID, actor_type: str) -> set[uuid.UUID]:
    return set(
        session.scalars(
            select(RoleAssignment.actor_id).where(
                RoleAssignment.role_id == role_id, RoleAssignment.actor_type == actor_type
            )
        )
    )
