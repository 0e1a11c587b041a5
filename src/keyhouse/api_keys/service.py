"""API key business rules.

Every function checks the caller's permission first. A key never grants more than its creator
holds, and nobody changes or deletes a key holding more than they do (the no-escalation rule);
a key cannot delete itself; an organization holds at most ``max_keys`` keys; only peppered
hashes of the key id and secret are stored.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import FromClause, Select, Text, and_, bindparam, cast, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from keyhouse.activities.service import record
from keyhouse.api.errors import BadRequest, Conflict, NotFound
from keyhouse.api_keys import schemas
from keyhouse.auth import credentials
from keyhouse.auth.authorize import find_in_organization, require
from keyhouse.auth.permissions import Permission
from keyhouse.auth.principal import Principal, RoleRef
from keyhouse.db import utcnow
from keyhouse.loop_reads import Read
from keyhouse.models import (
    API_KEYS,
    ROLE_ASSIGNMENTS,
    ROLES,
    ApiKey,
    Role,
    RoleAssignment,
)
from keyhouse.quotas import Quota
from keyhouse.roles.service import (
    Actor,
    access_of,
    assign_roles,
    check_access_change,
    check_grantable,
    legacy_names,
    resolve_role_ids,
    roles_by_actor,
    unassign_actor,
)
from keyhouse.services.service import unbind_key

# Stored when a key is created without an ipAccessList: reachable from anywhere.
ANYWHERE: list[dict[str, Any]] = [
    {"source": "0.0.0.0/0", "description": "Anywhere (IPv4)"},
    {"source": "::/0", "description": "Anywhere (IPv6)"},
]


@dataclass(frozen=True)
class CreatedKey:
    key: ApiKey
    # Present only when the server generated the credentials (no hashData).
    key_id: str | None
    key_secret: str | None


@dataclass(frozen=True)
class KeyPage:
    keys: Sequence[schemas.ApiKey]
    total_count: int
    next_cursor: str | None


def _entries(entries: Sequence[schemas.IpAccessListEntry]) -> list[dict[str, Any]]:
    return [entry.model_dump(exclude_none=True) for entry in entries]


def _check_expiry(expire_at: dt.datetime | None) -> None:
    if expire_at is not None and expire_at <= utcnow():
        raise BadRequest("expireAt: must be in the future")


def _resolve_roles(
    session: Session,
    principal: Principal,
    *,
    legacy_roles: Sequence[str] | None,
    role_ids: Sequence[uuid.UUID] | None,
) -> list[Role]:
    """The roles asked for; none is valid (such a key can call only what needs no permission)."""
    return resolve_role_ids(
        session, principal.organization_id, legacy_roles=legacy_roles, role_ids=role_ids
    )


def _find(session: Session, principal: Principal, key_uuid: uuid.UUID) -> ApiKey:
    return find_in_organization(session, principal, ApiKey, key_uuid, "API key")


def _encode_cursor(key: schemas.ApiKey) -> str:
    raw = f"{key.created_at.isoformat()}|{key.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[dt.datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, _, key_id = raw.partition("|")
        created_at = dt.datetime.fromisoformat(created)
        if created_at.tzinfo is None:
            raise ValueError("naive")
        return created_at, uuid.UUID(key_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadRequest("cursor: not a cursor returned by this API") from None


def key_view_page(
    session: Session, principal: Principal, *, limit: int, cursor: str | None
) -> KeyPage:
    """``key_page`` over the same reads, in a transaction (the console's): one read path and
    one rule for every front end."""
    rows, count = _in_session(session, key_page_reads(principal.organization_id, limit, cursor))
    return key_page(principal, rows, count, limit)


def _in_session(session: Session, reads: Sequence[Read]) -> list[Sequence[Any]]:
    """The rows of each read, on the session's connection (the loop reader's reads, in a
    transaction)."""
    connection = session.connection()
    return [connection.execute(read.statement, read.values).all() for read in reads]


def key_page_reads(organization_id: uuid.UUID, limit: int, cursor: str | None) -> tuple[Read, Read]:
    """The reads ``key_page`` needs (the page and the count), sent with the caller's
    authentication in one round trip: the list is the other hot read of the key API."""
    statement, values = _page_query(organization_id, limit, cursor)
    return Read(statement, values), Read(KEY_COUNT_QUERY, values)


def key_page(
    principal: Principal, rows: Sequence[Any], count_rows: Sequence[Any], limit: int
) -> KeyPage:
    """The page of the caller's organization, from the rows of ``key_page_reads``."""
    require(principal, Permission.ORGANIZATION_VIEW_API_KEYS)
    if any(row.organization_id != principal.organization_id for row in rows):
        raise NotFound("Organization not found")  # read for another organization: never shown
    return _page_from_rows(rows, limit, count_rows[0][0])


def _page_query(
    organization_id: uuid.UUID, limit: int, cursor: str | None
) -> tuple[Select[Any], dict[str, Any]]:
    values: dict[str, Any] = {"org_id": organization_id, "rows": limit + 1}
    if not cursor:
        return KEY_PAGE_QUERY, values
    values["after_created"], values["after_id"] = _decode_cursor(cursor)
    return KEY_PAGE_AFTER_QUERY, values


def _page_from_rows(rows: Sequence[Any], limit: int, total: int) -> KeyPage:
    """Rows of a page query (a key per row and role, in key order) as views."""
    by_key: dict[uuid.UUID, tuple[Any, list[RoleRef]]] = {}
    for row in rows:
        _key, roles = by_key.setdefault(row.id, (row, []))
        if row.role_id is not None:
            roles.append(RoleRef(row.role_id, row.role_name, row.role_type))
    views = [_view(row, roles) for row, roles in by_key.values()]
    next_cursor = _encode_cursor(views[limit - 1]) if len(views) > limit else None
    return KeyPage(views[:limit], total, next_cursor)


def create_key(
    session: Session,
    principal: Principal,
    request: schemas.ApiKeyPostRequest,
    *,
    pepper: bytes,
    max_keys: int,
    creation_nonce: str | None = None,
) -> CreatedKey:
    require(principal, Permission.ORGANIZATION_CREATE_API_KEYS)
    if creation_nonce is not None and session.scalar(
        select(ApiKey.id).where(ApiKey.creation_nonce == creation_nonce)
    ):
        raise Conflict("This key was already created; its secret is shown only once")
    _check_expiry(request.expire_at)
    roles = _resolve_roles(
        session, principal, legacy_roles=request.roles, role_ids=request.assigned_role_ids
    )
    check_grantable(principal, roles)
    quota = Quota(ApiKey, "api-keys-per-organization", "API keys", max_keys)
    quota.check(session, principal.organization_id)
    key_id = key_secret = None
    if request.hash_data is not None:
        hashes = request.hash_data
        id_hash = credentials.pepper_digest(pepper, hashes.key_id_hash)
        secret_hash = credentials.pepper_digest(pepper, hashes.key_secret_hash)
        suffix = hashes.key_id_suffix
    else:
        key_id, key_secret = credentials.generate_key_id(), credentials.generate_key_secret()
        id_hash = credentials.hash_value(pepper, key_id)
        secret_hash = credentials.hash_value(pepper, key_secret)
        suffix = key_id[-4:]
    if session.scalar(select(ApiKey.id).where(ApiKey.key_id_hash == id_hash)) is not None:
        raise Conflict("hashData: a key with this key id already exists")
    key = ApiKey(
        organization_id=principal.organization_id,
        name=request.name,
        key_id_hash=id_hash,
        key_secret_hash=secret_hash,
        key_suffix=suffix,
        state=request.state,
        expire_at=request.expire_at,
        ip_access_list=(
            _entries(request.ip_access_list) if request.ip_access_list is not None else ANYWHERE
        ),
        created_by_type=principal.actor_type,
        created_by_id=principal.actor_id,
        created_by_name=principal.name,
        creation_nonce=creation_nonce,
    )
    session.add(key)
    try:
        session.flush()
    except IntegrityError:  # a concurrent create with the same key id or form nonce
        raise Conflict("A key with this key id was created at the same time") from None
    quota.recheck(session, principal.organization_id)
    assign_roles(session, "apiKey", key.id, roles, organization_id=principal.organization_id)
    record(session, principal, "key_create", target_key_id=key.id)
    return CreatedKey(key, key_id, key_secret)


def update_key(
    session: Session,
    principal: Principal,
    key_uuid: uuid.UUID,
    patch: schemas.ApiKeyPatchRequest,
) -> ApiKey:
    key = _find(session, principal, key_uuid)
    require(principal, Permission.ORGANIZATION_UPDATE_API_KEYS)
    # Nobody may update a key that holds (or would hold) more than they do.
    actor: Actor = ("apiKey", key.id)
    before = access_of(session, principal.organization_id, [actor])
    check_access_change(principal, before, before)
    given = patch.model_fields_set
    changes: list[str] = []
    roles_given = "roles" in given or "assigned_role_ids" in given
    roles: list[Role] = []
    if roles_given:
        roles = _resolve_roles(
            session, principal, legacy_roles=patch.roles, role_ids=patch.assigned_role_ids
        )
    if "name" in given and patch.name is not None and patch.name != key.name:
        key.name = patch.name
        changes.append("name-changed")
    if roles_given:
        held = set(
            session.scalars(
                select(RoleAssignment.role_id).where(
                    RoleAssignment.actor_type == "apiKey", RoleAssignment.actor_id == key.id
                )
            )
        )
        assign_roles(session, "apiKey", key.id, roles, organization_id=principal.organization_id)
        if held != {role.id for role in roles}:
            changes.append("role-changed")
    if "state" in given and patch.state is not None and patch.state != key.state:
        key.state = patch.state
        changes.append("state-changed")
    if "expire_at" in given and patch.expire_at != key.expire_at:
        _check_expiry(patch.expire_at)
        key.expire_at = patch.expire_at
        changes.append("date-changed")
    if "ip_access_list" in given and patch.ip_access_list is not None:
        entries = _entries(patch.ip_access_list)
        if entries != key.ip_access_list:
            key.ip_access_list = entries
            changes.append("ip-access-list-changed")
    session.flush()
    if roles_given:
        check_access_change(
            principal, before, access_of(session, principal.organization_id, [actor])
        )
    for change in changes:
        record(
            session, principal, "openapi_key_update", target_key_id=key.id, key_update_type=change
        )
    return key


def delete_key(session: Session, principal: Principal, key_uuid: uuid.UUID) -> None:
    key = _find(session, principal, key_uuid)
    require(principal, Permission.ORGANIZATION_DELETE_API_KEYS)
    if principal.actor_type == "apiKey" and principal.actor_id == key.id:
        raise BadRequest("A key cannot delete itself: use another key to delete this one")
    before = access_of(session, principal.organization_id, [("apiKey", key.id)])
    check_access_change(principal, before, {})
    unassign_actor(session, "apiKey", key.id)
    unbind_key(session, key.organization_id, key.id)
    session.delete(key)
    session.flush()
    record(session, principal, "key_delete", target_key_id=key_uuid)


_VIEW_COLUMNS = [
    API_KEYS.c.id,
    API_KEYS.c.organization_id,
    API_KEYS.c.name,
    API_KEYS.c.state,
    API_KEYS.c.key_suffix,
    API_KEYS.c.created_at,
    API_KEYS.c.expire_at,
    API_KEYS.c.used_at,
    # As its JSON text: parsed once per distinct list (``_entries_of_text``).
    cast(API_KEYS.c.ip_access_list, Text).label("ip_access_list"),
    API_KEYS.c.created_by_type,
    API_KEYS.c.created_by_id,
    API_KEYS.c.created_by_name,
]


def _with_roles(keys: FromClause, *columns: Any) -> Select[Any]:
    """``columns`` of ``keys`` (the table, or a page of it), a row per key and role (one row with
    no role for a key that holds none)."""
    return (
        select(
            *columns,
            ROLES.c.id.label("role_id"),
            ROLES.c.name.label("role_name"),
            ROLES.c.type.label("role_type"),
        )
        .select_from(keys)
        .outerjoin(
            ROLE_ASSIGNMENTS,
            and_(
                ROLE_ASSIGNMENTS.c.actor_type == "apiKey", ROLE_ASSIGNMENTS.c.actor_id == keys.c.id
            ),
        )
        .outerjoin(ROLES, ROLES.c.id == ROLE_ASSIGNMENTS.c.role_id)
    )


# One key with its roles, in one round trip (reads are the hot path of the key API).
KEY_VIEW_QUERY = (
    _with_roles(API_KEYS, *_VIEW_COLUMNS)
    .where(API_KEYS.c.id == bindparam("key_id"), API_KEYS.c.organization_id == bindparam("org_id"))
    .order_by(ROLES.c.name)
)


_IN_ORGANIZATION = API_KEYS.c.organization_id == bindparam("org_id")
KEY_COUNT_QUERY = select(func.count()).select_from(API_KEYS).where(_IN_ORGANIZATION)


def _key_page(*conditions: Any) -> Select[Any]:
    """A page of keys (``rows`` of them, oldest first) joined to their roles, in key order."""
    page = (
        select(*_VIEW_COLUMNS)
        .where(_IN_ORGANIZATION, *conditions)
        .order_by(API_KEYS.c.created_at, API_KEYS.c.id)
        .limit(bindparam("rows"))
        .subquery()
    )
    return _with_roles(page, page).order_by(page.c.created_at, page.c.id, ROLES.c.name)


KEY_PAGE_QUERY = _key_page()
KEY_PAGE_AFTER_QUERY = _key_page(
    or_(
        API_KEYS.c.created_at > bindparam("after_created"),
        and_(
            API_KEYS.c.created_at == bindparam("after_created"),
            API_KEYS.c.id > bindparam("after_id"),
        ),
    )
)


def get_key_view(session: Session, principal: Principal, key_uuid: uuid.UUID) -> schemas.ApiKey:
    """``key_view`` over the same read, in a transaction (the console's)."""
    (rows,) = _in_session(session, key_view_reads(principal.organization_id, key_uuid))
    return key_view(principal, rows)


def key_view_reads(organization_id: uuid.UUID, key_uuid: uuid.UUID) -> tuple[Read]:
    """The read ``key_view`` needs: sent with the caller's authentication, in the same round
    trip (the hot read of the key API: no thread hop, no session)."""
    return (Read(KEY_VIEW_QUERY, {"key_id": key_uuid, "org_id": organization_id}),)


def key_view(principal: Principal, rows: Sequence[Any]) -> schemas.ApiKey:
    """One key of the caller's organization, from the rows of ``key_view_read``."""
    require(principal, Permission.ORGANIZATION_VIEW_API_KEYS)
    if rows and rows[0].organization_id != principal.organization_id:
        raise NotFound("API key not found")  # read for another organization: never shown
    return _key_from_rows(rows)


def _key_from_rows(rows: Sequence[Any]) -> schemas.ApiKey:
    if not rows:
        raise NotFound("API key not found")
    roles = [RoleRef(r.role_id, r.role_name, r.role_type) for r in rows if r.role_id is not None]
    return _view(rows[0], roles)


def describe(session: Session, keys: Sequence[ApiKey]) -> list[schemas.ApiKey]:
    """Wire views of ``keys`` with their roles, loaded in one query."""
    roles = roles_by_actor(session, "apiKey", [key.id for key in keys])
    return [_view(key, roles[key.id]) for key in keys]


@functools.lru_cache(maxsize=4096)
def _entry(source: str, description: str | None) -> schemas.IpAccessListEntry:
    """A stored (already normalised) entry, built once: its validator parses the address."""
    return schemas.IpAccessListEntry.model_construct(source=source, description=description)


def _stored_entries(stored: str | list[dict[str, Any]] | None) -> list[schemas.IpAccessListEntry]:
    """A key's stored IP access list (its JSON text, as the view queries read it, or the
    ORM's list) as wire entries."""
    if isinstance(stored, str):
        return list(_entries_of_text(stored))
    return [_entry(entry["source"], entry.get("description")) for entry in stored or []]


@functools.lru_cache(maxsize=4096)
def _entries_of_text(text: str) -> tuple[schemas.IpAccessListEntry, ...]:
    """Parsed once per distinct list (most keys share a few)."""
    return tuple(_stored_entries(json.loads(text)))


def _view(key: Any, roles: Sequence[RoleRef]) -> schemas.ApiKey:
    """The wire model of an ``ApiKey`` object or a row of ``_VIEW_COLUMNS``: one call into
    pydantic's core (measured 3x cheaper than ``model_construct`` of the nested models in
    Python, which matters for a page of 100 keys)."""
    creator = None
    if key.created_by_type is not None:
        creator = {
            "type": key.created_by_type,
            "id": key.created_by_id,
            "name": key.created_by_name,
        }
    return schemas.ApiKey.model_validate(
        {
            "id": key.id,
            "name": key.name,
            "state": key.state,
            "roles": legacy_names(roles),
            "assigned_roles": [
                {"role_id": r.id, "role_name": r.name, "role_type": r.type} for r in roles
            ],
            "key_suffix": key.key_suffix,
            "created_at": key.created_at,
            "expire_at": key.expire_at,
            "used_at": max(key.used_at, key.created_at) if key.used_at else None,
            "ip_access_list": _stored_entries(key.ip_access_list),
            "created_by": creator,
        }
    )
