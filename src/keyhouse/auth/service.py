"""Authenticating an API key: every request reads the key's current row and roles, so
disabling, deleting or re-roling a key takes effect on the very next request, on every replica.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Text, and_, bindparam, cast, select

from keyhouse.api.errors import Forbidden, Unauthorized
from keyhouse.auth import credentials
from keyhouse.auth.network import access_networks, address_allowed
from keyhouse.auth.policy import Policy
from keyhouse.auth.principal import Principal, RoleRef
from keyhouse.config import IPNetwork
from keyhouse.loop_reads import LoopReader, Read
from keyhouse.models import API_KEYS, ROLE_ASSIGNMENTS, ROLES

KEY_NOT_FOUND = "UNAUTHORIZED: Key is not found"
KEY_NOT_ACTIVE = "UNAUTHORIZED: Key is not active"
IP_NOT_ALLOWED = "FORBIDDEN: Requests from this IP address are not allowed for this key"


# One round trip per request: the key row by its lookup hash, with its roles' policies. The
# JSON columns come as their text, so that each role's policies and each key's IP list are
# parsed once per version (the text is the cache key).
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
        cast(API_KEYS.c.ip_access_list, Text).label("ip_access_list"),
        ROLES.c.id.label("role_id"),
        ROLES.c.name.label("role_name"),
        ROLES.c.type.label("role_type"),
        cast(ROLES.c.policies, Text).label("policies"),
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


@functools.lru_cache(maxsize=4096)
def _lookup(pepper: bytes, key_id: str) -> str:
    """A key ID's lookup hash (a key ID is a name, not a secret: remembering it is safe)."""
    return credentials.hash_value(pepper, key_id)


@functools.lru_cache(maxsize=4096)
def _policies(text: str) -> tuple[Policy, ...]:
    return tuple(Policy.from_json(p) for p in json.loads(text))


@functools.lru_cache(maxsize=4096)
def _networks(text: str | None) -> tuple[IPNetwork, ...] | None:
    return access_networks(None if text is None else json.loads(text))


@dataclass(frozen=True)
class KeyUse:
    """What the usage recorder needs to know of an authenticated key."""

    key_uuid: uuid.UUID
    used_at: dt.datetime | None
    created_at: dt.datetime


def _check(
    rows: Sequence[Any],
    *,
    offered: str,
    key_id: str,
    ip_address: str | None,
    user_agent: str | None,
    now: dt.datetime,
) -> tuple[Principal, KeyUse]:
    """The rules, whatever read the rows: the secret (compared even for an unknown key ID, so
    both cost the same), the key's state and expiry, its IP access list."""
    key = rows[0] if rows else None
    stored = key.key_secret_hash if key is not None else credentials.DUMMY_HASH
    if not credentials.hashes_equal(offered, stored) or key is None:
        raise Unauthorized(KEY_NOT_FOUND)
    if key.state != "enabled" or (key.expire_at is not None and key.expire_at <= now):
        raise Unauthorized(KEY_NOT_ACTIVE)
    if not address_allowed(_networks(key.ip_access_list), ip_address):
        raise Forbidden(IP_NOT_ALLOWED)
    roles = [row for row in rows if row.role_id is not None]
    principal = Principal(
        actor_type="apiKey",
        actor_id=key.id,
        organization_id=key.organization_id,
        name=key.name,
        roles=tuple(RoleRef(r.role_id, r.role_name, r.role_type) for r in roles),
        policies=tuple(p for r in roles for p in _policies(r.policies)),
        ip_address=ip_address,
        user_agent=user_agent,
        key_id=key_id,
    )
    return principal, KeyUse(key.id, key.used_at, key.created_at)


async def authenticate_key_on_loop(
    reader: LoopReader,
    *,
    pepper: bytes,
    key_id: str,
    key_secret: str,
    ip_address: str | None,
    user_agent: str | None,
    now: dt.datetime,
    also: Sequence[Read] = (),
) -> tuple[Principal, KeyUse, list[list[Any]]]:
    """On the event loop: one read of the key's current row and roles (so revocation still
    takes effect on the very next request), the policies and IP lists parsed once per version.
    ``also`` is read in the same round trip; their rows are returned only once the key passed
    (the caller then authorizes before using them). The caller records use
    (``keyhouse.usage``)."""
    rows, *other = await reader.all_of(Read(AUTH_QUERY, {"lookup": _lookup(pepper, key_id)}), *also)
    principal, use = _check(
        rows,
        offered=credentials.hash_value(pepper, key_secret),
        key_id=key_id,
        ip_address=ip_address,
        user_agent=user_agent,
        now=now,
    )
    return principal, use, other
