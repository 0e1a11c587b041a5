"""The listening side of the services' ClickHouse HTTP interfaces: one HTTPS port per service
that is running or idle, served by uvicorn on the app's own event loop.

A service keeps its port (stored on its row) across restarts of the engine and of Keyhouse, so
clients keep their address; the first time, it takes a free port from ``KEYHOUSE_CLICKHOUSE_PORTS``
or, without that setting, any free port.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import uvicorn
from sqlalchemy import select

from keyhouse.clickhouse_http.guard import Guard, GuardedSocket
from keyhouse.clickhouse_http.interface import ClickHouseInterface, Gate
from keyhouse.clickhouse_http.tls import server_context
from keyhouse.models import Service
from keyhouse.transactions import run_in_transaction

if TYPE_CHECKING:
    from keyhouse.config import Settings
    from keyhouse.services.engines import InterfaceRuntime
    from keyhouse.state import AppState

log = logging.getLogger("keyhouse.clickhouse_http")


class PortBook(Protocol):
    """Where each service's port is kept, so that it keeps it across restarts."""

    async def ports(self, service_id: uuid.UUID) -> tuple[int | None, set[int]]:
        """The service's kept port (None: none yet) and the ports other services keep."""
        ...

    async def keep(self, service_id: uuid.UUID, port: int) -> None: ...


class DatabasePorts:
    """The control plane's book: each service's row (``http_port``)."""

    def __init__(self, state: AppState) -> None:
        self.state = state

    async def ports(self, service_id: uuid.UUID) -> tuple[int | None, set[int]]:
        return await run_in_transaction(self.state, lambda s: _ports(s, service_id))

    async def keep(self, service_id: uuid.UUID, port: int) -> None:
        await run_in_transaction(self.state, lambda s: _keep_port(s, service_id, port))


class Listeners:
    def __init__(
        self,
        settings: Callable[[], Settings],
        engines: InterfaceRuntime,
        gate: Gate,
        book: PortBook,
        *,
        bind: str | None = None,
    ) -> None:
        self._settings = settings  # read as each port opens (the operator's current settings)
        self.engines = engines
        self.gate = gate
        self.book = book
        self._bind_host = bind  # the address the ports listen on (None: KEYHOUSE_CLICKHOUSE_HOST)
        self._servers: dict[uuid.UUID, uvicorn.Server] = {}
        self._lock = asyncio.Lock()
        self._tls: ssl.SSLContext | None = None

    async def up(self, service_id: uuid.UUID) -> None:
        """Serve the service's interface (a ``keyhouse.runtime.ServiceWatcher``)."""
        async with self._lock:
            if service_id in self._servers:
                return
            if self._tls is None:
                self._tls = await asyncio.to_thread(server_context, self.settings)
            stored, taken = await self.book.ports(service_id)
            sock = self._bind(stored, taken)
            try:
                server = await self._serve(service_id, sock, stored)
            except BaseException:
                # A start that fails or is cancelled (the app stopping while it reconciles its
                # services) leaves no listening socket behind.
                sock.close()
                raise
            self._servers[service_id] = server

    async def _serve(
        self, service_id: uuid.UUID, sock: GuardedSocket, stored: int | None
    ) -> uvicorn.Server:
        port = int(sock.getsockname()[1])
        if port != stored:
            await self.book.keep(service_id, port)
        settings = self.settings
        guard = Guard(
            per_address=settings.clickhouse_max_connections_per_address,
            head_timeout=settings.clickhouse_request_head_timeout,
        )
        sock.guard = guard
        config = uvicorn.Config(
            ClickHouseInterface(settings, self.engines, service_id, self.gate, guard),
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            date_header=False,
            timeout_graceful_shutdown=5,
            # Connections (and requests) at once on this port: past it, 503 at once instead of
            # one more file descriptor and task each in the process serving every organization.
            # (uvicorn refuses once the count, the new connection included, reaches its limit)
            limit_concurrency=settings.clickhouse_max_connections + 1,
            timeout_keep_alive=5,
        )
        config.load()
        config.ssl = self._tls
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[sock])
        log.info("service %s: ClickHouse HTTP interface on port %s", service_id, port)
        return server

    def _bind(self, stored: int | None, taken: set[int]) -> GuardedSocket:
        host = self.bind
        candidates: list[int] = [stored] if stored else []
        ports = self.settings.clickhouse_ports
        if ports:
            low, high = (int(part) for part in ports.split("-"))
            candidates += [p for p in range(low, high + 1) if p not in taken and p != stored]
        else:
            candidates.append(0)
        for port in candidates:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = GuardedSocket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                sock.close()
                continue
            sock.listen(128)
            sock.setblocking(False)
            return sock
        raise OSError(f"no free port for a ClickHouse HTTP interface in {ports or 'any'}")

    async def down(self, service_id: uuid.UUID) -> None:
        async with self._lock:
            server = self._servers.pop(service_id, None)
        if server is not None:
            await server.shutdown()

    @property
    def settings(self) -> Settings:
        return self._settings()

    @property
    def bind(self) -> str:
        return self._bind_host or self.settings.clickhouse_host

    async def close(self) -> None:
        for service_id in list(self._servers):
            await self.down(service_id)

    def port(self, service_id: uuid.UUID) -> int | None:
        """The port the service's interface listens on (None: it does not listen)."""
        server = self._servers.get(service_id)
        if server is None or not server.servers:
            return None
        return int(server.servers[0].sockets[0].getsockname()[1])


def _ports(session: Any, service_id: uuid.UUID) -> tuple[int | None, set[int]]:
    stored = session.scalar(select(Service.http_port).where(Service.id == service_id))
    others = session.scalars(
        select(Service.http_port).where(Service.http_port.is_not(None), Service.id != service_id)
    )
    return stored, set(others)


def _keep_port(session: Any, service_id: uuid.UUID, port: int) -> None:
    service = session.get(Service, service_id)
    if service is not None:
        service.http_port = port
        session.flush()
