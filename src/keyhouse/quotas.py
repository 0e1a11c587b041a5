"""Per-organization quotas: how many rows of one kind (API keys, services) an organization may
hold, enforced under concurrent creates on both databases.

A create calls ``check`` before its insert (a full organization fails fast, then the
organization's row is locked: concurrent creates serialise on it on PostgreSQL) and ``recheck``
after flushing it (SQLite takes its write lock only at the insert, so two creates may both pass
``check``; counting again after the insert cannot miss either of them).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from keyhouse.api.errors import Conflict
from keyhouse.models import Organization


@dataclass(frozen=True)
class Quota:
    model: Any  # a mapped class with an ``organization_id`` column
    name: str  # as the official ``quotas`` operation names it: "api-keys-per-organization"
    things: str  # "API keys"
    limit: int

    def _count(self, session: Session, organization_id: uuid.UUID) -> int:
        counted = select(func.count()).select_from(self.model)
        return session.scalar(counted.where(self.model.organization_id == organization_id)) or 0

    def _refused(self) -> Conflict:
        return Conflict(
            f"Quota exceeded ({self.name}): an organization can hold at most {self.limit} "
            f"{self.things}"
        )

    def check(self, session: Session, organization_id: uuid.UUID) -> None:
        if self._count(session, organization_id) >= self.limit:
            raise self._refused()
        session.scalar(
            select(Organization.id).where(Organization.id == organization_id).with_for_update()
        )

    def recheck(self, session: Session, organization_id: uuid.UUID) -> None:
        if self._count(session, organization_id) > self.limit:
            raise self._refused()
