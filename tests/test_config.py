"""Settings from the environment, as operators write them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from keyhouse.config import Settings, parse_rate_limit


@pytest.mark.parametrize("value", ["10.0.0.0/8, 192.168.0.1", '["10.0.0.0/8", "192.168.0.1"]'])
def test_trusted_proxies_from_the_environment(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("KEYHOUSE_TRUSTED_PROXIES", value)
    assert Settings().trusted_proxies == ["10.0.0.0/8", "192.168.0.1"]


def test_a_bad_proxy_or_rate_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYHOUSE_TRUSTED_PROXIES", "not-a-network")
    with pytest.raises(ValidationError):
        Settings()
    monkeypatch.delenv("KEYHOUSE_TRUSTED_PROXIES")
    monkeypatch.setenv("KEYHOUSE_RATE_LIMIT", "fast")
    with pytest.raises(ValidationError):
        Settings()


def test_rate_limit_forms() -> None:
    assert parse_rate_limit("10/10s") == (10, 10)
    assert parse_rate_limit(" 100 / 60s ") == (100, 60)
    assert parse_rate_limit("off") is None
    with pytest.raises(ValueError, match="rate limit"):
        parse_rate_limit("0/10s")
