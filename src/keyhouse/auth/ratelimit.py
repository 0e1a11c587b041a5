"""Rate limits, all on the ``limits`` library with moving windows (no burst of twice the limit
across a window edge), in process memory or in Redis so that replicas share them:

* ``KeyRateLimiter``: requests per API key (ClickHouse Cloud: 10 per 10 s).
* ``AuthFailureLimiter``: failed authentications per client address and per key ID. Checked
  before the key is verified and counted after a failure, so valid requests never consume it.
* ``LoginThrottle``: console sign-in attempts per account and per address. Each attempt takes
  its slot atomically before the password is checked, so parallel guesses cannot all slip
  through; a successful sign-in clears the account's count (not the address's).
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, RateLimitItemPerMinute, RateLimitItemPerSecond, strategies
from limits.storage import Storage, storage_from_string

from keyhouse.api.errors import TooManyRequests


def _storage(redis_url: str | None) -> Storage:
    # A Redis that stops answering must not hold requests for ever.
    options = {"socket_timeout": 2, "socket_connect_timeout": 2} if redis_url else {}
    storage = storage_from_string(redis_url or "memory://", **options)
    if not isinstance(storage, Storage):  # an asyncio storage: not what this URL gives
        raise TypeError(f"not a synchronous limits storage: {type(storage).__name__}")
    return storage


class _Window:
    """``amount`` events per window per identifier, in one namespace."""

    def __init__(self, storage: Storage, item: RateLimitItem | None, namespace: str) -> None:
        self._limiter = strategies.MovingWindowRateLimiter(storage)
        self.item = item
        self.namespace = namespace

    def hit(self, identifier: str) -> bool:
        """Take one slot; False (and nothing taken) when the window is full."""
        return self.item is None or self._limiter.hit(self.item, self.namespace, identifier)

    def test(self, identifier: str) -> bool:
        return self.item is None or self._limiter.test(self.item, self.namespace, identifier)

    def clear(self, identifier: str) -> None:
        if self.item is not None:
            self._limiter.clear(self.item, self.namespace, identifier)

    def retry_after(self, identifier: str) -> str:
        if self.item is None:
            return "1"
        reset_at, _remaining = self._limiter.get_window_stats(self.item, self.namespace, identifier)
        return str(max(1, math.ceil(reset_at - time.time())))


def _per_seconds(rule: tuple[int, int] | None) -> RateLimitItem | None:
    return RateLimitItemPerSecond(rule[0], rule[1]) if rule else None


class KeyRateLimiter:
    def __init__(self, rule: tuple[int, int] | None, redis_url: str | None = None) -> None:
        self.rule = rule
        self._window = _Window(_storage(redis_url), _per_seconds(rule), "keyhouse-key")

    def check(self, key: str) -> None:
        """Count one request for ``key``; raise 429 once the window's budget is spent."""
        if self.rule is None or self._window.hit(key):
            return
        seconds = self._window.retry_after(key)
        raise TooManyRequests(
            f"Too many requests: the limit is {self.rule[0]} requests per {self.rule[1]} seconds"
            " per API key",
            headers={"X-RateLimit-Reset": seconds, "Retry-After": seconds},
        )


class AuthFailureLimiter:
    def __init__(
        self,
        per_ip: tuple[int, int] | None,
        per_key_id: tuple[int, int] | None,
        redis_url: str | None = None,
    ) -> None:
        storage = _storage(redis_url)
        self._ip = _Window(storage, _per_seconds(per_ip), "keyhouse-auth-ip")
        self._key_id = _Window(storage, _per_seconds(per_key_id), "keyhouse-auth-key-id")
        # In process memory, a window can hold a failure only if this process counted one less
        # than a window ago; until then every request's check has nothing to find, and skips
        # the look-ups. In Redis, other replicas count too: always look.
        self._shared = redis_url is not None
        self._longest = max((rule[1] for rule in (per_ip, per_key_id) if rule), default=0)
        self._last_failure = -math.inf

    def check(self, ip: str | None, key_id: str) -> None:
        """429 while this address or this key ID has spent its failures."""
        if not self._shared and time.time() - self._last_failure > self._longest + 1:
            return
        for window, identifier in ((self._ip, ip or "unknown"), (self._key_id, key_id)):
            if not window.test(identifier):
                seconds = window.retry_after(identifier)
                raise TooManyRequests(
                    "Too many failed authentications: wait before trying again",
                    headers={"X-RateLimit-Reset": seconds, "Retry-After": seconds},
                )

    def failed(self, ip: str | None, key_id: str) -> None:
        self._last_failure = time.time()
        self._ip.hit(ip or "unknown")
        self._key_id.hit(key_id)


class LoginThrottle:
    """Sign-in attempts per account and per client address, over a moving 15-minute window."""

    def __init__(self, per_account: int, per_ip: int, redis_url: str | None) -> None:
        storage = _storage(redis_url)
        self._account = _Window(
            storage, RateLimitItemPerMinute(per_account, 15), "keyhouse-login-account"
        )
        self._ip = _Window(storage, RateLimitItemPerMinute(per_ip, 15), "keyhouse-login-ip")

    def attempt(self, email: str, ip: str | None) -> bool:
        """Take a slot for one attempt on both counters; False when either is spent."""
        account_ok = self._account.hit(email.strip().lower())
        ip_ok = self._ip.hit(ip or "unknown")
        return account_ok and ip_ok

    def succeeded(self, email: str) -> None:
        self._account.clear(email.strip().lower())
