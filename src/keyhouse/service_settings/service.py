"""A service's ClickHouse settings (the official ``clickhouseSettings``): which ones may be
set, what a request's values are, and the records. Plain functions; the engine's own catalog
and its checks of values come from the reference engine (``keyhouse.runtime.Engines.reference``),
which the routes call outside the transaction.

- **Which**: every setting of the engine's ``system.settings`` that is not obsolete, but the
  operator's ceilings (``max_execution_time``, ``max_memory_usage``, ``max_result_bytes``,
  ``result_overflow_mode``: set by the operator; a query may still lower them) and
  ``readonly`` (it would refuse every query's own settings).
- **Values**: a JSON scalar each (clickhousectl sends ``{"settings": {...}}``; the vendored spec
  types ``settings`` as a string holding that JSON object, which is read too), kept as text;
  the engine checks each one (``SET name = 'value'``) before anything is stored, and a value it
  refuses is a 400 naming the setting, with the engine's reason.
- **Applied**: to every query of the service, through every front end, under the query's own
  settings (which win) and the operator's ceilings; they survive restarts.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from keyhouse.activities.service import record
from keyhouse.api.errors import BadRequest, NotFound
from keyhouse.auth.authorize import find_in_organization, require
from keyhouse.auth.permissions import Permission, instance_resource
from keyhouse.auth.principal import Principal
from keyhouse.engine.limits import NAMES as CEILINGS
from keyhouse.engine.protocol import ClickHouseError
from keyhouse.engine.sql import literal
from keyhouse.models import Service
from keyhouse.services.engines import EngineRuntime
from keyhouse.services.states import EngineWork, Step
from keyhouse.transactions import after_commit

CATALOG_SQL = (
    "SELECT name, type, description, default FROM system.settings WHERE NOT is_obsolete "
    "ORDER BY name"
)
_CEILING = "the operator's ceiling (KEYHOUSE_QUERY_MAX_* settings); a query may lower it"
RESERVED = {
    **dict.fromkeys(CEILINGS, _CEILING),
    "readonly": "it would refuse every query's own settings; bind a read-only role instead",
}
ATTACHED = "The settings of a service attached to a ClickHouse server are that server's operator's"
# The spec's warnings for settings whose change may disrupt a service.
WARNINGS = {
    "compatibility": "Changing the compatibility version without comprehensive testing can "
    "cause query failures or instability.",
    "max_threads": "More threads per query take CPU from the service's other queries.",
    "max_bytes_before_external_group_by": "Spilling to disk changes the memory and speed of "
    "aggregations.",
    "max_bytes_before_external_sort": "Spilling to disk changes the memory and speed of sorts.",
    "allow_experimental_analyzer": "The query analyzer changes how queries are planned.",
    "enable_analyzer": "The query analyzer changes how queries are planned.",
}
MAX_SETTINGS = 256  # in one request
MAX_VALUE = 4096  # characters


@dataclass(frozen=True)
class SettingInfo:
    name: str
    type: str
    description: str
    default: str


def catalog(answer: bytes) -> dict[str, SettingInfo]:
    """The settings a service may set, from the engine's answer to ``CATALOG_SQL``."""
    found: dict[str, SettingInfo] = {}
    for line in answer.splitlines():
        if not line.strip():
            continue
        row: dict[str, Any] = json.loads(line)
        if row["name"] in RESERVED:
            continue
        description = str(row["description"]).strip().split("\n\n", 1)[0]
        found[row["name"]] = SettingInfo(row["name"], row["type"], description, row["default"])
    return found


def _service(
    session: Session, principal: Principal, service_id: uuid.UUID, permission: Permission
) -> Service:
    service = find_in_organization(session, principal, Service, service_id, "Service")
    require(principal, permission, instance_resource(service.id))
    return service


def configured(session: Session, service_id: uuid.UUID) -> dict[str, str]:
    """The service's settings (none when it has none, or is gone)."""
    service = session.get(Service, service_id)
    return dict(service.clickhouse_settings or {}) if service is not None else {}


def list_settings(session: Session, principal: Principal, service_id: uuid.UUID) -> dict[str, str]:
    service = _service(session, principal, service_id, Permission.SERVICE_VIEW)
    return dict(sorted((service.clickhouse_settings or {}).items()))


def check_readable(session: Session, principal: Principal, service_id: uuid.UUID) -> None:
    _service(session, principal, service_id, Permission.SERVICE_VIEW)


def check_writable(session: Session, principal: Principal, service_id: uuid.UUID) -> None:
    """404, 403, or 400 for an attached service: before the engine checks anything."""
    service = _service(session, principal, service_id, Permission.SERVICE_MANAGE)
    if service.attached_url is not None:
        raise BadRequest(ATTACHED)


def requested(body: Any) -> dict[str, str]:
    """The settings a PATCH asks for, each value as text: ``settings`` is a JSON object, or
    a string holding one; each value a JSON scalar."""
    settings = body.get("settings") if isinstance(body, Mapping) else None
    if isinstance(settings, str):
        try:
            settings = json.loads(settings)
        except ValueError:
            raise BadRequest("settings: must be a JSON object of setting names to values") from None
    if not isinstance(settings, Mapping) or not settings:
        raise BadRequest("settings: must be a non-empty object of setting names to values")
    if len(settings) > MAX_SETTINGS:
        raise BadRequest(f"settings: at most {MAX_SETTINGS} in one request")
    values: dict[str, str] = {}
    for name, value in settings.items():
        if isinstance(value, bool):
            text = "1" if value else "0"
        elif isinstance(value, int | float | str):
            text = str(value)
        else:
            raise BadRequest(f"settings.{name}: must be a string, a number or a boolean")
        if len(text) > MAX_VALUE or "\x00" in text:
            raise BadRequest(f"settings.{name}: the value is too long or holds a NUL character")
        values[str(name)] = text
    return values


def check_names(values: Mapping[str, str], known: Mapping[str, SettingInfo]) -> None:
    for name in values:
        if name in RESERVED:
            raise BadRequest(f"settings.{name}: cannot be set on a service: {RESERVED[name]}")
        if name not in known:
            raise BadRequest(f"settings.{name}: not a setting of this engine (see .../schema)")


def checks(values: Mapping[str, str]) -> list[str]:
    """The statements that make the engine check each value (names already checked)."""
    return [f"SET {name} = {literal(value)}" for name, value in values.items()]


async def check_values(engines: EngineRuntime, values: Mapping[str, str]) -> None:
    """The engine's own checks of ``values`` (names, then each value), on the reference
    engine; BadRequest naming the first setting it refuses."""
    check_names(values, catalog(await engines.catalog()))
    answers = await engines.reference(checks(values))
    for name, answer in zip(values, answers, strict=True):
        if isinstance(answer, ClickHouseError):
            raise BadRequest(f"settings.{name}: the engine refuses the value: {answer.reason}")


def warnings(values: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"name": name, "message": WARNINGS[name]} for name in values if name in WARNINGS]


def update_settings(
    session: Session, principal: Principal, service_id: uuid.UUID, values: Mapping[str, str]
) -> dict[str, str]:
    """Store the (checked) values; the service's queries run with them once this commits."""
    service = _service(session, principal, service_id, Permission.SERVICE_MANAGE)
    if service.attached_url is not None:
        raise BadRequest(ATTACHED)
    _store(
        session,
        principal,
        service,
        {**(service.clickhouse_settings or {}), **values},
        ", ".join(sorted(values)),
    )
    return dict(values)


def delete_setting(
    session: Session, principal: Principal, service_id: uuid.UUID, name: str
) -> None:
    """Back to the engine's default (a setting never set: nothing to do)."""
    service = _service(session, principal, service_id, Permission.SERVICE_MANAGE)
    current = dict(service.clickhouse_settings or {})
    if current.pop(name, None) is not None:
        _store(session, principal, service, current, f"{name} reset")


def _store(
    session: Session, principal: Principal, service: Service, settings: dict[str, str], what: str
) -> None:
    """The service's settings from now on: recorded, and handed to its runtime after the
    commit."""
    service.clickhouse_settings = settings or None
    record(
        session,
        principal,
        "service_update_clickhouse_settings",
        service_id=service.id,
        details=what[:512],
    )
    after_commit(session, EngineWork(service.id, Step.CONFIGURE, settings=settings))
    session.flush()


def default_of(name: str, known: Mapping[str, SettingInfo]) -> str:
    """The engine's default of a setting (404 for one it does not have)."""
    if name not in known:
        raise NotFound(f"Setting {name!r} not found")
    return known[name].default
