"""The invitations table: pending invitations of people into organizations."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import JSON, ForeignKey, String, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from keyhouse.db import Base, UTCDateTime, utcnow


class Invitation(Base):
    """An open invitation; deleted when accepted. One per email per organization."""

    __tablename__ = "invitations"
    __table_args__ = (UniqueConstraint("organization_id", "email"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    email: Mapped[str] = mapped_column(String(320))
    # Role ids (strings) granted on acceptance.
    role_ids: Mapped[list[str]] = mapped_column(JSON)
    # HMAC-SHA256(pepper, token), hex; the token itself is only in the link.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expire_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    created_by_type: Mapped[str | None] = mapped_column(String(16), nullable=True)
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
