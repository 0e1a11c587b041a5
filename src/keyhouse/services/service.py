"""Service business rules: the records and their lifecycle states, permissions on
``instance/<id>``, passwords, and the Query API binding. The state machine itself is
``keyhouse.services.states``; engine work a change needs is queued to follow its commit
(``keyhouse.transactions.after_commit``), and the runtime (``keyhouse.runtime``)
does it.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from keyhouse.activities.service import record
from keyhouse.api.errors import BadRequest, Conflict, Forbidden, NotFound
from keyhouse.auth import credentials
from keyhouse.auth.authorize import find_in_organization, require
from keyhouse.auth.network import ip_allowed
from keyhouse.auth.permissions import Permission, instance_resource
from keyhouse.auth.principal import Principal, system_principal
from keyhouse.backups import service as backups
from keyhouse.db import utcnow
from keyhouse.engine.protocol import ClickHouseError
from keyhouse.engine.worker import ADMIN_ROLE, NAMEABLE_ROLES, READ_ONLY_ROLE
from keyhouse.models import ApiKey, Backup, Service, ServiceQueryEndpoint
from keyhouse.quotas import Quota
from keyhouse.services import placement, schemas
from keyhouse.services.states import (
    Command,
    EngineWork,
    State,
    Step,
    command,
)
from keyhouse.transactions import after_commit

if TYPE_CHECKING:
    from keyhouse.config import Settings
    from keyhouse.loop_reads import LoopReader

SERVICE_PASSWORD_ALPHABET = credentials.ALPHABET


@dataclass(frozen=True)
class ServiceDefaults:
    provider: str
    region: str
    # Hosts (host or host:port, "*" for any) a service may be attached to.
    attach_allowed: tuple[str, ...] = ()
    # Services an organization may hold (the quota ``services-per-organization``).
    max_services: int = 10
    # Hosts a service may be attached to over plain http (credentials cross in clear).
    attach_http: tuple[str, ...] = ()
    # An engine host silent this long takes no new service.
    host_silent_seconds: float = 15.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ServiceDefaults:
        return cls(
            settings.service_default_provider,
            settings.service_default_region,
            _hosts(settings.attach_allowed_hosts),
            settings.max_services_per_organization,
            _hosts(settings.attach_http_hosts),
            settings.host_silent_seconds,
        )


def _hosts(setting: str) -> tuple[str, ...]:
    return tuple(host for host in (h.strip().lower() for h in setting.split(",")) if host)


def _attach_url(url: str, allowed: Sequence[str], http: Sequence[str] = ()) -> str:
    """The URL of a ClickHouse HTTP interface to attach to, if the operator allows its host;
    ``https`` unless the operator allows plain ``http`` for that host (the password would
    cross in clear)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest("keyhouseAttach.url: must be an http:// or https:// URL")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise BadRequest("keyhouseAttach.url: give credentials as username and password")
    if not allowed:
        raise BadRequest("keyhouseAttach: attaching is turned off on this server")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise BadRequest("keyhouseAttach.url: the port is not valid") from None
    host = parts.hostname.lower()
    if not any(entry in ("*", host, f"{host}:{port}") for entry in allowed):
        raise BadRequest(f"keyhouseAttach.url: {host}:{port} is not an allowed host")
    if parts.scheme == "http" and not any(entry in (host, f"{host}:{port}") for entry in http):
        raise BadRequest(
            f"keyhouseAttach.url: use https:// (over http:// the password to {host}:{port} "
            "would cross the network in clear; the operator may allow it for a host with "
            "KEYHOUSE_ATTACH_HTTP_HOSTS)"
        )
    return f"{parts.scheme}://{parts.netloc}{parts.path or '/'}"


@dataclass(frozen=True)
class RunGrant:
    """What the Query API may do for a bound key on one service."""

    service_id: uuid.UUID
    state: str
    readonly: bool
    max_memory_gb: int
    allowed_origins: str = ""
    # Database roles the query runs under (SET ROLE); none: the engine user's default role.
    roles: tuple[str, ...] = ()


def _find(session: Session, principal: Principal, service_id: uuid.UUID) -> Service:
    return find_in_organization(session, principal, Service, service_id, "Service")


def _require(principal: Principal, permission: Permission, service: Service) -> None:
    require(principal, permission, instance_resource(service.id))


def new_password() -> str:
    return "".join(secrets.choice(SERVICE_PASSWORD_ALPHABET) for _ in range(24))


def list_services(
    session: Session, principal: Principal, *, tag_filters: Sequence[str] = ()
) -> list[Service]:
    """The services the caller may view, oldest first; ``tag_filters`` as ``tag:KEY=VALUE``
    or ``tag:KEY`` (every filter must match)."""
    wanted = parse_tag_filters(tag_filters)
    found = session.scalars(
        select(Service)
        .where(Service.organization_id == principal.organization_id)
        .order_by(Service.created_at, Service.id)
    ).all()
    return [
        service
        for service in found
        if principal.can(Permission.SERVICE_VIEW, instance_resource(service.id))
        and has_tags(service, wanted)
    ]


def parse_tag_filters(filters: Sequence[str]) -> list[tuple[str, str | None]]:
    """``tag:KEY=VALUE`` or ``tag:KEY`` filters (400 for anything else)."""
    return [_parse_filter(text) for text in filters]


def has_tags(service: Service, wanted: Sequence[tuple[str, str | None]]) -> bool:
    """Whether the service matches every parsed tag filter."""
    return all(_has_tag(service, key, value) for key, value in wanted)


def _parse_filter(text: str) -> tuple[str, str | None]:
    if not text.startswith("tag:") or len(text) == 4:
        raise BadRequest(f"filter: {text!r}: only tag filters are supported (tag:KEY=VALUE)")
    key, sep, value = text[4:].partition("=")
    return key, value if sep else None


def _has_tag(service: Service, key: str, value: str | None) -> bool:
    return any(
        tag.get("key") == key and (value is None or tag.get("value") == value)
        for tag in service.tags
    )


_CLOUD_ONLY = {
    "tier": "tiers",
    "min_total_memory_gb": "total memory (deprecated; use minReplicaMemoryGb)",
    "max_total_memory_gb": "total memory (deprecated; use maxReplicaMemoryGb)",
    "encryption_key": "customer-managed encryption keys",
    "encryption_assumed_role_identifier": "customer-managed encryption keys",
    "private_endpoint_ids": "private endpoints",
    "byoc_id": "bring-your-own-cloud",
    "has_transparent_data_encryption": "transparent data encryption",
    "endpoints": "the MySQL interface",
    "profile": "instance profiles",
    "compliance_type": "compliance types",
    "min_replicas": "horizontal autoscaling",
    "max_replicas": "horizontal autoscaling",
}


def _refuse_cloud_only(request: Any, fields: dict[str, str]) -> None:
    for field_name, what in fields.items():
        value = getattr(request, field_name, None)
        if value not in (None, False, []):
            alias = type(request).model_fields[field_name].alias or field_name
            raise BadRequest(f"{alias}: {what} is not available in Keyhouse")


def create_service(
    session: Session,
    principal: Principal,
    request: schemas.ServicePostRequest,
    *,
    pepper: bytes,
    defaults: ServiceDefaults,
) -> tuple[Service, str]:
    """A new service in ``provisioning``, and its ``default`` user's password (shown once)."""
    require(principal, Permission.ORGANIZATION_CREATE_SERVICE)
    _refuse_cloud_only(request, _CLOUD_ONLY)
    if request.autoscaling_mode == "horizontal":
        raise BadRequest("autoscalingMode: horizontal autoscaling is not available in Keyhouse")
    if request.is_readonly:
        raise BadRequest("isReadonly: read-only replicas of a warehouse are not available")
    if request.num_replicas not in (None, 1):
        raise BadRequest("numReplicas: an embedded engine runs one replica")
    _check_name_free(session, principal.organization_id, request.name, None)
    quota = Quota(Service, "services-per-organization", "services", defaults.max_services)
    quota.check(session, principal.organization_id)
    minimum = request.min_replica_memory_gb or 8
    maximum = request.max_replica_memory_gb or max(16, minimum)
    if minimum > maximum:
        raise BadRequest("minReplicaMemoryGb: must not exceed maxReplicaMemoryGb")
    attached = request.keyhouse_attach
    attached_url = (
        _attach_url(attached.url, defaults.attach_allowed, defaults.attach_http)
        if attached
        else None
    )
    region = request.region or defaults.region
    restore_from = None
    if request.backup_id is not None:
        if attached_url is not None:
            raise BadRequest("backupId: " + backups.ATTACHED)
        restore_from = backups.restore_source(session, principal, request.backup_id, region)
    provider = request.provider or defaults.provider
    host_id = None
    if attached_url is None:
        host_id = placement.place(
            session,
            region=region,
            provider=provider,
            memory_gb=maximum,
            now=utcnow(),
            silent_seconds=defaults.host_silent_seconds,
        )
        if host_id is not None and restore_from is not None and _in_process(session, restore_from):
            raise BadRequest(
                "backupId: the backup is of a service in the API process; it cannot be "
                "restored onto an engine host"
            )
    password = new_password()
    service = Service(
        organization_id=principal.organization_id,
        name=request.name,
        state=State.PROVISIONING.value,
        provider=provider,
        region=region,
        host_id=host_id,
        restore_from=restore_from,
        password_hash=credentials.hash_value(pepper, password),
        ip_access_list=_entries(request.ip_access_list or []),
        tags=[tag.model_dump(exclude_none=True) for tag in request.tags or []],
        idle_scaling=True if request.idle_scaling is None else request.idle_scaling,
        idle_timeout_minutes=request.idle_timeout_minutes or 15,
        min_replica_memory_gb=minimum,
        max_replica_memory_gb=maximum,
        num_replicas=1,
        release_channel=request.release_channel or "default",
        enable_core_dumps=bool(request.enable_core_dumps),
        attached_url=attached_url,
        attached_username=attached.username if attached else None,
        attached_password=credentials.seal(pepper, attached.password) if attached else None,
    )
    session.add(service)
    session.flush()
    quota.recheck(session, principal.organization_id)
    record(session, principal, "service_create", service_id=service.id)
    if restore_from is not None:
        record(
            session,
            principal,
            "service_restore_backup",
            service_id=service.id,
            details=f"from backup {restore_from}",
        )
    after_commit(session, EngineWork(service.id, Step.START))
    return service, password


def _in_process(session: Session, backup_id: uuid.UUID) -> bool:
    """Whether the backup's files are in an API process's data directory (its service runs
    on no engine host)."""
    source = session.scalar(
        select(Service.host_id)
        .join(Backup, Backup.service_id == Service.id)
        .where(Backup.id == backup_id)
    )
    return source is None


def _entries(entries: Sequence[Any]) -> list[dict[str, Any]]:
    return [entry.model_dump(exclude_none=True) for entry in entries]


def _check_name_free(
    session: Session, organization_id: uuid.UUID, name: str, service_id: uuid.UUID | None
) -> None:
    existing = session.scalar(
        select(Service.id).where(Service.organization_id == organization_id, Service.name == name)
    )
    if existing is not None and existing != service_id:
        raise Conflict(f"A service named {name!r} already exists in this organization")


def get_service(session: Session, principal: Principal, service_id: uuid.UUID) -> Service:
    service = _find(session, principal, service_id)
    _require(principal, Permission.SERVICE_VIEW, service)
    return service


def update_service(
    session: Session,
    principal: Principal,
    service_id: uuid.UUID,
    patch: schemas.ServicePatchRequest,
) -> Service:
    service = _find(session, principal, service_id)
    _require(principal, Permission.SERVICE_MANAGE, service)
    _refuse_cloud_only(
        patch,
        {
            "private_endpoint_ids": "private endpoints",
            "endpoints": "the MySQL interface",
            "transparent_data_encryption_key_id": "transparent data encryption",
        },
    )
    if patch.name is not None and patch.name != service.name:
        _check_name_free(session, service.organization_id, patch.name, service.id)
        service.name = patch.name
        record(session, principal, "service_update_name", service_id=service.id)
    if patch.ip_access_list is not None:
        _require(principal, Permission.SERVICE_MANAGE_IP_ACCESS_LIST, service)
        removed = {entry.source for entry in patch.ip_access_list.remove}
        kept = [entry for entry in service.ip_access_list if entry["source"] not in removed]
        known = {entry["source"] for entry in kept}
        added = [e for e in _entries(patch.ip_access_list.add) if e["source"] not in known]
        service.ip_access_list = kept + added
        record(session, principal, "service_update_ip_access_list", service_id=service.id)
    if patch.tags is not None:
        remove = {(tag.key, tag.value) for tag in patch.tags.remove}
        tags = [t for t in service.tags if (t.get("key"), t.get("value")) not in remove]
        tags += [tag.model_dump(exclude_none=True) for tag in patch.tags.add]
        if len(tags) > 50:
            raise BadRequest("tags: a service holds at most 50 tags")
        service.tags = tags
    if patch.release_channel is not None and patch.release_channel != service.release_channel:
        service.release_channel = patch.release_channel
        record(session, principal, "service_update_release_channel", service_id=service.id)
    if patch.enable_core_dumps is not None and patch.enable_core_dumps != service.enable_core_dumps:
        service.enable_core_dumps = patch.enable_core_dumps
        record(session, principal, "service_update_core_dump", service_id=service.id)
    session.flush()
    return service


def request_state(
    session: Session, principal: Principal, service_id: uuid.UUID, given: Command
) -> Service:
    """Apply ``start``, ``stop`` or ``awake`` (``states.command``): the service in its
    transitional state; the engine's part follows the commit."""
    service = _find(session, principal, service_id)
    _require(principal, Permission.SERVICE_MANAGE, service)
    transition = command(State(service.state), given)
    if transition.state is not None:
        service.state = transition.state.value
        if transition.state == State.STARTING:
            service.failure = None
    if transition.activity is not None:
        record(session, principal, transition.activity, service_id=service.id)
    if transition.step is not None:
        after_commit(session, EngineWork(service.id, transition.step))
    session.flush()
    return service


@dataclass(frozen=True)
class Attachment:
    url: str
    username: str
    password: str = field(repr=False)


def attachment(session: Session, service_id: uuid.UUID, *, pepper: bytes) -> Attachment | None:
    """The ClickHouse server a service is attached to (None: an embedded engine)."""
    service = session.get(Service, service_id)
    if service is None or service.attached_url is None:
        return None
    return Attachment(
        service.attached_url,
        service.attached_username or "default",
        credentials.unseal(pepper, service.attached_password or ""),
    )


def set_state(
    session: Session,
    service_id: uuid.UUID,
    state: State,
    *,
    expected: frozenset[State] | None = None,
    version: str | None = None,
    failure: str | None = None,
) -> bool:
    """The engine's side of the lifecycle: move the service to ``state`` (only from one of
    ``expected``, when given, so a later command is not overwritten). False when it did not."""
    service = session.get(Service, service_id)
    if service is None or (expected is not None and service.state not in expected):
        return False
    service.state = state.value
    if version:
        service.clickhouse_version = version
    service.failure = failure[:512] if failure else None
    session.flush()
    return True


def change_password(
    session: Session,
    principal: Principal,
    service_id: uuid.UUID,
    request: schemas.ServicePasswordPatchRequest,
    *,
    pepper: bytes,
) -> str | None:
    """Set the ``default`` user's password: from ``newPasswordHash`` (base64 of SHA-256, as
    ``hashData``), or generated and returned (shown once)."""
    service = _find(session, principal, service_id)
    _require(principal, Permission.SERVICE_MANAGE, service)
    password = None
    if request.new_password_hash is not None:
        if not credentials.is_sha256_b64(request.new_password_hash):
            raise BadRequest("newPasswordHash: must be the base64 of a 32-byte SHA-256 digest")
        service.password_hash = credentials.pepper_digest(pepper, request.new_password_hash)
    else:
        password = new_password()
        service.password_hash = credentials.hash_value(pepper, password)
    record(session, principal, "service_update_password", service_id=service.id)
    session.flush()
    return password


def update_scaling(
    session: Session,
    principal: Principal,
    service_id: uuid.UUID,
    request: schemas.ServiceScalingPatchRequest | schemas.ServiceReplicaScalingPatchRequest,
) -> Service:
    """Scaling as an embedded engine can honour it: one replica, vertical; the memory range is
    stored and its maximum caps each query's memory; idle scaling is real."""
    service = _find(session, principal, service_id)
    _require(principal, Permission.SERVICE_MANAGE_SCALING_CONFIG, service)
    _refuse_cloud_only(
        request,
        {
            "min_total_memory_gb": "total memory (deprecated; use /replicaScaling)",
            "max_total_memory_gb": "total memory (deprecated; use /replicaScaling)",
            "min_replicas": "horizontal autoscaling",
            "max_replicas": "horizontal autoscaling",
        },
    )
    if getattr(request, "autoscaling_mode", None) == "horizontal":
        raise BadRequest("autoscalingMode: horizontal autoscaling is not available in Keyhouse")
    if request.num_replicas not in (None, 1):
        raise BadRequest("numReplicas: an embedded engine runs one replica")
    minimum = getattr(request, "min_replica_memory_gb", None) or service.min_replica_memory_gb
    maximum = getattr(request, "max_replica_memory_gb", None) or service.max_replica_memory_gb
    if minimum > maximum:
        raise BadRequest("minReplicaMemoryGb: must not exceed maxReplicaMemoryGb")
    if (minimum, maximum) != (service.min_replica_memory_gb, service.max_replica_memory_gb):
        service.min_replica_memory_gb, service.max_replica_memory_gb = minimum, maximum
        record(session, principal, "service_update_autoscaling_memory", service_id=service.id)
    idling = (request.idle_scaling, request.idle_timeout_minutes)
    if idling != (None, None):
        if request.idle_scaling is not None:
            service.idle_scaling = request.idle_scaling
        if request.idle_timeout_minutes is not None:
            service.idle_timeout_minutes = request.idle_timeout_minutes
        record(session, principal, "service_update_autoscaling_idling", service_id=service.id)
    session.flush()
    return service


def delete_service(session: Session, principal: Principal, service_id: uuid.UUID) -> None:
    service = _find(session, principal, service_id)
    _require(principal, Permission.SERVICE_DELETE, service)
    if service.state != State.STOPPED:
        raise Conflict("The service must be stopped before it is deleted")
    record(session, principal, "service_delete", service_id=service.id)
    session.delete(service)
    after_commit(session, EngineWork(service.id, Step.REMOVE))
    session.flush()


# --- the Query API binding ------------------------------------------------------------------


def get_query_endpoint(
    session: Session, principal: Principal, service_id: uuid.UUID
) -> ServiceQueryEndpoint:
    service = _find(session, principal, service_id)
    _require(principal, Permission.SERVICE_VIEW_QUERY_API_ENDPOINTS, service)
    endpoint = session.get(ServiceQueryEndpoint, service.id)
    if endpoint is None:
        raise NotFound("This service has no query endpoint")
    return endpoint


def _key_uuids(
    session: Session, principal: Principal, keys: Sequence[str], pepper: bytes
) -> list[str]:
    """API keys by resource id (UUID) or by the key ID they authenticate with (clickhousectl
    binds ``whoami.keyId``); stored as UUIDs. Unknown keys, or keys of another organization,
    are a 400."""
    found: list[str] = []
    for given in dict.fromkeys(keys):
        key: ApiKey | None = None
        try:
            key = session.get(ApiKey, uuid.UUID(given))
        except ValueError:
            lookup = credentials.hash_value(pepper, given)
            key = session.scalar(select(ApiKey).where(ApiKey.key_id_hash == lookup))
        if key is None or key.organization_id != principal.organization_id:
            raise BadRequest(f"openApiKeys: {given!r} is not an API key of this organization")
        found.append(str(key.id))
    return list(dict.fromkeys(found))


def upsert_query_endpoint(
    session: Session,
    principal: Principal,
    service_id: uuid.UUID,
    request: schemas.InstanceServiceQueryApiEndpointsPostRequest,
    *,
    pepper: bytes,
) -> ServiceQueryEndpoint:
    """Create or replace the binding (``openApiKeys`` replace the whole list)."""
    service = _find(session, principal, service_id)
    _require(principal, Permission.SERVICE_MANAGE_QUERY_API_ENDPOINTS, service)
    endpoint = session.get(ServiceQueryEndpoint, service.id)
    if endpoint is None and request.allowed_origins is None:
        raise BadRequest("allowedOrigins: required when the endpoint is created ('*' for all)")
    check_database_roles(principal, service, request.roles, field="roles")
    keys = _key_uuids(session, principal, request.open_api_keys, pepper)
    if endpoint is None:
        endpoint = ServiceQueryEndpoint(service_id=service.id)
        session.add(endpoint)
    endpoint.open_api_keys = keys
    endpoint.roles = list(dict.fromkeys(request.roles))
    if request.allowed_origins is not None:
        endpoint.allowed_origins = request.allowed_origins
    session.flush()
    return endpoint


def delete_query_endpoint(session: Session, principal: Principal, service_id: uuid.UUID) -> None:
    service = _find(session, principal, service_id)
    _require(principal, Permission.SERVICE_MANAGE_QUERY_API_ENDPOINTS, service)
    endpoint = session.get(ServiceQueryEndpoint, service.id)
    if endpoint is None:
        raise NotFound("This service has no query endpoint")
    session.delete(endpoint)
    session.flush()


def unbind_key(session: Session, organization_id: uuid.UUID, key_id: uuid.UUID) -> None:
    """A deleted key leaves every service's query endpoint binding (its Query API endpoint
    bindings go with it through their foreign key)."""
    endpoints = session.scalars(
        select(ServiceQueryEndpoint)
        .join(Service, Service.id == ServiceQueryEndpoint.service_id)
        .where(Service.organization_id == organization_id)
    )
    for endpoint in endpoints:
        if str(key_id) in endpoint.open_api_keys:
            endpoint.open_api_keys = [k for k in endpoint.open_api_keys if k != str(key_id)]
    session.flush()


_SERVICES = Service.__table__
_ENDPOINTS = ServiceQueryEndpoint.__table__
# The Query API's gate in one read: the service and its query endpoint binding.
RUN_GRANT_QUERY = (
    select(
        _SERVICES.c.organization_id,
        _SERVICES.c.state,
        _SERVICES.c.max_replica_memory_gb,
        _SERVICES.c.attached_url,
        _ENDPOINTS.c.open_api_keys,
        _ENDPOINTS.c.roles,
        _ENDPOINTS.c.allowed_origins,
    )
    .select_from(_SERVICES)
    .outerjoin(_ENDPOINTS, _ENDPOINTS.c.service_id == _SERVICES.c.id)
    .where(_SERVICES.c.id == bindparam("service_id"))
)


def _run_grant(principal: Principal, service_id: uuid.UUID, row: Any) -> RunGrant:
    """The key must be bound to the service's query endpoint. The binding, not the key's roles,
    grants database access; a read-only binding runs read-only."""
    if row is None or row.organization_id != principal.organization_id:
        raise NotFound("Service not found")
    if (
        principal.actor_type != "apiKey"
        or row.open_api_keys is None
        or str(principal.actor_id) not in row.open_api_keys
    ):
        raise Forbidden(
            "FORBIDDEN: This API key is not bound to the service's query endpoint "
            "(serviceQueryEndpoint openApiKeys)"
        )
    readonly = "sql_console_admin" not in row.roles
    return RunGrant(
        service_id,
        row.state,
        readonly,
        row.max_replica_memory_gb,
        row.allowed_origins,
        roles=_read_only_roles(readonly, row.attached_url),
    )


def _read_only_roles(readonly: bool, attached_url: str | None) -> tuple[str, ...]:
    """A read-only caller of an embedded engine runs under its read-only role (not the admin
    role with ``readonly``): it cannot see or KILL others' queries, read ``system.users`` or
    switch roles. An attached server's roles are its operator's: ``readonly`` alone there."""
    return (READ_ONLY_ROLE,) if readonly and attached_url is None else ()


def authorize_run(session: Session, principal: Principal, service_id: uuid.UUID) -> RunGrant:
    """The Query API's gate, in a transaction."""
    row = session.connection().execute(RUN_GRANT_QUERY, {"service_id": service_id}).first()
    return _run_grant(principal, service_id, row)


async def read_run_grant(
    reader: LoopReader, principal: Principal, service_id: uuid.UUID
) -> RunGrant:
    """The Query API's gate, read on the event loop (every query passes it)."""
    rows = await reader.all(RUN_GRANT_QUERY, {"service_id": service_id})
    return _run_grant(principal, service_id, rows[0] if rows else None)


ANY_ORIGIN = "*"


def allowed_origin(allowed_origins: str, origin: str | None) -> str | None:
    """What a browser's ``Origin`` may be answered with: ``*`` when ``allowedOrigins`` holds
    ``*`` (for any page, so never with credentials), the origin itself when an entry names
    exactly its scheme, host and port (a bare host stands for ``https://host``), else None (a
    ``null`` origin, from a sandboxed frame or a file, matches nothing but ``*``)."""
    entries = [entry.strip() for entry in allowed_origins.split(",") if entry.strip()]
    if ANY_ORIGIN in entries:
        return ANY_ORIGIN
    wanted = _origin(origin or "")
    if wanted is None:
        return None
    return origin if any(_origin(entry) == wanted for entry in entries) else None


def _origin(text: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an origin or an ``allowedOrigins`` entry; None if it is none."""
    parts = urlsplit(text.rstrip("/") if "://" in text else f"https://{text.rstrip('/')}")
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path:
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    return parts.scheme, parts.hostname.lower(), port


def cors_origins(session: Session, service_id: uuid.UUID) -> str:
    """The query endpoint's ``allowedOrigins`` for a browser's preflight (which carries no
    credentials); empty when the service or its endpoint does not exist."""
    endpoint = session.get(ServiceQueryEndpoint, service_id)
    return endpoint.allowed_origins if endpoint is not None else ""


def wake_for_query(session: Session, principal: Principal, service_id: uuid.UUID) -> None:
    """A bound key's query woke an idle service (the request said ``wake-service: true``):
    waking is part of querying, so the binding is the permission."""
    authorize_run(session, principal, service_id)
    wake_if_idle(session, principal, _find(session, principal, service_id))


def wake_if_idle(session: Session, principal: Principal, service: Service) -> bool:
    """A query woke an idle service (``awaking``, recorded); False when it was not idle."""
    if service.state != State.IDLE:
        return False
    service.state = State.AWAKING.value
    record(session, principal, "service_awaken", service_id=service.id)
    session.flush()
    return True


AUTHENTICATION_FAILED = 516
IP_ADDRESS_NOT_ALLOWED = 195


# The ClickHouse HTTP interface's gate in one read (``clickhouse_gate``), on the event loop.
CLICKHOUSE_GATE_QUERY = select(
    _SERVICES.c.ip_access_list,
    _SERVICES.c.password_hash,
    _SERVICES.c.state,
    _SERVICES.c.max_replica_memory_gb,
).where(_SERVICES.c.id == bindparam("service_id"))


def check_clickhouse_address(row: Any, address: str | None) -> None:
    """The gate's first step (``clickhouse_gate``): the service exists, and ``address`` is in
    its ``ipAccessList``."""
    if row is None:
        raise ClickHouseError(AUTHENTICATION_FAILED, "the service does not exist")
    if not ip_allowed(row.ip_access_list, address):
        raise ClickHouseError(
            IP_ADDRESS_NOT_ALLOWED,
            f"Code: 195. DB::Exception: Connections from {address} are not allowed by the "
            "service's IP access list. (IP_ADDRESS_NOT_ALLOWED)",
        )


async def read_clickhouse_gate(reader: LoopReader, service_id: uuid.UUID) -> Any:
    """The service's row for ``clickhouse_gate``, read on the event loop; None if none."""
    rows = await reader.all(CLICKHOUSE_GATE_QUERY, {"service_id": service_id})
    return rows[0] if rows else None


def clickhouse_gate(
    service_id: uuid.UUID,
    row: Any,
    user: str,
    password: str,
    address: str | None,
    *,
    pepper: bytes,
    before_password: Callable[[], None] | None = None,
) -> RunGrant:
    """The gate of a service's ClickHouse HTTP interface, over the service's row (``row``:
    its ``ip_access_list``, ``password_hash``, ``state``, ``max_replica_memory_gb``; None when
    there is no such service): the address must be in the service's ``ipAccessList`` (first:
    an address outside it never spends the failed-password limits), then ``before_password``
    (those limits) is called, and the ``default`` user's password must match (the same answer
    for a wrong user and a wrong password, as ClickHouse gives)."""
    check_clickhouse_address(row, address)
    if before_password is not None:
        before_password()
    given = credentials.hash_value(pepper, password)
    if not credentials.hashes_equal(given, row.password_hash) or user != "default":
        raise ClickHouseError(
            AUTHENTICATION_FAILED,
            f"Code: 516. DB::Exception: {user}: Authentication failed: password is incorrect, "
            "or there is no user with such name. (AUTHENTICATION_FAILED)",
        )
    return RunGrant(service_id, row.state, False, row.max_replica_memory_gb)


def authorize_clickhouse(
    session: Session,
    service_id: uuid.UUID,
    user: str,
    password: str,
    address: str | None,
    *,
    pepper: bytes,
    before_password: Callable[[], None] | None = None,
) -> RunGrant:
    """``clickhouse_gate`` in a transaction: a request wakes an idle service."""
    service = session.get(Service, service_id)
    grant = clickhouse_gate(
        service_id,
        service,
        user,
        password,
        address,
        pepper=pepper,
        before_password=before_password,
    )
    if service is not None and service.state == State.IDLE:
        actor = system_principal(service.organization_id, "ClickHouse HTTP interface")
        wake_if_idle(session, actor, service)
    return grant


def may_write_sql(principal: Principal, service: Service) -> bool:
    """What the SQL console's admin needs: ``sql-console:database:access`` and
    ``control-plane:service:manage`` on the service."""
    resource = instance_resource(service.id)
    return principal.can(Permission.SQL_CONSOLE_DATABASE_ACCESS, resource) and principal.can(
        Permission.SERVICE_MANAGE, resource
    )


def check_database_roles(
    principal: Principal, service: Service, roles: Sequence[str], *, field: str
) -> None:
    """Database roles are permissions too. A binding or a Query API endpoint names only roles
    the service's engine has (an attached server's own roles are its operator's: any name but
    Keyhouse's internal one), and naming one that can write needs what the SQL console's admin
    needs: nobody binds a key, theirs or another's, to more database access than they may use
    themselves."""
    for role in roles:
        if role == ADMIN_ROLE or (service.attached_url is None and role not in NAMEABLE_ROLES):
            raise BadRequest(
                f"{field}: {role!r} is not a database role of this service (its roles: "
                f"{', '.join(NAMEABLE_ROLES)})"
            )
    writing = [role for role in roles if role != READ_ONLY_ROLE]
    if writing and not may_write_sql(principal, service):
        raise Forbidden(
            f"{field}: the database role {writing[0]!r} can write; naming it needs "
            f"{Permission.SQL_CONSOLE_DATABASE_ACCESS.value} and "
            f"{Permission.SERVICE_MANAGE.value} on the service (only {READ_ONLY_ROLE!r} "
            "otherwise)"
        )


def console_sql_grant(session: Session, principal: Principal, service_id: uuid.UUID) -> RunGrant:
    """A signed-in person's SQL console on a service: needs ``sql-console:database:access`` on
    it; writes also need ``control-plane:service:manage`` there (read-only otherwise)."""
    service = _find(session, principal, service_id)
    _require(principal, Permission.SQL_CONSOLE_DATABASE_ACCESS, service)
    writes = may_write_sql(principal, service)
    state = service.state
    wake_if_idle(session, principal, service)  # a query in the console wakes an idle service
    return RunGrant(
        service.id,
        state,
        not writes,
        service.max_replica_memory_gb,
        roles=_read_only_roles(not writes, service.attached_url),
    )


def bound_keys(
    session: Session, principal: Principal, services: Sequence[Service]
) -> dict[uuid.UUID, tuple[list[str], list[str]]]:
    """For the services whose query endpoint the caller may view: (bound key names, roles)."""
    visible = [
        s.id
        for s in services
        if principal.can(Permission.SERVICE_VIEW_QUERY_API_ENDPOINTS, instance_resource(s.id))
    ]
    if not visible:
        return {}
    endpoints = session.scalars(
        select(ServiceQueryEndpoint).where(ServiceQueryEndpoint.service_id.in_(visible))
    ).all()
    key_ids = {uuid.UUID(k) for e in endpoints for k in e.open_api_keys}
    names = dict(
        session.execute(
            select(ApiKey.id, ApiKey.name).where(
                ApiKey.id.in_(key_ids), ApiKey.organization_id == principal.organization_id
            )
        )
        .tuples()
        .all()
    )
    return {
        e.service_id: (
            [
                f"{names[uuid.UUID(k)]} (…{str(k)[-4:]})"
                for k in e.open_api_keys
                if uuid.UUID(k) in names
            ],
            list(e.roles),
        )
        for e in endpoints
    }
