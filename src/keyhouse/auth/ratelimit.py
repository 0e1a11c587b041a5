"""Per-key rate limiting on the ``limits`` library: in memory, or in Redis for replicas."""

from __future__ import annotations

import math
import time

from limits import RateLimitItemPerSecond, storage, strategies

from keyhouse.api.errors import TooManyRequests


class KeyRateLimiter:
    def __init__(self, rule: tuple[int, int] | None, redis_url: str | None = None) -> None:
        self.rule = rule
        self._item = RateLimitItemPerSecond(rule[0], rule[1]) if rule else None
        backend = storage.storage_from_string(redis_url or "memory://")
        self._limiter = strategies.FixedWindowRateLimiter(backend)

    def check(self, key: str) -> None:
        """Count one request for ``key``; raise 429 once the window's budget is spent."""
        if self._item is None:
            return
        if self._limiter.hit(self._item, "keyhouse-key", key):
            return
        reset_at, _remaining = self._limiter.get_window_stats(self._item, "keyhouse-key", key)
        seconds = str(max(1, math.ceil(reset_at - time.time())))
        raise TooManyRequests(
            f"Too many requests: the limit is {self.rule[0]} requests per {self.rule[1]} seconds"  # type: ignore[index]
            " per API key",
            headers={"X-RateLimit-Reset": seconds, "Retry-After": seconds},
        )
