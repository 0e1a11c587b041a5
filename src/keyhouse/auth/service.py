"""Authenticating an API key: every request reads the key's current row and roles, so
disabling, deleting or re-roling a key takes effect on the very next request, on every replica.
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import and_, bindparam, or_, select, update
from sqlalchemy.orm import Session

from keyhouse.api.errors import Forbidden, Unauthorized
from keyhouse.auth import credentials
from keyhouse.auth.network import ip_allowed
from keyhouse.auth.policy import Policy
from keyhouse.auth.principal import Principal, RoleRef
from keyhouse.models import API_KEYS, ROLE_ASSIGNMENTS, ROLES

KEY_NOT_FOUND = "UNAUTHORIZED: Key is not found"
KEY_NOT_ACTIVE = "UNAUTHORIZED: Key is not active"
IP_NOT_ALLOWED = "FORBIDDEN: Requests from this IP address are not allowed for this key"


# One round trip per request: the key row by its lookup hash, with its roles' policies.
AUTH_QUERY = (
    select(
        API_KEYS.c.id,
        API_KEYS.c.organization_id,
        API_KEYS.c.name,
        API_KEYS.c.key_secret_hash,
        API_KEYS.c.state,
        API_KEYS.c.expire_at,
        API_KEYS.c.used_at,
        API_KEYS.c.created_at,
        API_KEYS.c.ip_access_list,
        ROLES.c.id.label("role_id"),
        ROLES.c.name.label("role_name"),
        ROLES.c.type.label("role_type"),
        ROLES.c.policies,
    )
    .select_from(API_KEYS)
    .outerjoin(
        ROLE_ASSIGNMENTS,
        and_(
            ROLE_ASSIGNMENTS.c.actor_type == "apiKey", ROLE_ASSIGNMENTS.c.actor_id == API_KEYS.c.id
        ),
    )
    .outerjoin(
        ROLES,
        and_(
            ROLES.c.id == ROLE_ASSIGNMENTS.c.role_id,
            ROLES.c.organization_id == API_KEYS.c.organization_id,
        ),
    )
    .where(API_KEYS.c.key_id_hash == bindparam("lookup"))
)


def authenticate_key(
    session: Session,
    *,
    pepper: bytes,
    key_id: str,
    key_secret: str,
    ip_address: str | None,
    user_agent: str | None,
    now: dt.datetime,
) -> Principal:
    lookup = credentials.hash_value(pepper, key_id)
    offered = credentials.hash_value(pepper, key_secret)
    rows = session.connection().execute(AUTH_QUERY, {"lookup": lookup}).all()
    key = rows[0] if rows else None
    # Unknown ids do the same comparison against a dummy hash: equal work either way.
    stored = key.key_secret_hash if key is not None else credentials.DUMMY_HASH
    if not credentials.hashes_equal(offered, stored) or key is None:
        raise Unauthorized(KEY_NOT_FOUND)
    if key.state != "enabled" or (key.expire_at is not None and key.expire_at <= now):
        raise Unauthorized(KEY_NOT_ACTIVE)
    if not ip_allowed(key.ip_access_list, ip_address):
        raise Forbidden(IP_NOT_ALLOWED)
    roles = [row for row in rows if row.role_id is not None]
    touch_used_at(session, key.id, key.used_at, now, created_at=key.created_at)
    return Principal(
        actor_type="apiKey",
        actor_id=key.id,
        organization_id=key.organization_id,
        name=key.name,
        roles=tuple(RoleRef(r.role_id, r.role_name, r.role_type) for r in roles),
        policies=tuple(Policy.from_json(p) for r in roles for p in r.policies),
        ip_address=ip_address,
        user_agent=user_agent,
        key_id=key_id,
    )


def touch_used_at(
    session: Session,
    key_uuid: uuid.UUID,
    used_at: dt.datetime | None,
    now: dt.datetime,
    *,
    created_at: dt.datetime,
) -> bool:
    """Record use with one-minute precision: at most one write per key per minute, and never
    earlier than the key's creation (a key made at 12:00:30 and used then reads 12:00:30)."""
    minute = now.replace(second=0, microsecond=0)
    if used_at is not None and used_at >= minute:
        return False
    minute = max(minute, created_at)
    session.connection().execute(
        update(API_KEYS)
        .where(
            API_KEYS.c.id == key_uuid,
            or_(API_KEYS.c.used_at.is_(None), API_KEYS.c.used_at < minute),
        )
        .values(used_at=minute)
    )
    return True


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
    from keyhouse.roles.service import held_roles

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
