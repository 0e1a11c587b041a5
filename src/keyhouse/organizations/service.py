"""Organization business rules."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from keyhouse.activities.service import record
from keyhouse.api.errors import BadRequest, NotFound
from keyhouse.auth.authorize import require
from keyhouse.auth.permissions import ADMIN, Permission
from keyhouse.auth.principal import Principal, system_principal
from keyhouse.models import Membership, Organization, Service, User
from keyhouse.roles.service import assign_roles, seed_system_roles
from keyhouse.users.service import get_or_create_user, normalize_email


def own_organization(session: Session, principal: Principal) -> Organization:
    """The caller's own organization, which any authenticated caller may list."""
    organization = session.get(Organization, principal.organization_id)
    if organization is None:
        raise NotFound("Organization not found")
    return organization


def get_organization(session: Session, principal: Principal) -> Organization:
    organization = own_organization(session, principal)
    require(principal, Permission.ORGANIZATION_VIEW)
    return organization


def update_organization(
    session: Session,
    principal: Principal,
    *,
    name: str | None,
    enable_core_dumps: bool | None,
    private_endpoints_given: bool,
) -> Organization:
    require(principal, Permission.ORGANIZATION_MANAGE)
    if private_endpoints_given:
        raise BadRequest("privateEndpoints: private endpoints are not supported by Keyhouse")
    organization = get_organization(session, principal)
    if name is not None and name != organization.name:
        organization.name = name
        record(session, principal, "organization_update_name")
    if enable_core_dumps is not None:
        organization.enable_core_dumps = enable_core_dumps
    session.flush()
    return organization


@dataclass(frozen=True)
class Bootstrapped:
    organization_id: uuid.UUID
    user_id: uuid.UUID
    email: str
    # False when the email already had an account: its password is left as it was.
    user_created: bool


def create_organization(
    session: Session, *, name: str, email: str, user_name: str, password: str
) -> Bootstrapped:
    """A new organization with its system roles and a first member holding Admin."""
    name = name.strip()
    if not name:
        raise BadRequest("name: must not be blank")
    organization = Organization(name=name)
    session.add(organization)
    session.flush()
    roles = seed_system_roles(session, organization.id)
    existing = session.scalar(select(User.id).where(User.email == normalize_email(email)))
    user = get_or_create_user(session, email=email, name=user_name, password=password)
    session.add(Membership(organization_id=organization.id, user_id=user.id))
    assign_roles(session, "user", user.id, [roles[ADMIN]], organization_id=organization.id)
    system = system_principal(organization.id, "bootstrap")
    record(session, system, "create_organization")
    return Bootstrapped(organization.id, user.id, user.email, user_created=existing is None)


@dataclass(frozen=True)
class QuotaView:
    code: str
    name: str
    description: str
    scope: str
    value: int
    usage: int | None
    adjustable: bool


def quotas(session: Session, principal: Principal, *, max_services: int) -> list[QuotaView]:
    """The quotas Keyhouse enforces on the caller's organization, with current usage where
    it counts one. ``max_services``: the operator's KEYHOUSE_MAX_SERVICES_PER_ORGANIZATION. A
    quota that does not apply (Keyhouse runs no Postgres services) is omitted, as the official
    operation omits it."""
    require(principal, Permission.ORGANIZATION_VIEW)
    services = session.scalar(
        select(func.count())
        .select_from(Service)
        .where(Service.organization_id == principal.organization_id)
    )
    return [
        QuotaView(
            "services-per-organization",
            "Services per organization",
            "The services an organization may hold, whatever their state; creating one more is "
            "a 409. The server's operator sets it (KEYHOUSE_MAX_SERVICES_PER_ORGANIZATION).",
            "organization",
            max_services,
            int(services or 0),
            True,
        ),
        QuotaView(
            "replicas-per-warehouse",
            "Replicas per warehouse",
            "Each service runs one replica (an embedded engine, or the attached server): "
            "numReplicas above 1 is a 400.",
            "warehouse",
            1,
            None,
            False,
        ),
    ]


def quota(session: Session, principal: Principal, code: str, *, max_services: int) -> QuotaView:
    for found in quotas(session, principal, max_services=max_services):
        if found.code == code:
            return found
    raise NotFound(f"Quota {code!r} is not one enforced on this organization")
