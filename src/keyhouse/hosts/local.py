"""The channel between the server processes of one machine that share a data directory
(``keyhouse serve --workers N``, or replicas on one machine): each listens on a Unix socket
in a 0700 directory of its user's (``keyhouse.services.leases.channels_dir``), and the others
reach, through it, the engines of the services it holds (the ``pipe`` of
``keyhouse.hosts.channel``, without TLS or secret: the directory is the lock) and hand it the
engine work committed in them (``work``: an ``EngineWork``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import uuid
from pathlib import Path
from typing import Any, Protocol

from keyhouse.engine import protocol
from keyhouse.hosts import channel
from keyhouse.services.states import EngineWork, Step

log = logging.getLogger("keyhouse.services")


class Holder(Protocol):
    """The process's runtime, as the channel needs it."""

    def holds(self, service_id: uuid.UUID) -> bool:
        """Whether this process runs the service (its lease)."""
        ...

    def serving(self, service_id: uuid.UUID) -> Path | None:
        """The socket of the service's worker, when it may take queries now."""
        ...

    def used(self, service_id: uuid.UUID) -> None: ...

    async def work(self, work: EngineWork) -> None:
        """Engine work committed in another process for a service this one holds."""
        ...


class LocalChannel:
    def __init__(self, path: Path, holder: Holder) -> None:
        self.path = path
        self.holder = holder
        self._server: asyncio.Server | None = None

    def others(self) -> list[Path]:
        """The sockets of the other processes of this directory."""
        return [path for path in self.path.parent.glob("*.sock") if path != self.path]

    async def open(self) -> None:
        """Listen (the directory made 0700, and used only when it is ours and closed to
        others); the sockets of processes killed before they closed are removed."""
        directory = self.path.parent
        try:
            await asyncio.to_thread(directory.mkdir, mode=0o700, exist_ok=True)
            made = os.lstat(directory)
            if not stat.S_ISDIR(made.st_mode) or made.st_uid != os.getuid():
                raise OSError(f"{directory} is not a directory of this user's")
            if stat.S_IMODE(made.st_mode) & 0o077:
                raise OSError(f"{directory} is open to other users")
            for left in self.others():
                pid = left.name.partition("-")[0]
                if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                    left.unlink(missing_ok=True)
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self._server = await asyncio.start_unix_server(self._serve, str(self.path))
        except OSError as error:
            log.warning("no channel for the other server processes: %s", error)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(OSError):
                self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Another process: a query on a service this one holds (piped to its worker), or
        engine work committed there for one."""
        holder = self.holder
        try:
            hello = await channel.read_hello(reader)
            if hello is None:
                return
            service_id = uuid.UUID(str(hello.get("service")))
            if hello.get("op") == "work":
                settings = hello.get("settings")
                await holder.work(
                    EngineWork(
                        service_id,
                        Step(str(hello.get("step"))),
                        dict(settings) if isinstance(settings, dict) else None,
                    )
                )
                writer.write(protocol.json_frame(protocol.HEADER, {}))
                await writer.drain()
            elif hello.get("op") == "pipe":
                if not holder.holds(service_id):
                    writer.write(channel.refusal(channel.NOT_HERE, "not held here"))
                    return
                holder.used(service_id)
                await channel.pipe(
                    holder.serving(service_id), reader, writer, lambda: holder.used(service_id)
                )
            else:
                writer.write(protocol.json_frame(protocol.HEADER, {}))  # (a poke)
        except (TimeoutError, asyncio.IncompleteReadError, ValueError, OSError):
            return
        finally:
            writer.close()


async def hand_over(path: str | Path, work: EngineWork) -> None:
    """``work`` to the process of this machine listening at ``path`` (best effort: a process
    that is gone has nothing to do, and its services are taken over)."""
    more: dict[str, Any] = {"step": work.step}
    if work.settings is not None:
        more["settings"] = work.settings
    with contextlib.suppress(
        OSError, TimeoutError, asyncio.IncompleteReadError, channel.ChannelError
    ):
        await channel.ask(channel.Route.local(path), "work", work.service_id, **more)
