"""Wire models (official ``ServiceClickhouseSetting``, ``ServiceClickhouseSettingsList``,
``ServiceClickhouseSettingsPatchResponse``, ``ServiceClickhouseSettingsSchema``)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from keyhouse.api.wire import Wire


class ServiceClickhouseSetting(Wire):
    name: str
    value: str


class ServiceClickhouseSettingsList(Wire):
    settings: list[ServiceClickhouseSetting]


class ServiceClickhouseSettingWarning(Wire):
    name: str
    message: str


class ServiceClickhouseSettingsPatchResponse(Wire):
    """``settings``: the values applied, by name (an object, as clickhousectl reads it)."""

    settings: dict[str, str]
    warnings: list[ServiceClickhouseSettingWarning]


class ServiceClickhouseSettingSchemaEntry(Wire):
    name: str
    type: str
    description: str
    enum: list[int] | None = None
    warning: str | None = None
    deprecation_notice: str | None = Field(default=None, alias="deprecationNotice")
    example: str | None = None


class ServiceClickhouseSettingsSchema(Wire):
    settings: list[ServiceClickhouseSettingSchemaEntry]


class ServiceClickhouseSettingsPatchRequest(Wire):
    """``settings``: an object of setting names to values (or, as the vendored spec types it,
    a string holding that object)."""

    settings: dict[str, Any] | str
