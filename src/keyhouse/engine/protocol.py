"""The small protocol between the API process and a service's engine worker.

One Unix socket per worker, in a private (0700) directory. A connection carries requests one
after another. Every frame is a type byte, a 4-byte big-endian length and a payload::

    client → worker   R {request JSON}
    worker → client   H {"ok": true, "rows"?}   then D <bytes> ... then Z {statistics}
                      E {"code": int, "message": str}   (instead of H, or after some D frames)

Requests:

- ``{"op": "ping"}``: answers ``H`` with the engine's version, then ``Z``.
- ``{"op": "query", "sql", "format", "database"?, "params"?, "limits"?, "settings"?, "roles"?,
  "readonly"?, "session_id"?}``: answers the result as it streams; its ``H`` says whether
  the query returns rows (``rows``: false for a statement, which has no output format), its
  ``Z`` carries the engine's statistics (``SUMMARY_FIELDS``).
- ``{"op": "insert", "sql", "format", "database"?, "limits"?, "settings"?, "session_id"?}``:
  ``sql`` is the statement's head (``INSERT INTO t (a, b)``); the worker answers ``H`` when it
  is ready,
  the client sends the data as ``D`` frames and ``Z``, and the worker answers ``Z`` with
  ``{"written_rows", "written_bytes"}`` (or ``E``). An ``E`` may come before the client's
  ``Z`` (data the engine cannot parse): the client stops sending when it reads it, and the
  worker reads and drops what was already sent up to ``Z`` or the connection's end.

A worker opens a fresh engine handle for every request, so no ``SET`` or ``USE`` of one query
reaches another; a ``session_id`` (the ClickHouse HTTP interface's sessions) keeps one handle
for that session instead, used by one request at a time. ``limits`` (the operator's, and the
service's memory cap) open the handle (in its connection string; a session's handle has them
set again), then the caller's ``settings`` are set, then the database ``roles`` (``SET ROLE``)
and ``readonly``, so the query cannot undo them. An engine starts with the operator's limits as
constraints (in its configuration), so neither ``SET`` nor a query's ``SETTINGS`` lifts them.
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

log = logging.getLogger("keyhouse.engine")

REQUEST = b"R"
HEADER = b"H"
DATA = b"D"
ERROR = b"E"
END = b"Z"

_HEAD = struct.Struct(">cI")
MAX_CONTROL_FRAME = 16 * 1024 * 1024  # a request or header: SQL text is bounded by the API


def frame(kind: bytes, payload: bytes | memoryview = b"") -> bytes:
    return _HEAD.pack(kind, len(payload)) + payload


def json_frame(kind: bytes, value: dict[str, Any]) -> bytes:
    return frame(kind, json.dumps(value, separators=(",", ":")).encode())


HEAD_SIZE = _HEAD.size

# A query's statistics, as ClickHouse's X-ClickHouse-Summary names them.
SUMMARY_FIELDS = (
    "read_rows",
    "read_bytes",
    "written_rows",
    "written_bytes",
    "total_rows_to_read",
    "result_rows",
    "result_bytes",
    "elapsed_ns",
)


class Answer:
    """A query's answer: its bytes as they come (an async iterator; the first item, ``b""``,
    says the engine accepted the query, and by then ``returns_rows`` says whether it answers
    rows in its format or is a statement), then, once the last is read, ``summary``: the
    engine's statistics for the whole query (empty while it runs, or when the engine gave
    none)."""

    def __init__(self, produce: Callable[[Answer], AsyncGenerator[bytes]]) -> None:
        self.summary: dict[str, int] = {}
        self.returns_rows = True
        # Told the summary once the whole answer was read (not when it was cut short).
        self.on_end: Callable[[dict[str, int]], None] | None = None
        self._chunks = produce(self)

    def ended(self) -> None:
        """The producer's last step: the answer is whole."""
        if self.on_end is not None:
            self.on_end(self.summary)

    def __aiter__(self) -> Answer:
        return self

    def __anext__(self) -> Awaitable[bytes]:
        return self._chunks.__anext__()

    async def aclose(self) -> None:
        await self._chunks.aclose()

    async def whole(self) -> bytes:
        """The whole answer, for the control plane's own small reads (never a caller's
        result, which streams)."""
        return b"".join([chunk async for chunk in self])


def parse_head(head: bytes) -> tuple[bytes, int]:
    kind, length = _HEAD.unpack(head)
    return bytes(kind), int(length)


SESSION_IS_LOCKED = 373
SYNTAX_ERROR = 62
TIMEOUT_EXCEEDED = 159  # a query that ran out of time
ACCESS_DENIED = 497
TOO_MANY_SIMULTANEOUS_QUERIES = 202  # a configured limit: 503 with Retry-After


class ClickHouseError(Exception):
    """An error as ClickHouse reports it (``code`` is ClickHouse's error code, 0 when unknown):
    an engine's, an attached server's, or a service's gate's (its HTTP status is the ClickHouse
    HTTP interface's to map)."""

    def __init__(self, code: int, message: str) -> None:
        # chDB's streaming API prefixes its errors with words a ClickHouse server never sends.
        message = message.removeprefix(_STREAMING_PREFIX)
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def reason(self) -> str:
        """The message's first line, without the stack trace an engine may append (for a
        message of Keyhouse's own: a backup's error, a refused setting)."""
        first = self.message.split(", Stack trace", 1)[0].strip().splitlines()
        return first[0].strip()[:1000] if first else ""

    @property
    def text(self) -> str:
        """The error as a ClickHouse server writes it: ``Code: N. DB::Exception: ...``."""
        if self.message.startswith("Code: "):
            return self.message
        return f"Code: {self.code}. DB::Exception: {self.message}"


_STREAMING_PREFIX = "Streaming query failed: "


def silent_engine(timeout: float) -> ClickHouseError:
    """The error of a request given up on an engine that did not answer (logged: an engine
    that hangs is the operator's to look at)."""
    log.warning("an engine did not answer within %g s: the request is given up", timeout)
    return ClickHouseError(
        TIMEOUT_EXCEEDED,
        f"Timeout exceeded: the engine did not answer within {timeout:g} s (TIMEOUT_EXCEEDED)",
    )


TOO_MANY_ROWS_OR_BYTES = 396


async def bounded_result(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """A whole result, for the answers that need one (a Query API endpoint's version 1, the
    console's SQL page), never more than ``limit`` bytes in the API process: past it the
    result is closed (the engine cancels the query) and ClickHouse's own error is raised."""
    parts, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            await chunks.aclose()  # type: ignore[attr-defined]
            raise ClickHouseError(
                TOO_MANY_ROWS_OR_BYTES,
                f"Code: 396. DB::Exception: Limit for result exceeded, max bytes: {limit}: "
                "this answer is built whole; ask for a streamed format or fewer rows. "
                "(TOO_MANY_ROWS_OR_BYTES)",
            )
        parts.append(chunk)
    return b"".join(parts)
