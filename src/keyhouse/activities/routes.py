"""The official activity log routes (``/v1/organizations/{organizationId}/activities``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from sqlalchemy.orm import Session

from keyhouse.activities import service
from keyhouse.activities.schemas import Activity
from keyhouse.api.envelope import Envelope, ok
from keyhouse.api.wire import UtcDateTime
from keyhouse.auth.permissions import Permission
from keyhouse.auth.principal import Principal
from keyhouse.context import Context, RequireInOrganization

router = APIRouter(prefix="/organizations/{organizationId}/activities", tags=["Organization"])

EXTENSIONS = (
    "Keyhouse extension: also return Keyhouse-only activity types (role_create, role_update, "
    "role_delete), which are outside the official enum."
)
CanView = Annotated[
    Context, Depends(RequireInOrganization(Permission.ORGANIZATION_VIEW_ACTIVITIES))
]


@router.get("", operation_id="activityGetList", response_model=Envelope[list[Activity]])
async def list_activities(
    ctx: CanView,
    from_date: Annotated[UtcDateTime | None, Query(description="A starting date")] = None,
    to_date: Annotated[UtcDateTime | None, Query(description="An ending date")] = None,
    extensions: Annotated[bool, Query(description=EXTENSIONS)] = False,
) -> Response:
    def activities(session: Session, principal: Principal) -> list[Activity]:
        rows = service.list_activities(
            session, principal, from_date=from_date, to_date=to_date, extensions=extensions
        )
        return [Activity.from_row(row) for row in rows]

    return ok(await ctx.run(activities))


@router.get("/{activityId}", operation_id="activityGet", response_model=Envelope[Activity])
async def get_activity(
    ctx: CanView,
    activityId: str,  # noqa: N803
    extensions: Annotated[bool, Query(description=EXTENSIONS)] = False,
) -> Response:
    def activity(session: Session, principal: Principal) -> Activity:
        found = service.get_activity(session, principal, activityId, extensions=extensions)
        return Activity.from_row(found)

    return ok(await ctx.run(activity))
