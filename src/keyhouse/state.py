"""What one running app holds: settings, the database engine, the pepper and the limiter."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import HTTPConnection

from keyhouse.auth.ratelimit import AuthFailureLimiter, KeyRateLimiter, LoginThrottle
from keyhouse.config import IPNetwork, Settings, parse_rate_limit
from keyhouse.db import make_engine, make_sessionmaker
from keyhouse.loop_reads import LoopReader
from keyhouse.metrics import Metrics
from keyhouse.usage import EndpointCalls, UsageRecorder

log = logging.getLogger("keyhouse")


@dataclass
class AppState:
    settings: Settings
    engine: Engine
    sessionmaker: sessionmaker[Session]
    pepper: bytes
    rate_limiter: KeyRateLimiter
    trusted_proxies: list[IPNetwork]
    # Runs each request's database work; as many threads as the engine has connections.
    executor: ThreadPoolExecutor
    login_throttle: LoginThrottle
    auth_failures: AuthFailureLimiter
    # Services' ClickHouse ports: per client address, and per service (a higher threshold).
    clickhouse_auth_failures: AuthFailureLimiter
    # The hot path's reads, on the event loop with the driver directly.
    reader: LoopReader
    # usedAt, written behind the request path.
    usage: UsageRecorder
    # Query API endpoints' last calls, likewise.
    endpoint_calls: EndpointCalls
    # The services runtime (``keyhouse.runtime.Engines``), while an app serving this state runs
    # (set by its lifespan); front ends reach it through ``keyhouse.services.engines``.
    engines: Any = None
    # Who does the work transactions queue with ``after_commit`` once they committed (the
    # services runtime, while an app serving this state runs).
    on_commit: list[Callable[[Any], None]] = field(default_factory=list)
    # Keyhouse's own metrics (GET /metrics).
    metrics: Metrics = field(default_factory=Metrics)

    @classmethod
    def from_settings(cls, settings: Settings) -> AppState:
        engine = make_engine(
            settings.database_url,
            pool_size=settings.worker_threads,
            connect_timeout=settings.database_connect_timeout,
            statement_timeout=settings.database_statement_timeout,
        )
        return cls(
            settings=settings,
            engine=engine,
            sessionmaker=make_sessionmaker(engine),
            pepper=settings.pepper_bytes(),
            rate_limiter=KeyRateLimiter(settings.rate_limit_rule, settings.redis_url),
            trusted_proxies=settings.trusted_proxy_networks,
            executor=ThreadPoolExecutor(settings.worker_threads, thread_name_prefix="keyhouse-db"),
            login_throttle=LoginThrottle(
                settings.login_failures_per_account,
                settings.login_failures_per_ip,
                settings.redis_url,
            ),
            auth_failures=AuthFailureLimiter(
                parse_rate_limit(settings.auth_failures_per_ip),
                parse_rate_limit(settings.auth_failures_per_key_id),
                settings.redis_url,
            ),
            clickhouse_auth_failures=AuthFailureLimiter(
                parse_rate_limit(settings.auth_failures_per_ip),
                parse_rate_limit(settings.clickhouse_auth_failures_per_service),
                settings.redis_url,
            ),
            reader=LoopReader(engine, settings),
            usage=UsageRecorder(),
            endpoint_calls=EndpointCalls(),
        )

    def committed(self, work: Any) -> None:
        """A committed transaction's queued ``work``: to every subscriber."""
        if not self.on_commit:
            log.warning("nothing in this process runs %r (services are off)", work)
        for handler in self.on_commit:
            handler(work)

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        self.reader.close()
        self.engine.dispose()


def app_state(request: HTTPConnection) -> AppState:
    """The state of the app serving ``request``."""
    return cast(AppState, request.app.state.keyhouse)
