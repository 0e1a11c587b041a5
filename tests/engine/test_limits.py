"""The limits every query runs under (``keyhouse.engine.limits.QueryLimits``): the operator's
ceilings, a service's memory range, a client's own values, and the shapes an engine gets."""

from __future__ import annotations

import pytest

from keyhouse.config import Settings
from keyhouse.engine.limits import ANSWER_MARGIN, QueryLimits, checked_settings, profile
from tests.conftest import make_settings

GB = 1 << 30


def _operator(**overrides: int) -> Settings:
    return make_settings("sqlite://", services=False, **overrides)


def test_the_operators_ceilings_are_the_limits() -> None:
    limits = QueryLimits.from_settings(
        _operator(
            query_max_execution_seconds=30,
            query_max_memory_bytes=4 * GB,
            query_max_result_bytes=0,
        )
    )
    assert limits.as_settings() == {
        "max_execution_time": 30,
        "max_memory_usage": 4 * GB,
        "max_result_bytes": 0,
        "result_overflow_mode": "throw",
    }
    assert limits.answer_timeout == 30 + ANSWER_MARGIN


def test_a_services_memory_range_lowers_the_memory_limit_never_raises_it() -> None:
    limits = QueryLimits(60, 4 * GB, GB)
    assert limits.for_service(2).max_memory_usage == 2 * GB
    assert limits.for_service(16).max_memory_usage == 4 * GB
    assert QueryLimits(60, 0, 0).for_service(8).max_memory_usage == 8 * GB  # (0: none)
    assert limits.for_service(2).max_execution_time == 60


def test_a_clients_own_values_are_lowered_to_the_ceilings() -> None:
    limits = QueryLimits(60, 4 * GB, 0)
    asked = {"max_execution_time": 3600, "max_memory_usage": GB, "max_result_bytes": 10**12}
    assert limits.lower(asked) == {
        "max_execution_time": 60,
        "max_memory_usage": GB,
        "max_result_bytes": 10**12,  # no ceiling set
    }
    assert limits.lower({"max_threads": 64}) == {}  # not a ceiling: not touched here


def test_an_engine_starts_with_its_limits_as_defaults_and_constraints() -> None:
    values, constraints = profile(QueryLimits(60, 4 * GB, 0).as_settings())
    assert values["result_overflow_mode"] == "throw"
    assert constraints == {"max_execution_time": (1, 60), "max_memory_usage": (1, 4 * GB)}
    assert QueryLimits.checked(values) == QueryLimits(60, 4 * GB, 0)


@pytest.mark.parametrize(
    "given",
    [
        {"max_threads": 4},  # not a limit
        {"max_execution_time": "1</max_execution_time><readonly>0"},  # into XML and URLs
        {"result_overflow_mode": "break&readonly=0"},
    ],
)
def test_anything_but_a_known_limit_with_a_plain_value_is_refused(given: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="not an engine limit"):
        checked_settings(given)
