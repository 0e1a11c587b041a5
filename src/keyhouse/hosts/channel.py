"""The channel from the control plane to an engine host's agent: TLS to the agent's
``--listen`` address, verified against the certificate authority the agent joined with (so the
control plane knows it reaches that host), and a first frame with the host's secret (so the
agent knows the control plane sent it). Nothing runs before both checks pass.

After the first frame (``HELLO``: ``{"host", "secret", "op", "service"?}``) the agent answers
``HEADER`` or ``ERROR`` (``{"code", "message"}``, ``NOT_HERE`` or ``NOT_RUNNING``), then:

- ``op: "pipe"``: the connection becomes the service's worker connection
  (``keyhouse.engine.protocol``) byte for byte, one request as over the worker's own socket;
- ``op: "sync"``: the agent syncs with the control plane at once (a committed change for one of
  its services), and the connection ends;
- ``op: "export"`` / ``"import"`` (``what``: ``"backup"`` with its ``name``, or ``"data"``, a
  stopped service's data directory): the directory as frames (``keyhouse.hosts.transfer``),
  from the agent, or to it (which answers ``END`` once it is all on its disk); ``op:
  "forget"`` removes a backup (a move's, once restored, or one retention let go), and
  ``op: "size"`` answers a backup's bytes on the host's disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keyhouse.engine import protocol

HELLO = b"A"
NOT_HERE = 1  # the service is not given to this host (moved, or gone)
NOT_RUNNING = 2  # its engine does not run (yet)
BUSY = 3  # its engine runs: its data directory cannot move
FAILED = 4  # the operation failed on the host
CONNECT_TIMEOUT = 5.0
PIPE_CHUNK = 64 * 1024
HELLO_TIMEOUT = 5.0
MAX_HELLO = 64 * 1024


class ChannelError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Route:
    """How the control plane reaches one host: over TLS to ``channel``, or (another server
    process of this machine holding the service, ``host_id`` None) over its Unix socket
    ``unix``, in a directory only Keyhouse's user may enter."""

    host_id: uuid.UUID | None
    channel: str  # HOST:PORT
    ca_pem: str
    secret: str
    unix: str | None = None

    @classmethod
    def local(cls, path: str | Path) -> Route:
        """Another server process of this machine, at its socket ``path``."""
        return cls(None, "", "", "", unix=str(path))

    def address(self) -> tuple[str, int]:
        host, _, port = self.channel.rpartition(":")
        return host.strip("[]"), int(port)


_contexts: dict[str, ssl.SSLContext] = {}


def client_context(ca_pem: str) -> ssl.SSLContext:
    """TLS that trusts only the host's own certificate authority (cached per authority)."""
    context = _contexts.get(ca_pem)
    if context is None:
        context = ssl.create_default_context(cadata=ca_pem)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        _contexts[ca_pem] = context
    return context


async def open_channel(
    route: Route, op: str, service_id: uuid.UUID | None = None, **more: Any
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to the host's agent that passed both checks; ``ChannelError`` when the
    agent refuses ``op``, ``OSError`` when it cannot be reached."""
    reader, writer, _answer = await _opened(route, op, service_id, more)
    return reader, writer


async def open_when(
    route: Route,
    op: str,
    service_id: uuid.UUID,
    refused: int,
    *,
    seconds: float,
    **more: Any,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """``open_channel``, tried again for up to ``seconds`` while the agent refuses with the
    code ``refused`` (an engine coming up, a service it has not heard of yet), asking it to
    sync at once; the last ``ChannelError`` after that."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        try:
            return await open_channel(route, op, service_id, **more)
        except ChannelError as refusal:
            if refusal.code != refused or asyncio.get_running_loop().time() > deadline:
                raise
        await poke(route)
        await asyncio.sleep(0.25)


async def ask(
    route: Route, op: str, service_id: uuid.UUID | None = None, **more: Any
) -> dict[str, Any]:
    """The agent's answer to ``op`` (its ``HEADER``), the connection closed after it."""
    _reader, writer, answer = await _opened(route, op, service_id, more)
    writer.close()
    return answer


async def _opened(
    route: Route, op: str, service_id: uuid.UUID | None, more: dict[str, Any]
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, dict[str, Any]]:
    async with asyncio.timeout(CONNECT_TIMEOUT):
        if route.unix is not None:
            reader, writer = await asyncio.open_unix_connection(route.unix)
        else:
            host, port = route.address()
            reader, writer = await asyncio.open_connection(
                host, port, ssl=client_context(route.ca_pem), server_hostname=host
            )
        try:
            hello: dict[str, Any] = {"host": str(route.host_id), "secret": route.secret, "op": op}
            if service_id is not None:
                hello["service"] = str(service_id)
            hello.update(more)
            writer.write(protocol.json_frame(HELLO, hello))
            await writer.drain()
            kind, length = protocol.parse_head(await reader.readexactly(protocol.HEAD_SIZE))
            payload = await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
    if kind != protocol.HEADER:
        writer.close()
        error = json.loads(payload or b"{}")
        raise ChannelError(int(error.get("code", 0)), str(error.get("message", "")))
    answer = json.loads(payload or b"{}")
    return reader, writer, answer if isinstance(answer, dict) else {}


def refusal(code: int, message: str) -> bytes:
    return protocol.json_frame(protocol.ERROR, {"code": code, "message": message})


async def pipe(
    socket_path: Path | None,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    used: Callable[[], None] | None = None,
) -> None:
    """The channel's connection (its hello answered here), byte for byte, to the worker at
    ``socket_path`` (None: the engine does not run); ``used`` is told of each request's bytes
    (a kept connection carries many)."""
    try:
        if socket_path is None:
            raise OSError("no engine")
        engine_reader, engine_writer = await asyncio.open_unix_connection(str(socket_path))
    except OSError:
        writer.write(refusal(NOT_RUNNING, "the service's engine does not run"))
        return
    writer.write(protocol.json_frame(protocol.HEADER, {}))
    await writer.drain()
    copies = [
        asyncio.create_task(_copy(reader, engine_writer, used)),
        asyncio.create_task(_copy(engine_reader, writer)),
    ]
    try:
        # Either side's end ends both: the control plane leaving cancels the query.
        await asyncio.wait(copies, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for copy in copies:
            copy.cancel()
        engine_writer.close()


async def _copy(
    source: asyncio.StreamReader,
    sink: asyncio.StreamWriter,
    used: Callable[[], None] | None = None,
) -> None:
    with contextlib.suppress(OSError, ssl.SSLError, ConnectionError):
        while data := await source.read(PIPE_CHUNK):
            if used is not None:
                used()
            sink.write(data)
            await sink.drain()


async def read_hello(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """A connection's first frame (``HELLO``), within ``HELLO_TIMEOUT``; None for anything
    else."""
    async with asyncio.timeout(HELLO_TIMEOUT):
        kind, length = protocol.parse_head(await reader.readexactly(protocol.HEAD_SIZE))
        if kind != HELLO or length > MAX_HELLO:
            return None
        hello = json.loads(await reader.readexactly(length))
    return hello if isinstance(hello, dict) else None


async def poke(route: Route) -> None:
    """Ask the host's agent to sync now (best effort: it syncs every second anyway)."""
    with contextlib.suppress(OSError, ChannelError, TimeoutError, asyncio.IncompleteReadError):
        await ask(route, "sync")
