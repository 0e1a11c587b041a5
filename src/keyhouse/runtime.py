"""The services runtime: what happens after a service's transaction commits.

``Engines`` holds the app's supervisor and the background tasks that move services between
states: bring an engine up (``provisioning``/``starting``/``awaking`` → ``running``), take it
down (``stopping`` → ``stopped``, or ``idle`` after ``idleTimeoutMinutes`` without queries when
idle scaling is on), remove a deleted service's data, and mark a service whose worker keeps
crashing ``failed``. The decisions are ``keyhouse.services.states``' pure functions; this
module carries them out. On start-up it reconciles: services that should run are started
again, interrupted stops are finished. Each service's engine runs in the one server process
that holds its lease (``keyhouse.services.leases``).

The runtime knows nothing of HTTP: it tells its watchers (``ServiceWatcher``: the app wires the
ClickHouse HTTP interfaces' listeners) when a service's doors open (``up``: it runs, or it is
idle and a query wakes it) and when they close (``down``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import select

from keyhouse.api.errors import ServiceUnavailable
from keyhouse.backups import service as backups
from keyhouse.backups.runner import BackupFailed, BackupRunner, tree_bytes
from keyhouse.billing import service as billing
from keyhouse.billing.service import Sample
from keyhouse.config import Settings, ca_path
from keyhouse.db import utcnow
from keyhouse.engine.limits import QueryLimits
from keyhouse.engine.memory import host_memory_bytes
from keyhouse.engine.protocol import Answer, ClickHouseError
from keyhouse.engine.sandbox import OFF_SETTING, Sandbox, SandboxUnavailable
from keyhouse.engine.supervisor import EngineSupervisor, EngineUnavailable
from keyhouse.engine.upstream import Upstream
from keyhouse.hosts import channel
from keyhouse.hosts import restore as host_restore
from keyhouse.hosts import service as hosts
from keyhouse.hosts.local import LocalChannel, hand_over
from keyhouse.hosts.remote import HostBackupEngines, Placed, RemoteHosts
from keyhouse.models import Service
from keyhouse.service_settings import service as service_settings
from keyhouse.services import leases
from keyhouse.services.engines import (
    insert_request,
    not_running,
    query_request,
    restoring,
)
from keyhouse.services.service import RunGrant, attachment, set_state
from keyhouse.services.states import (
    COMING_UP,
    RECONCILED,
    RUNNING_STATES,
    TAKEN_OVER,
    EngineWork,
    Resume,
    State,
    Step,
    idle_due,
    on_startup,
)
from keyhouse.transactions import run_in_transaction

if TYPE_CHECKING:
    from keyhouse.state import AppState

log = logging.getLogger("keyhouse.services")


IDLE_CHECK_SECONDS = 30.0
HOSTS_SCHEDULE = "engine-hosts"  # the watch of engine hosts' heartbeats
HOST_BACKUPS_SCHEDULE = "host-backups"  # the backup schedule of services on engine hosts
# The reference engine's id (no service has it: services' ids are random UUIDs).
REFERENCE = uuid.UUID(int=0)


class ServiceWatcher(Protocol):
    """Told when a service can take queries and when it no longer can (the ClickHouse HTTP
    interfaces' listeners are one)."""

    async def up(self, service_id: uuid.UUID) -> None: ...

    async def down(self, service_id: uuid.UUID) -> None: ...

    async def close(self) -> None: ...


def engines_memory(settings: Settings) -> int:
    """The most all engines may hold together (0: no cap)."""
    if settings.engines_max_memory_bytes is not None:
        return settings.engines_max_memory_bytes
    return int(host_memory_bytes() * 0.8)


class Engines:
    def __init__(self, state: AppState, *, idle_check_seconds: float = IDLE_CHECK_SECONDS) -> None:
        self.state = state
        settings = state.settings
        # What every query runs under (a service's memory range lowers the memory limit).
        self.limits = QueryLimits.from_settings(settings)
        self.supervisor = EngineSupervisor(
            settings.data_dir,
            on_failed=self._failed,
            limits=self.limits.as_settings(),
            max_queries=settings.query_max_concurrent_per_service,
            memory_limit=engines_memory(settings),
            heartbeat=settings.engine_heartbeat_seconds,
            on_event=lambda event: state.metrics.engine_events.labels(event).inc(),
            sandbox=Sandbox(
                enabled=settings.engine_sandbox != "off",
                uid=settings.engine_uid,
                gid=settings.engine_gid,
            ),
        )
        # Told when services come up and go down (``watch``).
        self._watchers: list[ServiceWatcher] = []
        # Running services attached to a ClickHouse the operator runs (instead of an engine).
        self._upstreams: dict[uuid.UUID, Upstream] = {}
        self.idle_check_seconds = idle_check_seconds
        # The services this process holds the lease of (keyhouse.services.leases), and why
        # each one it could not hold runs elsewhere.
        self.holder = leases.holder_name()
        self.home = leases.home_of(settings.data_dir)
        self._held: set[uuid.UUID] = set()
        self._held_elsewhere: dict[uuid.UUID, str] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        # Backups of the services this process holds (their schedule, and restores).
        self.backups = BackupRunner(state, self.supervisor, self.holder)
        self._restoring: set[uuid.UUID] = set()  # engines up, their backup not restored yet
        # Each running service's ClickHouse settings (keyhouse.service_settings): every query
        # of the service runs with them, under the caller's own.
        self._service_settings: dict[uuid.UUID, dict[str, str]] = {}
        # The reference engine (a worker on an empty directory): the engine's own catalog of
        # settings and its checks of values, never a tenant's engine.
        self._reference_lock = asyncio.Lock()
        self._sampled = time.monotonic()  # the last usage sample
        self._catalog: bytes | None = None
        self._last_used: dict[uuid.UUID, float] = {}
        # Services on engine hosts (keyhouse.hosts): their queries go through the host's channel.
        self.hosts = RemoteHosts(state, self.holder, self.home)
        # This process's channel for the others of its machine (``--workers N``, replicas on
        # one data directory): their queries on the services it holds, and their engine work.
        self.local = LocalChannel(leases.channel_path(settings.data_dir, self.holder), self)
        # The deployment-wide schedules this process holds (keyhouse.services.leases.schedule).
        self._schedules: set[str] = set()
        # Backups of the services on engine hosts, while this process holds their schedule.
        self.host_backups = BackupRunner(
            state, None, self.holder, engines=HostBackupEngines(self.hosts)
        )
        self._host_restores: set[uuid.UUID] = set()  # restores onto hosts under way here
        # Background loops that run until close(): the start-up reconcile and the idle reaper.
        self._loops: list[asyncio.Task[None]] = []

    def watch(self, watcher: ServiceWatcher) -> None:
        self._watchers.append(watcher)

    async def _up(self, service_id: uuid.UUID) -> None:
        for watcher in self._watchers:
            # The engine runs whatever a watcher makes of it: a watcher's failure is logged.
            try:
                await watcher.up(service_id)
            except (OSError, ValueError) as error:
                log.error("service %s: %s: %s", service_id, type(watcher).__name__, error)

    async def _down(self, service_id: uuid.UUID) -> None:
        for watcher in self._watchers:
            await watcher.down(service_id)

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        """Begin ``work`` in the background, on the app's loop; close() waits for it."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _set(self, service_id: uuid.UUID, state: State, **changes: Any) -> bool:
        return await run_in_transaction(
            self.state, lambda session: set_state(session, service_id, state, **changes)
        )

    # --- leases -------------------------------------------------------------------------

    async def _hold(self, service_id: uuid.UUID) -> bool:
        """Take (or keep) the service's lease; False when another process runs it."""
        holder, home = self.holder, self.home
        seconds = self.state.settings.engine_lease_seconds
        try:
            await run_in_transaction(
                self.state,
                lambda session: leases.take(session, service_id, holder, home, seconds=seconds),
            )
        except leases.HeldElsewhere as elsewhere:
            self._held_elsewhere[service_id] = elsewhere.why
            return False
        self._held_elsewhere.pop(service_id, None)
        self._held.add(service_id)
        return True

    async def _let_go(self, service_ids: set[uuid.UUID]) -> None:
        ids, holder = service_ids & self._held, self.holder
        self._held -= ids
        if ids:
            await run_in_transaction(
                self.state, lambda session: leases.release(session, holder, ids)
            )

    async def _keep_leases(self) -> None:
        """Renew what this process holds, a third of a lease apart; give up what another
        process took over meanwhile (this one was silent past its lease); take over what a
        gone or silent process held, in this process's data directory."""
        while True:
            await asyncio.sleep(self.state.settings.engine_lease_seconds / 3)
            try:
                await self._leases_once()
            except Exception:  # the loop must outlive a failed round (e.g. a DB outage)
                log.exception("engine leases: renewal failed")

    async def _leases_once(self) -> None:
        holder, held = self.holder, set(self._held)
        seconds = self.state.settings.engine_lease_seconds
        lost = await run_in_transaction(
            self.state, lambda session: leases.renew(session, holder, held, seconds=seconds)
        )
        for service_id in lost:
            log.warning("service %s: another process runs it now; stopping ours", service_id)
            self._held.discard(service_id)
            await self._down(service_id)
            await self._stop(service_id)
            self._last_used.pop(service_id, None)
        home = self.home
        orphans = await run_in_transaction(
            self.state,
            lambda session: leases.unheld(session, home, TAKEN_OVER, leased_only=True),
        )
        for service_id, state in orphans:
            if service_id not in self._held:
                log.info("service %s: its process is gone; taking it over", service_id)
                await self._resume(service_id, state)

    # --- transitions --------------------------------------------------------------------

    def handle(self, work: EngineWork) -> None:
        """Engine work a committed transaction queued (``keyhouse.transactions``), begun in
        the background: the request that committed it does not wait for an engine."""
        if not isinstance(work, EngineWork):
            return
        service_id = work.service_id
        if work.step in (Step.START, Step.STOP):
            self._spawn(self._carry_out(work))
        elif work.step == Step.CONFIGURE:
            self._service_settings[service_id] = dict(work.settings or {})
            self.hosts.forget(service_id)
            if service_id not in self._held:
                self._spawn(self._carry_out(work))
        else:
            self._last_used.pop(service_id, None)
            self._spawn(self._remove(service_id, everywhere=True))

    async def _carry_out(self, work: EngineWork) -> None:
        """Start or stop the service's engine here; or hand the work to the process of this
        machine that holds the service; or, on an engine host, ask its agent to sync now (it
        starts and stops the engine, and reports the state)."""
        service_id = work.service_id
        self.hosts.forget(service_id)
        placed = await self.hosts.placed(service_id)
        if placed is not None:
            if placed.route.unix is not None:
                await hand_over(placed.route.unix, work)
            else:
                await channel.poke(placed.route)
            return
        if work.step == Step.CONFIGURE:  # (applied here already)
            return
        if work.step == Step.START:
            await self.bring_up(service_id)
        else:
            await self._take_down(service_id, State.STOPPED, frozenset({State.STOPPING}))

    async def bring_up(self, service_id: uuid.UUID) -> bool:
        """Start the engine (or reach the attached server) and mark the service running;
        False (and ``failed``) if it can't. A service on an engine host is its agent's to
        start: asked to sync now, True."""
        placed = await self.hosts.placed(service_id)
        if placed is not None:
            if placed.route.unix is not None:
                await hand_over(placed.route.unix, EngineWork(service_id, Step.START))
            else:
                await channel.poke(placed.route)
            return True
        if not await self._hold(service_id):
            return False  # another process runs it: its state is that process's
        try:
            version = await self._start(service_id)
            restore_from, configured = await run_in_transaction(
                self.state,
                lambda session: (
                    backups.pending_restore(session, service_id),
                    service_settings.configured(session, service_id),
                ),
            )
            if restore_from is not None:
                await self._restore(service_id, restore_from)
            self._service_settings[service_id] = configured
        except (EngineUnavailable, ClickHouseError, OSError, BackupFailed) as error:
            if self.supervisor.closing:  # the server is stopping: the service stays as it is
                return False
            log.error("service %s did not start: %s", service_id, error)
            await self._set(service_id, State.FAILED, expected=COMING_UP, failure=str(error))
            await self._let_go({service_id})
            return False
        self._last_used[service_id] = time.monotonic()
        await self._up(service_id)  # first: a running service lists its interface
        await self._set(service_id, State.RUNNING, expected=COMING_UP, version=version)
        return True

    async def _restore(self, service_id: uuid.UUID, backup_id: uuid.UUID) -> None:
        """A service created from a backup: restore it into the new engine, once. A restore
        that fails leaves no half-restored data behind: the next start begins afresh."""
        self._restoring.add(service_id)
        try:
            await self.backups.restore(service_id, backup_id)
        except BackupFailed as error:
            await self.supervisor.remove_data(service_id)
            raise BackupFailed(f"restoring backup {backup_id} failed: {error}") from None
        finally:
            self._restoring.discard(service_id)
        await run_in_transaction(self.state, lambda session: backups.restored(session, service_id))

    async def _start(self, service_id: uuid.UUID) -> str:
        pepper = self.state.pepper
        attached = await run_in_transaction(
            self.state, lambda session: attachment(session, service_id, pepper=pepper)
        )
        if attached is None:
            return await self.supervisor.start(service_id)
        upstream = self._upstreams.get(service_id)
        if upstream is None:
            upstream = Upstream(
                attached.url,
                attached.username,
                attached.password,
                ca_path(self.state.settings),
                answer_timeout=self.limits.answer_timeout,
            )
        try:
            version = await upstream.version()
        except ClickHouseError:
            await upstream.close()
            self._upstreams.pop(service_id, None)
            raise
        self._upstreams[service_id] = upstream
        return version

    def running(self, service_id: uuid.UUID) -> bool:
        return service_id in self._upstreams or self.supervisor.running(service_id)

    async def _take_down(
        self, service_id: uuid.UUID, final: State, expected: frozenset[State]
    ) -> None:
        await self._down(service_id)
        await self._stop(service_id)
        self._last_used.pop(service_id, None)
        await self._set(service_id, final, expected=expected)
        await self._let_go({service_id})

    async def _remove(self, service_id: uuid.UUID, *, everywhere: bool = False) -> None:
        """Stop the service's engine and remove its data; ``everywhere``: first in whichever
        process of this machine holds it (its lease went with the service's row)."""
        if everywhere:
            work = EngineWork(service_id, Step.REMOVE)
            await asyncio.gather(*(hand_over(path, work) for path in self.local.others()))
        await self._down(service_id)
        await self._stop(service_id)
        await self.supervisor.remove_data(service_id)
        self._held.discard(service_id)  # (its lease went with the service's row)

    async def _stop(self, service_id: uuid.UUID) -> None:
        """Stop the engine, or stop sending queries to the attached server."""
        upstream = self._upstreams.pop(service_id, None)
        if upstream is not None:
            await upstream.close()
        await self.supervisor.stop(service_id)

    async def _failed(self, service_id: uuid.UUID, why: str) -> None:
        await self._set(service_id, State.FAILED, expected=RUNNING_STATES, failure=why)
        await self._let_go({service_id})

    def used(self, service_id: uuid.UUID) -> None:
        self._last_used[service_id] = time.monotonic()

    async def run(
        self,
        grant: RunGrant,
        *,
        sql: str,
        fmt: str,
        database: str | None = None,
        query_id: str | None = None,
        params: dict[str, str] | None = None,
        session_id: str | None = None,
        extra_settings: dict[str, Any] | None = None,
        session_timeout: float | None = None,
    ) -> Answer:
        """Run one query for a caller the domain layer granted (``grant``): under the
        operator's limits, the service's memory cap and, when the grant says so, the engine's
        ``readonly``. Waits for an engine that is coming up. Raises ``ClickHouseError`` when the
        engine refuses the query and ``ServiceUnavailable`` when it is not running; the
        iterator then yields the result's bytes."""
        placed, upstream = await self._where(grant)
        request = query_request(
            grant,
            self.limits,
            self._configured(grant.service_id, placed),
            sql=sql,
            fmt=fmt,
            database=database,
            query_id=query_id,
            params=params,
            session_id=session_id,
            extra_settings=extra_settings,
            session_timeout=session_timeout,
            frozen=placed is not None and placed.frozen,
        )
        metrics, service_id = self.state.metrics, grant.service_id
        metrics.queries.labels(str(service_id)).inc()
        try:
            if placed is not None:
                chunks = await self.hosts.query(service_id, request, self.limits.answer_timeout)
            elif upstream is not None:
                chunks = await upstream.query(request)
            else:
                chunks = await self.supervisor.query(grant.service_id, request)
            chunks.on_end = lambda summary: metrics.query_done(service_id, summary)
            await anext(chunks)  # the engine accepted the query (or raised its error)
        except EngineUnavailable:
            raise not_running() from None
        return chunks

    async def read_if_running(self, service_id: uuid.UUID, sql: str) -> bytes | None:
        """The answer (JSONEachRow) to the control plane's own read-only ``sql`` on the
        service's engine or attached server, if this process runs it and it is up; None
        otherwise. It never wakes a service, nor counts as its use (a service scraped every
        15 s still idles)."""
        request = {
            "sql": sql,
            "format": "JSONEachRow",
            "readonly": True,
            "query_id": str(uuid.uuid4()),
            "limits": self.limits.as_settings(),
        }
        placed = await self.hosts.placed(service_id)
        if placed is None and (service_id in self._restoring or not self.running(service_id)):
            return None
        upstream = self._upstreams.get(service_id)
        try:
            if placed is not None:
                timeout = self.limits.answer_timeout
                answer = await self.hosts.query(service_id, request, timeout, wait=0)
            elif upstream is not None:
                answer = await upstream.query(request)
            else:
                answer = await self.supervisor.query(service_id, request)
            return await answer.whole()
        except (EngineUnavailable, ClickHouseError, OSError) as error:
            log.warning("service %s: the engine's figures could not be read: %s", service_id, error)
            return None

    async def insert(
        self,
        grant: RunGrant,
        *,
        sql: str,
        fmt: str,
        data: AsyncIterator[bytes],
        database: str | None = None,
        session_id: str | None = None,
        extra_settings: dict[str, Any] | None = None,
        session_timeout: float | None = None,
    ) -> dict[str, Any]:
        """Stream ``data`` (in ``fmt``) into ``sql`` (``INSERT INTO t (a, b)``) under the same
        limits as ``run``; the engine's write statistics."""
        placed, upstream = await self._where(grant)
        request = insert_request(
            grant,
            self.limits,
            self._configured(grant.service_id, placed),
            sql=sql,
            fmt=fmt,
            database=database,
            session_id=session_id,
            extra_settings=extra_settings,
            session_timeout=session_timeout,
            frozen=placed is not None and placed.frozen,
        )
        self.state.metrics.queries.labels(str(grant.service_id)).inc()
        try:
            if placed is not None:
                timeout = self.limits.answer_timeout
                written = await self.hosts.insert(grant.service_id, request, data, timeout)
            elif upstream is not None:
                written = await upstream.insert(request, data)
            else:
                written = await self.supervisor.insert(grant.service_id, request, data)
            self.state.metrics.query_done(grant.service_id, written)
            return written
        except EngineUnavailable:
            raise not_running() from None

    async def _where(self, grant: RunGrant) -> tuple[Placed | None, Upstream | None]:
        """Where the grant's query runs: through another process or host (``Placed``), or
        here (on its attached server, or its own engine: None), brought up if it must be."""
        placed = await self.hosts.placed(grant.service_id)
        if placed is not None:
            if placed.restoring:
                raise restoring()
            return placed, None
        try:
            return None, await self._ready(grant)
        except ServiceUnavailable:
            # Another process of this machine took it meanwhile: reach it there.
            self.hosts.forget(grant.service_id)
            placed = await self.hosts.placed(grant.service_id)
            if placed is None:
                raise
            return placed, None

    async def _ready(self, grant: RunGrant) -> Upstream | None:
        """Bring the service up when it is not (503 if it cannot be), count it as used, and
        return its attached server (None: its own engine)."""
        if grant.service_id in self._restoring:  # (its engine runs, its data is not all in)
            raise restoring()
        if not self.running(grant.service_id) and not await self.bring_up(grant.service_id):
            elsewhere = self._held_elsewhere.get(grant.service_id)
            if elsewhere is not None:
                raise ServiceUnavailable(
                    f"The service is served by another Keyhouse server process: {elsewhere}",
                    headers={"Retry-After": "5"},
                )
            raise not_running()
        self.used(grant.service_id)
        return self._upstreams.get(grant.service_id)

    def _configured(self, service_id: uuid.UUID, placed: Placed | None) -> dict[str, str] | None:
        """The service's own ClickHouse settings (every query of it runs with them)."""
        return placed.settings if placed is not None else self._service_settings.get(service_id)

    async def reference(self, statements: list[str]) -> list[bytes | ClickHouseError]:
        """Each statement's answer (JSONEachRow), or the engine's error, from the reference
        engine: started for the call and stopped after it (its directory removed), one call
        at a time."""
        async with self._reference_lock:
            try:
                await self.supervisor.start(REFERENCE)
            except EngineUnavailable as error:
                raise ServiceUnavailable(
                    f"The reference engine could not start: {error}", headers={"Retry-After": "5"}
                ) from None
            answers: list[bytes | ClickHouseError] = []
            try:
                for sql in statements:
                    request = {"sql": sql, "format": "JSONEachRow", "limits": {}}
                    try:
                        answer = await self.supervisor.query(REFERENCE, request)
                        answers.append(await answer.whole())
                    except ClickHouseError as error:
                        answers.append(error)
            finally:
                await self.supervisor.remove_data(REFERENCE)
            return answers

    async def catalog(self) -> bytes:
        """The engine's ``system.settings`` (JSONEachRow; read once per process)."""
        if self._catalog is None:
            [answer] = await self.reference([service_settings.CATALOG_SQL])
            if isinstance(answer, ClickHouseError):
                raise ServiceUnavailable(f"The engine's settings could not be read: {answer}")
            self._catalog = answer
        return self._catalog

    # --- this process's channel for the others of its machine (keyhouse.hosts.local) -----

    def holds(self, service_id: uuid.UUID) -> bool:
        return service_id in self._held

    def serving(self, service_id: uuid.UUID) -> Path | None:
        if service_id in self._restoring:
            return None
        return self.supervisor.connection(service_id)

    async def work(self, work: EngineWork) -> None:
        """Engine work committed in another process of this machine for a service this one
        holds (a delete: every process is told)."""
        service_id = work.service_id
        if work.step == Step.REMOVE:
            if service_id in self._held or self.running(service_id):
                await self._down(service_id)
                await self._stop(service_id)
                self._held.discard(service_id)
                self._last_used.pop(service_id, None)
        elif work.step == Step.CONFIGURE:
            self._service_settings[service_id] = dict(work.settings or {})
        elif work.step == Step.START:
            self._spawn(self.bring_up(service_id))
        else:
            self._spawn(self._take_down(service_id, State.STOPPED, frozenset({State.STOPPING})))

    # --- the app's lifetime -------------------------------------------------------------

    async def open(self) -> None:
        """Start reconciling the database with reality (retried while the database is away,
        never holding up the server's start), and the idle reaper."""
        sandbox = self.supervisor.sandbox
        if not sandbox.enabled:
            log.warning(
                "engines run WITHOUT a sandbox (%s): SQL on a service reaches whatever this "
                "server can (files, the database, the network); for development only",
                OFF_SETTING,
            )
        else:
            try:
                sandbox.check(self.state.settings.data_dir)
            except SandboxUnavailable as error:
                log.error("no engine can start: %s", error)
        await self.local.open()
        self._loops = [
            asyncio.create_task(self._reconcile_until_done()),
            asyncio.create_task(self._reap_idle()),
            asyncio.create_task(self._keep_leases()),
            asyncio.create_task(self._schedule_backups()),
            asyncio.create_task(self._sample_usage()),
            asyncio.create_task(self._watch_hosts()),
            asyncio.create_task(
                self._scheduled(
                    HOST_BACKUPS_SCHEDULE,
                    self.state.settings.backup_check_seconds,
                    self._host_backups_once,
                )
            ),
        ]

    async def _reconcile_until_done(self) -> None:
        delay = 1.0
        while True:
            try:
                await self._reconcile()
                return
            except ServiceUnavailable:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60)

    async def _reconcile(self) -> None:
        def pending(session: Any) -> list[tuple[uuid.UUID, str]]:
            rows = session.execute(
                select(Service.id, Service.state).where(
                    Service.state.in_([state.value for state in RECONCILED]),
                    Service.host_id.is_(None),  # (an engine host's agent runs those)
                )
            )
            return [(service_id, state) for service_id, state in rows]

        for service_id, state in await run_in_transaction(self.state, pending):
            await self._resume(service_id, state)

    async def _resume(self, service_id: uuid.UUID, state: str) -> None:
        """Bring one service to its recorded state, if this process may hold it."""
        step = on_startup(State(state))
        if step is None or not await self._hold(service_id):
            return  # nothing to do, or another process runs it
        if step == Resume.FINISH_STOP:
            await self._set(service_id, State.STOPPED, expected=frozenset({State.STOPPING}))
            await self._let_go({service_id})
        elif step == Resume.LISTEN:
            await self._up(service_id)
        else:
            if step == Resume.RESTART:
                await self._set(service_id, State.STARTING, expected=frozenset({State.RUNNING}))
            self._spawn(self.bring_up(service_id))

    async def _schedule_backups(self) -> None:
        while True:
            await asyncio.sleep(self.state.settings.backup_check_seconds)
            try:
                await self.backups.tick(set(self._held))
            except Exception:  # the schedule must outlive a failed round (e.g. a DB outage)
                log.exception("backup schedule: round failed")

    async def _watch_hosts(self) -> None:
        """Turn the services of engine hosts silent past ``KEYHOUSE_HOST_SILENT_SECONDS``
        ``degraded``: one process of the deployment does, the holder of its schedule."""
        silent = self.state.settings.host_silent_seconds

        async def once() -> None:
            moved = await run_in_transaction(
                self.state, lambda session: hosts.mark_silent(session, utcnow(), silent)
            )
            for service_id in moved:
                log.warning("service %s is degraded: its engine host is silent", service_id)

        await self._scheduled(HOSTS_SCHEDULE, silent / 3, once)

    async def _host_backups_once(self) -> None:
        """One round of the backup schedule of the services on engine hosts (not those that
        are moving: their copy is a move's)."""

        def on_hosts(session: Any) -> list[uuid.UUID]:
            return list(
                session.scalars(
                    select(Service.id).where(
                        Service.host_id.is_not(None), Service.moving_to.is_(None)
                    )
                )
            )

        await self.host_backups.tick(await run_in_transaction(self.state, on_hosts))
        for service_id, backup_id in await run_in_transaction(self.state, host_restore.pending):
            if service_id not in self._host_restores:
                self._host_restores.add(service_id)
                self._spawn(self._restore_on_host(service_id, backup_id))

    async def _restore_on_host(self, service_id: uuid.UUID, backup_id: uuid.UUID) -> None:
        try:
            await host_restore.restore_on_host(self.state, self.hosts, service_id, backup_id)
        finally:
            self._host_restores.discard(service_id)

    async def _scheduled(
        self, name: str, every: float, work: Callable[[], Awaitable[None]]
    ) -> None:
        """Run ``work`` every ``every`` seconds while this process holds the deployment's
        schedule ``name`` (``keyhouse.services.leases.schedule``): exactly one process does,
        and another takes over once it is gone or silent past its lease."""
        holder, seconds = self.holder, self.state.settings.engine_lease_seconds
        while True:
            await asyncio.sleep(every)
            try:
                held = await run_in_transaction(
                    self.state,
                    lambda session: leases.schedule(session, name, holder, seconds=seconds),
                )
                if held:
                    self._schedules.add(name)
                    await work()
                else:
                    self._schedules.discard(name)
            except Exception:  # the schedule must outlive a failed round (e.g. a DB outage)
                log.exception("schedule %s: round failed", name)

    async def _sample_usage(self) -> None:
        while True:
            await asyncio.sleep(self.state.settings.usage_sample_seconds)
            try:
                await self.sample_usage()
            except Exception:  # the sampler must outlive a failed round (e.g. a DB outage)
                log.exception("usage sample failed")

    async def sample_usage(
        self, now: dt.datetime | None = None, elapsed: float | None = None
    ) -> None:
        """Measure what the services of this process's data directory use (usageCost): the
        engine time of each one running here since the last sample (``elapsed`` seconds, or as
        measured), and the bytes of each one's data and backups; stopped ones too (any process
        may: the same figures)."""
        at = now or utcnow()
        clock = time.monotonic()
        seconds = elapsed if elapsed is not None else clock - self._sampled
        self._sampled = clock
        held = set(self._held)

        def stopped(session: Any) -> list[uuid.UUID]:
            rows = session.execute(
                select(Service.id).where(
                    Service.state == State.STOPPED.value,
                    Service.attached_url.is_(None),
                    Service.host_id.is_(None),
                )
            )
            return [service_id for (service_id,) in rows]

        ids = held | set(await run_in_transaction(self.state, stopped))
        samples = []
        for service_id in ids - set(self._upstreams):
            data = await asyncio.to_thread(tree_bytes, self.supervisor.data_path(service_id))
            kept = await asyncio.to_thread(tree_bytes, self.supervisor.backup_path(service_id))
            running = self.supervisor.running(service_id)
            samples.append(Sample(service_id, seconds if running else 0.0, data, kept))
        if samples:
            await run_in_transaction(
                self.state, lambda session: billing.record_samples(session, samples, at)
            )

    async def close(self) -> None:
        await self.local.close()
        for loop in self._loops:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        for task in list(self._tasks):
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await task
        await self.backups.close()
        await self.host_backups.close()
        for watcher in self._watchers:
            await watcher.close()
        for upstream in list(self._upstreams.values()):
            await upstream.close()
        self._upstreams.clear()
        await self.supervisor.close()
        # What this process held is free for another at once (not after the lease's expiry).
        with contextlib.suppress(Exception):
            await self._let_go(set(self._held))
        holder, names = self.holder, list(self._schedules)

        def give_up(session: Any) -> None:
            for name in names:
                leases.unschedule(session, name, holder)

        with contextlib.suppress(Exception):
            await run_in_transaction(self.state, give_up)

    async def _reap_idle(self) -> None:
        while True:
            await asyncio.sleep(self.idle_check_seconds)
            try:
                await self._idle_once()
            except Exception:  # the reaper must outlive a failed round (e.g. a DB outage)
                log.exception("idle check failed")

    async def _idle_once(self) -> None:
        running = [sid for sid in list(self._last_used) if self.running(sid)]
        if not running:
            return

        def idle_rules(session: Any) -> dict[uuid.UUID, int]:
            rows = session.execute(
                select(Service.id, Service.idle_timeout_minutes).where(
                    Service.id.in_(running),
                    Service.idle_scaling.is_(True),
                    Service.state == State.RUNNING.value,
                )
            )
            return {service_id: int(minutes) for service_id, minutes in rows}

        now = time.monotonic()
        for service_id, minutes in (await run_in_transaction(self.state, idle_rules)).items():
            if idle_due(now - self._last_used.get(service_id, now), minutes):
                log.info("service %s is idle: stopping its engine", service_id)
                if await self._set(service_id, State.IDLE, expected=frozenset({State.RUNNING})):
                    await self._stop(service_id)
                    self._last_used.pop(service_id, None)
