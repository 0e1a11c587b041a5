"""The small protocol between the API process and a service's engine worker.

One Unix socket per worker, in a private (0700) directory. A connection carries requests one
after another. Every frame is a type byte, a 4-byte big-endian length and a payload::

    client → worker   R {request JSON}
    worker → client   H {"ok": true}            then D <bytes> ... then Z (end of result)
                      E {"code": int, "message": str}   (instead of H, or after some D frames)

Requests: ``{"op": "ping"}`` (answers ``H`` with the engine's version, then ``Z``) and
``{"op": "query", "sql", "format", "database"?, "params"?, "settings"?, "readonly"?,
"query_id"?}`` (answers the result as it streams). A worker opens a fresh engine handle for
every query, so no ``SET`` or ``USE`` of one query reaches another; ``readonly`` is applied to
that handle by the engine's own setting before the query runs.
"""

from __future__ import annotations

import json
import struct
from typing import Any

REQUEST = b"R"
HEADER = b"H"
DATA = b"D"
ERROR = b"E"
END = b"Z"

_HEAD = struct.Struct(">cI")
MAX_CONTROL_FRAME = 16 * 1024 * 1024  # a request or header: SQL text is bounded by the API


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    return _HEAD.pack(kind, len(payload)) + payload


def json_frame(kind: bytes, value: dict[str, Any]) -> bytes:
    return frame(kind, json.dumps(value, separators=(",", ":")).encode())


HEAD_SIZE = _HEAD.size


def parse_head(head: bytes) -> tuple[bytes, int]:
    kind, length = _HEAD.unpack(head)
    return bytes(kind), int(length)


class EngineError(Exception):
    """An error the engine reported (``code`` is ClickHouse's error code, 0 when unknown)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
