"""What one running app holds: settings, the database engine, the pepper and the limiter."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from keyhouse.auth.ratelimit import KeyRateLimiter
from keyhouse.config import IPNetwork, Settings
from keyhouse.db import make_engine, make_sessionmaker


@dataclass
class AppState:
    settings: Settings
    engine: Engine
    sessionmaker: sessionmaker[Session]
    pepper: bytes
    rate_limiter: KeyRateLimiter
    trusted_proxies: list[IPNetwork]

    @classmethod
    def from_settings(cls, settings: Settings) -> AppState:
        engine = make_engine(settings.database_url)
        return cls(
            settings=settings,
            engine=engine,
            sessionmaker=make_sessionmaker(engine),
            pepper=settings.pepper_bytes(),
            rate_limiter=KeyRateLimiter(settings.rate_limit_rule, settings.redis_url),
            trusted_proxies=settings.trusted_proxy_networks,
        )
