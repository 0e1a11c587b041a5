"""Tables of roles (system and custom, with their policies) and their assignments to actors."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from keyhouse.db import Base, UTCDateTime, utcnow


class Role(Base):
    """A system or custom role of one organization; its policies live inline as JSON."""

    __tablename__ = "roles"
    __table_args__ = (UniqueConstraint("organization_id", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(255))
    # "system" or "custom"
    type: Mapped[str] = mapped_column(String(16))
    # [{"id", "allowDeny", "permissions": [...], "resources": [...], "tags": {...}|None}]
    policies: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class RoleAssignment(Base):
    """Binds a role to an actor: ``user/<uuid>`` or ``apiKey/<uuid>``."""

    __tablename__ = "role_assignments"
    __table_args__ = (Index("ix_role_assignments_actor", "actor_type", "actor_id"),)

    role_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True
    )
    # "user" or "apiKey"
    actor_type: Mapped[str] = mapped_column(String(16), primary_key=True)
    actor_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
