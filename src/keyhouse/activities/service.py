"""Recording and reading activities."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from keyhouse.activities.schemas import OFFICIAL_TYPES
from keyhouse.api.errors import BadRequest, NotFound
from keyhouse.auth.authorize import find_in_organization, require
from keyhouse.auth.permissions import Permission
from keyhouse.auth.principal import Principal
from keyhouse.models import Activity


def record(
    session: Session,
    principal: Principal,
    type: str,
    *,
    target_key_id: uuid.UUID | None = None,
    key_update_type: str | None = None,
    details: str | None = None,
    service_id: uuid.UUID | None = None,
) -> Activity:
    activity = Activity(
        organization_id=principal.organization_id,
        type=type,
        actor_type=principal.activity_actor_type,
        actor_id=str(principal.actor_id) if principal.actor_id else None,
        actor_details=f"{principal.actor_type}: {principal.name}"[:512],
        actor_ip_address=principal.ip_address,
        user_agent=_printable(principal.user_agent)[:512] if principal.user_agent else None,
        target_key_id=str(target_key_id) if target_key_id else None,
        key_update_type=key_update_type,
        details=details[:512] if details else None,
        service_id=str(service_id) if service_id else None,
    )
    session.add(activity)
    session.flush()
    return activity


def _printable(header: str) -> str:
    """A header as sent may carry any byte; store it without control characters."""
    return "".join(c if c.isprintable() else "\ufffd" for c in header)


def list_activities(
    session: Session,
    principal: Principal,
    *,
    from_date: dt.datetime | None = None,
    to_date: dt.datetime | None = None,
    extensions: bool = True,
) -> Sequence[Activity]:
    """The organization's activities, newest first; only official types unless
    ``extensions`` (the console shows all; the API only when asked)."""
    require(principal, Permission.ORGANIZATION_VIEW_ACTIVITIES)
    if from_date and to_date and from_date > to_date:
        raise BadRequest("from_date must not be after to_date")
    query = select(Activity).where(Activity.organization_id == principal.organization_id)
    if not extensions:
        query = query.where(Activity.type.in_(sorted(OFFICIAL_TYPES)))
    if from_date is not None:
        query = query.where(Activity.created_at >= from_date)
    if to_date is not None:
        query = query.where(Activity.created_at <= to_date)
    return session.scalars(query.order_by(Activity.created_at.desc(), Activity.id)).all()


def get_activity(
    session: Session, principal: Principal, activity_id: str, *, extensions: bool = True
) -> Activity:
    activity = find_in_organization(session, principal, Activity, activity_id, "Activity")
    require(principal, Permission.ORGANIZATION_VIEW_ACTIVITIES)
    if not extensions and activity.type not in OFFICIAL_TYPES:
        raise NotFound("Activity not found (a Keyhouse-only type: ask with extensions=true)")
    return activity
