"""A service's engine worker: one process holding one chDB engine on one data directory.

Started by the supervisor as ``python -m keyhouse.engine.worker --path DIR --socket SOCK``
(a fresh interpreter: chDB is never loaded into a process that forks, nor into the API
process). It prints one line ``ready <version>`` on stdout once the engine answers, then serves
the protocol of ``keyhouse.engine.protocol`` on the Unix socket until it is terminated.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import signal
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from keyhouse.engine import protocol

_CODE = re.compile(r"Code:\s*(\d+)")
_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _error(exc: BaseException) -> dict[str, Any]:
    message = str(exc).strip() or type(exc).__name__
    match = _CODE.search(message)
    return {"code": int(match.group(1)) if match else 0, "message": message}


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
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

    def __init__(self, socket_path: str, data_path: str, engine: Any, version: str) -> None:
        self.data_path = data_path
        self.engine = engine
        self.version = version
        super().__init__(socket_path, _Handler)

    def serve(self, sock: socket.socket, request: dict[str, Any]) -> None:
        if request.get("op") == "ping":
            sock.sendall(
                protocol.json_frame(protocol.HEADER, {"ok": True, "version": self.version})
            )
            sock.sendall(protocol.frame(protocol.END))
            return
        if request.get("op") != "query":
            sock.sendall(protocol.json_frame(protocol.ERROR, {"code": 0, "message": "unknown op"}))
            return
        self._query(sock, request)

    def _query(self, sock: socket.socket, request: dict[str, Any]) -> None:
        import chdb

        handle = chdb.connect(self.data_path)  # type: ignore[no-untyped-call]
        stream = None
        started = False
        try:
            for name, value in (request.get("settings") or {}).items():
                if not _SETTING_NAME.match(name):
                    raise ValueError(f"Code: 115. Unknown setting {name!r}")
                handle.query(f"SET {name} = {_literal(value)}")
            if request.get("database"):
                handle.query(f"USE {_identifier(str(request['database']))}")
            # Last: once read-only, the handle's settings (the limits above) are fixed too.
            if request.get("readonly"):
                handle.query("SET readonly = 1")
            sql, fmt = request["sql"], request.get("format") or "TabSeparated"
            params = request.get("params") or {}
            try:
                stream = handle.send_query(sql, fmt, params=params)
                first = next(iter(stream), None)
                chunks = itertools.chain([] if first is None else [first], stream)
                blocks: Iterator[bytes] = (chunk.bytes() for chunk in chunks)
            except Exception as exc:
                if "Streaming query is not supported" not in str(exc):
                    raise
                # Statements (CREATE, INSERT, ...) do not stream: run them whole.
                stream = None
                blocks = iter([handle.query(sql, fmt, params=params).bytes()])
            for data in blocks:
                if not started:
                    sock.sendall(protocol.json_frame(protocol.HEADER, {"ok": True}))
                    started = True
                if data:
                    sock.sendall(protocol.frame(protocol.DATA, data))
            if not started:
                sock.sendall(protocol.json_frame(protocol.HEADER, {"ok": True}))
            sock.sendall(protocol.frame(protocol.END))
        except (BrokenPipeError, ConnectionResetError):
            if stream is not None:
                stream.cancel()
            raise
        except Exception as exc:  # the engine's own errors travel to the caller as they are
            sock.sendall(protocol.json_frame(protocol.ERROR, _error(exc)))
        finally:
            if stream is not None:
                stream.close()
            handle.close()


def _literal(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{text}'"


def _identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    chunks = []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="keyhouse-engine-worker")
    parser.add_argument("--path", required=True, help="the service's data directory")
    parser.add_argument("--socket", required=True, help="the Unix socket to serve on")
    args = parser.parse_args(argv)

    import chdb

    Path(args.path).mkdir(parents=True, exist_ok=True)
    engine = chdb.connect(args.path)  # type: ignore[no-untyped-call]  # holds the engine (and its directory lock) open
    version = engine.query("SELECT version()", "TabSeparated").bytes().decode().strip()
    if os.path.exists(args.socket):
        os.unlink(args.socket)
    server = _Server(args.socket, args.path, engine, version)
    os.chmod(args.socket, 0o600)

    def stop(_signum: int, _frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    parent = os.getppid()

    def orphaned() -> None:
        # The supervisor died without stopping us (kill -9): free the data directory's lock
        # so that the next server can start this service again.
        while os.getppid() == parent:
            time.sleep(1)
        server.shutdown()

    threading.Thread(target=orphaned, daemon=True).start()
    sys.stdout.write(f"ready {version}\n")
    sys.stdout.flush()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        engine.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
