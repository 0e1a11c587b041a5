from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from sqlalchemy.orm import Session

from keyhouse.activities import service
from keyhouse.activities.schemas import Activity
from keyhouse.api.envelope import Envelope, ok
from keyhouse.auth.dependencies import Context, RequireInOrganization
from keyhouse.auth.permissions import Permission
from keyhouse.auth.principal import Principal

router = APIRouter(prefix="/organizations/{organizationId}/activities", tags=["Organization"])

CanView = Annotated[
    Context, Depends(RequireInOrganization(Permission.ORGANIZATION_VIEW_ACTIVITIES))
]


@router.get("", operation_id="activityGetList", response_model=Envelope[list[Activity]])
async def list_activities(
    ctx: CanView,
    from_date: Annotated[dt.datetime | None, Query(description="A starting date")] = None,
    to_date: Annotated[dt.datetime | None, Query(description="An ending date")] = None,
) -> Response:
    def activities(session: Session, principal: Principal) -> list[Activity]:
        rows = service.list_activities(
            session, principal, from_date=_aware(from_date), to_date=_aware(to_date)
        )
        return [Activity.from_row(row) for row in rows]

    return ok(await ctx.run(activities))


@router.get("/{activityId}", operation_id="activityGet", response_model=Envelope[Activity])
async def get_activity(ctx: CanView, activityId: str) -> Response:  # noqa: N803
    def activity(session: Session, principal: Principal) -> Activity:
        return Activity.from_row(service.get_activity(session, principal, activityId))

    return ok(await ctx.run(activity))


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value
