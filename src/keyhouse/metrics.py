"""Keyhouse's own metrics, for its operators, at ``GET /metrics`` (Prometheus' text format,
with prometheus_client): the requests it serves (by operation and status) and their latency,
failed authentications and rate-limited requests, engine restarts and crashes, services by
state, backup outcomes and the age of each service's last good backup, and queries and their
bytes per service.

Readable from loopback (the client address as ``KEYHOUSE_TRUSTED_PROXIES`` resolves it), and
from anywhere with ``Authorization: Bearer <KEYHOUSE_METRICS_TOKEN>`` when the operator sets
one. Each app state has a registry of its own (tests run many in one process).
"""

from __future__ import annotations

import datetime as dt
import hmac
import ipaddress
import time
import uuid
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyhouse.db import utcnow
from keyhouse.models import Backup, Service

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Seconds: the API answers in milliseconds; the Query API streams for up to minutes.
_BUCKETS = (0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class Metrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.requests = Counter(
            "keyhouse_requests",
            "HTTP requests answered, by operation (the official operation id), method and status",
            ["operation", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "keyhouse_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by operation",
            ["operation"],
            buckets=_BUCKETS,
            registry=registry,
        )
        self.auth_failures = Counter(
            "keyhouse_authentication_failures",
            "Failed authentications, by front end (api: API keys; clickhouse: service ports; "
            "engine_host: agents)",
            ["door"],
            registry=registry,
        )
        self.rate_limited = Counter(
            "keyhouse_rate_limited_requests",
            "Requests refused with 429, by limit (key: the per-key rate limit; failures: too "
            "many failed authentications)",
            ["limit"],
            registry=registry,
        )
        self.engine_events = Counter(
            "keyhouse_engine_events",
            "Engine workers' lives: started, crashed (exited unasked), hung (killed after "
            "missed heartbeats), given_up (crashed too often: the service failed)",
            ["event"],
            registry=registry,
        )
        self._states: set[str] = set()
        self.services = Gauge(
            "keyhouse_services",
            "Services by state (all organizations)",
            ["state"],
            registry=registry,
        )
        self.backups = Counter(
            "keyhouse_backups",
            "Backups finished by this process, by outcome (done, error)",
            ["outcome"],
            registry=registry,
        )
        self.backup_age = Gauge(
            "keyhouse_backup_last_success_age_seconds",
            "Seconds since each service's newest good backup began",
            ["service"],
            registry=registry,
        )
        self.queries = Counter(
            "keyhouse_service_queries",
            "Queries and inserts run on each service by this process",
            ["service"],
            registry=registry,
        )
        self.query_bytes = Counter(
            "keyhouse_service_query_bytes",
            "Bytes of each service's queries: read (result bytes) and written (inserted)",
            ["service", "direction"],
            registry=registry,
        )

    def query_done(self, service_id: uuid.UUID, summary: Mapping[str, Any]) -> None:
        service = str(service_id)
        self.query_bytes.labels(service, "read").inc(int(summary.get("result_bytes", 0) or 0))
        self.query_bytes.labels(service, "written").inc(int(summary.get("written_bytes", 0) or 0))

    def refresh(self, session: Session, now: dt.datetime | None = None) -> None:
        """The figures read from the database at each scrape: services by state, and the age
        of each service's newest good backup."""
        at = now or utcnow()
        counts: dict[str, int] = {
            state: int(count)
            for state, count in session.execute(
                select(Service.state, func.count()).group_by(Service.state)
            )
        }
        self._states |= set(counts)  # a state once seen reads 0 when no service is in it
        for state in self._states:
            self.services.labels(state).set(counts.get(state, 0))
        newest = session.execute(
            select(Backup.service_id, func.max(Backup.requested_at))
            .where(Backup.status == "done")
            .group_by(Backup.service_id)
        ).all()
        self.backup_age.clear()
        for service_id, began in newest:
            self.backup_age.labels(str(service_id)).set((at - began).total_seconds())

    def exposition(self) -> bytes:
        return bytes(generate_latest(self.registry))


def allowed(address: str | None, authorization: str | None, token: str | None) -> bool:
    """Whether a scrape of ``/metrics`` may read: with the operator's token from anywhere,
    without it from loopback only."""
    if token and authorization:
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token):
            return True
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


class MetricsMiddleware:
    """Counts every request and its latency, by the operation that answered it (FastAPI's
    route, or a hot path's, in ``scope["route"]`` once routed)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            operation = getattr(route, "operation_id", None) or getattr(route, "name", None)
            operation = operation or "unmatched"
            self.metrics.requests.labels(operation, scope["method"], str(status)).inc()
            self.metrics.latency.labels(operation).observe(time.perf_counter() - began)
