"""External data, as a ClickHouse server takes it: a ``multipart/form-data`` body whose parts
are tables for the one query in the URL (``query=``). Part ``name`` is a table of that name;
its columns come from the URL parameter ``<name>_structure`` (``id UInt32, s String``) or
``<name>_types`` (``UInt32,String``: columns ``_1``, ``_2``, ...), its format from
``<name>_format`` (default ``TabSeparated``). clickhouse-connect's ``external_data`` and curl's
``-F`` send it so.

Each table lives for its query only: a temporary table on a session of the request's own (or
the caller's session, from which it is dropped after the query), filled by streaming its part
into the engine as an insert, so that no part is held whole in the API process.
"""

from __future__ import annotations

import collections
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

from python_multipart.multipart import MultipartParser, parse_options_header

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SUFFIXES = ("_structure", "_types", "_format")


class ExternalDataError(ValueError):
    """The request's external data cannot be read (the message says why)."""


@dataclass(frozen=True)
class Table:
    name: str
    columns: str  # the column list of CREATE TEMPORARY TABLE
    format: str


def boundary(content_type: str) -> bytes | None:
    """The multipart boundary of a ``multipart/form-data`` body, or None for any other body."""
    kind, options = parse_options_header(content_type)
    if kind != b"multipart/form-data":
        return None
    value = options.get(b"boundary")
    if not value:
        raise ExternalDataError("multipart/form-data without a boundary")
    return value


def table(name: str, params: dict[str, str]) -> Table:
    """The table a part named ``name`` makes, from the URL's parameters for it."""
    if not _NAME.match(name):
        raise ExternalDataError(f"an external table's name must be an identifier, got {name!r}")
    structure = params.get(f"{name}_structure")
    types = params.get(f"{name}_types")
    if structure:
        columns = structure
    elif types:
        columns = ", ".join(f"_{i} {t}" for i, t in enumerate(split_types(types), start=1))
    else:
        raise ExternalDataError(
            f"Neither structure nor types have not been provided for external table {name}. "
            f"Use fields {name}_structure or {name}_types to do so."
        )
    fmt = params.get(f"{name}_format") or "TabSeparated"
    if not _NAME.match(fmt):
        raise ExternalDataError(f"{name}_format: not a format name: {fmt!r}")
    return Table(name, columns, fmt)


def split_types(types: str) -> list[str]:
    """``UInt32,Map(String, UInt8)`` -> ``["UInt32", "Map(String, UInt8)"]`` (commas inside
    parentheses or quotes belong to their type)."""
    parts: list[str] = []
    current: list[str] = []
    depth, quote = 0, ""
    for char in types:
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"`":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    parts.append("".join(current).strip())
    if any(not part for part in parts) or depth or quote:
        raise ExternalDataError(f"cannot read the types {types!r}")
    return parts


class Parts:
    """The parts of a multipart body, one after the other, each streamed: ``async for name,
    data in Parts(...)``; each part's ``data`` must be read to its end before the next."""

    def __init__(self, body: AsyncIterator[bytes], boundary_: bytes) -> None:
        self._body = body
        self._events: collections.deque[tuple[str, bytes]] = collections.deque()
        self._header: list[bytes] = [b"", b""]
        events = self._events

        def header_field(data: bytes, start: int, end: int) -> None:
            self._header[0] += data[start:end]

        def header_value(data: bytes, start: int, end: int) -> None:
            self._header[1] += data[start:end]

        def header_end() -> None:
            field, value = self._header
            if field.lower() == b"content-disposition":
                events.append(("disposition", value))
            self._header = [b"", b""]

        self._parser = MultipartParser(
            boundary_,
            {
                "on_part_begin": lambda: events.append(("begin", b"")),
                "on_header_field": header_field,
                "on_header_value": header_value,
                "on_header_end": header_end,
                "on_headers_finished": lambda: events.append(("headers", b"")),
                "on_part_data": lambda data, start, end: events.append(("data", data[start:end])),
                "on_part_end": lambda: events.append(("end", b"")),
            },
        )
        self._done = False

    async def _next(self) -> tuple[str, bytes] | None:
        while not self._events:
            if self._done:
                return None
            try:
                chunk = await anext(self._body)
            except StopAsyncIteration:
                self._done = True
                self._parser.finalize()
                continue
            self._parser.write(chunk)
        return self._events.popleft()

    async def __aiter__(self) -> AsyncIterator[tuple[str, AsyncIterator[bytes]]]:
        name = ""
        while (event := await self._next()) is not None:
            kind, value = event
            if kind == "begin":
                name = ""
            elif kind == "disposition":
                _, options = parse_options_header(value)
                name = options.get(b"name", b"").decode("utf-8", "replace")
            elif kind == "headers":
                if not name:
                    raise ExternalDataError("a part of the body has no name")
                yield name, self._data()
        # (data and end events of a part are consumed by its _data iterator)

    async def _data(self) -> AsyncIterator[bytes]:
        while (event := await self._next()) is not None:
            kind, value = event
            if kind == "end":
                return
            if kind == "data" and value:
                yield value
        raise ExternalDataError("the body ended inside a part")
