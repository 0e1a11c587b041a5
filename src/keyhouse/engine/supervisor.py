"""The supervisor: owns one engine worker process per running service, as gunicorn's arbiter
owns its workers.

It starts a worker (a fresh ``python -m keyhouse.engine.worker`` interpreter: never a fork of
this process, which never imports chDB) inside the operating-system sandbox
(``keyhouse.engine.sandbox``), waits for its ``ready`` line, stops it (SIGTERM, then
SIGKILL after a grace period), and restarts it with back-off when it dies unasked. A worker that
dies ``max_restarts`` times within ``restart_window`` seconds is given up on, and ``on_failed``
is told, so the service can be marked ``failed``. A worker that dies cannot take the API process
with it: they share nothing but a Unix socket in a private directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from keyhouse.engine import protocol
from keyhouse.engine.limits import QueryLimits
from keyhouse.engine.memory import MemoryGroup, MemoryGroupUnavailable
from keyhouse.engine.protocol import ClickHouseError, silent_engine
from keyhouse.engine.sandbox import Sandbox, SandboxUnavailable, environment
from keyhouse.engine.worker import engine_config

log = logging.getLogger("keyhouse.engine")

_T = TypeVar("_T")
HEARTBEAT_SECONDS = 5.0
HEARTBEAT_MISSES = 3

FailedCallback = Callable[[uuid.UUID, str], Awaitable[None]]


class EngineUnavailable(Exception):
    """The service's worker is not running (or could not be started)."""


@dataclass
class _Worker:
    service_id: uuid.UUID
    data_path: Path
    socket_path: Path
    process: asyncio.subprocess.Process
    version: str
    pid: int  # the worker's own (in a sandbox, ``process`` is bubblewrap's)
    stopping: bool = False
    crashes: list[float] = field(default_factory=list)
    watcher: asyncio.Task[None] | None = None
    # When a frame of any query's answer last came from the worker (it is alive, whatever its
    # pings say).
    heard: float = field(default_factory=time.monotonic)


async def _reap(process: asyncio.subprocess.Process, pid: Awaitable[int]) -> None:
    """Kill a worker that never became ready and wait until it and its pipe are gone (a child
    nobody waits for, or a pipe nobody closes, outlives the event loop that started it)."""
    with contextlib.suppress(ProcessLookupError):
        process.kill()  # first: bubblewrap then ends the pipe the worker's PID comes by
    _close_lifeline(process)  # a worker bubblewrap could not name ends with it
    try:
        worker = await asyncio.wait_for(asyncio.shield(pid), 10)
    except TimeoutError:  # never named: its lifeline ends it
        worker = process.pid
    _kill(process, worker)
    await process.communicate()  # the worker's end of stdout closes when it exits
    await _gone(worker)


class EngineSupervisor:
    def __init__(
        self,
        data_dir: Path,
        *,
        start_timeout: float = 60,
        stop_grace: float = 10,
        max_restarts: int = 3,
        restart_window: float = 60,
        on_failed: FailedCallback | None = None,
        limits: dict[str, int | str] | None = None,
        answer_timeout: float | None = None,
        sandbox: Sandbox | None = None,
        max_queries: int = 0,
        memory_limit: int = 0,
        heartbeat: float = HEARTBEAT_SECONDS,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        self.data_dir = data_dir
        # Told of each worker's life: "started", "crashed", "hung", "given_up" (metrics).
        self.on_event = on_event
        # Each running worker is pinged this often; one that misses HEARTBEAT_MISSES pings in a
        # row (each given as long) and sent no frame on any query meanwhile is hung: killed,
        # and restarted as a crashed one is.
        self.heartbeat = heartbeat
        # The most all engines together may hold (0: no cap): each engine's own cap, and the
        # kernel's over all of them in one memory cgroup (keyhouse.engine.memory) where the
        # host offers one.
        self.memory_limit = memory_limit
        self.memory_group: MemoryGroup | None = None
        self._memory_group_tried = False
        self._memory_group_lock = threading.Lock()
        # Queries and inserts at once on each engine (0: no limit); past it, the engine's 202.
        self.max_queries = max_queries
        self.sandbox = sandbox if sandbox is not None else Sandbox()
        # The operator's limits: each engine starts with them as defaults and constraints.
        self.limits = dict(limits or {})
        # Each frame of an answer is waited for this long at most (an engine that hangs).
        self.answer_timeout = answer_timeout or QueryLimits.checked(self.limits).answer_timeout
        self.start_timeout = start_timeout
        self.stop_grace = stop_grace
        self.max_restarts = max_restarts
        self.restart_window = restart_window
        self.on_failed = on_failed
        self._sockets = Path(tempfile.mkdtemp(prefix="keyhouse-engines-"))  # mode 0700
        self._workers: dict[uuid.UUID, _Worker] = {}
        self._locks: dict[uuid.UUID, asyncio.Lock] = {}
        self._closing = False

    def data_path(self, service_id: uuid.UUID) -> Path:
        return self.data_dir / "services" / str(service_id)

    def backup_path(self, service_id: uuid.UUID) -> Path:
        """The service's backups: outside its data directory (a tenant who drops its tables
        cannot drop them), written by its own engine's ``BACKUP`` and by nothing else."""
        return self.data_dir / "backups" / str(service_id)

    def running(self, service_id: uuid.UUID) -> bool:
        worker = self._workers.get(service_id)
        return worker is not None and worker.process.returncode is None

    def _lock(self, service_id: uuid.UUID) -> asyncio.Lock:
        return self._locks.setdefault(service_id, asyncio.Lock())

    async def start(self, service_id: uuid.UUID) -> str:
        """Start the service's worker (no-op when it runs); returns the engine's version."""
        async with self._lock(service_id):
            if self._closing:
                raise EngineUnavailable("the server is shutting down")
            worker = self._workers.get(service_id)
            if worker is not None and worker.process.returncode is None:
                return worker.version
            worker = await self._spawn(service_id, crashes=worker.crashes if worker else [])
            self._event("started")
            self._workers[service_id] = worker
            worker.watcher = asyncio.create_task(self._watch(worker))
            return worker.version

    async def _spawn(self, service_id: uuid.UUID, crashes: list[float]) -> _Worker:
        try:
            self.sandbox.check(self.data_dir)
        except SandboxUnavailable as error:
            raise EngineUnavailable(str(error)) from None
        data_path = self.data_path(service_id)
        (self.data_dir / "services").mkdir(mode=0o700, parents=True, exist_ok=True)
        # The worker's own directory (its socket) and its configuration (read-only to it: an
        # engine reloads its users file when it changes).
        channel = self._sockets / service_id.hex
        backups = self.backup_path(service_id)
        (self.data_dir / "backups").mkdir(mode=0o700, parents=True, exist_ok=True)
        config = engine_config(
            self._sockets / f"{service_id.hex}.config", self.limits, self.memory_limit, backups
        )
        if self.memory_limit:
            await asyncio.to_thread(self._join_memory_group)
        await asyncio.to_thread(self.sandbox.prepare, data_path, channel, backups)
        await _unlocked(data_path)
        socket_path = channel / "engine.sock"
        argv = [sys.executable, "-I", "-m", "keyhouse.engine.worker"]
        argv += ["--path", str(data_path), "--socket", str(socket_path), "--config", str(config)]
        argv += ["--max-queries", str(self.max_queries)]
        process, child = await self._launch(argv, [data_path, channel, backups], config)
        try:
            pid = await asyncio.shield(child)
            assert process.stdout is not None  # noqa: S101 (stdout=PIPE above)
            line = await asyncio.wait_for(process.stdout.readline(), self.start_timeout)
        except TimeoutError:
            await _reap(process, child)
            raise EngineUnavailable("the engine did not start in time") from None
        except BaseException:
            # Cancelled while it starts (the server stopping, the caller's loop ending): an
            # engine nobody knows of must not run on, holding the service's data directory.
            await _reap(process, child)
            raise
        if not line.startswith(b"ready "):
            await _reap(process, child)
            raise EngineUnavailable(f"the engine exited while starting ({process.returncode})")
        version = line.decode().split(" ", 1)[1].strip()
        log.info("engine for service %s started (pid %s, %s)", service_id, pid, version)
        return _Worker(service_id, data_path, socket_path, process, version, pid, crashes=crashes)

    def _join_memory_group(self) -> None:
        """Make the engines' memory group once, before the first worker starts (workers that
        start together wait for it)."""
        with self._memory_group_lock:
            if self._memory_group_tried:
                return
            self._memory_group_tried = True
            try:
                group = MemoryGroup.create(self.memory_limit)
            except MemoryGroupUnavailable as error:
                log.warning(
                    "engines' memory together is not capped by the kernel (each engine still "
                    "caps itself at %s bytes): %s",
                    self.memory_limit,
                    error,
                )
                return
            log.info("engines' memory together capped at %s bytes (%s)", group.limit, group.path)
            self.memory_group = group

    async def _launch(
        self, argv: list[str], writable: list[Path], config: Path
    ) -> tuple[asyncio.subprocess.Process, asyncio.Future[int]]:
        """Start ``argv`` in the sandbox; the process (bubblewrap's, in a sandbox) and a future
        of the worker's own PID (bubblewrap writes it to a pipe, which it closes also when it
        fails, so the thread reading it always ends)."""
        sandboxed = self.sandbox.enabled
        info_read, info_write = os.pipe() if sandboxed else (-1, -1)
        try:
            command = self.sandbox.command(
                argv,
                writable=writable,
                readable=[config.parent],
                info_fd=info_write if sandboxed else None,
            )
            if self.memory_group is not None:
                command = self.memory_group.join(command)
            # Never cancelled midway: asyncio would kill bubblewrap but could leave the
            # lifeline's write end open (pipes it connects after the cancellation), and a worker
            # bubblewrap had not named yet would then run on unknown, holding the data's lock.
            spawning = asyncio.ensure_future(
                asyncio.create_subprocess_exec(
                    *command,
                    stdin=asyncio.subprocess.PIPE,  # the worker's lifeline: it exits at its end
                    stdout=asyncio.subprocess.PIPE,
                    env=environment(),
                    pass_fds=(info_write,) if sandboxed else (),
                    start_new_session=True,  # a Ctrl-C to the server reaches engines once
                )
            )
            try:
                process = await asyncio.shield(spawning)
                cancelled = False
            except asyncio.CancelledError:
                process, cancelled = await spawning, True
        except BaseException:
            if sandboxed:
                os.close(info_read)
            raise
        finally:
            if sandboxed:
                os.close(info_write)
        child: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        if not sandboxed:
            child.set_result(process.pid)
        else:

            def read() -> int:
                try:
                    return _child_pid(info_read) or process.pid
                finally:
                    os.close(info_read)

            child = asyncio.ensure_future(asyncio.to_thread(read))
        if cancelled:
            await _reap(process, child)
            raise asyncio.CancelledError
        return process, child

    async def _watch(self, worker: _Worker) -> None:
        beating = asyncio.create_task(self._beat(worker))
        try:
            code = await worker.process.wait()
        finally:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating
        _close_lifeline(worker.process)  # bubblewrap killed: its worker ends with its lifeline
        await _gone(worker.pid)
        if worker.stopping or self._closing:
            return
        now = time.monotonic()
        worker.crashes = [t for t in worker.crashes if now - t < self.restart_window] + [now]
        log.warning("engine for service %s exited unasked (%s)", worker.service_id, code)
        self._event("crashed")
        if len(worker.crashes) > self.max_restarts:
            log.error("engine for service %s keeps crashing: giving up", worker.service_id)
            self._event("given_up")
            if self.on_failed is not None:
                await self.on_failed(
                    worker.service_id, f"engine exited {len(worker.crashes)} times"
                )
            return
        await asyncio.sleep(min(2 ** (len(worker.crashes) - 1), 30) * 0.5)
        if worker.stopping or self._closing:  # stopped (or shutting down) while backing off
            return
        try:
            await self.start(worker.service_id)
        except EngineUnavailable as error:
            log.error("engine for service %s did not restart: %s", worker.service_id, error)
            if self.on_failed is not None:
                await self.on_failed(worker.service_id, str(error))

    async def _beat(self, worker: _Worker) -> None:
        """Ping the worker while it runs; kill it once it stops answering (a worker that hangs
        holds every query sent to it until each one's answer timeout, and it never exits). A
        ping that fails while the worker sends frames on a query does not count: a busy
        engine under load is slow to answer, not hung."""
        missed = 0
        while worker.process.returncode is None:
            beat = time.monotonic()
            await asyncio.sleep(self.heartbeat)
            if worker.stopping:
                return
            try:
                await asyncio.wait_for(self._ping(worker), self.heartbeat)
                missed = 0
                continue
            except (TimeoutError, OSError, ClickHouseError, asyncio.IncompleteReadError):
                pass
            missed = 0 if worker.heard >= beat else missed + 1
            if missed >= HEARTBEAT_MISSES and not worker.stopping:
                log.error(
                    "engine for service %s missed %d heartbeats and sent nothing: killing it",
                    worker.service_id,
                    missed,
                )
                self._event("hung")
                _kill(worker.process, worker.pid)
                return

    def _event(self, event: str) -> None:
        if self.on_event is not None:
            self.on_event(event)

    async def _ping(self, worker: _Worker) -> None:
        reader, writer = await asyncio.open_unix_connection(str(worker.socket_path))
        try:
            writer.write(protocol.json_frame(protocol.REQUEST, {"op": "ping"}))
            await writer.drain()
            kind, _ = await _next_frame(reader)
            if kind != protocol.HEADER:
                raise ClickHouseError(0, "the engine answered a ping with something else")
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def stop(self, service_id: uuid.UUID) -> None:
        async with self._lock(service_id):
            worker = self._workers.pop(service_id, None)
            if worker is None:
                return
            worker.stopping = True
            if worker.process.returncode is None:
                # The worker itself (bubblewrap would die at once and take it down unasked).
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGTERM)
                try:
                    await asyncio.wait_for(worker.process.wait(), self.stop_grace)
                except TimeoutError:
                    _kill(worker.process, worker.pid)
                    await worker.process.wait()
            _close_lifeline(worker.process)
            await _gone(worker.pid)
            if worker.watcher is not None and worker.watcher is not asyncio.current_task():
                # Never wait for a watcher while holding the lock: one that is restarting the
                # worker waits for this very lock. It has nothing left to do: cancel it.
                worker.watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker.watcher
            with contextlib.suppress(FileNotFoundError):
                worker.socket_path.unlink()
            await asyncio.to_thread(shutil.rmtree, worker.socket_path.parent, True)
            log.info("engine for service %s stopped", service_id)

    async def remove_data(self, service_id: uuid.UUID) -> None:
        """Delete a (stopped) service's data directory and its backups."""
        await self.stop(service_id)
        await asyncio.to_thread(shutil.rmtree, self.data_path(service_id), True)
        await asyncio.to_thread(shutil.rmtree, self.backup_path(service_id), True)

    @property
    def closing(self) -> bool:
        return self._closing

    async def close(self) -> None:
        self._closing = True
        # Every service ever touched: stop() takes its lock, so a start in flight ends first.
        await asyncio.gather(*(self.stop(service_id) for service_id in list(self._locks)))
        shutil.rmtree(self._sockets, ignore_errors=True)
        if self.memory_group is not None:
            self.memory_group.remove()

    async def _connect(
        self, service_id: uuid.UUID
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, _Worker]:
        worker = self._workers.get(service_id)
        if worker is None or worker.process.returncode is not None:
            raise EngineUnavailable("the service's engine is not running")
        try:
            reader, writer = await asyncio.open_unix_connection(str(worker.socket_path))
            return reader, writer, worker
        except OSError as error:
            raise EngineUnavailable(f"the engine cannot be reached: {error}") from None

    async def insert(
        self, service_id: uuid.UUID, request: dict[str, Any], data: AsyncIterator[bytes]
    ) -> dict[str, Any]:
        """Stream ``data`` into ``INSERT`` (``request["sql"]`` is the statement's head); the
        engine's write statistics, or ``ClickHouseError``."""
        reader, writer, _worker = await self._connect(service_id)
        return await insert_over(reader, writer, request, data, self.answer_timeout)

    async def query(self, service_id: uuid.UUID, request: dict[str, Any]) -> protocol.Answer:
        """Run a query; the first ``await anext()`` raises ``ClickHouseError`` if the engine refuses
        it, and yields ``b""`` once the result has started; then the result's bytes follow.
        Closing the iterator early closes the connection, and the worker cancels the query."""
        reader, writer, worker = await self._connect(service_id)

        def heard() -> None:
            worker.heard = time.monotonic()

        return answer_over(reader, writer, request, self.answer_timeout, heard)

    def connection(self, service_id: uuid.UUID) -> Path | None:
        """The running worker's socket (None: it does not run)."""
        worker = self._workers.get(service_id)
        if worker is None or worker.process.returncode is not None:
            return None
        return worker.socket_path


async def insert_over(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    request: dict[str, Any],
    data: AsyncIterator[bytes],
    answer_timeout: float | None,
    release: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """An insert over one connection to a worker (its own socket, or an engine host's channel
    piped to it); closes the connection, or hands it to ``release`` after a whole answer."""
    released = False
    try:
        writer.write(protocol.json_frame(protocol.REQUEST, {"op": "insert", **request}))
        kind, payload = await _read_frame(reader, answer_timeout)
        if kind == protocol.HEADER:
            # The engine may refuse the data before it has all of it (a row it cannot
            # parse): its answer is read as soon as it comes, and sending stops there.
            answer = asyncio.ensure_future(_read_frame(reader, None))
            try:
                with contextlib.suppress(OSError):  # the engine stopped reading: see why
                    await _send_data(writer, data, answer)
                kind, payload = await _answered_within(answer, answer_timeout)
            finally:
                if not answer.done():
                    answer.cancel()
                elif not answer.cancelled():
                    answer.exception()  # seen here (or raised above): never logged as lost
        if kind == protocol.END:
            written = dict(json.loads(payload or b"{}"))
            if release is not None:
                release()
                released = True
            return written
        error = json.loads(payload)
        raise ClickHouseError(int(error.get("code", 0)), str(error.get("message", "")))
    except (asyncio.IncompleteReadError, OSError):
        raise ClickHouseError(0, "the engine stopped while inserting") from None
    finally:
        if not released:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def answer_over(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    request: dict[str, Any],
    answer_timeout: float | None,
    heard: Callable[[], None] | None = None,
    release: Callable[[], None] | None = None,
) -> protocol.Answer:
    """A query's answer over one connection to a worker (see ``EngineSupervisor.query``);
    ``heard`` is told of every frame. The connection is closed after it, or, once the whole
    answer was read, handed to ``release`` (a worker takes requests one after another)."""
    return protocol.Answer(
        lambda answer: _results(
            reader, writer, {"op": "query", **request}, answer, answer_timeout, heard, release
        )
    )


async def _results(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    request: dict[str, Any],
    answer: protocol.Answer,
    answer_timeout: float | None,
    heard: Callable[[], None] | None,
    release: Callable[[], None] | None = None,
) -> AsyncGenerator[bytes]:
    started = released = False
    try:
        try:
            writer.write(protocol.json_frame(protocol.REQUEST, request))
            await writer.drain()
        except OSError:
            raise EngineUnavailable("the engine stopped") from None
        while True:
            try:
                kind, payload = await _read_frame(reader, answer_timeout)
            except (asyncio.IncompleteReadError, OSError):
                # The worker died: before the answer began the engine is unavailable (the
                # caller may retry); after, the answer is cut short.
                if not started:
                    raise EngineUnavailable("the engine stopped") from None
                raise ClickHouseError(0, "the engine stopped while answering") from None
            if heard is not None:
                heard()
            if kind == protocol.HEADER:
                started = True
                answer.returns_rows = json.loads(payload).get("rows", True) is not False
                yield b""
            elif kind == protocol.DATA:
                yield payload
            elif kind == protocol.END:
                if payload:
                    answer.summary.update(json.loads(payload))
                if release is not None:
                    release()
                    released = True
                answer.ended()
                return
            else:
                error = json.loads(payload)
                raise ClickHouseError(int(error.get("code", 0)), str(error.get("message", "")))
    finally:
        if not released:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def _kill(process: asyncio.subprocess.Process, pid: int) -> None:
    """SIGKILL the worker itself and bubblewrap (the kernel's parent-death signal does not
    survive the worker's uid switch)."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    with contextlib.suppress(OSError):  # a PID that is gone, or by now another program's
        if b"keyhouse.engine.worker" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGKILL)


def _close_lifeline(process: asyncio.subprocess.Process) -> None:
    if process.stdin is not None:
        process.stdin.close()


async def _until(done: Callable[[], bool], seconds: float = 10, step: float = 0.02) -> None:
    """Poll ``done`` until it holds, ``seconds`` at most (then go on: the caller's next step
    reports what is still wrong)."""
    for _ in range(int(seconds / step)):
        if done():
            return
        await asyncio.sleep(step)


async def _unlocked(data_path: Path) -> None:
    """Wait (a while) until no engine holds the service's data directory (ClickHouse's lock on
    its ``status`` file): a worker killed a moment ago may still be exiting."""

    def free() -> bool:
        try:
            with (data_path / "status").open("rb") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except FileNotFoundError:
            return True
        except BlockingIOError:
            return False
        return True

    await _until(free)


async def _gone(pid: int) -> None:
    """Wait until process ``pid`` has exited (a sandboxed worker is bubblewrap's child, not
    ours: when bubblewrap dies first, the kernel kills the worker, which takes a moment to
    release its memory and the data directory's lock)."""

    def exited() -> bool:
        try:
            stat = Path(f"/proc/{pid}/stat").read_bytes()
        except OSError:
            return True
        return stat.rsplit(b")", 1)[-1].split()[:1] == [b"Z"]

    await _until(exited)


def _child_pid(info: int) -> int | None:
    """The worker's PID from bubblewrap's ``--info-fd`` JSON (None if bubblewrap failed)."""
    data = b""
    while chunk := os.read(info, 4096):
        data += chunk
    try:
        return int(json.loads(data)["child-pid"])
    except (ValueError, KeyError, TypeError):
        return None


async def _send_data(
    writer: asyncio.StreamWriter, data: AsyncIterator[bytes], answer: asyncio.Future[Any]
) -> None:
    """``data`` as DATA frames, then END; stops as soon as the engine has answered."""
    async for chunk in data:
        if answer.done():
            return
        if chunk:
            writer.write(protocol.frame(protocol.DATA, chunk))
            await writer.drain()
    if not answer.done():
        writer.write(protocol.frame(protocol.END))
        await writer.drain()


async def _read_frame(reader: asyncio.StreamReader, timeout: float | None) -> tuple[bytes, bytes]:
    """The worker's next frame, within ``timeout`` seconds of silence (None: no limit); the
    caller then closes the connection (the worker cancels what it ran)."""
    return await _answered_within(_next_frame(reader), timeout)


async def _next_frame(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    kind, length = protocol.parse_head(await reader.readexactly(protocol.HEAD_SIZE))
    return kind, await reader.readexactly(length)


async def _answered_within(answer: Awaitable[_T], timeout: float | None) -> _T:
    """``answer``, or ``ClickHouseError`` (TIMEOUT_EXCEEDED) once the engine was silent for
    ``timeout`` seconds (None: no limit)."""
    try:
        async with asyncio.timeout(timeout):
            return await answer
    except TimeoutError:
        raise silent_engine(timeout or 0.0) from None
