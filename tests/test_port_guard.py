"""The listening socket of a service's ClickHouse port (``keyhouse.clickhouse_http.guard``):
what it accepts, counts and sets on each connection, without a server around it."""

from __future__ import annotations

import socket

from keyhouse.clickhouse_http.guard import Guard, GuardedSocket


def test_each_connection_is_counted_until_closed_and_sent_without_delay() -> None:
    guard = Guard(per_address=2, head_timeout=15)
    with GuardedSocket(socket.AF_INET, socket.SOCK_STREAM) as listening:
        listening.guard = guard
        listening.bind(("127.0.0.1", 0))
        listening.listen(8)
        clients = [socket.create_connection(listening.getsockname()) for _ in range(3)]
        try:
            first, _ = listening.accept()
            second, _ = listening.accept()
            # Nagle's algorithm off, as asyncio sets it on TCP sockets it makes (it skipped
            # these: an answer's head and body left 40 ms apart, 48 ms a SELECT 1).
            assert first.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert guard.open_count("127.0.0.1") == 2
            listening.setblocking(False)
            try:  # the third is past the address's share: closed, and none is waiting
                listening.accept()
                raise AssertionError("a third connection from the address was accepted")
            except BlockingIOError:
                pass
            assert guard.refused == 1
            assert clients[2].recv(1) == b""  # closed by the server
            first.close()
            assert guard.open_count("127.0.0.1") == 1
            second.close()
            assert guard.open_count("127.0.0.1") == 0
        finally:
            for client in clients:
                client.close()
