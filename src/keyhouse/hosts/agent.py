"""``keyhouse agent``: an engine host. It runs the engines of the services the control plane
gives it, with the same sandboxed supervisor as ``keyhouse serve``, and holds no database
credentials: everything it knows comes from its syncs.

- **Joining**: the first start presents the join token (``--token-file``) with the host's
  description; the control plane answers the host's id and secret, kept in
  ``DATA_DIR/host.json`` (mode 0600). Later starts use them.
- **Syncing** (``SYNC_SECONDS`` apart, or at once when the control plane asks over the
  channel): the agent reports what it observed of each service and which services' data it
  holds; it gets each service's desired state, starts and stops engines to match, and removes
  the data of services no longer given to it.
- **The channel** (``--listen``, TLS with the certificate under ``DATA_DIR/tls``): the control
  plane's queries reach a service's engine through it (``keyhouse.hosts.channel``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import shutil
import signal
import ssl
import tarfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from keyhouse import __version__
from keyhouse.api.errors import ServiceUnavailable, TooManyRequests
from keyhouse.backups.runner import tree_bytes
from keyhouse.clickhouse_http.listeners import Listeners
from keyhouse.clickhouse_http.tls import server_context
from keyhouse.config import Settings
from keyhouse.engine import protocol
from keyhouse.engine.limits import QueryLimits
from keyhouse.engine.protocol import Answer, ClickHouseError
from keyhouse.engine.sandbox import Sandbox
from keyhouse.engine.supervisor import EngineSupervisor, EngineUnavailable
from keyhouse.hosts import channel, transfer
from keyhouse.hosts.channel import refusal
from keyhouse.services.engines import (
    insert_request,
    not_running,
    query_request,
    restoring,
)
from keyhouse.services.service import RunGrant
from keyhouse.services.states import Admission, Observed

log = logging.getLogger("keyhouse.agent")

SYNC_SECONDS = 1.0
IDENTITY_FILE = "host.json"
PORTS_FILE = "ports.json"
WAIT_FOR_ENGINE = 60.0  # a query on this host's port waits this long for its engine


@dataclass
class AgentConfig:
    server: str  # the control plane's base URL (http(s)://HOST:PORT)
    token_file: Path
    data_dir: Path
    listen: tuple[str, int]
    advertise: str
    labels: dict[str, str] = field(default_factory=dict)
    memory_gb: int = 16
    name: str = ""
    sync_seconds: float = SYNC_SECONDS
    ca_file: Path | None = None  # verifies the control plane's TLS (None: the system's CAs)


@dataclass
class _Given:
    run: bool
    settings: dict[str, str]
    frozen: bool = False  # moving between hosts: read-only until it is there
    listen: bool = False  # its port answers (idle: no engine; a query wakes it)
    restoring: bool = False  # created from a backup, not restored yet: no query
    generation: int = 0  # the version of what the control plane told of it


class Agent:
    def __init__(self, config: AgentConfig, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        limits = self.limits = QueryLimits.from_settings(settings)
        self.supervisor = EngineSupervisor(
            config.data_dir,
            on_failed=self._crashed,
            limits=limits.as_settings(),
            max_queries=settings.query_max_concurrent_per_service,
            memory_limit=config.memory_gb * 1024**3,
            heartbeat=settings.engine_heartbeat_seconds,
            sandbox=Sandbox(
                enabled=settings.engine_sandbox != "off",
                uid=settings.engine_uid,
                gid=settings.engine_gid,
            ),
        )
        self.host_id: uuid.UUID | None = None
        self.secret = ""
        self._given: dict[uuid.UUID, _Given] = {}
        self._starting: set[uuid.UUID] = set()
        self._versions: dict[uuid.UUID, str] = {}
        self._failed: dict[uuid.UUID, str] = {}
        self._used: dict[uuid.UUID, float] = {}  # each running service's last query
        self._sampled = time.monotonic()  # the last usage sample
        self._tasks: set[asyncio.Task[Any]] = set()
        self._wake = asyncio.Event()
        self._tls: ssl.SSLContext | None = None
        self._ca_pem = ""
        verify: ssl.SSLContext | bool = True
        if config.ca_file is not None:
            verify = ssl.create_default_context(cafile=str(config.ca_file))
        self._http = httpx.AsyncClient(base_url=config.server, timeout=10.0, verify=verify)
        self._stopping = asyncio.Event()
        # Each running service's ClickHouse HTTP interface, on this host's own address.
        self.listeners = Listeners(
            lambda: settings,
            AgentEngines(self),
            self.gate,
            FilePorts(config.data_dir / PORTS_FILE),
            bind=config.listen[0],
        )
        self._channel_server: asyncio.Server | None = None

    # --- joining and syncing ------------------------------------------------------------

    def _description(self) -> dict[str, Any]:
        config = self.config
        return {
            "name": config.name or config.advertise,
            "labels": config.labels,
            "memory_gb": config.memory_gb,
            "channel": f"{_bracketed(config.advertise)}:{self.channel_port}",
            "advertise": config.advertise,
            "ca_pem": self._ca_pem,
            "version": __version__,
        }

    async def _join(self) -> None:
        path = self.config.data_dir / IDENTITY_FILE
        if path.exists():
            identity = json.loads(path.read_text())
            self.host_id, self.secret = uuid.UUID(identity["host_id"]), identity["secret"]
            return
        token = self.config.token_file.read_text().strip()
        response = await self._http.post(
            "/internal/hosts/join",
            json=self._description(),
            headers={"Authorization": f"Bearer {token}"},
        )
        if response.status_code != 201:
            raise SystemExit(f"error: the control plane refused to join: {_said(response)}")
        body = response.json()["result"]
        self.host_id, self.secret = uuid.UUID(body["hostId"]), body["secret"]
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            json.dump({"host_id": str(self.host_id), "secret": self.secret}, handle)
        log.info("joined the control plane as host %s", self.host_id)

    async def _usage(self) -> dict[uuid.UUID, dict[str, Any]]:
        """Each given service's use since the last sample (``KEYHOUSE_USAGE_SAMPLE_SECONDS``
        apart; nothing in between): engine seconds, and its data's and backups' bytes."""
        now = time.monotonic()
        if now - self._sampled < self.settings.usage_sample_seconds:
            return {}
        elapsed, self._sampled = now - self._sampled, now
        usage = {}
        for service_id in list(self._given):
            data = await asyncio.to_thread(tree_bytes, self.supervisor.data_path(service_id))
            kept = await asyncio.to_thread(tree_bytes, self.supervisor.backup_path(service_id))
            running = self.supervisor.running(service_id)
            usage[service_id] = {
                "seconds": round(min(elapsed, 86400.0), 3) if running else 0.0,
                "data_bytes": data,
                "backup_bytes": kept,
            }
        return usage

    def _report(self, usage: dict[uuid.UUID, dict[str, Any]]) -> dict[str, Any]:
        services: dict[str, Any] = {}
        for service_id in self._given:
            seen: dict[str, Any] = {
                "state": self._observed(service_id).value,
                "generation": self._given[service_id].generation,
            }
            if service_id in self._versions:
                seen["version"] = self._versions[service_id]
            if service_id in self._failed:
                seen["failure"] = self._failed[service_id][:512]
            port = self.listeners.port(service_id)
            if port is not None:
                seen["port"] = port
            if service_id in self._used and self.supervisor.running(service_id):
                seen["idle_seconds"] = round(time.monotonic() - self._used[service_id], 1)
            if service_id in usage:
                seen["usage"] = usage[service_id]
            services[str(service_id)] = seen
        return {**self._description(), "services": services, "data": self._held_data()}

    def _observed(self, service_id: uuid.UUID) -> Observed:
        if service_id in self._failed:
            return Observed.FAILED
        if service_id in self._starting:
            return Observed.STARTING
        if self.supervisor.running(service_id):
            return Observed.RUNNING
        return Observed.STOPPED

    def _held_data(self) -> list[str]:
        root = self.config.data_dir / "services"
        try:
            return sorted(path.name for path in root.iterdir() if _is_id(path.name))
        except FileNotFoundError:
            return []

    async def sync(self) -> None:
        """One sync: report, then do what the answer asks."""
        response = await self._http.post(
            f"/internal/hosts/{self.host_id}/sync",
            json=self._report(await self._usage()),
            headers={"Authorization": f"Bearer {self.secret}"},
        )
        if response.status_code != 200:
            log.error("sync refused: %s", _said(response))
            return
        answer = response.json()["result"]
        given = {
            uuid.UUID(item["id"]): _Given(
                bool(item["run"]),
                dict(item.get("settings") or {}),
                bool(item.get("frozen")),
                bool(item.get("listen", item["run"])),
                bool(item.get("restoring")),
                int(item.get("generation", 0)),
            )
            for item in answer["services"]
        }
        for service_id in set(self._given) - set(given):  # moved away, or deleted
            self._spawn(self._stop(service_id))
        self._given = given
        for service_id, wanted in given.items():
            if wanted.run:
                if not (
                    self.supervisor.running(service_id)
                    or service_id in self._starting
                    or service_id in self._failed
                ):
                    self._starting.add(service_id)
                    self._spawn(self._start(service_id))
            else:
                self._failed.pop(service_id, None)  # (a later start tries again)
                listening = self.listeners.port(service_id) is not None
                if self.supervisor.running(service_id) or (listening and not wanted.listen):
                    self._spawn(self._stop(service_id, keep_listening=wanted.listen))
                elif wanted.listen and not listening:  # (idle, on a restarted agent)
                    self._spawn(self.listeners.up(service_id))
        for name in answer["remove"]:
            service_id = uuid.UUID(name)
            if service_id not in given:
                log.info("service %s is no longer here: removing its data", service_id)
                self._spawn(self.supervisor.remove_data(service_id))

    def used(self, service_id: uuid.UUID) -> None:
        self._used[service_id] = time.monotonic()

    async def _start(self, service_id: uuid.UUID) -> None:
        try:
            self._versions[service_id] = await self.supervisor.start(service_id)
            self.used(service_id)
            await self.listeners.up(service_id)
        except (EngineUnavailable, OSError) as error:
            log.error("service %s did not start: %s", service_id, error)
            self._failed[service_id] = str(error)
        finally:
            self._starting.discard(service_id)
        self._wake.set()  # report it at once

    async def _stop(self, service_id: uuid.UUID, *, keep_listening: bool = False) -> None:
        """Stop the service's engine (and its port, unless it goes idle)."""
        if not keep_listening:
            await self.listeners.down(service_id)
        await self.supervisor.stop(service_id)
        self._used.pop(service_id, None)
        self._wake.set()

    # --- the services' ClickHouse HTTP interfaces -----------------------------------------

    async def gate(
        self, service_id: uuid.UUID, user: str, password: str, address: str | None
    ) -> tuple[RunGrant, Admission]:
        """The control plane's gate for a client of one of this host's ports."""
        body = {"service": str(service_id), "user": user, "password": password}
        if address is not None:
            body["address"] = address
        try:
            response = await self._http.post(
                f"/internal/hosts/{self.host_id}/gate",
                json=body,
                headers={"Authorization": f"Bearer {self.secret}"},
            )
        except httpx.HTTPError as error:
            raise ServiceUnavailable(
                f"The control plane cannot be reached: {error}", headers={"Retry-After": "5"}
            ) from None
        if response.status_code == 429:
            wait = response.headers.get("Retry-After", "5")
            raise TooManyRequests("Too many failed attempts", headers={"Retry-After": wait})
        if response.status_code != 200:
            raise ServiceUnavailable(
                f"The control plane refused the check: {_said(response)}",
                headers={"Retry-After": "5"},
            )
        answer = response.json()["result"]
        if "error" in answer:
            raise ClickHouseError(int(answer["error"]["code"]), str(answer["error"]["message"]))
        granted = answer["grant"]
        grant = RunGrant(
            service_id,
            str(granted["state"]),
            bool(granted["readonly"]),
            int(granted["maxMemoryGb"]),
            roles=tuple(granted["roles"]),
        )
        return grant, Admission(answer["admission"])

    async def _crashed(self, service_id: uuid.UUID, why: str) -> None:
        """The supervisor gave up on the service's engine (it kept crashing)."""
        self._failed[service_id] = why
        await self.listeners.down(service_id)
        self._wake.set()

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- the channel ----------------------------------------------------------------------

    @property
    def channel_port(self) -> int:
        if self._channel_server is None:
            return self.config.listen[1]
        return int(self._channel_server.sockets[0].getsockname()[1])

    async def _serve_channel(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            hello = await channel.read_hello(reader)
            if hello is None or not self._trusted(hello):
                log.warning("channel: refused a connection without this host's secret")
                return
            op = hello.get("op")
            if op == "sync":
                self._wake.set()
                writer.write(protocol.json_frame(protocol.HEADER, {}))
                await writer.drain()
                return
            service_id = uuid.UUID(str(hello.get("service")))
            if op in ("export", "import", "forget", "size"):
                await self._transfer(op, service_id, hello, reader, writer)
                return
            await self._pipe(service_id, reader, writer)
        except (TimeoutError, asyncio.IncompleteReadError, ValueError, OSError):
            return
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()

    def _trusted(self, hello: Any) -> bool:
        if not isinstance(hello, dict) or hello.get("host") != str(self.host_id):
            return False
        given = str(hello.get("secret", "")).encode()
        return hmac.compare_digest(given, self.secret.encode())

    async def _pipe(
        self, service_id: uuid.UUID, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """The connection, byte for byte, to the service's worker."""
        if service_id not in self._given:
            writer.write(refusal(channel.NOT_HERE, "the service does not run on this host"))
            return
        await channel.pipe(
            self.supervisor.connection(service_id), reader, writer, lambda: self.used(service_id)
        )

    async def _transfer(
        self,
        op: str,
        service_id: uuid.UUID,
        hello: dict[str, Any],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        """A service's backup (``what: backup``, ``name``) or its data directory (``what:
        data``, only while its engine is stopped) out of this host, into it, or (a backup)
        removed."""
        if service_id not in self._given:
            writer.write(refusal(channel.NOT_HERE, "the service is not given to this host"))
            return
        if hello.get("what") == "data":
            if self.supervisor.running(service_id) or service_id in self._starting:
                writer.write(refusal(channel.BUSY, "the service's engine runs"))
                return
            directory = self.supervisor.data_path(service_id)
        else:
            name = str(hello.get("name", ""))
            if not _is_id(name):
                writer.write(refusal(channel.FAILED, "a backup's name is its id"))
                return
            directory = self.supervisor.backup_path(service_id) / name
        if op == "export" and not directory.is_dir():
            writer.write(refusal(channel.FAILED, f"no {hello.get('what')} to export"))
            return
        answer: dict[str, Any] = {}
        if op == "forget":  # a moved service's backup once restored, or one retention let go
            await asyncio.to_thread(shutil.rmtree, directory, True)
        elif op == "size":
            answer["bytes"] = await asyncio.to_thread(tree_bytes, directory)
        writer.write(protocol.json_frame(protocol.HEADER, answer))
        await writer.drain()
        if op in ("forget", "size"):
            return
        if op == "export":
            await transfer.send_tree(directory, writer)
            return
        try:
            await transfer.receive_tree(transfer.frames(reader), directory)
            await asyncio.to_thread(self.supervisor.sandbox.prepare, directory)
        except (ValueError, OSError, tarfile.TarError) as error:
            writer.write(refusal(channel.FAILED, f"the transfer failed: {error}"))
            return
        writer.write(protocol.frame(protocol.END))
        await writer.drain()

    # --- the agent's lifetime -------------------------------------------------------------

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        config = self.config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self._tls = await asyncio.to_thread(server_context, self.settings)
        self._ca_pem = (config.data_dir / "tls" / "ca.pem").read_text()
        host, port = config.listen
        self._channel_server = await asyncio.start_server(
            self._serve_channel, host, port, ssl=self._tls
        )
        try:
            await self._join()
            log.info(
                "agent for host %s: channel on %s:%s, syncing with %s",
                self.host_id,
                host,
                self.channel_port,
                config.server,
            )
            while not self._stopping.is_set():
                try:
                    await self.sync()
                except (httpx.HTTPError, ValueError, KeyError) as error:
                    log.warning("sync failed: %s", error)
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), config.sync_seconds)
        finally:
            self._channel_server.close()
            await self.listeners.close()
            for task in list(self._tasks):
                task.cancel()
            await self.supervisor.close()
            await self._http.aclose()


class AgentEngines:
    """The runtime of this host's own ports (``keyhouse.services.engines.InterfaceRuntime``):
    its queries go straight to the service's worker, under the same limits and settings as the
    control plane's."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    async def bring_up(self, service_id: uuid.UUID) -> bool:
        """Sync now (the wake was recorded), and wait for the engine."""
        agent = self.agent
        agent._wake.set()
        deadline = asyncio.get_running_loop().time() + WAIT_FOR_ENGINE
        while not agent.supervisor.running(service_id):
            if service_id in agent._failed or asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.1)
        return True

    def _configured(self, service_id: uuid.UUID) -> dict[str, str]:
        given = self.agent._given.get(service_id)
        return given.settings if given is not None else {}

    def _frozen(self, service_id: uuid.UUID) -> bool:
        given = self.agent._given.get(service_id)
        return given is not None and given.frozen

    def _check_restored(self, service_id: uuid.UUID) -> None:
        given = self.agent._given.get(service_id)
        if given is not None and given.restoring:
            raise restoring()

    async def run(self, grant: RunGrant, **asked: Any) -> Answer:
        self._check_restored(grant.service_id)
        if not await self.bring_up(grant.service_id):
            raise not_running()
        self.agent.used(grant.service_id)
        request = query_request(
            grant,
            self.agent.limits,
            self._configured(grant.service_id),
            frozen=self._frozen(grant.service_id),
            **asked,
        )
        try:
            chunks = await self.agent.supervisor.query(grant.service_id, request)
            await anext(chunks)  # the engine accepted the query (or raised its error)
        except EngineUnavailable:
            raise not_running() from None
        return chunks

    async def insert(self, grant: RunGrant, **asked: Any) -> dict[str, Any]:
        data = asked.pop("data")
        request = insert_request(
            grant,
            self.agent.limits,
            self._configured(grant.service_id),
            frozen=self._frozen(grant.service_id),
            **asked,
        )
        self._check_restored(grant.service_id)
        if not await self.bring_up(grant.service_id):
            raise not_running()
        self.agent.used(grant.service_id)
        try:
            return await self.agent.supervisor.insert(grant.service_id, request, data)
        except EngineUnavailable:
            raise not_running() from None


class FilePorts:
    """This host's book of its services' ports (a JSON file), so that each keeps its port."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> dict[str, int]:
        try:
            return {k: int(v) for k, v in json.loads(self.path.read_text()).items()}
        except (FileNotFoundError, ValueError):
            return {}

    async def ports(self, service_id: uuid.UUID) -> tuple[int | None, set[int]]:
        book = self._read()
        return book.get(str(service_id)), {p for k, p in book.items() if k != str(service_id)}

    async def keep(self, service_id: uuid.UUID, port: int) -> None:
        book = self._read()
        book[str(service_id)] = port
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(book))
        temporary.replace(self.path)


def _is_id(name: str) -> bool:
    try:
        uuid.UUID(name)
    except ValueError:
        return False
    return True


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _said(response: httpx.Response) -> str:
    try:
        return f"{response.status_code} {response.json().get('error')}"
    except ValueError:
        return f"{response.status_code} {response.text[:200]}"


def serve_agent(config: AgentConfig, settings: Settings) -> None:
    """Run the agent until SIGTERM or SIGINT."""

    async def main() -> None:
        agent = Agent(config, settings)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, agent.stop)
        await agent.run()

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(main())
