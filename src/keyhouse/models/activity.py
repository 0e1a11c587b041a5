"""The activity log table: what happened in an organization, by whom."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import ForeignKey, Index, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from keyhouse.db import Base, UTCDateTime, utcnow


class Activity(Base):
    """One entry of an organization's activity log; written in the change's transaction."""

    __tablename__ = "activities"
    __table_args__ = (Index("ix_activities_org_created", "organization_id", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("organizations.id", ondelete="CASCADE")
    )
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    type: Mapped[str] = mapped_column(String(64))
    # "user", "api", "system", "support" (the official enum).
    actor_type: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    actor_details: Mapped[str | None] = mapped_column(String(512), nullable=True)
    actor_ip_address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    user_agent: Mapped[str | None] = mapped_column(String(512), nullable=True)
    service_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    target_key_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    key_update_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Keyhouse extension: what was changed (e.g. the member's email, the role's name).
    details: Mapped[str | None] = mapped_column(String(512), nullable=True)
