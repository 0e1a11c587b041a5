"""The limits every query runs under, in one place.

The operator sets three ceilings (``KEYHOUSE_QUERY_MAX_EXECUTION_SECONDS``,
``..._MEMORY_BYTES``, ``..._RESULT_BYTES``); a service's memory range lowers the memory one for
its queries. They reach an engine in three shapes, all made here: an embedded engine starts
with them as its profile's defaults *and* constraints (a query may lower them, never lift
them), each query carries them (a session's kept handle gets them again), and an attached
server gets them as URL parameters. A client's own values (the ClickHouse HTTP interface's URL
settings) are lowered to them, and a caller waits for each part of an answer for the execution
limit plus a margin.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keyhouse.config import Settings

# The limits' ClickHouse names: the numeric ceilings, then how a result past its size ends.
CEILINGS = ("max_execution_time", "max_memory_usage", "max_result_bytes")
NAMES = (*CEILINGS, "result_overflow_mode")
# Seconds past the operator's max_execution_time an engine (a worker or an attached server) may
# stay silent before its caller stops waiting: the engine ends a query at that limit (checked
# between blocks, so it may run over a little); silence beyond the margin is an engine that
# hangs, not one that works. Without an execution limit, the wait is NO_EXECUTION_LIMIT_WAIT.
ANSWER_MARGIN = 30.0
NO_EXECUTION_LIMIT_WAIT = 300.0
_PLAIN = re.compile(r"^[A-Za-z0-9_]+$")


@dataclass(frozen=True)
class QueryLimits:
    """Each numeric limit: 0 is none."""

    max_execution_time: int = 0  # seconds
    max_memory_usage: int = 0  # bytes
    max_result_bytes: int = 0
    result_overflow_mode: str = "throw"

    @classmethod
    def from_settings(cls, settings: Settings) -> QueryLimits:
        return cls(
            settings.query_max_execution_seconds,
            settings.query_max_memory_bytes,
            settings.query_max_result_bytes,
        )

    @classmethod
    def checked(cls, given: dict[str, Any]) -> QueryLimits:
        """Limits as a request carries them (``as_settings``), checked (``checked_settings``)."""
        checked = checked_settings(given)
        numbers = {name: int(checked[name]) for name in CEILINGS if name in checked}
        overflow = str(checked.get("result_overflow_mode", "throw"))
        return cls(**numbers, result_overflow_mode=overflow)

    def for_service(self, max_memory_gb: int) -> QueryLimits:
        """A service's queries: its memory range's maximum caps each one, within the
        operator's own cap."""
        memory = _lowest(self.max_memory_usage, max_memory_gb << 30)
        return QueryLimits(
            self.max_execution_time, memory, self.max_result_bytes, self.result_overflow_mode
        )

    def as_settings(self) -> dict[str, int | str]:
        """As ClickHouse settings: a request's ``limits``, an attached server's URL parameters."""
        return {
            "max_execution_time": self.max_execution_time,
            "max_memory_usage": self.max_memory_usage,
            "max_result_bytes": self.max_result_bytes,
            "result_overflow_mode": self.result_overflow_mode,
        }

    def lower(self, asked: dict[str, int]) -> dict[str, int]:
        """A client's own values of the ceilings (others are left out), lowered to them."""
        ceilings = self.as_settings()
        return {
            name: min(value, int(ceilings[name]) or 2**62)
            for name, value in asked.items()
            if name in CEILINGS
        }

    @property
    def answer_timeout(self) -> float:
        """Seconds a caller waits for each part of an engine's answer."""
        return float(self.max_execution_time or NO_EXECUTION_LIMIT_WAIT) + ANSWER_MARGIN


def checked_settings(given: dict[str, Any]) -> dict[str, int | str]:
    """Limits as ClickHouse settings (all or some of them), refused unless each is a known name
    with a plain value: they go into an engine's configuration and connection strings."""
    for name, value in given.items():
        if name not in NAMES or not _PLAIN.match(str(value)):
            raise ValueError(f"not an engine limit: {name}={value!r}")
    return dict(given)


def profile(given: dict[str, Any]) -> tuple[dict[str, int | str], dict[str, tuple[int, int]]]:
    """An engine's default profile from the limits it starts with: their values, and a
    constraint (min 1, max the limit) on each numeric one that is set, so that neither ``SET``
    nor a query's ``SETTINGS`` clause lifts it (0 would be no limit)."""
    values = checked_settings(given)
    constraints = {
        name: (1, value) for name, value in values.items() if isinstance(value, int) and value > 0
    }
    return values, constraints


def _lowest(limit: int, cap: int) -> int:
    return min(limit, cap) if limit else cap
