"""Authorization in the domain layer: every service function that reads or changes an
organization's data starts with ``require`` (or finds its record with ``find_in_organization``
first, then requires), so the API, the console and the CLI get the same answer.

Find, then check: a record outside the caller's organization is a 404 whatever the caller
holds, so a 403 never reveals that something exists elsewhere.
"""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from keyhouse.api.errors import Forbidden, NotFound
from keyhouse.auth.permissions import Permission, organization_resource
from keyhouse.auth.principal import Principal

M = TypeVar("M")


def require(principal: Principal, permission: Permission, resource: str | None = None) -> None:
    """403 unless ``principal`` holds ``permission`` on ``resource`` (default: its
    organization), as the one policy evaluator decides."""
    target = resource or organization_resource(principal.organization_id)
    if not principal.can(permission, target):
        raise Forbidden(f"FORBIDDEN: This operation requires the {permission} permission")


def find_in_organization(
    session: Session, principal: Principal, model: type[M], record_id: Any, what: str
) -> M:
    """The ``model`` row with this primary key in the caller's organization, or 404."""
    if isinstance(record_id, str):
        try:
            record_id = uuid.UUID(record_id)
        except ValueError:
            raise NotFound(f"{what} not found") from None
    found = session.get(model, record_id)
    if found is None or getattr(found, "organization_id", None) != principal.organization_id:
        raise NotFound(f"{what} not found")
    return found
