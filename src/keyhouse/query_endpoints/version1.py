"""A Query API endpoint's version-1 answer, ``{"data": {"columns": [...], "rows": [...]}}``,
streamed: the engine answers ``JSONCompactEachRowWithNamesAndTypes`` (a line of names, a line
of types, then one JSON array per row), and the document is made of those bytes as they come,
never parsing a row, so the API process holds one piece of the result at a time whatever its
size. (The engine formats a ``WithNamesAndTypes`` answer whole before it sends any of it, so an
error of the query is still a 400 before the document begins.)"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from keyhouse.engine.protocol import ClickHouseError

VERSION_1_FORMAT = "JSONCompactEachRowWithNamesAndTypes"
# The names and types lines of a result (a query of a few thousand columns stays far below).
HEAD_LIMIT = 16 * 1024 * 1024


async def version_1_document(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The document from the engine's ``chunks``; an error part-way ends it with ClickHouse's
    text, as the streamed answers do."""
    try:
        head: list[bytes] = []
        pending = b""
        separator_due = False  # a row was sent, its line's end withheld: a comma is due
        async for chunk in chunks:
            if len(head) < 2:
                pending += chunk
                while len(head) < 2 and b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    head.append(line)
                if len(head) < 2:
                    if len(pending) > HEAD_LIMIT:
                        raise ClickHouseError(0, "the result's column names and types are too long")
                    continue
                yield _start(head)
                chunk, pending = pending, b""
            if not chunk:
                continue
            rows = chunk.replace(b"\n", b", ")  # a newline only ever ends a row's array
            if separator_due:
                rows = b", " + rows
            separator_due = rows.endswith(b", ")
            if separator_due:
                rows = rows[:-2]
            if rows:
                yield rows
        if len(head) < 2:  # a statement: no columns
            yield _start([])
        yield b"]}}"
    except ClickHouseError as error:
        yield f"\n{error.text}\n".encode()
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]


def _start(head: list[bytes]) -> bytes:
    names, types = (json.loads(line) for line in head) if head else ([], [])
    columns = [{"name": name, "type": type_} for name, type_ in zip(names, types, strict=True)]
    return b'{"data": {"columns": ' + json.dumps(columns).encode() + b', "rows": ['
