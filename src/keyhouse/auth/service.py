"""Authenticating an API key: every request reads the key's current row and roles, so
disabling, deleting or re-roling a key takes effect on the very next request, on every replica.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from keyhouse.api.errors import Forbidden, Unauthorized
from keyhouse.auth import credentials
from keyhouse.auth.network import ip_allowed
from keyhouse.auth.principal import Principal
from keyhouse.models import ApiKey
from keyhouse.roles.service import actor_roles

KEY_NOT_FOUND = "UNAUTHORIZED: Key is not found"
KEY_NOT_ACTIVE = "UNAUTHORIZED: Key is not active"
IP_NOT_ALLOWED = "FORBIDDEN: Requests from this IP address are not allowed for this key"


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
    key = session.scalar(select(ApiKey).where(ApiKey.key_id_hash == lookup))
    # Unknown ids do the same comparison against a dummy hash: equal work either way.
    stored = key.key_secret_hash if key is not None else credentials.DUMMY_HASH
    if not credentials.hashes_equal(offered, stored) or key is None:
        raise Unauthorized(KEY_NOT_FOUND)
    if key.state != "enabled" or (key.expire_at is not None and key.expire_at <= now):
        raise Unauthorized(KEY_NOT_ACTIVE)
    if not ip_allowed(key.ip_access_list, ip_address):
        raise Forbidden(IP_NOT_ALLOWED)
    roles = actor_roles(session, key.organization_id, "apiKey", key.id)
    touch_used_at(session, key, now)
    return Principal(
        actor_type="apiKey",
        actor_id=key.id,
        organization_id=key.organization_id,
        name=key.name,
        roles=tuple(ref for ref, _ in roles),
        policies=tuple(policy for _, policies in roles for policy in policies),
        ip_address=ip_address,
        user_agent=user_agent,
        key_id=key_id,
    )


def touch_used_at(session: Session, key: ApiKey, now: dt.datetime) -> None:
    """Record use with one-minute precision: at most one write per key per minute."""
    minute = now.replace(second=0, microsecond=0)
    if key.used_at is not None and key.used_at >= minute:
        return
    session.execute(
        update(ApiKey)
        .where(ApiKey.id == key.id, or_(ApiKey.used_at.is_(None), ApiKey.used_at < minute))
        .values(used_at=minute)
        .execution_options(synchronize_session=False)
    )
    key.used_at = minute
