"""The API keys table: peppered hashes of key IDs and secrets, never the secrets themselves."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import JSON, ForeignKey, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from keyhouse.db import Base, UTCDateTime, utcnow


class ApiKey(Base):
    """An API key. Only peppered hashes of its key id and secret are kept."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(255))
    # HMAC-SHA256(pepper, base64(sha256(keyId))), hex: the lookup index for Basic auth.
    key_id_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # HMAC-SHA256(pepper, base64(sha256(keySecret))), hex.
    key_secret_hash: Mapped[str] = mapped_column(String(64))
    key_suffix: Mapped[str] = mapped_column(String(4))
    state: Mapped[str] = mapped_column(String(16), default="enabled")
    expire_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # None: from anywhere. []: from nowhere. Else [{"source": ..., "description": ...}].
    ip_access_list: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by_type: Mapped[str | None] = mapped_column(String(16), nullable=True)
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    created_by_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # The console's create form carries a one-time nonce: resubmitting it (a reload of the
    # page that showed the secret) finds this key instead of creating another.
    creation_nonce: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
