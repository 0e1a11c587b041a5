"""Usage, measured and priced. The process that runs a service's engine samples it (engine
time while it runs; its data's and its backups' bytes on disk) into one ``ServiceUsage`` row
per service and UTC day; ``usage_cost`` prices the rows with the operator's price table
(``KEYHOUSE_PRICE_*``, in ClickHouse Credits; all zero by default) in the official shape.

As ClickHouse Cloud splits them: a service's compute is its ``service`` entity's
(``computeCHC``: hours running × its maximum memory in 8 GiB units × the unit-hour price), its
storage and backups its data warehouse's (``datawarehouse`` entity, ``serviceId`` null:
``storageCHC``/``backupCHC``: the day's bytes as GB × the GB-month price ÷ the month's days).
A day's records are ``locked`` once the day is over. Each record also carries, as a Keyhouse
extension, the usage itself (``keyhouseUsage``), which is what an operator with no prices
set reads.
"""

from __future__ import annotations

import calendar
import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from keyhouse.api.errors import BadRequest
from keyhouse.auth.authorize import require
from keyhouse.auth.permissions import Permission, organization_resource
from keyhouse.auth.principal import Principal
from keyhouse.models import Service, ServiceUsage
from keyhouse.services.service import has_tags, parse_tag_filters

MAX_DAYS = 31  # in one report, both ends included
GB = 10**9
UNIT_GB = 8  # a compute unit's memory


@dataclass(frozen=True)
class Prices:
    compute_unit_hour: float = 0.0
    storage_gb_month: float = 0.0
    backup_gb_month: float = 0.0


@dataclass(frozen=True)
class Sample:
    service_id: uuid.UUID
    seconds: float  # engine time since the last sample (0: not running)
    storage_bytes: int
    backup_bytes: int


def record_samples(session: Session, samples: Sequence[Sample], now: dt.datetime) -> None:
    """Add the samples to their services' rows of the day (``now``'s, UTC)."""
    day = now.astimezone(dt.UTC).date()
    for sample in samples:
        service = session.get(Service, sample.service_id)
        if service is None:
            continue
        row = session.scalar(
            select(ServiceUsage).where(
                ServiceUsage.service_id == service.id, ServiceUsage.day == day
            )
        )
        if row is None:
            row = ServiceUsage(
                organization_id=service.organization_id,
                service_id=service.id,
                service_name=service.name,
                day=day,
                compute_seconds=0.0,
                compute_unit_seconds=0.0,
            )
            session.add(row)
        units = max(service.max_replica_memory_gb, UNIT_GB) / UNIT_GB
        row.service_name = service.name
        row.compute_seconds += sample.seconds
        row.compute_unit_seconds += sample.seconds * units
        row.storage_bytes = sample.storage_bytes
        row.backup_bytes = sample.backup_bytes
    session.flush()


def _dates(from_date: dt.date, to_date: dt.date) -> None:
    if to_date < from_date:
        raise BadRequest("to_date: must not be before from_date")
    if (to_date - from_date).days >= MAX_DAYS:
        raise BadRequest(f"to_date: at most {MAX_DAYS} days from from_date (both included)")


def _per_day(bytes_: int, price_gb_month: float, day: dt.date) -> float:
    return bytes_ / GB * price_gb_month / calendar.monthrange(day.year, day.month)[1]


def usage_cost(
    session: Session,
    principal: Principal,
    *,
    from_date: dt.date,
    to_date: dt.date,
    filters: Sequence[str],
    prices: Prices,
    today: dt.date,
) -> tuple[float, list[dict[str, Any]]]:
    """The grand total and the records (by day, then service) of the organization's usage."""
    require(
        principal,
        Permission.ORGANIZATION_VIEW_BILLING,
        organization_resource(principal.organization_id),
    )
    _dates(from_date, to_date)
    wanted = parse_tag_filters(filters)
    rows = session.scalars(
        select(ServiceUsage)
        .where(
            ServiceUsage.organization_id == principal.organization_id,
            ServiceUsage.day >= from_date,
            ServiceUsage.day <= to_date,
        )
        .order_by(ServiceUsage.day, ServiceUsage.service_name, ServiceUsage.service_id)
    ).all()
    if wanted:  # tags are the service's as it is now (a deleted one matches none)
        ids = {row.service_id for row in rows}
        services = session.scalars(select(Service).where(Service.id.in_(ids))).all()
        matching = {service.id for service in services if has_tags(service, wanted)}
        rows = [row for row in rows if row.service_id in matching]
    records: list[dict[str, Any]] = []
    for row in rows:
        compute = round(row.compute_unit_seconds / 3600 * prices.compute_unit_hour, 6)
        storage = round(_per_day(row.storage_bytes, prices.storage_gb_month, row.day), 6)
        backup = round(_per_day(row.backup_bytes, prices.backup_gb_month, row.day), 6)
        common = {
            "dataWarehouseId": str(row.service_id),
            "date": row.day.isoformat(),
            "entityId": str(row.service_id),
            "entityName": row.service_name,
            "locked": row.day < today,
        }
        records.append(
            {
                **common,
                "serviceId": None,
                "entityType": "datawarehouse",
                "metrics": {"storageCHC": storage, "backupCHC": backup},
                "totalCHC": round(storage + backup, 6),
                "keyhouseUsage": {
                    "storageBytes": row.storage_bytes,
                    "backupBytes": row.backup_bytes,
                },
            }
        )
        records.append(
            {
                **common,
                "serviceId": str(row.service_id),
                "entityType": "service",
                "metrics": {"computeCHC": compute},
                "totalCHC": compute,
                "keyhouseUsage": {
                    "computeSeconds": round(row.compute_seconds, 3),
                    "computeUnitHours": round(row.compute_unit_seconds / 3600, 6),
                },
            }
        )
    total = round(sum(record["totalCHC"] for record in records), 6)
    return total, records
