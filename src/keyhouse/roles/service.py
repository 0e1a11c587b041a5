"""Role business rules: seeding, custom roles, assignments, and the no-escalation check."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, literal_column, select
from sqlalchemy.orm import Session

from keyhouse.activities.service import record
from keyhouse.api.errors import BadRequest, Conflict, Forbidden, NotFound
from keyhouse.auth.authorize import find_in_organization, require
from keyhouse.auth.permissions import (
    LEGACY_ROLE_TO_SYSTEM,
    SYSTEM_ROLES,
    SYSTEM_TO_LEGACY_ROLE,
    Permission,
    organization_resource,
)
from keyhouse.auth.policy import Policy, escalation, exceeding_grants
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
    require(principal, Permission.ORGANIZATION_VIEW)
    return _roles_of_organization(session, principal)


def _roles_of_organization(session: Session, principal: Principal) -> Sequence[Role]:
    return session.scalars(
        select(Role)
        .where(Role.organization_id == principal.organization_id)
        .order_by(Role.type.desc(), Role.created_at, Role.name)
    ).all()


def get_role(session: Session, principal: Principal, role_id: uuid.UUID) -> Role:
    role = find_in_organization(session, principal, Role, role_id, "Role")
    require(principal, Permission.ORGANIZATION_VIEW)
    return role


def grantable_roles(session: Session, principal: Principal) -> list[Role]:
    """The roles ``principal`` may give a key, a member or an invitation (those granting
    nothing it lacks), for the console's forms: listing them needs no view permission, as
    the caller holds all they grant."""
    return [
        role
        for role in _roles_of_organization(session, principal)
        if not exceeding_grants(principal.policies, policies_of([role]))
    ]


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


@dataclass(frozen=True)
class HeldRole:
    ref: RoleRef
    policies_json: list[dict[str, Any]]

    def policies(self) -> list[Policy]:
        return [Policy.from_json(p) for p in self.policies_json]


def held_roles(
    session: Session,
    actor_type: str,
    actor_ids: Iterable[uuid.UUID],
    *,
    organization_id: uuid.UUID | None = None,
    with_policies: bool = True,
) -> dict[uuid.UUID, list[HeldRole]]:
    """The roles each actor holds (in one organization, if given), by name: the one query for
    the roles of actors, used by key and member views, principals and the no-escalation rule.
    Views need no policies (``with_policies=False`` does not read them)."""
    held: dict[uuid.UUID, list[HeldRole]] = {actor_id: [] for actor_id in actor_ids}
    if not held:
        return held
    policies_column = ROLES.c.policies if with_policies else literal_column("NULL")
    query = (
        select(ROLE_ASSIGNMENTS.c.actor_id, ROLES.c.id, ROLES.c.name, ROLES.c.type, policies_column)
        .join(ROLES, ROLES.c.id == ROLE_ASSIGNMENTS.c.role_id)
        .where(
            ROLE_ASSIGNMENTS.c.actor_type == actor_type,
            ROLE_ASSIGNMENTS.c.actor_id.in_(held),
        )
        .order_by(ROLES.c.name)
    )
    if organization_id is not None:
        query = query.where(ROLES.c.organization_id == organization_id)
    for actor_id, role_id, name, role_type, policies in session.connection().execute(query):
        held[actor_id].append(HeldRole(RoleRef(role_id, name, role_type), policies or []))
    return held


def roles_by_actor(
    session: Session,
    actor_type: str,
    actor_ids: Sequence[uuid.UUID],
    *,
    organization_id: uuid.UUID | None = None,
) -> dict[uuid.UUID, list[RoleRef]]:
    """The roles each of ``actor_ids`` holds, as references (for wire views)."""
    held = held_roles(
        session, actor_type, actor_ids, organization_id=organization_id, with_policies=False
    )
    return {actor_id: [role.ref for role in roles] for actor_id, roles in held.items()}


# An actor whose access can change: ("apiKey" | "user" | "invitation", id).
Actor = tuple[str, uuid.UUID]


def access_of(
    session: Session, organization_id: uuid.UUID, actors: Iterable[Actor]
) -> dict[Actor, list[Policy]]:
    """The policies each actor holds in the organization now (none for an actor with no roles
    or that no longer exists)."""
    access: dict[Actor, list[Policy]] = {}
    by_type: dict[str, list[uuid.UUID]] = {}
    for actor_type, actor_id in actors:
        by_type.setdefault(actor_type, []).append(actor_id)
    for actor_type, ids in by_type.items():
        held = held_roles(session, actor_type, ids, organization_id=organization_id)
        for actor_id, roles in held.items():
            access[(actor_type, actor_id)] = [p for role in roles for p in role.policies()]
    return access


def check_access_change(
    principal: Principal,
    before: Mapping[Actor, Sequence[Policy]],
    after: Mapping[Actor, Sequence[Policy]],
) -> None:
    """403 unless changing every actor's access from ``before`` to ``after`` obeys the
    no-escalation rule (``keyhouse.auth.policy``) for ``principal``. Called after the change
    is flushed: the refusal rolls the whole transaction back, so nothing of it remains."""
    org = organization_resource(principal.organization_id)
    for actor in sorted(before.keys() | after.keys()):
        why = escalation(
            principal.policies, before.get(actor, ()), after.get(actor, ()), resources=[org]
        )
        if why is None:
            continue
        kind, permission, resource = why
        you = actor == (principal.actor_type, principal.actor_id)
        who = "you" if you else f"{actor[0]}/{actor[1]}"
        if kind == "holds":
            raise Forbidden(
                f"FORBIDDEN: {who} holds {permission} on {resource}, which you do not hold: "
                "you cannot change its access"
            )
        raise Forbidden(
            f"FORBIDDEN: this change would give {who} {permission} on {resource}, which you "
            "do not hold" + (" (a DENY that restricts you cannot be lifted by you)" if you else "")
        )


def policies_of(roles: Iterable[Role]) -> list[Policy]:
    return [Policy.from_json(p) for role in roles for p in role.policies]


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
    missing = exceeding_grants(principal.policies, policies_of(roles))
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
    require(principal, Permission.ORGANIZATION_MANAGE)
    org = principal.organization_id
    role = Role(
        organization_id=org,
        name=_check_name(session, org, name, None),
        type="custom",
        policies=_check_policies(org, policies),
    )
    check_grantable(principal, [role], what="A role")
    parsed_actors = _check_actors(session, org, actors)
    before = access_of(session, org, parsed_actors)
    session.add(role)
    session.flush()
    _set_actors(session, role, parsed_actors)
    check_access_change(principal, before, access_of(session, org, parsed_actors))
    record(session, principal, "role_create", details=f"role {role.id} ({role.name})")
    return role


def _custom(session: Session, principal: Principal, role_id: uuid.UUID) -> Role:
    role = find_in_organization(session, principal, Role, role_id, "Role")
    require(principal, Permission.ORGANIZATION_MANAGE)
    if role.type == "system":
        raise Forbidden(f"FORBIDDEN: {role.name} is a system role; system roles cannot be changed")
    return role


def _actors_of(session: Session, role: Role) -> list[Actor]:
    rows = session.execute(
        select(RoleAssignment.actor_type, RoleAssignment.actor_id).where(
            RoleAssignment.role_id == role.id
        )
    )
    return [(actor_type, actor_id) for actor_type, actor_id in rows]


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
    # Whoever changes a role must hold what it grants, before and after the change ...
    check_grantable(principal, [role], what="A role")
    new_actors = _check_actors(session, org, actors) if actors is not None else []
    # ... and the access of everyone who holds it, before or after, follows the rule.
    affected = list(dict.fromkeys([*_actors_of(session, role), *new_actors]))
    before = access_of(session, org, affected)
    if name is not None:
        role.name = _check_name(session, org, name, role.id)
    if policies is not None:
        role.policies = _check_policies(org, policies)
        check_grantable(principal, [role], what="A role")
    if actors is not None:
        _set_actors(session, role, new_actors)
    role.updated_at = utcnow()
    session.flush()
    check_access_change(principal, before, access_of(session, org, affected))
    record(session, principal, "role_update", details=f"role {role.id} ({role.name})")
    return role


def delete_role(session: Session, principal: Principal, role_id: uuid.UUID) -> None:
    role = _custom(session, principal, role_id)
    check_grantable(principal, [role], what="A role")
    affected = _actors_of(session, role)
    before = access_of(session, principal.organization_id, affected)
    record(session, principal, "role_delete", details=f"role {role.id} ({role.name})")
    session.execute(delete(RoleAssignment).where(RoleAssignment.role_id == role.id))
    session.delete(role)
    session.flush()
    check_access_change(principal, before, access_of(session, principal.organization_id, affected))


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


def user_principal(
    session: Session,
    *,
    user_id: uuid.UUID,
    name: str,
    organization_id: uuid.UUID,
    ip_address: str | None = None,
    user_agent: str | None = None,
) -> Principal:
    """A signed-in person acting in one organization, with the roles they hold there."""
    roles = held_roles(session, "user", [user_id], organization_id=organization_id)[user_id]
    return Principal(
        actor_type="user",
        actor_id=user_id,
        organization_id=organization_id,
        name=name,
        roles=tuple(role.ref for role in roles),
        policies=tuple(policy for role in roles for policy in role.policies()),
        ip_address=ip_address,
        user_agent=user_agent,
    )
