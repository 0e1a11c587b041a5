"""A directory as a stream of frames, from one engine host to another through the control
plane (a service's backup, or a stopped service's data, when it moves): the source agent
writes a tar of it as ``DATA`` frames and ``END``; the target agent extracts what it receives
with tarfile's ``data`` filter (``..`` and links out of the directory refused, absolute paths
made relative to it, no devices), and answers ``END`` once all of it is on its disk
(``ERROR`` otherwise)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from keyhouse.engine import protocol

CHUNK = 256 * 1024
_QUEUED = 8  # chunks in flight between the tar thread and the connection


class _Writer:
    """A file the tar thread writes into, read as chunks on the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[bytes | None]):
        self.loop, self.queue = loop, queue

    def write(self, data: bytes) -> int:
        asyncio.run_coroutine_threadsafe(self.queue.put(bytes(data)), self.loop).result()
        return len(data)


class _Reader:
    """A file the tar thread reads from, fed with chunks on the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[bytes | None]):
        self.loop, self.queue = loop, queue
        self.buffer = b""
        self.ended = False

    def read(self, size: int = -1) -> bytes:
        while not self.ended and (size < 0 or len(self.buffer) < size):
            chunk = asyncio.run_coroutine_threadsafe(self.queue.get(), self.loop).result()
            if chunk is None:
                self.ended = True
            else:
                self.buffer += chunk
        if size < 0:
            size = len(self.buffer)
        taken, self.buffer = self.buffer[:size], self.buffer[size:]
        return taken


async def send_tree(directory: Path, writer: asyncio.StreamWriter) -> None:
    """``directory`` as a tar, in ``DATA`` frames, then ``END``."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(_QUEUED)

    def pack() -> None:
        try:
            with tarfile.open(fileobj=_Writer(loop, queue), mode="w|", bufsize=CHUNK) as tar:  # type: ignore[call-overload]
                tar.add(directory, arcname=".")
        finally:
            asyncio.run_coroutine_threadsafe(queue.put(None), loop).result()

    packing = asyncio.ensure_future(asyncio.to_thread(pack))
    try:
        while (chunk := await queue.get()) is not None:
            writer.write(protocol.frame(protocol.DATA, chunk))
            await writer.drain()
        await packing
        writer.write(protocol.frame(protocol.END))
        await writer.drain()
    finally:
        if not packing.done():  # the reader left: let the thread finish into nothing
            while not packing.done():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                await asyncio.sleep(0.01)


async def frames(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """The ``DATA`` frames' payloads up to ``END`` (``ValueError`` on anything else)."""
    while True:
        kind, length = protocol.parse_head(await reader.readexactly(protocol.HEAD_SIZE))
        payload = await reader.readexactly(length)
        if kind == protocol.END:
            return
        if kind != protocol.DATA:
            raise ValueError(f"unexpected frame {kind!r}: {payload[:200]!r}")
        yield payload


async def receive_tree(chunks: AsyncIterator[bytes], directory: Path) -> None:
    """Extract the tar in ``chunks`` into ``directory`` (made afresh); on failure nothing of it
    stays."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(_QUEUED)
    partial = directory.with_name(directory.name + ".incoming")

    def unpack() -> None:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True, mode=0o700)
        reader: Any = _Reader(loop, queue)
        with tarfile.open(fileobj=reader, mode="r|", bufsize=CHUNK) as tar:
            tar.extractall(partial, filter="data")
        reader.read()  # to the stream's end
        shutil.rmtree(directory, ignore_errors=True)
        partial.replace(directory)

    unpacking = asyncio.ensure_future(asyncio.to_thread(unpack))

    async def put(item: bytes | None) -> None:
        while not unpacking.done():  # (a thread that failed reads no more)
            try:
                queue.put_nowait(item)
                return
            except asyncio.QueueFull:
                await asyncio.sleep(0.005)

    try:
        async for chunk in chunks:
            await put(chunk)
        await put(None)
        await unpacking
    except BaseException:
        await put(None)
        with contextlib.suppress(Exception):
            await unpacking
        await asyncio.to_thread(shutil.rmtree, partial, True)
        raise
