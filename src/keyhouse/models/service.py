"""Tables of services: the service, its Query API binding, Query API endpoints and their keys,
saved queries, and the lease that says which process runs its engine."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, declared_attr, mapped_column, relationship

from keyhouse.db import Base, UTCDateTime, utcnow
from keyhouse.models.host import EngineHost


class Service(Base):
    """A ClickHouse service: a real engine (one worker process while it runs) with its own data
    directory. ``state`` is the official lifecycle state; the cloud-only labels ``provider``
    and ``region`` are stored as given and echoed."""

    __tablename__ = "services"
    __table_args__ = (UniqueConstraint("organization_id", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(50))
    state: Mapped[str] = mapped_column(String(32), default="provisioning")
    provider: Mapped[str] = mapped_column(String(16))
    region: Mapped[str] = mapped_column(String(32))
    clickhouse_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # HMAC-SHA256(pepper, base64(sha256(password))) of the `default` user's password.
    password_hash: Mapped[str] = mapped_column(String(64))
    ip_access_list: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    tags: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    idle_scaling: Mapped[bool] = mapped_column(Boolean, default=True)
    idle_timeout_minutes: Mapped[int] = mapped_column(Integer, default=15)
    min_replica_memory_gb: Mapped[int] = mapped_column(Integer, default=8)
    max_replica_memory_gb: Mapped[int] = mapped_column(Integer, default=16)
    num_replicas: Mapped[int] = mapped_column(Integer, default=1)
    release_channel: Mapped[str] = mapped_column(String(16), default="default")
    enable_core_dumps: Mapped[bool] = mapped_column(Boolean, default=False)
    # Why the service is `failed`, for the operator (never shown to callers in detail).
    failure: Mapped[str | None] = mapped_column(String(512), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The TCP port of the service's ClickHouse HTTP interface (chosen when first opened).
    http_port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # A service attached to a ClickHouse server the operator runs: its HTTP URL, user, and
    # password (encrypted with a key derived from the server's pepper). None: embedded engine.
    attached_url: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    attached_username: Mapped[str | None] = mapped_column(String(255), nullable=True)
    attached_password: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The backup configuration (None: the default, keyhouse.backups.schedule).
    backup_period_hours: Mapped[int | None] = mapped_column(Integer, nullable=True)
    backup_retention_hours: Mapped[int | None] = mapped_column(Integer, nullable=True)
    backup_start_time: Mapped[str | None] = mapped_column(String(5), nullable=True)
    # Why the last scheduled backup was not taken (a stopped or idle service), and when.
    backup_note: Mapped[str | None] = mapped_column(String(512), nullable=True)
    # A service created from a backup: restored into its engine before it first runs.
    restore_from: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    # The ClickHouse settings set through the API (name -> value as text); every query of the
    # service runs with them (keyhouse.service_settings).
    clickhouse_settings: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)
    # The engine host running it (keyhouse.hosts); None: this deployment's in-process host.
    host_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("engine_hosts.id"), nullable=True, index=True
    )
    host: Mapped[EngineHost | None] = relationship(EngineHost, foreign_keys=[host_id])
    # On an engine host: the version of what its host is told of it (``generation``, bumped
    # when that changes; ``assigned`` is its digest), and the version the host last reported
    # acting on (``observed_generation``): a report of an older one moves nothing.
    generation: Mapped[int] = mapped_column(Integer, default=0)
    assigned: Mapped[str | None] = mapped_column(String(64), nullable=True)
    observed_generation: Mapped[int] = mapped_column(Integer, default=0)
    # The engine host it is moving to (``keyhouse hosts drain``): writes wait until it is there.
    moving_to: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("engine_hosts.id"), nullable=True
    )


class EngineLease(Base):
    """Which Keyhouse process runs a service's runtime (its engine, or its attached server's
    connection, and its ClickHouse port): ``holder`` renews it before ``expires_at``; any
    other process takes it over only once it has expired (or, on the same machine, once the
    holder's process is gone). A process never starts what it does not hold. ``home`` is the
    data directory the service's data lives in (its ``keyhouse.engine.home`` id): only a
    process with that data directory takes it over. A released lease stays, expired, so that
    its home is remembered."""

    __tablename__ = "engine_leases"

    service_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("services.id", ondelete="CASCADE"), primary_key=True
    )
    holder: Mapped[str] = mapped_column(String(128))
    home: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class ServiceQueryEndpoint(Base):
    """The service's Query API binding: which API keys may run queries, and as which role."""

    __tablename__ = "service_query_endpoints"

    service_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("services.id", ondelete="CASCADE"), primary_key=True
    )
    id: Mapped[uuid.UUID] = mapped_column(Uuid, default=uuid.uuid4, unique=True)
    # API key resource ids (key.id) as strings.
    open_api_keys: Mapped[list[str]] = mapped_column(JSON, default=list)
    roles: Mapped[list[str]] = mapped_column(JSON, default=list)
    allowed_origins: Mapped[str] = mapped_column(String(2048), default="")


class _ServiceSql:
    """Named SQL of a service (unique by name in it), with parameter defaults."""

    @declared_attr.directive
    def __table_args__(cls) -> tuple[Any, ...]:  # one constraint object per table
        return (UniqueConstraint("service_id", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    service_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("services.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(255))
    sql: Mapped[str] = mapped_column(Text)
    database: Mapped[str] = mapped_column(String(255))
    parameters: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class QueryApiEndpoint(_ServiceSql, Base):
    """Saved SQL published at ``{queryHost}/run/{id}``, callable with the API keys bound to it
    (``QueryApiEndpointKey``), run under the database ``roles`` it names. ``owner_type`` is
    ``queryApiEndpoint`` when made through the API and ``user`` when made in the console
    (the API may read those but not change them, as in ClickHouse Cloud)."""

    __tablename__ = "query_api_endpoints"

    roles: Mapped[list[str]] = mapped_column(JSON, default=list)
    allowed_origins: Mapped[list[str]] = mapped_column(JSON, default=list)
    owner_type: Mapped[str] = mapped_column(String(32), default="queryApiEndpoint")
    # The last calls, newest first (a few, for the console).
    last_calls: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)


class QueryApiEndpointKey(Base):
    """One API key allowed to run one endpoint; deleting the key deletes the binding."""

    __tablename__ = "query_api_endpoint_keys"

    endpoint_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("query_api_endpoints.id", ondelete="CASCADE"), primary_key=True
    )
    api_key_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class SavedQuery(_ServiceSql, Base):
    """A named SQL text of a service (clickhousectl's ``saved-query``)."""

    __tablename__ = "saved_queries"
