"""What a stranger may hold on a service's ClickHouse port before they have said anything.

A port answers whoever connects, before any password: each connection costs a file
descriptor and memory in the process that serves every organization, and the port's
connection limit is shared by all its clients. So, counted from the TCP connection itself
(TLS handshakes in flight included, which no HTTP server sees):

- **connections per client address**: past ``per_address``, a new connection from that address
  is closed at once (the others' share of the port's limit stays theirs);
- **a deadline for each request's head**: a connection must finish its TLS handshake and a
  request's head within ``head_timeout`` seconds of opening, and each later request's within as
  long of the previous answer (a client that trickles bytes or stalls mid-handshake is closed).
  A request's body and its answer have no such deadline (an insert may stream for long).

``GuardedSocket`` is the listening socket: asyncio accepts through its ``accept``, which counts
and times each connection; the connection's ``close`` (by its transport) uncounts it. The
interface tells the guard when a request begins and ends (``begin``/``end``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from dataclasses import dataclass, field


@dataclass
class _Connection:
    sock: socket.socket
    host: str
    busy: int = 0  # requests under way on it (0 or 1: HTTP/1.1 takes one at a time)
    since: float = field(default_factory=time.monotonic)  # opened, or its last answer ended
    timer: asyncio.TimerHandle | None = None


class Guard:
    def __init__(self, *, per_address: int, head_timeout: float) -> None:
        self.per_address = per_address
        self.head_timeout = head_timeout
        self._connections: dict[tuple[str, int], _Connection] = {}
        self._per_host: dict[str, int] = {}
        self.refused = 0  # connections closed at once: their address held its share

    def open_count(self, host: str) -> int:
        return self._per_host.get(host, 0)

    def accepted(self, sock: _CountedSocket, address: tuple[str, int]) -> bool:
        """Count a new connection; False (and nothing counted) past its address's share."""
        host = address[0]
        if self._per_host.get(host, 0) >= self.per_address:
            self.refused += 1
            return False
        self._per_host[host] = self._per_host.get(host, 0) + 1
        key = (host, address[1])
        connection = self._connections[key] = _Connection(sock, host)
        self._arm(key, connection, self.head_timeout)
        return True

    def closed(self, address: tuple[str, int]) -> None:
        key = (address[0], address[1])
        connection = self._connections.pop(key, None)
        if connection is None:
            return
        if connection.timer is not None:
            connection.timer.cancel()
        left = self._per_host[connection.host] - 1
        if left:
            self._per_host[connection.host] = left
        else:
            del self._per_host[connection.host]

    def begin(self, client: tuple[str, int] | None) -> None:
        """A request's head has arrived on the connection from ``client``."""
        connection = self._connections.get(_key(client)) if client else None
        if connection is not None:
            connection.busy += 1

    def end(self, client: tuple[str, int] | None) -> None:
        """The request has been answered: the next one's head is due within the deadline."""
        connection = self._connections.get(_key(client)) if client else None
        if connection is not None:
            connection.busy = max(0, connection.busy - 1)
            connection.since = time.monotonic()

    def _arm(self, key: tuple[str, int], connection: _Connection, delay: float) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # accepted outside a loop (never by asyncio): no deadline
            return
        connection.timer = loop.call_later(delay, self._expire, key)

    def _expire(self, key: tuple[str, int]) -> None:
        connection = self._connections.get(key)
        if connection is None:
            return
        if connection.busy:  # a request under way: its answer ends it, then the next is due
            self._arm(key, connection, self.head_timeout)
            return
        left = connection.since + self.head_timeout - time.monotonic()
        if left > 0:  # answered since: the next request's head is due later
            self._arm(key, connection, left)
            return
        # Shut down, not closed: its transport sees the end, closes the socket, and the
        # connection is uncounted there.
        with contextlib.suppress(OSError):
            connection.sock.shutdown(socket.SHUT_RDWR)


def _key(client: tuple[str, int]) -> tuple[str, int]:
    return (client[0], client[1])


class _CountedSocket(socket.socket):
    """A connection the guard counts until it is closed."""

    guard: Guard | None = None
    address: tuple[str, int] = ("", 0)

    def close(self) -> None:
        guard, self.guard = self.guard, None
        try:
            super().close()
        finally:
            if guard is not None:
                guard.closed(self.address)


class GuardedSocket(socket.socket):
    """A listening socket whose accepted connections ``guard`` counts and times."""

    guard: Guard

    def accept(self) -> tuple[socket.socket, tuple[str, int]]:
        while True:
            fd, address = self._accept()  # type: ignore[attr-defined]
            conn = _CountedSocket(self.family, self.type, self.proto, fileno=fd)
            # As asyncio does for the TCP sockets it makes (it skips this one, whose protocol
            # number reads 0): an answer's head and body leave at once, not 40 ms apart
            # (Nagle's algorithm waiting on the client's delayed ACK).
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.guard.accepted(conn, address):
                conn.guard, conn.address = self.guard, (address[0], address[1])
                return conn, address
            conn.close()  # past its address's share: the next waiting connection, if any
