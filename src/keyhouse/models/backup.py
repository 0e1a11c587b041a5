"""A service's backups (each one a directory the engine's own ``BACKUP`` wrote), and what
each service used, day by day."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import BigInteger, Date, Float, ForeignKey, String, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from keyhouse.db import Base, UTCDateTime, utcnow


class Backup(Base):
    """One backup of a service, in the official ``Backup`` terms: ``status`` (``in_progress``,
    ``done``, ``error``) and ``type`` (``full``, or ``incremental`` on ``base_id``, the backup
    before it in its chain; ``chain_id`` is the chain's full backup). The files are in the
    service's backup directory under the backup's id (``keyhouse.backups``).

    ``runner`` names the server process running it (``keyhouse.services.leases.holder_name``);
    None: requested (by ``keyhouse backups take``) and not begun yet."""

    __tablename__ = "backups"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    service_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("services.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(String(16), default="in_progress")
    type: Mapped[str] = mapped_column(String(16), default="full")
    base_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    chain_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    # "schedule" or "operator" (keyhouse backups take)
    trigger: Mapped[str] = mapped_column(String(16), default="schedule")
    runner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    requested_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    # Why it failed (for the operator and the console; the API's Backup has no such field).
    error: Mapped[str | None] = mapped_column(String(1024), nullable=True)


class ServiceUsage(Base):
    """What one service used on one day (UTC), measured from its engine by the process that
    runs it: engine seconds (``compute_unit_seconds``: seconds × the service's maximum memory
    in 8 GiB units), and the day's last sample of its data's and its backups' bytes on disk.
    Kept when the service is deleted (its name with it): usage is a record."""

    __tablename__ = "service_usage"
    __table_args__ = (UniqueConstraint("service_id", "day"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    service_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    service_name: Mapped[str] = mapped_column(String(50))
    day: Mapped[dt.date] = mapped_column(Date)
    compute_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    compute_unit_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    storage_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    backup_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
