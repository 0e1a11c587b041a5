"""An attached ClickHouse: a server or cluster the operator runs, reached over its HTTP
interface, with the same surface as an engine worker (``query`` streams, ``insert`` takes a
stream). Keyhouse's limits, ``readonly`` and database roles travel as URL parameters, so the
server itself enforces them.

Its HTTPS certificate is verified against the system's CAs and Keyhouse's own CA (so a service
can be attached to another Keyhouse service's interface).
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from keyhouse.engine.protocol import SUMMARY_FIELDS, Answer, ClickHouseError, silent_engine
from keyhouse.engine.sql import setting_text


class Upstream:
    def __init__(
        self,
        url: str,
        username: str,
        password: str,
        ca_file: Path | None,
        *,
        answer_timeout: float,
    ) -> None:
        context = ssl.create_default_context()
        if ca_file is not None and ca_file.exists():
            context.load_verify_locations(cafile=str(ca_file))
        self.url = url.rstrip("/") + "/"
        self._client = httpx.AsyncClient(
            auth=httpx.BasicAuth(username, password),
            verify=context,
            timeout=httpx.Timeout(connect=10, read=answer_timeout, write=60, pool=10),
        )
        self.answer_timeout = answer_timeout

    def __repr__(self) -> str:  # never the credentials
        return f"Upstream({self.url!r})"

    async def close(self) -> None:
        await self._client.aclose()

    async def version(self) -> str:
        chunks = await self.query({"sql": "SELECT version()", "format": "TabSeparated"})
        return (await chunks.whole()).decode().strip()

    @staticmethod
    def _params(request: dict[str, Any]) -> list[tuple[str, str]]:
        settings = {**(request.get("limits") or {}), **(request.get("settings") or {})}
        params: list[tuple[str, str]] = [
            (name, setting_text(value)) for name, value in settings.items()
        ]
        if request.get("database"):
            params.append(("database", str(request["database"])))
        if request.get("session_id"):
            params.append(("session_id", str(request["session_id"])))
            if request.get("session_timeout"):
                params.append(("session_timeout", setting_text(request["session_timeout"])))
        if request.get("query_id"):
            params.append(("query_id", str(request["query_id"])))
        params += [("role", str(role)) for role in request.get("roles") or []]
        if request.get("readonly"):
            params.append(("readonly", "1"))
        params += [(f"param_{k}", str(v)) for k, v in (request.get("params") or {}).items()]
        return params

    async def query(self, request: dict[str, Any]) -> Answer:
        params = [*self._params(request), ("default_format", request.get("format") or "TSV")]
        return Answer(lambda answer: self._results(params, request["sql"].encode(), answer))

    async def _results(
        self, params: list[tuple[str, str]], body: bytes, answer: Answer
    ) -> AsyncGenerator[bytes]:
        try:
            async with self._client.stream(
                "POST", self.url, params=tuple(params), content=body
            ) as response:
                if response.status_code != 200:
                    raise await _error(response)
                # The server's own summary, as of its answer's start (complete once the whole
                # answer was held: wait_end_of_query); a statement's answer names no format.
                answer.summary.update(_summary(response.headers.get("x-clickhouse-summary")))
                answer.returns_rows = "x-clickhouse-format" in response.headers
                yield b""
                async for chunk in response.aiter_raw():
                    yield chunk
            answer.ended()
        except httpx.ReadTimeout:
            raise silent_engine(self.answer_timeout) from None
        except httpx.HTTPError as error:
            raise ClickHouseError(0, f"the attached server did not answer: {error}") from None

    async def insert(self, request: dict[str, Any], data: AsyncIterator[bytes]) -> dict[str, Any]:
        statement = f"{request['sql']} FORMAT {request.get('format') or 'Native'}"
        params = [*self._params(request), ("query", statement)]
        try:
            answer = await self._client.post(self.url, params=tuple(params), content=data)
        except httpx.ReadTimeout:
            raise silent_engine(self.answer_timeout) from None
        except httpx.HTTPError as error:
            raise ClickHouseError(0, f"the attached server did not answer: {error}") from None
        if answer.status_code != 200:
            raise await _error(answer)
        summary = json.loads(answer.headers.get("x-clickhouse-summary") or "{}")
        return {
            "written_rows": int(summary.get("written_rows", 0)),
            "written_bytes": int(summary.get("written_bytes", 0)),
        }


async def _error(answer: httpx.Response) -> ClickHouseError:
    text = (await answer.aread()).decode("utf-8", "replace").strip()
    try:
        code = int(answer.headers.get("x-clickhouse-exception-code", "0"))
    except ValueError:
        code = 0
    return ClickHouseError(code, text or f"the attached server answered {answer.status_code}")


def _summary(header: str | None) -> dict[str, int]:
    try:
        values = json.loads(header or "{}")
        return {name: int(values[name]) for name in SUMMARY_FIELDS if name in values}
    except (ValueError, TypeError, AttributeError):
        return {}  # a header this cannot read: no statistics rather than a failed answer
