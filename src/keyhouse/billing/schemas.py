"""Wire models (official ``UsageCost``, ``UsageCostRecord``, ``UsageCostMetrics``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SerializerFunctionWrapHandler, model_serializer

from keyhouse.api.wire import Wire


class UsageCostMetrics(Wire):
    storage_chc: float | None = Field(default=None, alias="storageCHC")
    backup_chc: float | None = Field(default=None, alias="backupCHC")
    compute_chc: float | None = Field(default=None, alias="computeCHC")


class KeyhouseUsage(Wire):
    """What was used (a Keyhouse extension): the data warehouse's bytes, or the service's
    engine time."""

    storage_bytes: int | None = Field(default=None, alias="storageBytes")
    backup_bytes: int | None = Field(default=None, alias="backupBytes")
    compute_seconds: float | None = Field(default=None, alias="computeSeconds")
    compute_unit_hours: float | None = Field(default=None, alias="computeUnitHours")


class UsageCostRecord(Wire):
    data_warehouse_id: str = Field(alias="dataWarehouseId")
    service_id: str | None = Field(alias="serviceId")
    date: str
    entity_type: Literal["datawarehouse", "service", "clickpipe"] = Field(alias="entityType")
    entity_id: str = Field(alias="entityId")
    entity_name: str = Field(alias="entityName")
    metrics: UsageCostMetrics
    total_chc: float = Field(alias="totalCHC")
    locked: bool
    keyhouse_usage: KeyhouseUsage = Field(alias="keyhouseUsage")

    @model_serializer(mode="wrap")
    def _null_service(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """``serviceId`` is null for a data warehouse (the spec's words), never left out."""
        data: dict[str, Any] = handler(self)
        data.setdefault("serviceId", None)
        return data


class UsageCost(Wire):
    grand_total_chc: float = Field(alias="grandTotalCHC")
    costs: list[UsageCostRecord]
