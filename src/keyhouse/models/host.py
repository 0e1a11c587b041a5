"""Engine hosts (machines running ``keyhouse agent``), the tokens they join with, and the
scheduler's lease."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import JSON, Boolean, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from keyhouse.db import Base, UTCDateTime, utcnow


class HostToken(Base):
    """A join token (``keyhouse hosts token``): an agent presents it once, to join. Only its
    keyed hash is stored; a revoked token lets no new agent join (the hosts that joined with
    it keep their own credentials)."""

    __tablename__ = "host_tokens"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class EngineHost(Base):
    """A machine that runs services' engines for the control plane (``keyhouse.hosts``).

    ``channel`` is where the control plane reaches its agent (``HOST:PORT``, TLS verified
    against ``ca_pem``, the agent's own CA); ``advertise`` is the host name clients get in a
    service's ``endpoints``. ``labels`` (``region``, ``provider`` and the operator's own) decide
    placement, with ``memory_gb``. ``last_seen`` is its last heartbeat; ``schedulable`` is
    False once drained."""

    __tablename__ = "engine_hosts"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(255))
    token_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    labels: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    memory_gb: Mapped[int] = mapped_column(Integer, default=0)
    channel: Mapped[str] = mapped_column(String(300))
    advertise: Mapped[str] = mapped_column(String(255))
    ca_pem: Mapped[str] = mapped_column(Text)
    version: Mapped[str] = mapped_column(String(64), default="")
    schedulable: Mapped[bool] = mapped_column(Boolean, default=True)
    joined_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class SchedulerLease(Base):
    """Which control-plane process runs the deployment's own schedules (``name``: one row per
    schedule): ``holder`` renews it before ``expires_at``; another process takes it over once
    it has expired, or at once when the holder's process is gone from that very machine."""

    __tablename__ = "scheduler_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
