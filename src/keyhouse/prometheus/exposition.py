"""Services' metrics in Prometheus' text exposition format, as ClickHouse Cloud serves them:
pure functions from what each service's engine reported (or nothing, when it does not run).

- ``ClickHouse_ServiceInfo`` (untyped, value 1) for every service, labelled with its
  ``clickhouse_cluster_status`` (``running``, ``idle``, ``awaking``, ``degraded``, ``stopped``),
  ``clickhouse_version`` (major.minor) and ``scrape`` (``full`` with the engine's series,
  ``partial`` without: a service that does not run is never woken for a scrape).
- ``ClickHouseProfileEvents_<event>`` counters from the engine's ``system.events`` and
  ``ClickHouseMetrics_<metric>`` gauges from its ``system.metrics``, each with the engine's own
  description as its HELP, and ``hostname``, ``instance`` and ``table`` labels as ClickHouse's
  exporter gives them.
- Every series carries ``clickhouse_org``, ``clickhouse_service`` and ``clickhouse_service_name``.
- ``filtered_metrics=true`` keeps the series of ``FILTERED`` only (the subset ClickHouse Cloud
  serves is not published; this one is Keyhouse's, for a dashboard of queries, inserts, reads,
  merges, memory and connections).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

INFO = "ClickHouse_ServiceInfo"
INFO_HELP = "Information about service, including cluster status and ClickHouse version"
EVENT_PREFIX = "ClickHouseProfileEvents_"
METRIC_PREFIX = "ClickHouseMetrics_"

# The states the official label knows, from the service's own.
_STATUS = {
    "running": "running",
    "idle": "idle",
    "provisioning": "awaking",
    "starting": "awaking",
    "awaking": "awaking",
    "degraded": "degraded",
    "failed": "degraded",
    "stopping": "stopped",
    "stopped": "stopped",
    "terminating": "stopped",
}

FILTERED = frozenset(
    {
        f"{EVENT_PREFIX}{name}"
        for name in (
            "Query",
            "SelectQuery",
            "InsertQuery",
            "FailedQuery",
            "FailedSelectQuery",
            "FailedInsertQuery",
            "QueryTimeMicroseconds",
            "SelectQueryTimeMicroseconds",
            "InsertQueryTimeMicroseconds",
            "InsertedRows",
            "InsertedBytes",
            "SelectedRows",
            "SelectedBytes",
            "ReadCompressedBytes",
            "MergedRows",
            "MergedUncompressedBytes",
            "Merge",
            "OSCPUVirtualTimeMicroseconds",
            "RealTimeMicroseconds",
        )
    }
    | {
        f"{METRIC_PREFIX}{name}"
        for name in (
            "Query",
            "Merge",
            "PartMutation",
            "MemoryTracking",
            "TCPConnection",
            "HTTPConnection",
            "BackgroundMergesAndMutationsPoolTask",
            "PartsActive",
            "DelayedInserts",
        )
    }
)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class EngineRow:
    """One row of the engine's ``system.events`` (``kind`` "event") or ``system.metrics``
    (``kind`` "metric")."""

    kind: str
    name: str
    value: int
    description: str


@dataclass(frozen=True)
class Scraped:
    """One service's part of a scrape: who it is, and its engine's rows (None: not running)."""

    organization_id: str
    service_id: str
    service_name: str
    state: str
    version: str | None
    rows: Sequence[EngineRow] | None = None
    hostname: str = "localhost"


@dataclass
class _Family:
    type: str
    help: str
    samples: list[str] = field(default_factory=list)


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    return "{" + ",".join(f'{name}="{escape_label(value)}"' for name, value in pairs) + "}"


def short_version(version: str | None) -> str:
    """``26.9.2.1`` → ``26.9`` (the label's form); empty when unknown."""
    if not version:
        return ""
    return ".".join(version.split(".")[:2])


def render(services: Sequence[Scraped], *, filtered: bool = False) -> str:
    """The exposition of these services' series, each family once, its samples together."""
    families: dict[str, _Family] = {INFO: _Family("untyped", INFO_HELP)}
    for service in services:
        own = [
            ("clickhouse_org", service.organization_id),
            ("clickhouse_service", service.service_id),
            ("clickhouse_service_name", service.service_name),
        ]
        info = own + [
            ("clickhouse_cluster_status", _STATUS.get(service.state, "degraded")),
            ("clickhouse_version", short_version(service.version)),
            ("scrape", "partial" if service.rows is None else "full"),
        ]
        families[INFO].samples.append(f"{INFO}{_labels(info)} 1")
        for row in service.rows or ():
            event = row.kind == "event"
            name = (EVENT_PREFIX if event else METRIC_PREFIX) + row.name
            if not _NAME.match(name) or (filtered and name not in FILTERED):
                continue
            family = families.setdefault(
                name, _Family("counter" if event else "gauge", row.description)
            )
            table = "system.events" if event else "system.metrics"
            labels = own + [("hostname", service.hostname), ("instance", "0"), ("table", table)]
            family.samples.append(f"{name}{_labels(labels)} {row.value}")
    lines: list[str] = []
    for name, family in families.items():
        if not family.samples:
            continue
        lines.append(f"# HELP {name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {name} {family.type}")
        lines.extend(family.samples)
    return "\n".join(lines) + "\n" if lines else ""
