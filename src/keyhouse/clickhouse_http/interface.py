"""A service's ClickHouse HTTP interface: what ClickHouse's own clients speak to a server.

Enough of ClickHouse's HTTP protocol for ``clickhouse-connect`` and ``curl``: ``/ping``; the query
in the ``query`` parameter or the body (or both, concatenated); ``INSERT ... FORMAT <name>``
followed by its data in the body, streamed into the engine; request bodies compressed with
``Content-Encoding`` gzip, deflate, zstd or lz4; ``database``, ``default_format``,
``session_id``, ``query_id``, ``param_<name>`` and settings as URL parameters;
``wait_end_of_query``; errors as ClickHouse's text with ``X-ClickHouse-Exception-Code`` and the
status ClickHouse gives. The ``default`` user authenticates with the service's password (Basic
auth, ``X-ClickHouse-User``/``X-ClickHouse-Key`` or ``user``/``password`` parameters); the
service's ``ipAccessList`` applies; a request wakes an idle service.

The operator's per-query limits (``KEYHOUSE_QUERY_MAX_*``) hold here too: a client may lower them
with its own settings, never raise them.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import math
import re
import uuid
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import parse_qsl

import lz4.frame
import zstandard
from starlette.types import Message, Receive, Scope, Send

from keyhouse.api.errors import ServiceUnavailable, TooManyRequests
from keyhouse.clickhouse_http import external
from keyhouse.clickhouse_http.encoding import Encoder, negotiate
from keyhouse.engine.limits import CEILINGS, QueryLimits
from keyhouse.engine.protocol import SUMMARY_FIELDS, Answer, ClickHouseError
from keyhouse.services import service
from keyhouse.services.states import Admission

if TYPE_CHECKING:
    from keyhouse.clickhouse_http.guard import Guard
    from keyhouse.config import Settings
    from keyhouse.services.engines import InterfaceRuntime

# The gate: (service, user, password, client address) → the grant and what the query may do.
Gate = Callable[[uuid.UUID, str, str, "str | None"], Awaitable[tuple[service.RunGrant, Admission]]]


MAX_SESSION_TIMEOUT = 3600  # seconds, ClickHouse's default max_session_timeout
MAX_QUERY_BYTES = 16 * 1024 * 1024  # SQL text (an INSERT's data is streamed, unbounded)
BUFFER_BYTES = 16 * 1024 * 1024  # wait_end_of_query buffers this much before streaming
# URL parameters of the HTTP interface itself; every other one is a setting.
HTTP_ONLY = {
    "query",
    "database",
    "default_format",
    "session_id",
    "session_timeout",
    "session_check",
    "query_id",
    "user",
    "password",
    "quota_key",
    "compress",
    "decompress",
    "buffer_size",
    "wait_end_of_query",
    "enable_http_compression",
    "send_progress_in_http_headers",
    "http_headers_progress_interval_ms",
    "cancel_http_readonly_queries_on_client_close",
    "client_protocol_version",
    "role",
}
# The interface's answer (503, with this text) to a query ``admit()`` does not run; it wakes an
# idle service without asking.
REFUSALS = {Admission.STOPPED: "Code: 0. The service is stopped: start it first."}
_INSERT_WITH_DATA = re.compile(
    rb"^\s*(INSERT\s+INTO\s+.+?)\s+FORMAT\s+([A-Za-z0-9_]+)[ \t]*\r?\n", re.IGNORECASE | re.DOTALL
)
_INSERT = re.compile(r"^\s*INSERT\s+INTO\s", re.IGNORECASE)
_TRAILING_FORMAT = re.compile(r"\s+FORMAT\s+([A-Za-z0-9_]+)\s*;?\s*$", re.IGNORECASE)
# ClickHouse's HTTP status for its error codes (the rest are 500).
_STATUS = {
    516: 401,  # AUTHENTICATION_FAILED
    194: 401,  # REQUIRED_PASSWORD
    195: 403,  # IP_ADDRESS_NOT_ALLOWED
    497: 403,  # ACCESS_DENIED
    164: 403,  # READONLY
    60: 404,  # UNKNOWN_TABLE
    81: 404,  # UNKNOWN_DATABASE
    62: 400,  # SYNTAX_ERROR
    47: 400,  # UNKNOWN_IDENTIFIER
    46: 400,  # UNKNOWN_FUNCTION
    27: 400,  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
    70: 400,  # CANNOT_CONVERT_TYPE
    72: 400,  # CANNOT_PARSE_NUMBER
    452: 400,  # SETTING_CONSTRAINT_VIOLATION
    115: 400,  # UNKNOWN_SETTING
    36: 400,  # BAD_ARGUMENTS
    457: 400,  # BAD_QUERY_PARAMETER
    456: 400,  # UNKNOWN_QUERY_PARAMETER
    373: 409,  # SESSION_IS_LOCKED
    374: 400,  # INVALID_SESSION_TIMEOUT
    159: 504,  # TIMEOUT_EXCEEDED
    202: 503,  # TOO_MANY_SIMULTANEOUS_QUERIES (with Retry-After)
    432: 400,  # UNKNOWN_CODEC (a request body Keyhouse cannot decompress)
    307: 413,  # TOO_MANY_BYTES (an insert past KEYHOUSE_QUERY_MAX_INSERT_BYTES)
}
_CONTENT_TYPES = {
    "TabSeparated": "text/tab-separated-values; charset=UTF-8",
    "TSV": "text/tab-separated-values; charset=UTF-8",
    "CSV": "text/csv; charset=UTF-8; header=absent",
    "CSVWithNames": "text/csv; charset=UTF-8; header=present",
    "JSON": "application/json; charset=UTF-8",
    "JSONCompact": "application/json; charset=UTF-8",
    "JSONEachRow": "application/x-ndjson; charset=UTF-8",
}


class _Refused(ClickHouseError):
    """The interface's own refusal with no ClickHouse code of its own (code 0): its status, and
    its text as written."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(0, message)
        self.status = status

    @property
    def text(self) -> str:
        return self.message


def _status(error: ClickHouseError) -> int:
    """The HTTP status of a ClickHouse error: the one place it is decided."""
    if isinstance(error, _Refused):
        return error.status
    return _STATUS.get(error.code, 500)


class _Decoder:
    """Undo ``Content-Encoding`` as the body streams in. A body may hold several compressed
    frames (gzip members, zstd and lz4 frames) one after the other, as clients that compress
    each block of an insert send it: each ends, and the next begins, where the last left off."""

    _MAKERS: ClassVar[dict[str, Callable[[], Any]]] = {
        "gzip": lambda: zlib.decompressobj(16 + zlib.MAX_WBITS),
        "deflate": zlib.decompressobj,
        "zstd": lambda: zstandard.ZstdDecompressor().decompressobj(),
        "lz4": lz4.frame.LZ4FrameDecompressor,
    }

    def __init__(self, encoding: str) -> None:
        encoding = encoding.strip().lower()
        self._make: Callable[[], Any] | None = None
        if encoding not in ("", "identity"):
            self._make = self._MAKERS.get(encoding)
            if self._make is None:
                raise ClickHouseError(
                    36, f"Code: 36. Unknown Content-Encoding {encoding!r}. (BAD_ARGUMENTS)"
                )
        self._state: Any = self._make() if self._make is not None else None

    def __call__(self, data: bytes) -> bytes:
        if self._make is None:  # identity
            return data
        out = []
        try:
            while data:
                out.append(self._state.decompress(data))
                if not self._state.eof:
                    break
                data = self._state.unused_data  # the next frame's first bytes, if any
                self._state = self._make()
        except (zlib.error, zstandard.ZstdError, RuntimeError, ValueError) as error:
            raise ClickHouseError(
                432, f"Code: 432. Cannot decompress the request body: {error}. (UNKNOWN_CODEC)"
            ) from None
        return b"".join(out)


async def _body(receive: Receive, decode: _Decoder) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionResetError("the client went away")
        chunk = message.get("body", b"")
        if chunk:
            data = decode(chunk)
            if data:
                yield data
        if not message.get("more_body", False):
            return


def _credentials(scope: Scope, params: dict[str, str]) -> tuple[str, str]:
    headers = {name.decode("latin-1").lower(): value for name, value in scope["headers"]}
    authorization = headers.get("authorization", b"")
    if authorization[:6].lower() == b"basic ":
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise ClickHouseError(516, "Code: 516. Malformed Authorization header.") from None
        user, _, password = decoded.partition(":")
        return user or "default", password
    if "x-clickhouse-user" in headers or "x-clickhouse-key" in headers:
        user = headers.get("x-clickhouse-user", b"default").decode("latin-1")
        return user, headers.get("x-clickhouse-key", b"").decode("latin-1")
    return params.get("user", "default"), params.get("password", "")


def _literal_limit(name: str, value: str) -> int:
    """A limit asked for in the URL, parsed as ClickHouse parses it, with ClickHouse's errors
    (a 400, never a 500): seconds are a finite number, byte counts an unsigned integer. Zero
    or less would lift the operator's limit (the engine's constraint is 1 at least): 452."""
    try:
        number = float(value) if name == "max_execution_time" else int(value)
    except ValueError:
        if name == "max_execution_time":
            message = f"Cannot read floating point value here: {value}"
            raise ClickHouseError(
                72, f"Code: 72. DB::Exception: {message}. (CANNOT_PARSE_NUMBER)"
            ) from None
        raise ClickHouseError(
            27,
            f"Code: 27. DB::Exception: Cannot parse input: expected 'eof' before: '{value}'. "
            "(CANNOT_PARSE_INPUT_ASSERTION_FAILED)",
        ) from None
    if not math.isfinite(number):
        raise ClickHouseError(
            72,
            f"Code: 72. DB::Exception: Float setting value must be finite, got {value}. "
            "(CANNOT_PARSE_NUMBER)",
        )
    if number < 1:
        raise ClickHouseError(
            452,
            f"Code: 452. DB::Exception: Setting {name} shouldn't be less than 1. "
            "(SETTING_CONSTRAINT_VIOLATION)",
        )
    if number >= 2**63:
        raise ClickHouseError(
            70,
            f"Code: 70. DB::Exception: Field value {value} is out of range. (CANNOT_CONVERT_TYPE)",
        )
    return int(number)


class ClickHouseInterface:
    """The ASGI application of one service's ClickHouse HTTP interface."""

    def __init__(
        self,
        settings: Settings,
        engines: InterfaceRuntime,
        service_id: uuid.UUID,
        gate: Gate,
        guard: Guard | None = None,
    ) -> None:
        self.settings = settings
        # What a client may only lower (its URL settings).
        self.limits = QueryLimits.from_settings(settings)
        self.engines = engines
        self.gate = gate  # who may query, and whether the query runs, wakes or is refused
        self.service_id = service_id
        self.guard = guard  # the port's: told when each request begins and ends

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if self.guard is None:
            await self._answered(scope, receive, send)
            return
        self.guard.begin(scope.get("client"))
        try:
            await self._answered(scope, receive, send)
        finally:
            self.guard.end(scope.get("client"))

    async def _answered(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._handle(scope, receive, send)
        except ClickHouseError as error:
            status = _status(error)
            # A limit reached for now (TOO_MANY_SIMULTANEOUS_QUERIES): try again shortly.
            retry = "1" if status == 503 else None
            await _answer(send, status, error.text, code=error.code, retry_after=retry)
        except (ServiceUnavailable, TooManyRequests) as error:
            retry = error.headers.get("Retry-After")
            await _answer(send, error.status, f"Code: 0. {error}", code=0, retry_after=retry)
        except ConnectionResetError:
            return

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        params = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), True))
        if path == "/ping" or (path == "/" and method in ("GET", "HEAD") and "query" not in params):
            await _answer(send, 200, "Ok.\n")
            return
        if path != "/" or method not in ("GET", "POST"):
            raise _Refused(f"There is no handler for {method} {path}", 404)
        grant = await self._authenticate(scope, params)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        decode = _Decoder(headers.get("content-encoding", ""))
        if params.get("decompress") == "1":
            raise ClickHouseError(
                36,
                "Code: 36. decompress=1 (ClickHouse's own compression) is not "
                "supported: use Content-Encoding. (BAD_ARGUMENTS)",
            )
        body = _body(receive, decode)
        head = params.get("query", "").encode()
        insert: tuple[str, str] | None = None
        rest: bytes = b""
        try:
            boundary = external.boundary(headers.get("content-type", ""))
        except external.ExternalDataError as error:
            raise ClickHouseError(36, f"Code: 36. {error}. (BAD_ARGUMENTS)") from None
        external_params = params
        if boundary is not None:
            # External data: the body is the query's tables, the query is in the URL.
            if not head:
                raise ClickHouseError(62, "Code: 62. Empty query. (SYNTAX_ERROR)")
            params = {k: v for k, v in params.items() if not k.endswith(external.SUFFIXES)}
        elif head:
            # The query in the URL: an INSERT's data, or the rest of the query, is the body.
            match = _INSERT_WITH_DATA.match(head + b"\n")
            if match:
                insert = (match.group(1).decode(), match.group(2).decode())
            else:
                rest = await _read_all(body, MAX_QUERY_BYTES)
                if rest.strip():
                    head = head + b"\n" + rest
        else:
            head, insert, rest = await _split(body)
        settings = self._settings(params)
        session_id = params.get("session_id") or None
        session_timeout = _session_timeout(params.get("session_timeout"))
        query_id = params.get("query_id") or str(uuid.uuid4())
        database = params.get("database") or None
        if insert is not None:
            if method == "GET":
                raise ClickHouseError(
                    164,
                    "Code: 164. Cannot execute an INSERT in a GET request "
                    "(readonly mode). (READONLY)",
                )
            limit = self.settings.query_max_insert_bytes
            if limit and "query" in params and not headers.get("content-encoding"):
                # The whole body is the data: refused before any of it is written.
                _check_insert_size(int(headers.get("content-length") or 0), limit)
            run = _Run(self.engines, grant, database, session_id, settings, session_timeout)
            await self._insert(send, run, insert, rest, body, query_id)
            return
        sql = head.decode("utf-8", "replace")
        fmt = params.get("default_format") or "TabSeparated"
        trailing = _TRAILING_FORMAT.search(sql)
        if trailing:
            fmt, sql = trailing.group(1), sql[: trailing.start()]
        if not sql.strip():
            raise ClickHouseError(62, "Code: 62. Empty query. (SYNTAX_ERROR)")
        query_params = {
            k[6:]: v for k, v in params.items() if k.startswith("param_") and len(k) > 6
        }
        if method == "GET":
            grant = service.RunGrant(grant.service_id, grant.state, True, grant.max_memory_gb)
        reply = _Reply(
            fmt,
            query_id,
            wait=params.get("wait_end_of_query") == "1",
            encoder=negotiate(
                _enabled(params.get("enable_http_compression")),
                headers.get("accept-encoding", ""),
            ),
            progress_ms=_progress_interval(params),
        )
        run = _Run(self.engines, grant, database, session_id, settings, session_timeout)
        if boundary is not None:
            await self._with_external_data(
                send, run, body, boundary, external_params, sql, query_params, reply
            )
            return
        chunks = await run.query(sql, fmt, query_id, query_params)
        await _stream(send, chunks, reply)

    async def _with_external_data(
        self,
        send: Send,
        run: _Run,
        body: AsyncIterator[bytes],
        boundary: bytes,
        params: dict[str, str],
        sql: str,
        query_params: dict[str, str],
        reply: _Reply,
    ) -> None:
        """The query over the tables of a multipart body. They live on a session of this
        request's own (gone a second after it) or on the caller's, and are dropped before the
        answer ends (the caller's next request on its session finds them gone, and the session
        free); each part streams into its table as an insert."""
        if run.session_id is None:
            run.session_id, run.session_timeout = f"keyhouse-external-{uuid.uuid4().hex}", 1.0
        limit = self.settings.query_max_insert_bytes
        tables: list[external.Table] = []
        end: list[Message] = []

        async def until_dropped(message: Message) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                end.append(message)  # the answer's last message waits for the drops below
            else:
                await send(message)

        try:
            async for name, data in external.Parts(body, boundary):
                table = external.table(name, params)
                await run.statement(
                    f"CREATE TEMPORARY TABLE {table.name} ({table.columns}) ENGINE = Memory"
                )
                tables.append(table)
                await run.insert(f"INSERT INTO {table.name}", table.format, _counted(data, limit))
            chunks = await run.query(sql, reply.fmt, reply.query_id, query_params)
            await _stream(until_dropped, chunks, reply)
        except external.ExternalDataError as error:
            raise ClickHouseError(36, f"Code: 36. {error}. (BAD_ARGUMENTS)") from None
        finally:
            for table in tables:
                with contextlib.suppress(ClickHouseError, ServiceUnavailable):
                    await run.statement(f"DROP TEMPORARY TABLE IF EXISTS {table.name}")
        for message in end:
            await send(message)

    async def _authenticate(self, scope: Scope, params: dict[str, str]) -> service.RunGrant:
        user, password = _credentials(scope, params)
        address = (scope.get("client") or (None,))[0]
        grant, admission = await self.gate(self.service_id, user, password, address)
        if admission in REFUSALS:
            raise _Refused(REFUSALS[admission], 503)
        if admission == Admission.WAKE and not await self.engines.bring_up(self.service_id):
            raise _Refused("Code: 0. The service could not be woken.", 503)
        return grant

    def _settings(self, params: dict[str, str]) -> dict[str, Any]:
        settings: dict[str, Any] = {
            name: value
            for name, value in params.items()
            if name not in HTTP_ONLY and not name.startswith(("param_", "http_"))
        }
        asked = {
            name: _literal_limit(name, str(settings[name])) for name in CEILINGS if name in settings
        }
        settings.update(self.limits.lower(asked))
        return settings

    async def _insert(
        self,
        send: Send,
        run: _Run,
        insert: tuple[str, str],
        first: bytes,
        body: AsyncIterator[bytes],
        query_id: str,
    ) -> None:
        async def data() -> AsyncIterator[bytes]:
            if first:
                yield first
            async for chunk in body:
                yield chunk

        # Counted as the engine receives it (decompressed): past the limit the insert ends (the
        # engine cancels it; blocks it had already written stay, as a failed insert's do on a
        # ClickHouse server).
        limit = self.settings.query_max_insert_bytes
        written = await run.insert(insert[0], insert[1], _counted(data(), limit))
        summary = _summary(
            written_rows=written.get("written_rows", 0),
            written_bytes=written.get("written_bytes", 0),
        )
        await _answer(send, 200, "", query_id=query_id, summary=summary)


@dataclass
class _Run:
    """Statements of one request on one service (its session, database and settings)."""

    engines: InterfaceRuntime
    grant: service.RunGrant
    database: str | None
    session_id: str | None
    settings: dict[str, Any]
    session_timeout: float | None = None

    async def query(
        self, sql: str, fmt: str, query_id: str | None, params: dict[str, str]
    ) -> Answer:
        return await self.engines.run(
            self.grant,
            sql=sql,
            fmt=fmt,
            database=self.database,
            query_id=query_id,
            params=params,
            session_id=self.session_id,
            extra_settings=self.settings,
            session_timeout=self.session_timeout,
        )

    async def statement(self, sql: str) -> None:
        chunks = await self.query(sql, "TabSeparated", None, {})
        try:
            async for _ in chunks:
                pass
        finally:
            await chunks.aclose()

    async def insert(self, sql: str, fmt: str, data: AsyncIterator[bytes]) -> dict[str, Any]:
        return await self.engines.insert(
            self.grant,
            sql=sql,
            fmt=fmt,
            data=data,
            database=self.database,
            session_id=self.session_id,
            extra_settings=self.settings,
            session_timeout=self.session_timeout,
        )


async def _counted(data: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    """``data``, refused past ``limit`` bytes (KEYHOUSE_QUERY_MAX_INSERT_BYTES)."""
    size = 0
    async for chunk in data:
        size += len(chunk)
        _check_insert_size(size, limit)
        yield chunk


def _check_insert_size(size: int, limit: int) -> None:
    """Refuse an insert's data past ``limit`` bytes (0: no limit)."""
    if limit and size > limit:
        raise ClickHouseError(
            307,
            f"Code: 307. The insert's data is over the limit of {limit} bytes "
            "(the operator's KEYHOUSE_QUERY_MAX_INSERT_BYTES). (TOO_MANY_BYTES)",
        )


def _session_timeout(value: str | None) -> float | None:
    """A session's idle timeout in whole seconds, as ClickHouse reads ``session_timeout``."""
    if value is None:
        return None
    if not value.isdigit():
        raise ClickHouseError(
            374, f"Code: 374. Invalid session timeout: '{value}'. (INVALID_SESSION_TIMEOUT)"
        )
    if int(value) > MAX_SESSION_TIMEOUT:
        raise ClickHouseError(
            374,
            f"Code: 374. Session timeout '{value}' is larger than max_session_timeout: "
            f"{MAX_SESSION_TIMEOUT}. (INVALID_SESSION_TIMEOUT)",
        )
    return float(value)


def _enabled(value: str | None) -> bool:
    """A boolean setting as ClickHouse reads one in a URL."""
    return (value or "").strip().lower() in ("1", "true")


async def _read_all(body: AsyncIterator[bytes], limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    async for chunk in body:
        size += len(chunk)
        if size > limit:
            raise _Refused(f"Code: 0. The query is over {limit} bytes.", 413)
        parts.append(chunk)
    return b"".join(parts)


async def _split(body: AsyncIterator[bytes]) -> tuple[bytes, tuple[str, str] | None, bytes]:
    """The SQL in the body: ``(head, None, b"")`` for a query, or, for ``INSERT ... FORMAT X``
    followed by data, ``(b"", (statement, format), first data bytes)`` with the rest still in
    ``body``."""
    buffered = b""
    async for chunk in body:
        buffered += chunk
        match = _INSERT_WITH_DATA.match(buffered)
        if match:
            return b"", (match.group(1).decode(), match.group(2).decode()), buffered[match.end() :]
        if not _INSERT.match(buffered[:64].decode("utf-8", "replace")) and b"\n" in buffered:
            break  # not an INSERT with data: the whole body is the query
        if len(buffered) > MAX_QUERY_BYTES:
            raise _Refused(f"Code: 0. The query is over {MAX_QUERY_BYTES} bytes.", 413)
    rest = await _read_all(body, MAX_QUERY_BYTES - len(buffered))
    return buffered + rest, None, b""


def _summary(**values: int) -> str:
    return json.dumps(
        {name: str(values.get(name, 0)) for name in SUMMARY_FIELDS}, separators=(",", ":")
    )


async def _answer(
    send: Send,
    status: int,
    text: str,
    *,
    code: int | None = None,
    query_id: str | None = None,
    summary: str | None = None,
    retry_after: str | None = None,
) -> None:
    body = text.encode() if text.endswith("\n") or not text else (text + "\n").encode()
    headers = [
        (b"content-type", b"text/plain; charset=UTF-8"),
        (b"content-length", str(len(body)).encode()),
    ]
    if code is not None:
        headers.append((b"x-clickhouse-exception-code", str(code).encode()))
    if retry_after is not None:
        headers.append((b"retry-after", retry_after.encode()))
    if query_id is not None:
        headers.append((b"x-clickhouse-query-id", query_id.encode()))
    if summary is not None:
        headers.append((b"x-clickhouse-summary", summary.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@dataclass(frozen=True)
class _Reply:
    """How a query's answer is sent: its format and id; ``wait``: ``wait_end_of_query`` (held,
    up to ``BUFFER_BYTES``, so that an error is still a status); ``encoder``: its compression
    (``enable_http_compression``); ``progress_ms``: ``send_progress_in_http_headers``'s
    interval (None: no progress headers)."""

    fmt: str
    query_id: str
    wait: bool = False
    encoder: Encoder | None = None
    progress_ms: int | None = None


def _progress_interval(params: dict[str, str]) -> int | None:
    if not _enabled(params.get("send_progress_in_http_headers")):
        return None
    try:
        return max(0, int(params.get("http_headers_progress_interval_ms") or 100))
    except ValueError:
        raise ClickHouseError(
            27,
            "Code: 27. Cannot parse input: http_headers_progress_interval_ms. "
            "(CANNOT_PARSE_INPUT_ASSERTION_FAILED)",
        ) from None


async def _stream(send: Send, chunks: Answer, reply: _Reply) -> None:
    """The result; with ``wait_end_of_query`` it is held (up to ``BUFFER_BYTES``) so that an
    error is still a status. An error after bytes were sent ends the body with its text.

    ``X-ClickHouse-Summary`` is the engine's statistics when the answer was held whole (the
    query was over before its first byte left), and zeros when the answer's head leaves while
    the query still runs, as a server's does before the engine reports progress. A held
    answer of a query that ran for at least the interval carries one ``X-ClickHouse-Progress``
    with its final figures (a server sends one per interval while the query runs; an ASGI
    answer's head leaves in one piece)."""
    encoder = reply.encoder
    headers = [(b"x-clickhouse-query-id", reply.query_id.encode())]
    if chunks.returns_rows:
        headers += [
            (b"content-type", _CONTENT_TYPES.get(reply.fmt, "application/octet-stream").encode()),
            (b"x-clickhouse-format", reply.fmt.encode()),
        ]
    else:  # a statement: no rows, no format (clients tell a statement's answer by this)
        headers.append((b"content-type", b"text/plain; charset=UTF-8"))
    if encoder is not None:
        headers += [(b"content-encoding", encoder.name.encode()), (b"vary", b"Accept-Encoding")]
    compress = encoder.compress if encoder is not None else bytes
    held: list[bytes] = []
    size = 0
    started = False

    async def body(data: bytes, more: bool = True) -> None:
        if not more and encoder is not None:
            data = compress(data) + encoder.finish()
        elif data:
            data = compress(data)
        if data or not more:
            await send({"type": "http.response.body", "body": data, "more_body": more})

    try:
        try:
            async for chunk in chunks:
                if not chunk:
                    continue
                if reply.wait and not started and size + len(chunk) <= BUFFER_BYTES:
                    held.append(chunk)
                    size += len(chunk)
                    continue
                if not started:
                    headers.append((b"x-clickhouse-summary", _summary().encode()))
                    await send({"type": "http.response.start", "status": 200, "headers": headers})
                    started = True
                    for part in held:
                        await body(part)
                    held = []
                await body(chunk)
        except ClickHouseError as error:
            if not started:
                raise
            await body(f"\n{error.text}\n".encode(), more=False)
            return
    finally:
        await chunks.aclose()
    if not started:
        whole = b"".join(held)
        data = whole if encoder is None else encoder.compress(whole) + encoder.finish()
        summary = _summary(**chunks.summary).encode()
        interval = reply.progress_ms
        if interval is not None and chunks.summary.get("elapsed_ns", 0) >= interval * 1_000_000:
            headers.append((b"x-clickhouse-progress", summary))
        headers += [
            (b"content-length", str(len(data)).encode()),
            (b"x-clickhouse-summary", summary),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": data})
        return
    await body(b"", more=False)
