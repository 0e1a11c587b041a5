"""The official ``usageCost`` operation: the organization's usage, day by day, priced."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from sqlalchemy.orm import Session

from keyhouse.api.envelope import Envelope, ok
from keyhouse.auth.permissions import Permission
from keyhouse.auth.principal import Principal
from keyhouse.billing import service
from keyhouse.billing.schemas import UsageCost
from keyhouse.context import Context, RequireInOrganization
from keyhouse.db import utcnow

router = APIRouter(prefix="/organizations/{organizationId}", tags=["Billing"])


@router.get("/usageCost", operation_id="usageCostGet", response_model=Envelope[UsageCost])
async def usage_cost(
    ctx: Annotated[Context, Depends(RequireInOrganization(Permission.ORGANIZATION_VIEW_BILLING))],
    from_date: Annotated[dt.date, Query(description="First day (UTC), e.g. 2026-12-01.")],
    to_date: Annotated[
        dt.date, Query(description="Last day (UTC, included); at most 30 days after from_date.")
    ],
    filter: Annotated[  # noqa: A002 (the official parameter name)
        list[str] | None, Query(description="Tag filters: tag:KEY=VALUE or tag:KEY.")
    ] = None,
) -> Response:
    """Daily, per-entity usage records of the organization and their grand total, in
    ClickHouse Credits at the operator's prices (README: Services)."""
    settings = ctx.state.settings
    prices = service.Prices(
        settings.price_compute_unit_hour,
        settings.price_storage_gb_month,
        settings.price_backup_gb_month,
    )

    def report(session: Session, principal: Principal) -> UsageCost:
        total, records = service.usage_cost(
            session,
            principal,
            from_date=from_date,
            to_date=to_date,
            filters=filter or [],
            prices=prices,
            today=utcnow().date(),
        )
        return UsageCost.model_validate({"grandTotalCHC": total, "costs": records})

    return ok(await ctx.run(report))
