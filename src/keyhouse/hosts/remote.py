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
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from keyhouse.db import utcnow
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


@dataclass(frozen=True)
class Placed:
    """A service on an engine host: the host's route and the service's ClickHouse settings."""

    route: Route
    settings: dict[str, str]
    frozen: bool = False  # moving between hosts: read-only until it is there


class RemoteHosts:
    def __init__(self, state: AppState, holder: str = "", home: str = "") -> None:
        self.state = state
        # This process (keyhouse.services.leases): a service another live process of this
        # machine holds, in the same data directory, is reached through that process.
        self.holder, self.home = holder, home
        self._placed: dict[uuid.UUID, tuple[Placed | None, float]] = {}

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
                if (
                    other == holder
                    or other_home != home
                    or expires <= utcnow()
                    or not leases.alive_here(other)
                ):
                    return None  # ours, or ours to take
                path = str(leases.channel_path(data_dir, other))
                return Placed(Route(None, "", "", "", unix=path), dict(settings or {}))
            row = session.execute(
                select(
                    Service.host_id,
                    Service.clickhouse_settings,
                    EngineHost.channel,
                    EngineHost.ca_pem,
                    Service.moving_to,
                )
                .join(EngineHost, EngineHost.id == Service.host_id)
                .where(Service.id == service_id)
            ).first()
            if row is None:
                return None
            host_id, settings, where, ca_pem, moving_to = row
            route = Route(host_id, where, ca_pem, host_secret(pepper, host_id))
            return Placed(route, dict(settings or {}), moving_to is not None)

        found = await run_in_transaction(self.state, read)
        self._placed[service_id] = (found, time.monotonic() + ROUTE_SECONDS)
        return found

    def forget(self, service_id: uuid.UUID) -> None:
        self._placed.pop(service_id, None)

    async def _connect(
        self, service_id: uuid.UUID, *, wait: float = WAIT_FOR_ENGINE
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to the service's worker on its host, waiting up to ``wait`` seconds for
        an engine coming up (or a service that moved); ``EngineUnavailable`` after that."""
        deadline = time.monotonic() + wait
        poked = False
        while True:
            placed = await self.placed(service_id)
            if placed is None:
                raise EngineUnavailable("the service runs on no engine host")
            try:
                return await channel.open_channel(placed.route, "pipe", service_id)
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
        reader, writer = await self._connect(service_id, wait=wait)
        return answer_over(reader, writer, request, answer_timeout)

    async def insert(
        self,
        service_id: uuid.UUID,
        request: dict[str, Any],
        data: AsyncIterator[bytes],
        answer_timeout: float | None,
    ) -> dict[str, Any]:
        reader, writer = await self._connect(service_id)
        return await insert_over(reader, writer, request, data, answer_timeout)

    async def poke(self, service_id: uuid.UUID) -> bool:
        """Ask the service's host to sync now; False when it has no host."""
        self.forget(service_id)
        placed = await self.placed(service_id)
        if placed is None:
            return False
        await channel.poke(placed.route)
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
