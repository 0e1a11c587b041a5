"""A service's engine worker: one process holding one chDB engine on one data directory.

Started by the supervisor as ``python -I -m keyhouse.engine.worker --path DIR --socket SOCK
--config FILE`` in the engine sandbox (a fresh interpreter: chDB is never loaded into a process
that forks, nor into the API process). It prints one line ``ready <version>`` on stdout once
the engine answers, then serves the protocol of ``keyhouse.engine.protocol`` on the Unix socket
until it is terminated or its standard input (a pipe from the supervisor) ends.

The engine starts with a configuration the supervisor writes (``engine_config``): the ``default``
user holds its privileges only through roles (``kh_admin``, all privileges, is its default), so
that ``SET ROLE`` on one handle restricts that handle alone. chDB fixes users and roles when the
engine starts (SQL access management needs a writable access storage it does not have), so the
database roles an embedded engine offers are the ones below, the SQL console's.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import html
import json
import os
import re
import signal
import socket
import socketserver
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keyhouse.engine import protocol
from keyhouse.engine.limits import checked_settings, profile
from keyhouse.engine.sql import identifier, literal

_CODE = re.compile(r"Code:\s*(\d+)")
_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

ADMIN_ROLE = "kh_admin"
READ_ONLY_ROLE = "sql_console_read_only"  # the one role that cannot write
# Defence in depth behind the sandbox (which is the boundary: grants cannot govern INTO OUTFILE,
# and revoking FILE breaks MergeTree): a service has no outbound network, so no role may use a
# source or a table engine that reaches out (refused at once with ACCESS_DENIED, instead of
# connection retries that outlive max_execution_time), nor run programs. Dictionaries with
# external sources obey no grant: only the sandbox stops them.
REMOTE_SOURCES = (
    "URL, REMOTE, MONGO, REDIS, MYSQL, POSTGRES, SQLITE, ODBC, JDBC, HDFS, S3, HIVE, AZURE, "
    "KAFKA, NATS, RABBITMQ"
)
REMOTE_TABLE_ENGINES = (
    "AzureBlobStorage", "AzureQueue", "BigQuery", "COSN", "DeltaLake", "DeltaLakeAzure",
    "DeltaLakeLocal", "DeltaLakeS3", "Distributed", "Executable", "ExecutablePool", "File",
    "FileLog", "GCS", "HDFS", "Hudi", "Iceberg", "IcebergAzure", "IcebergHDFS", "IcebergLocal",
    "IcebergS3", "JDBC", "Kafka", "KeeperMap", "MaterializedPostgreSQL", "MongoDB", "MySQL",
    "ODBC", "OSS", "Paimon", "PaimonAzure", "PaimonHDFS", "PaimonLocal", "PaimonS3",
    "PostgreSQL", "Redis", "Remote", "RemoteSecure", "S3", "S3Queue", "SQLite", "URL",
    "YTsaurus",
)  # fmt: skip
_CONTAINED = [f"REVOKE {REMOTE_SOURCES} ON *.*"] + [
    f"REVOKE TABLE ENGINE ON {engine}" for engine in REMOTE_TABLE_ENGINES
]
# The database roles of an embedded engine: name -> its grants.
DATABASE_ROLES = {
    ADMIN_ROLE: ["GRANT ALL ON *.* WITH GRANT OPTION", *_CONTAINED],
    "default_role": ["GRANT ALL ON *.*", *_CONTAINED],
    "sql_console_admin": ["GRANT ALL ON *.*", *_CONTAINED],
    READ_ONLY_ROLE: ["GRANT SELECT, SHOW ON *.*"],
}
# What bindings and Query API endpoints may name (never the internal admin role).
NAMEABLE_ROLES = tuple(name for name in DATABASE_ROLES if name != ADMIN_ROLE)
# chDB signs every handle in as the one user ``default`` (its client hard-codes the name), and
# the engine lets a user list and KILL its own queries whatever its roles: a handle that runs
# under a chosen role (a binding's, an endpoint's, a read-only request's) sees only its own
# query in system.processes, and so cannot read or KILL anyone else's (KILL selects from it).
# Handles under the admin role (the service password, the console's admin) see them all.
PROCESSES_POLICY = f"has(currentRoles(), '{ADMIN_ROLE}') OR query_id = queryID()"
SESSION_TIMEOUT = 60.0
CLOSE_SECONDS = 3.0
MAX_SESSION_TIMEOUT = 3600.0


BACKUP_DISK = "backups"


def engine_config(
    directory: Path,
    limits: dict[str, int | str] | None = None,
    memory: int = 0,
    backups: Path | None = None,
) -> Path:
    """Write the engine's configuration (its users, roles and the operator's ``limits``) into
    ``directory``. Each numeric limit is the default and a constraint (1 to the limit; 0 is no
    limit): neither ``SET`` nor a query's ``SETTINGS`` clause can lift it, only lower it.
    ``memory``: the most the whole engine may hold, in bytes (0: the engine's default, 90 % of
    the host's memory). ``backups``: the service's backup directory, the one place ``BACKUP``
    may write to and ``RESTORE`` read from (the disk ``BACKUP_DISK``; no ``File`` engine)."""
    roles = "".join(
        f"<{name}><grants>{''.join(f'<query>{query}</query>' for query in queries)}</grants>"
        f"</{name}>"
        for name, queries in DATABASE_ROLES.items()
    )
    users = (
        "<clickhouse><users><default><password></password><networks><ip>::1</ip>"
        "<ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota>"
        "<databases><system><processes>"
        f"<filter>{html.escape(PROCESSES_POLICY, quote=False)}</filter>"
        "</processes></system></databases>"
        f"<grants><query>GRANT {', '.join(DATABASE_ROLES)}</query></grants>"
        f"<default_roles><{ADMIN_ROLE}/></default_roles></default></users>"
        f"<roles>{roles}</roles><profiles><default>{_profile(limits or {})}</default></profiles>"
        "<quotas><default/></quotas>"
        "</clickhouse>"
    )
    # Readable by the engine's own uid (a sandboxed worker's, bound read-only: an engine reloads
    # a users file that changes, and must not be able to rewrite its own roles); nothing secret.
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    directory.chmod(0o755)
    (directory / "users.xml").write_text(users)
    config = directory / "config.xml"
    config.write_text(
        f"<clickhouse><users_config>{directory / 'users.xml'}</users_config>"
        f"<max_server_memory_usage>{int(memory)}</max_server_memory_usage>"
        "<access_control_improvements><table_engines_require_grant>true"
        "</table_engines_require_grant></access_control_improvements>"
        f"{_backup_disk(backups)}</clickhouse>"
    )
    for path in (config, directory / "users.xml"):
        path.chmod(0o644)
    return config


def _backup_disk(path: Path | None) -> str:
    if path is None:
        return ""
    where = html.escape(f"{path}/", quote=False)
    return (
        f"<storage_configuration><disks><{BACKUP_DISK}><type>local</type><path>{where}</path>"
        f"</{BACKUP_DISK}></disks></storage_configuration>"
        f"<backups><allowed_disk>{BACKUP_DISK}</allowed_disk></backups>"
    )


def _profile(limits: dict[str, int | str]) -> str:
    values, constraints = profile(limits)
    return "".join(f"<{name}>{value}</{name}>" for name, value in values.items()) + (
        "<constraints>"
        + "".join(
            f"<{name}><min>{low}</min><max>{high}</max></{name}>"
            for name, (low, high) in constraints.items()
        )
        + "</constraints>"
    )


def _error(exc: BaseException) -> dict[str, Any]:
    message = str(exc).strip() or type(exc).__name__
    match = _CODE.search(message)
    return {"code": int(match.group(1)) if match else 0, "message": message}


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        try:
            self._serve_connection()
        except (BrokenPipeError, ConnectionResetError):
            return  # the client went away (a closed result, a cancelled query)

    def _serve_connection(self) -> None:
        sock: socket.socket = self.request
        while True:
            head = _recv_exact(sock, protocol.HEAD_SIZE)
            if head is None:
                return
            kind, length = protocol.parse_head(head)
            if kind != protocol.REQUEST or length > protocol.MAX_CONTROL_FRAME:
                return
            payload = _recv_exact(sock, length)
            if payload is None:
                return
            try:
                request = json.loads(payload)
                self.server.serve(sock, request)
            except (BrokenPipeError, ConnectionResetError):
                return


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    # Connections waiting to be accepted (socketserver's default is 5: a burst of concurrent
    # queries was refused, and answered "the service is not running", while the engine ran).
    request_queue_size = 1024

    def __init__(
        self, socket_path: str, address: str, engine: Any, version: str, max_queries: int = 0
    ) -> None:
        self.address = address  # what chdb.connect() opens: the data path and the config
        self.max_queries = max_queries
        self._slots = threading.BoundedSemaphore(max_queries) if max_queries else None
        self.engine = engine
        self.version = version
        self._sessions: dict[str, _Session] = {}
        self._sessions_lock = threading.Lock()
        # The threads piped queries run on (each request's own thread reads their answer).
        self.runner = ThreadPoolExecutor(max_queries or 1024, thread_name_prefix="query")
        super().__init__(socket_path, _Handler)

    def _handle(self, request: dict[str, Any]) -> tuple[Any, _Session | None]:
        """A fresh handle, or the session's (locked for this request; 373 if in use)."""
        import chdb

        session_id = request.get("session_id")
        if not session_id:
            # The query's limits in the connection string: the engine applies them as the
            # session starts, cheaper than a SET (each SET is a query of its own).
            limits = urllib.parse.urlencode(checked_settings(request.get("limits") or {}))
            address = f"{self.address}&{limits}" if limits else self.address
            return chdb.connect(address), None  # type: ignore[no-untyped-call]
        with self._sessions_lock:
            session = self._sessions.get(session_id)
            if session is None:
                handle = chdb.connect(self.address)  # type: ignore[no-untyped-call]
                session = self._sessions[session_id] = _Session(handle)
        if not session.lock.acquire(blocking=False):
            raise RuntimeError(
                f"Code: {protocol.SESSION_IS_LOCKED}. Session {session_id} is locked by a "
                "concurrent client. (SESSION_IS_LOCKED)"
            )
        timeout = float(request.get("session_timeout") or SESSION_TIMEOUT)
        session.timeout = min(max(timeout, 1.0), MAX_SESSION_TIMEOUT)
        return session.handle, session

    def _release(self, handle: Any, session: _Session | None) -> None:
        if session is None:
            handle.close()
        else:
            if session.read_only_request:
                session.read_only_request = False
                with contextlib.suppress(Exception):
                    handle.query("SET ROLE DEFAULT")
            session.last_used = time.monotonic()
            session.lock.release()

    def expire_sessions(self) -> None:
        now = time.monotonic()
        with self._sessions_lock:
            for session_id, session in list(self._sessions.items()):
                if now - session.last_used > session.timeout and session.lock.acquire(False):
                    del self._sessions[session_id]
                    session.handle.close()

    def _prepare(self, handle: Any, session: _Session | None, request: dict[str, Any]) -> None:
        """Settings, then the database, then the roles and ``readonly`` (last: once set, the
        query cannot change them back)."""
        settings = request.get("settings") or {}
        if session is not None:  # a kept handle: its limits again, before the caller's
            settings = {**(request.get("limits") or {}), **settings}
        for name in settings:
            if not _SETTING_NAME.match(name):
                raise ValueError(f"Code: 115. Unknown setting {name!r}. (UNKNOWN_SETTING)")
        if settings:  # one statement: each is a query of its own for the engine
            handle.query(
                "SET " + ", ".join(f"{name} = {literal(v)}" for name, v in settings.items())
            )
        if request.get("database"):
            handle.query(f"USE {identifier(str(request['database']))}")
        roles = request.get("roles")
        if roles:
            handle.query("SET ROLE " + ", ".join(identifier(str(role)) for role in roles))
        if request.get("readonly"):
            if session is None:
                handle.query("SET readonly = 1")
            else:
                # A session's handle outlives the request, and readonly can never be unset
                # on it: a read-only request in a session (a GET) runs under the read-only
                # role instead, and the session's own roles come back after it.
                handle.query(f"SET ROLE {READ_ONLY_ROLE}")
                session.read_only_request = True

    def _kill(self, marker: str) -> None:
        """End the query whose text carries ``marker`` (on a handle of its own: the query's
        handle is busy running it)."""
        import chdb

        handle = chdb.connect(self.address)  # type: ignore[no-untyped-call]
        try:
            handle.query(
                f"KILL QUERY WHERE query LIKE {literal('%' + marker + '%')} ASYNC", "TabSeparated"
            )
        finally:
            handle.close()

    def serve(self, sock: socket.socket, request: dict[str, Any]) -> None:
        if request.get("op") == "ping":
            sock.sendall(
                protocol.json_frame(protocol.HEADER, {"ok": True, "version": self.version})
            )
            sock.sendall(protocol.frame(protocol.END))
            return
        if request.get("op") not in ("query", "insert"):
            sock.sendall(protocol.json_frame(protocol.ERROR, {"code": 0, "message": "unknown op"}))
            return
        if self._slots is not None and not self._slots.acquire(blocking=False):
            error = {
                "code": protocol.TOO_MANY_SIMULTANEOUS_QUERIES,
                "message": f"Code: {protocol.TOO_MANY_SIMULTANEOUS_QUERIES}. DB::Exception: Too "
                f"many simultaneous queries. Maximum: {self.max_queries}. "
                "(TOO_MANY_SIMULTANEOUS_QUERIES)",
            }
            sock.sendall(protocol.json_frame(protocol.ERROR, error))  # (before any data)
            return
        try:
            if request["op"] == "insert":
                self._insert(sock, request)
            else:
                self._query(sock, request)
        finally:
            if self._slots is not None:
                self._slots.release()

    def _insert(self, sock: socket.socket, request: dict[str, Any]) -> None:
        try:
            handle, session = self._handle(request)
        except Exception as exc:
            sock.sendall(protocol.json_frame(protocol.ERROR, _error(exc)))
            return
        use = _Use(self, handle, session)
        received = False  # the client's END: all of its data is in
        try:
            self._prepare(handle, session, request)
            inserter = handle.send_insert(request["sql"], request.get("format") or "Native")
            use.stop = inserter.cancel
            sock.sendall(protocol.json_frame(protocol.HEADER, {"ok": True}))
            while True:
                head = _recv_exact(sock, protocol.HEAD_SIZE)
                if head is None:
                    raise ConnectionResetError
                kind, length = protocol.parse_head(head)
                if kind == protocol.END:
                    received = True
                    break
                data = _recv_exact(sock, length) if kind == protocol.DATA else None
                if data is None:
                    raise ConnectionResetError
                inserter.append(data)
            written = inserter.finish()
            use.stop = None
            use.answer(
                sock,
                protocol.json_frame(
                    protocol.END,
                    {"written_rows": written.rows_written, "written_bytes": written.bytes_written},
                ),
            )
        except (BrokenPipeError, ConnectionResetError):
            raise
        except Exception as exc:
            use.answer(sock, protocol.json_frame(protocol.ERROR, _error(exc)))
            use.end()  # the insert is over: cancelled, its handle released
            if not received:
                # The client sends until it reads this answer. What it sent meanwhile is read
                # and dropped: a socket closed on unread data is reset, and the reset could
                # reach the client before it read the answer (it would see "the engine stopped"
                # instead of the engine's error).
                _discard_until_end(sock)
            raise ConnectionResetError from exc  # the connection is not reusable
        finally:
            use.end()

    def _query(self, sock: socket.socket, request: dict[str, Any]) -> None:
        try:
            handle, session = self._handle(request)
        except Exception as exc:
            sock.sendall(protocol.json_frame(protocol.ERROR, _error(exc)))
            return
        use = _Use(self, handle, session)
        started = False
        began = time.monotonic_ns()
        outcome = _Outcome()
        try:
            self._prepare(handle, session, request)
            for data in self._answer(handle, request, use, outcome):
                if not started:
                    sock.sendall(outcome.header())
                    started = True
                if data:
                    sock.sendall(protocol.frame(protocol.DATA, data))
            if not started:
                sock.sendall(outcome.header())
            outcome.statistics["elapsed_ns"] = time.monotonic_ns() - began
            use.answer(sock, protocol.json_frame(protocol.END, outcome.statistics))
        except (BrokenPipeError, ConnectionResetError):
            raise
        except Exception as exc:  # the engine's own errors travel to the caller as they are
            if session is not None:
                _forget_failed_output(handle)
            use.answer(sock, protocol.json_frame(protocol.ERROR, _error(exc)))
        finally:
            use.end()

    def _answer(
        self, handle: Any, request: dict[str, Any], use: _Use, outcome: _Outcome
    ) -> Iterator[bytes | memoryview]:
        """The answer's bytes as the engine formats them. A query that returns rows is piped
        (``_Piped``): its format's one document (one header, one footer, one file), written as
        the engine reads and sent as it comes, in pieces of the engine's output buffer. A
        statement, or a query the output clause does not fit (its own ``FORMAT`` or ``INTO
        OUTFILE``, a trailing ``;``), is answered whole. ``outcome`` says, by the answer's
        first byte, whether the query returns rows, and once the answer is out, the engine's
        figures for the query."""
        sql, fmt = request["sql"], request.get("format") or "TabSeparated"
        params = request.get("params") or {}
        if returns_rows(sql):
            piped = _Piped(self.runner, handle, sql, fmt, params, self._kill)
            use.stop = piped.stop  # (once the query ended, stopping it again does nothing)
            pieces = iter(piped)
            try:
                first = next(pieces)
            except StopIteration:
                _count(outcome.statistics, piped.result)
                return  # an empty answer
            except Exception as exc:
                if _error(exc)["code"] != protocol.SYNTAX_ERROR:
                    raise
                # Nothing ran (a syntax error is found before anything runs): run it whole,
                # with the error the query's own text gets, if it is the query's.
            else:
                yield first
                yield from pieces
                _count(outcome.statistics, piped.result)
                return
        if _restricted(request):
            _refuse_role_switch(handle, sql, params)
        whole = handle.query(sql, fmt, params=params)
        _count(outcome.statistics, whole)
        answer = whole.bytes()
        # A statement (CREATE, INSERT ... SELECT, ...) answers no rows, and no format.
        outcome.returns_rows = bool(answer) or returns_rows(sql)
        yield from _pieces(answer)


@dataclass
class _Outcome:
    """What a query's answer is: rows (in the requested format) or a statement's nothing; and
    the engine's figures for it (``_count``)."""

    returns_rows: bool = True
    statistics: dict[str, int] = field(default_factory=dict)

    def header(self) -> bytes:
        return protocol.json_frame(protocol.HEADER, {"ok": True, "rows": self.returns_rows})


class _Piped:
    """A query's answer as the engine's client writes it ``INTO OUTFILE``: a pipe, read here as
    it is written. The engine formats it as a server does, block by block with one header, one
    footer, one file, and waits while the reader does. chDB's other two ways: its streaming
    API formats each block as a document of its own (a JSON answer came back as one document
    per block, a Parquet one as one file per block) and makes a block only when asked (idle
    while the last one is sent); its one-shot query formats the whole answer in memory.
    Measured on chDB 4.4, 20M rows, one process: JSON 3.7 s piped, 13.9 s one-shot (3.4 GB
    resident); TabSeparated 0.9 s piped, 1.9 s one-shot, 1.2 s streamed; ``SELECT 1`` 1.06 ms
    piped, 1.00 ms streamed, 0.87 ms one-shot (docs/performance.md).

    The engine's client writes its file through a 1 MiB buffer and writes it out when full, not
    after each block as a server flushes: a slow query's first rows come once it has 1 MiB of
    them, or at its end.

    The query runs on a thread of ``runner``; the reader is the request's own thread. ``stop``
    (the client went away, or the answer is over) closes the pipe's reading end and, if the
    query is still running, kills it (``kill``, by the marker its text carries: a closed pipe
    fails the engine's next write, but the engine then goes on computing the rest of the
    answer, a whole table scan for nothing, 10 s and more under load), and waits for it to end,
    so that the handle is free once it returns."""

    def __init__(
        self,
        runner: ThreadPoolExecutor,
        handle: Any,
        sql: str,
        fmt: str,
        params: dict[str, Any],
        kill: Callable[[str], None],
    ) -> None:
        self._kill = kill
        self._marker = f"kh-piped-{os.urandom(8).hex()}"
        self._ended = False
        self._read, self._write = os.pipe()
        with contextlib.suppress(OSError):  # fewer, larger reads where the host allows it
            fcntl.fcntl(self._write, fcntl.F_SETPIPE_SZ, PIECE_BYTES)
        # The engine opens the pipe by its name in this process's /proc (the sandbox's own);
        # a line of its own ends a trailing comment.
        statement = (
            f"{_without_terminator(sql)}\nINTO OUTFILE '/proc/self/fd/{self._write}' "
            f"APPEND COMPRESSION 'none' /* {self._marker} */"
        )
        self.result: Any = None  # the engine's result (its statistics), once it ended
        self._done = runner.submit(self._run, handle, statement, fmt, params)
        self._closed = False

    def _run(self, handle: Any, statement: str, fmt: str, params: dict[str, Any]) -> None:
        try:
            self.result = handle.query(statement, fmt, params=params)
        finally:
            self._ended = True  # (before the reader's end of file: stop() then kills nothing)
            os.close(self._write)  # the reader's end of file, once the engine's file is closed

    def __iter__(self) -> Iterator[bytes]:
        while chunk := os.read(self._read, PIECE_BYTES):
            yield chunk
        self.stop()
        self._done.result()  # the engine's error, if it ended with one

    def stop(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self._read)
            if not self._ended:
                with contextlib.suppress(Exception):
                    self._kill(self._marker)
        with contextlib.suppress(Exception):
            self._done.result()


def _count(statistics: dict[str, int], result: Any) -> None:
    """Add an engine result's figures (a whole answer's, or one streamed block's) to
    ``statistics``, in the names of ClickHouse's X-ClickHouse-Summary. The engine's figures for
    its result are ``rows_read``/``bytes_read``; what it read from storage is ``storage_*``.
    The rows it was to read are the rows it read (known once the query is over)."""
    if result is None:
        return
    figures = {
        "read_rows": result.storage_rows_read(),
        "read_bytes": result.storage_bytes_read(),
        "written_rows": result.rows_written(),
        "written_bytes": result.bytes_written(),
        "result_rows": result.rows_read(),
        "result_bytes": result.bytes_read(),
    }
    figures["total_rows_to_read"] = figures["read_rows"]
    for name, value in figures.items():
        statistics[name] = statistics.get(name, 0) + int(value)


def _forget_failed_output(handle: Any) -> None:
    """A one-shot query that fails part-way leaves what it had formatted in the handle, and the
    engine prefixes it to the next answer on that handle (chDB 4.4: ``SELECT 1`` answered the
    failed query's rows). A session's handle runs one query whose answer is dropped, which
    takes the leftovers with it."""
    with contextlib.suppress(Exception):
        handle.query("SELECT 1", "TabSeparated")


PIECE_BYTES = 1 << 20  # an answer travels in frames of at most this size


# The statements whose answer is rows (what the engine's grammar lets end with INTO OUTFILE),
# by their first word. Any other statement is answered whole: an INSERT's inline data, for
# one, would take the clause for data.
_RETURNS_ROWS = frozenset(
    {"SELECT", "WITH", "FROM", "SHOW", "DESC", "DESCRIBE", "EXPLAIN", "EXISTS"}
)
_SPACE = frozenset(" \t\n\r\f\v")
_WORD = re.compile(r"[A-Za-z_]+")


def returns_rows(sql: str) -> bool:
    """Whether the statement's first word (past spaces, comments as the engine reads them, line
    and nested block comments, and opening parentheses) starts a query that returns rows. Text
    this cannot read is not one: it is answered whole, never piped."""
    i, end = 0, len(sql)
    while i < end:
        if sql[i] in _SPACE or sql[i] == "(":
            i += 1
        elif sql.startswith("--", i) or sql[i] == "#":
            newline = sql.find("\n", i)
            if newline < 0:
                return False
            i = newline + 1
        elif sql.startswith("/*", i):
            depth, i = 1, i + 2
            while depth:
                if i >= end:
                    return False
                if sql.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif sql.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        else:
            word = _WORD.match(sql, i)
            return word is not None and word.group().upper() in _RETURNS_ROWS
    return False


def _without_terminator(sql: str) -> str:
    text = sql.rstrip()
    return text[:-1] if text.endswith(";") else text


def _pieces(data: bytes) -> Iterator[memoryview]:
    view = memoryview(data)  # slices of it: each piece is copied once, into its frame
    for offset in range(0, len(view), PIECE_BYTES):
        yield view[offset : offset + PIECE_BYTES]


class _Use:
    """One request's use of a handle. ``end`` (once) stops what is in flight (``stop``: the
    stream or the insert) and releases the handle. ``answer`` sends the answer's last frame; a
    session's handle is released first, because the client's next request in the session may
    follow the answer at once and must find the session free (not 373); a handle of its own is
    closed after (closing it is not the client's wait)."""

    def __init__(self, server: _Server, handle: Any, session: _Session | None) -> None:
        self.server = server
        self.handle = handle
        self.session = session
        self.stop: Callable[[], object] | None = None
        self._ended = False

    def end(self) -> None:
        stop, self.stop = self.stop, None
        if stop is not None:
            stop()
        if not self._ended:
            self._ended = True
            self.server._release(self.handle, self.session)

    def answer(self, sock: socket.socket, frame: bytes) -> None:
        if self.session is not None:
            self.end()
        sock.sendall(frame)


class _Session:
    """A ClickHouse HTTP session: one handle kept between requests, one request at a time."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.lock = threading.Lock()
        self.last_used = time.monotonic()
        self.timeout = SESSION_TIMEOUT
        self.read_only_request = False  # the request in flight runs under the read-only role


def _restricted(request: dict[str, Any]) -> bool:
    """A request that runs under chosen roles or read-only: it must stay within them."""
    return bool(request.get("roles") or request.get("readonly"))


def _refuse_role_switch(handle: Any, sql: str, params: dict[str, Any]) -> None:
    """``SET ROLE`` needs no privilege (the engine's one user holds every role): a restricted
    request may not run it. The statement's kind is the engine's own parse of it (the first
    node of ``EXPLAIN AST``), never a match on its text; a statement the engine cannot parse
    fails here with the engine's error, as it would have anyway."""
    tree = handle.query(f"EXPLAIN AST {sql}", "TabSeparated", params=params).bytes()
    if tree.startswith(b"SetRoleQuery"):
        raise PermissionError(
            f"Code: {protocol.ACCESS_DENIED}. DB::Exception: Not enough privileges: this "
            "binding runs under its database roles and cannot switch them. (ACCESS_DENIED)"
        )


def _discard_until_end(sock: socket.socket) -> None:
    """Read and drop the client's frames up to its END (or until it closes)."""
    with contextlib.suppress(OSError):
        while (head := _recv_exact(sock, protocol.HEAD_SIZE)) is not None:
            kind, length = protocol.parse_head(head)
            if kind == protocol.END or _recv_exact(sock, length) is None:
                return


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    chunks = []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


_CGROUPS_NOTE = re.compile(
    rb"^(Cannot use cgroups reader: .*|\d+\. .*|\s*\(version [^)]*\)|\s*)$", re.MULTILINE
)


def _import_engine() -> Any:
    """``import chdb``, without the note it writes to standard error in a sandbox: no cgroup
    files (its stack trace is 30 lines in the server's log at every start; the engine then
    sizes itself by the machine's memory). Anything else it writes passes through."""
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import chdb
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            written = captured.read()
            if _CGROUPS_NOTE.sub(b"", written).strip():
                os.write(2, written)
    return chdb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="keyhouse-engine-worker")
    parser.add_argument("--path", required=True, help="the service's data directory")
    parser.add_argument("--socket", required=True, help="the Unix socket to serve on")
    parser.add_argument("--config", required=True, help="the engine's config (engine_config)")
    parser.add_argument("--max-queries", type=int, default=0, help="at once (0: no limit)")
    args = parser.parse_args(argv)
    os.umask(0o077)  # the service's files are the engine's alone (0600, directories 0700)
    serving: list[_Server] = []

    def orphaned() -> None:
        # Standard input is a pipe only the supervisor writes to: its end comes when the
        # supervisor closes it or dies (kill -9 included). Free the data directory's lock then,
        # so that the next server can start this service again; while still starting, just
        # exit. (In the sandbox the parent is out of sight, and the kernel's parent-death
        # signal does not survive the uid switch.)
        with contextlib.suppress(OSError):
            while os.read(0, 4096):  # the raw descriptor: a buffered reader's lock would hold
                pass  # the interpreter's exit while this thread waits
        if not serving:
            os._exit(1)
        serving[0].shutdown()

    threading.Thread(target=orphaned, daemon=True).start()

    chdb = _import_engine()

    config = args.config
    address = f"file:{Path(args.path).resolve()}?config-file={config}"
    engine = chdb.connect(address)  # holds the engine (and its directory lock) open
    version = engine.query("SELECT version()", "TabSeparated").bytes().decode().strip()
    if os.path.exists(args.socket):
        os.unlink(args.socket)
    server = _Server(args.socket, address, engine, version, args.max_queries)
    os.chmod(args.socket, 0o600)

    def stop(_signum: int, _frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def expire_sessions() -> None:
        while True:
            time.sleep(1)
            server.expire_sessions()

    threading.Thread(target=expire_sessions, daemon=True).start()
    serving.append(server)
    sys.stdout.write(f"ready {version}\n")
    sys.stdout.flush()
    # Nobody reads the pipe after the ready line: whatever the engine or a library writes to
    # standard output from now on goes to standard error (the server's log), so that a full
    # pipe can never stop the engine.
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        # Closing waits for the engine's background work; some of it retries for long (a
        # dictionary loading from a source it cannot reach). Every acknowledged write is on
        # disk already: past a few seconds, exit without it.
        closing = threading.Thread(target=engine.close, daemon=True)
        closing.start()
        closing.join(CLOSE_SECONDS)
        # Nothing is left to wait for: not the engine past its seconds, nor a query still on
        # the runner's threads (which the interpreter would join at exit).
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    raise SystemExit(main())
