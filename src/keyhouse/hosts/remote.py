"""The control plane's side of services on engine hosts: which host runs a service (read from
the database, kept a few seconds), and its engine's connections through the host's channel.

Any API process reaches any host: a query's connection goes through the channel to the agent,
which pipes it to the service's worker (``keyhouse.hosts.channel``), so the worker protocol
(``keyhouse.engine.supervisor.answer_over``/``insert_over``) runs end to end unchanged. A
service whose engine is coming up is waited for; one that moved is looked up again.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from keyhouse.db import utcnow
from keyhouse.engine import protocol
from keyhouse.engine.protocol import Answer
from keyhouse.engine.supervisor import EngineUnavailable, answer_over, insert_over
from keyhouse.hosts import channel
from keyhouse.hosts.channel import ChannelError, Route
from keyhouse.hosts.service import host_secret
from keyhouse.models import EngineHost, EngineLease, Service
from keyhouse.services import leases
from keyhouse.transactions import run_in_transaction

if TYPE_CHECKING:
    from keyhouse.state import AppState

log = logging.getLogger("keyhouse.hosts")

ROUTE_SECONDS = 5.0  # how long a service's host (and settings) is kept before it is read again
WAIT_FOR_ENGINE = 60.0  # a query waits this long for an engine coming up on its host
RETRY_EVERY = 0.2
POOLED = 8  # connections kept per service
POOLED_SECONDS = 30.0  # a kept connection older than this is closed, not used
PING_SECONDS = 2.0


@dataclass(frozen=True)
class Placed:
    """A service on an engine host: the host's route and the service's ClickHouse settings."""

    route: Route
    settings: dict[str, str]
    frozen: bool = False  # moving between hosts: read-only until it is there
    restoring: bool = False  # created from a backup, not restored yet: no query


class RemoteHosts:
    def __init__(self, state: AppState, holder: str = "", home: str = "") -> None:
        self.state = state
        # This process (keyhouse.services.leases): a service another live process of this
        # machine holds, in the same data directory, is reached through that process.
        self.holder, self.home = holder, home
        self._placed: dict[uuid.UUID, tuple[Placed | None, float]] = {}
        # Connections to hosts' workers kept after a whole answer, for the next query (a TLS
        # handshake costs more than the query): per service, with when each was kept.
        self._idle: dict[
            tuple[uuid.UUID, str], list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]]
        ] = {}

    async def placed(self, service_id: uuid.UUID) -> Placed | None:
        """Where the service runs when it is not in this process: its engine host, or another
        server process of this machine that holds it; None when this process runs it, may
        take it, or it does not exist."""
        cached = self._placed.get(service_id)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        pepper = self.state.pepper

        holder, home, data_dir = self.holder, self.home, self.state.settings.data_dir

        def read(session: Any) -> Placed | None:
            local = session.execute(
                select(
                    Service.clickhouse_settings,
                    EngineLease.holder,
                    EngineLease.home,
                    EngineLease.expires_at,
                )  # fmt: skip
                .join(EngineLease, EngineLease.service_id == Service.id)
                .where(Service.id == service_id, Service.host_id.is_(None))
            ).first()
            if local is not None:
                settings, other, other_home, expires = local
                if not leases.held_nearby(
                    other, other_home, expires, holder=holder, home=home, now=utcnow()
                ):
                    return None  # ours, or ours to take
                path = leases.channel_path(data_dir, other)
                return Placed(Route.local(path), dict(settings or {}))
            row = session.execute(
                select(
                    Service.host_id,
                    Service.clickhouse_settings,
                    EngineHost.channel,
                    EngineHost.ca_pem,
                    Service.moving_to,
                    Service.restore_from,
                )
                .join(EngineHost, EngineHost.id == Service.host_id)
                .where(Service.id == service_id)
            ).first()
            if row is None:
                return None
            host_id, settings, where, ca_pem, moving_to, restore_from = row
            route = Route(host_id, where, ca_pem, host_secret(pepper, host_id))
            return Placed(
                route, dict(settings or {}), moving_to is not None, restore_from is not None
            )

        found = await run_in_transaction(self.state, read)
        self._placed[service_id] = (found, time.monotonic() + ROUTE_SECONDS)
        return found

    def forget(self, service_id: uuid.UUID) -> None:
        self._placed.pop(service_id, None)
        for key in [key for key in self._idle if key[0] == service_id]:
            for _reader, writer, _at in self._idle.pop(key):
                writer.close()

    def _keeper(
        self,
        service_id: uuid.UUID,
        route: Route,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> Callable[[], None] | None:
        """What keeps a connection to a host's worker for the next query once its answer is
        whole (None: not kept; a connection to another process of this machine is cheap)."""
        if route.unix is not None:
            return None

        def keep() -> None:
            idle = self._idle.setdefault((service_id, route.channel), [])
            if len(idle) < POOLED:
                idle.append((reader, writer, time.monotonic()))
            else:
                writer.close()

        return keep

    async def _pooled(
        self, service_id: uuid.UUID, route: Route
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """A kept connection to the service's worker on ``route``'s host that still reaches
        it (it answers a ping), or None."""
        idle = self._idle.get((service_id, route.channel), [])
        while idle:
            reader, writer, since = idle.pop()
            if time.monotonic() - since < POOLED_SECONDS and await _answers(reader, writer):
                return reader, writer
            writer.close()
        return None

    async def _connect(
        self, service_id: uuid.UUID, *, wait: float = WAIT_FOR_ENGINE
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, Route]:
        """A connection to the service's worker on its host, waiting up to ``wait`` seconds for
        an engine coming up (or a service that moved); ``EngineUnavailable`` after that."""
        deadline = time.monotonic() + wait
        poked = False
        while True:
            placed = await self.placed(service_id)
            if placed is None:
                raise EngineUnavailable("the service runs on no engine host")
            pooled = await self._pooled(service_id, placed.route)
            if pooled is not None:
                return *pooled, placed.route
            try:
                reader, writer = await channel.open_channel(placed.route, "pipe", service_id)
                return reader, writer, placed.route
            except ChannelError as refused:
                if refused.code == channel.NOT_HERE:
                    self.forget(service_id)
                why = str(refused)
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as error:
                why = f"its engine host cannot be reached: {error or type(error).__name__}"
            if time.monotonic() >= deadline:
                raise EngineUnavailable(why)
            if not poked:
                await channel.poke(placed.route)
                poked = True
            await asyncio.sleep(RETRY_EVERY)
            self.forget(service_id)

    async def query(
        self,
        service_id: uuid.UUID,
        request: dict[str, Any],
        answer_timeout: float | None,
        *,
        wait: float = WAIT_FOR_ENGINE,
    ) -> Answer:
        reader, writer, route = await self._connect(service_id, wait=wait)
        keep = self._keeper(service_id, route, reader, writer)
        return answer_over(reader, writer, request, answer_timeout, release=keep)

    async def insert(
        self,
        service_id: uuid.UUID,
        request: dict[str, Any],
        data: AsyncIterator[bytes],
        answer_timeout: float | None,
    ) -> dict[str, Any]:
        reader, writer, route = await self._connect(service_id)
        keep = self._keeper(service_id, route, reader, writer)
        return await insert_over(reader, writer, request, data, answer_timeout, release=keep)


async def _answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Whether a kept connection still reaches its worker: it answers a ping (``HEADER`` then
    ``END``)."""
    if reader.at_eof() or writer.is_closing():
        return False
    try:
        async with asyncio.timeout(PING_SECONDS):
            writer.write(protocol.json_frame(protocol.REQUEST, {"op": "ping"}))
            await writer.drain()
            for expected in (protocol.HEADER, protocol.END):
                kind, length = protocol.parse_head(await reader.readexactly(protocol.HEAD_SIZE))
                await reader.readexactly(length)
                if kind != expected:
                    return False
    except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
        return False
    return True


class HostBackupEngines:
    """The engines of services on engine hosts, and their backups on the hosts' disks, for
    the schedule's backup runner (``keyhouse.backups.runner.BackupEngines``)."""

    def __init__(self, hosts: RemoteHosts) -> None:
        self.hosts = hosts

    async def _route(self, service_id: uuid.UUID) -> Route:
        placed = await self.hosts.placed(service_id)
        if placed is None or placed.route.unix is not None:
            raise EngineUnavailable("the service runs on no engine host")
        return placed.route

    async def running(self, service_id: uuid.UUID) -> bool:
        try:
            _reader, writer = await channel.open_channel(
                await self._route(service_id), "pipe", service_id
            )
        except (EngineUnavailable, ChannelError, OSError, TimeoutError):
            return False
        writer.close()
        return True

    async def sql(self, service_id: uuid.UUID, sql: str) -> bytes:
        request = {"sql": sql, "format": "JSONEachRow", "query_id": str(uuid.uuid4())}
        answer = await self.hosts.query(service_id, request, None, wait=0)
        return await answer.whole()

    async def remove(self, service_id: uuid.UUID, backup_id: uuid.UUID) -> None:
        try:
            await channel.ask(
                await self._route(service_id),
                "forget",
                service_id,
                what="backup",
                name=str(backup_id),
            )
        except (EngineUnavailable, ChannelError, OSError, TimeoutError) as error:
            log.warning(
                "service %s: backup %s stays on its host (%s)", service_id, backup_id, error
            )

    async def size(self, service_id: uuid.UUID, backup_id: uuid.UUID) -> int:
        answer = await channel.ask(
            await self._route(service_id), "size", service_id, what="backup", name=str(backup_id)
        )
        return int(answer.get("bytes", 0))
