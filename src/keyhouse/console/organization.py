"""The Roles and Activity pages."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from keyhouse.activities import service as activities
from keyhouse.api.errors import BadRequest, Forbidden
from keyhouse.auth.permissions import Permission
from keyhouse.console.web import (
    Acting,
    can,
    page,
)
from keyhouse.roles import service as roles

router = APIRouter(prefix="/console")


@router.get("/o/{org_id}/roles")
async def roles_page(request: Request, org_id: uuid.UUID) -> Response:
    def work(session: Session, a: Acting) -> dict[str, Any]:
        found = roles.list_roles(session, a.principal)
        return {"roles": found, "actors": roles.role_actors(session, [r.id for r in found])}

    return await page(request, org_id, work, "roles.html", "roles")


@router.get("/o/{org_id}/activity")
async def activity_page(request: Request, org_id: uuid.UUID) -> Response:
    from_value = request.query_params.get("from", "")
    to_value = request.query_params.get("to", "")

    def day(value: str, end: bool) -> dt.datetime | None:
        if not value:
            return None
        try:
            parsed = dt.date.fromisoformat(value)
        except ValueError:
            raise BadRequest(f"Not a date: {value}") from None
        return dt.datetime.combine(parsed, dt.time.max if end else dt.time.min, tzinfo=dt.UTC)

    def work(session: Session, a: Acting) -> dict[str, Any]:
        if not can(a, Permission.ORGANIZATION_VIEW_ACTIVITIES):
            raise Forbidden("Your role cannot view the activity log")
        found = activities.list_activities(
            session, a.principal, from_date=day(from_value, False), to_date=day(to_value, True)
        )
        return {"activities": found[:500]}

    return await page(
        request,
        org_id,
        work,
        "activity.html",
        "activity",
        from_value=from_value,
        to_value=to_value,
    )
