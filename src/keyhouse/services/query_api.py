"""The Query API's core (``POST /service/{serviceId}/run``), whichever front answers it: the
FastAPI route in ``keyhouse.services.routes``, or the hot path in front of FastAPI; Query API
endpoints (``keyhouse.query_endpoints``) share its answers (CORS, the 206 partial answers, the
streamed result and its mid-stream error)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi.responses import JSONResponse, Response, StreamingResponse

from keyhouse.api.errors import ApiError, BadRequest, ServiceUnavailable
from keyhouse.api.wire import unstorable_text
from keyhouse.context import Context
from keyhouse.engine.protocol import TOO_MANY_SIMULTANEOUS_QUERIES, Answer, ClickHouseError
from keyhouse.services import service
from keyhouse.services.engines import EngineRuntime, engines_of
from keyhouse.services.service import RunGrant
from keyhouse.services.states import Admission, State, admit
from keyhouse.transactions import run_in_transaction

MAX_SQL_BYTES = 4 * 1024 * 1024

RUN_FORMAT = r"^[A-Za-z0-9]+$"  # a ClickHouse format's name
MEDIA_TYPES = {
    "JSONEachRow": "application/x-ndjson",
    "JSON": "application/json",
    "JSONCompact": "application/json",
    "CSV": "text/csv",
    "CSVWithNames": "text/csv",
}


def run_body(raw: bytes) -> dict[str, Any]:
    """``{"sql", "database"?, "runId"?}``, JSON whatever the content type says."""
    if len(raw) > MAX_SQL_BYTES:
        raise BadRequest("The query is over the 4 MiB limit")
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise BadRequest('The body must be JSON: {"sql": "...", "database": "..."}') from None
    if (
        not isinstance(body, dict)
        or not isinstance(body.get("sql"), str)
        or not body["sql"].strip()
    ):
        raise BadRequest('The body must be JSON with a non-empty "sql"')
    database = body.get("database")
    if database is not None and not isinstance(database, str):
        raise BadRequest('"database" must be a string')
    for text in (body["sql"], database or ""):
        problem = unstorable_text(text)
        if problem:
            raise BadRequest(f"sql: {problem}")
    return body


# The Query API's (and its endpoints') official answers to a query ``admit()`` does not run:
# 206 with ``{"data": message}``.
PARTIAL_ANSWERS = {
    Admission.STOPPED: "Service is stopped",
    Admission.ASK_TO_WAKE: "Confirm wake service",
}


def partial(message: str, cors: dict[str, str]) -> Response:
    return JSONResponse({"data": message}, status_code=206, headers=cors)


CORS_ALLOW_HEADERS = "authorization, content-type, wake-service, x-service-type, auth-provider"


def cors_headers(allowed_origins: str, origin: str | None) -> dict[str, str]:
    """CORS for an allowed origin. ``*`` lets any page call with the Authorization header it
    sets itself, never with the browser's own credentials; a listed origin is echoed, with
    credentials, and the answer varies by Origin."""
    allowed = service.allowed_origin(allowed_origins, origin)
    if allowed is None:
        return {}
    headers = {
        "Access-Control-Allow-Origin": allowed,
        "Access-Control-Expose-Headers": "X-ClickHouse-Query-Id, X-ClickHouse-Format, "
        "X-ClickHouse-Exception-Code",
    }
    if allowed != service.ANY_ORIGIN:
        headers["Access-Control-Allow-Credentials"] = "true"
        headers["Vary"] = "Origin"
    return headers


async def answer_run(
    ctx: Context,
    service_id: uuid.UUID,
    raw_body: bytes,
    fmt: str,
    *,
    wake_service: str | None,
    origin: str | None,
) -> Response:
    """``POST /service/{serviceId}/run``, whichever front answers it: the route in
    ``keyhouse.services.routes``, or ``keyhouse.fast_paths`` in front of FastAPI (the Query
    API's latency is measured against the engine's own)."""
    engines = engines_of(ctx.state)
    body = run_body(raw_body)
    principal = await ctx.authenticate()
    grant = await service.read_run_grant(ctx.state.reader, principal, service_id)
    cors = cors_headers(grant.allowed_origins, origin)
    admission = admit(State(grant.state), may_wake=(wake_service or "").lower() == "true")
    if admission in PARTIAL_ANSWERS:
        return partial(PARTIAL_ANSWERS[admission], cors)

    async def wake() -> None:
        # The caller was authenticated above: the wake is part of this one request (one
        # rate-limit slot, not a second authentication).
        await run_in_transaction(
            ctx.state, lambda session: service.wake_for_query(session, principal, service_id)
        )

    query_id = str(body.get("runId") or uuid.uuid4())[:64]
    try:
        chunks = await run_admitted(
            engines,
            grant,
            admission,
            wake,
            sql=body["sql"],
            fmt=fmt,
            database=body.get("database"),
            query_id=query_id,
        )
    except ClickHouseError as error:
        raise QueryFailed(error) from None
    return StreamingResponse(
        stream_result(chunks),
        media_type=MEDIA_TYPES.get(fmt, "text/plain; charset=utf-8"),
        headers={"X-ClickHouse-Format": fmt, "X-ClickHouse-Query-Id": query_id, **cors},
    )


async def run_admitted(
    engines: EngineRuntime,
    grant: RunGrant,
    admission: Admission,
    wake: Callable[[], Awaitable[None]],
    **query: Any,
) -> Answer:
    """The Query API's run, for every door that runs a caller's query (the run route and the
    hot path, Query API endpoints, the console's SQL page) once ``admit()`` let it through:
    an idle service is woken first (``wake``: the door's own recorded wake; then its engine
    comes up, a 503 when it cannot), then the query runs; ``ClickHouseError`` when the engine
    refuses it."""
    if admission not in (Admission.RUN, Admission.WAKE):
        raise ValueError(f"not a query admit() lets run: {admission}")
    if admission == Admission.WAKE:
        await wake()
        if not await engines.bring_up(grant.service_id):
            raise ServiceUnavailable("The service could not be woken", headers={"Retry-After": "5"})
    return await engines.run(grant, **query)


async def stream_result(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The result's bytes; an error after the first bytes ends the stream (ClickHouse's HTTP
    interface does the same) and a client that goes away closes the engine's side too."""
    try:
        async for chunk in chunks:
            if chunk:
                yield chunk
    except ClickHouseError as error:
        yield f"\n{error.text}\n".encode()
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]


class QueryFailed(ApiError):
    """ClickHouse refused the query: 400 with its message and code."""

    status = 400

    def __init__(self, error: ClickHouseError) -> None:
        headers = {"X-ClickHouse-Exception-Code": str(error.code)}
        if error.code == TOO_MANY_SIMULTANEOUS_QUERIES:  # a configured limit, reached for now
            self.status = 503
            headers["Retry-After"] = "1"
        super().__init__(error.message, headers=headers)
