"""Draining an engine host (``keyhouse hosts drain``): the host takes no new service, and each
of its services moves to another host, the way CloudNativePG and the ClickHouse operators
move a database: a copy restored on the new host, never a repair in place.

For each service, in order:

1. it is marked as moving (``moving_to``): its queries run read-only and its inserts are
   refused, everywhere (each API process reads it within ``ROUTE_SECONDS``, the hosts at
   their next sync), so nothing is written after its copy is taken;
2. a running service is backed up on its host (``BACKUP ... TO Disk('backups', ...)``); the
   backup goes through the control plane to the new host, whose agent has started an empty
   engine for it; ``RESTORE ALL`` runs there, and the new engine must answer. A stopped (or
   idle) service's data directory goes across as it is;
3. its backups go across too (its next incremental backup needs its base there);
4. the service is the new host's (``host_id``): clients get its new endpoint, and the old host
   removes its copy at its next sync, only now.

A move that fails leaves the service where it was, writable again; the new host removes what
it received at its next sync.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from keyhouse.api.errors import Conflict, NotFound
from keyhouse.backups.runner import backup_statement, restore_statement
from keyhouse.db import utcnow
from keyhouse.engine import protocol
from keyhouse.engine.protocol import ClickHouseError
from keyhouse.engine.supervisor import EngineUnavailable, answer_over
from keyhouse.hosts import channel, transfer
from keyhouse.hosts.channel import ChannelError, Route
from keyhouse.hosts.remote import ROUTE_SECONDS
from keyhouse.hosts.service import host_secret
from keyhouse.models import Backup, EngineHost, Service
from keyhouse.services import placement
from keyhouse.services.states import RUN_ON_HOST, State
from keyhouse.transactions import run_in_transaction

if TYPE_CHECKING:
    from keyhouse.state import AppState

# How long a move waits for everyone to see the freeze before it takes the copy: every API
# process's cached route, and the hosts' syncs.
FREEZE_SECONDS = ROUTE_SECONDS + 2.0
MOVE_TIMEOUT = 3600.0  # a backup or restore of a large service takes time
# What can be copied: a live engine (its host answers), or a stopped one's data.
MOVABLE = (RUN_ON_HOST - {State.DEGRADED}) | {State.STOPPED, State.IDLE}


class MoveFailed(Exception):
    pass


def _route(host: EngineHost, pepper: bytes) -> Route:
    return Route(host.id, host.channel, host.ca_pem, host_secret(pepper, host.id))


async def drain(
    state: AppState, host_id: uuid.UUID, say: Callable[[str], None]
) -> list[tuple[uuid.UUID, str]]:
    """Make ``host_id`` unschedulable and move each of its services away; each service's id
    and what became of it."""

    def unschedule(session: Any) -> list[tuple[uuid.UUID, str]]:
        host = session.get(EngineHost, host_id, with_for_update=True)
        if host is None:
            raise NotFound(f"No engine host {host_id}")
        host.schedulable = False
        rows = session.execute(
            select(Service.id, Service.name).where(Service.host_id == host_id)
        ).all()
        return [(service_id, name) for service_id, name in rows]

    services = await run_in_transaction(state, unschedule)
    say(f"host {host_id} takes no new service; {len(services)} to move")
    results = []
    for service_id, name in services:
        try:
            target = await move(state, service_id, say)
            results.append((service_id, f"moved to host {target}"))
            say(f"service {service_id} ({name}): moved to host {target}")
        except (MoveFailed, Conflict) as error:
            results.append((service_id, f"not moved: {error}"))
            say(f"service {service_id} ({name}): not moved: {error}")
    return results


async def move(state: AppState, service_id: uuid.UUID, say: Callable[[str], None]) -> uuid.UUID:
    """Move one service to another host (see the module); the new host's id."""
    pepper = state.pepper
    silent = state.settings.host_silent_seconds

    def begin(session: Any) -> tuple[Route, Route, uuid.UUID, bool]:
        service = session.get(Service, service_id, with_for_update=True)
        if service is None or service.host_id is None:
            raise MoveFailed("the service runs on no engine host")
        if service.moving_to is not None:
            raise MoveFailed("the service is already moving")
        state_now = State(service.state)
        if state_now not in MOVABLE:
            raise MoveFailed(f"the service is {state_now.value}: it cannot be copied now")
        target = placement.place(
            session,
            region=service.region,
            provider=service.provider,
            memory_gb=service.max_replica_memory_gb,
            now=utcnow(),
            silent_seconds=silent,
        )
        if target is None or target == service.host_id:
            raise MoveFailed("no other engine host can take it")
        service.moving_to = target
        source = _route(session.get(EngineHost, service.host_id), pepper)
        return (
            source,
            _route(session.get(EngineHost, target), pepper),
            target,
            (state_now in RUN_ON_HOST),
        )

    source, target, target_id, running = await run_in_transaction(state, begin)
    say(f"service {service_id}: moving to host {target_id}; writes wait meanwhile")
    try:
        await channel.poke(source)
        await channel.poke(target)
        await asyncio.sleep(FREEZE_SECONDS)
        if running:
            await _copy_running(service_id, source, target, say)
        else:
            await _copy_files(service_id, source, target, "data", {})
        kept = await run_in_transaction(state, lambda session: _kept_backups(session, service_id))
        for backup_id in kept:  # (the next incremental needs its base on the new host)
            await _copy_files(service_id, source, target, "backup", {"name": str(backup_id)})
        if kept:
            say(f"service {service_id}: its {len(kept)} backups copied to the new host")
    except BaseException as error:

        def thaw(session: Any) -> None:
            service = session.get(Service, service_id, with_for_update=True)
            if service is not None:
                service.moving_to = None

        with contextlib.suppress(Exception):
            await run_in_transaction(state, thaw)
        with contextlib.suppress(Exception):
            await channel.poke(target)
        if isinstance(error, MoveFailed):
            raise
        if isinstance(error, (OSError, ChannelError, ClickHouseError, EngineUnavailable)):
            raise MoveFailed(str(error) or type(error).__name__) from None
        raise

    def switch(session: Any) -> None:
        service = session.get(Service, service_id, with_for_update=True)
        if service is None:
            raise MoveFailed("the service was deleted meanwhile")
        service.host_id, service.moving_to, service.http_port = target_id, None, None

    await run_in_transaction(state, switch)
    await channel.poke(target)
    await channel.poke(source)  # it stops its engine and removes its copy now
    return target_id


def _kept_backups(session: Any, service_id: uuid.UUID) -> list[uuid.UUID]:
    return list(
        session.scalars(
            select(Backup.id).where(Backup.service_id == service_id, Backup.status == "done")
        )
    )


async def _copy_running(
    service_id: uuid.UUID,
    source: Route,
    target: Route,
    say: Callable[[str], None],
) -> None:
    name = str(uuid.uuid4())
    say(f"service {service_id}: backup {name} on its host")
    await statement(source, service_id, backup_statement(name))
    say(f"service {service_id}: copying the backup to the new host")
    await _copy_files(service_id, source, target, "backup", {"name": name})
    await statement(target, service_id, restore_statement(name), wait=True)
    say(f"service {service_id}: restored on the new host")
    await statement(target, service_id, "SELECT 1", wait=True)  # the new copy answers
    await channel.ask(target, "forget", service_id, what="backup", name=name)


async def statement(route: Route, service_id: uuid.UUID, sql: str, *, wait: bool = False) -> None:
    """Run the control plane's own ``sql`` on the service's engine on ``route``'s host (waiting
    for an engine coming up there when ``wait``)."""
    seconds = 60.0 if wait else 0.0
    try:
        reader, writer = await channel.open_when(
            route, "pipe", service_id, channel.NOT_RUNNING, seconds=seconds
        )
    except ChannelError as refused:
        raise MoveFailed(f"{route.channel}: {refused}") from None
    request = {"sql": sql, "format": "TabSeparated", "limits": {}, "query_id": str(uuid.uuid4())}
    answer = answer_over(reader, writer, request, MOVE_TIMEOUT)
    await answer.whole()


async def _copy_files(
    service_id: uuid.UUID, source: Route, target: Route, what: str, more: dict[str, str]
) -> None:
    """The service's backup (or data directory) from ``source``'s host to ``target``'s."""
    await copy_between(source, service_id, target, service_id, what, more)


async def copy_between(
    source: Route,
    source_service: uuid.UUID,
    target: Route,
    target_service: uuid.UUID,
    what: str,
    more: dict[str, str],
) -> None:
    """A backup (or a data directory) of ``source_service`` on ``source``'s host, as the
    same of ``target_service`` on ``target``'s (waiting a minute for the target to be given
    it); ``MoveFailed`` says why not."""
    try:  # (the target learns of the move at its next sync)
        reader, writer = await channel.open_when(
            target, "import", target_service, channel.NOT_HERE, seconds=60.0, what=what, **more
        )
    except ChannelError as refused:
        raise MoveFailed(f"{target.channel}: {refused}") from None
    try:
        out_reader, out_writer = await channel.open_channel(
            source, "export", source_service, what=what, **more
        )
    except ChannelError as refused:
        writer.close()
        raise MoveFailed(f"{source.channel}: {refused}") from None
    try:
        async for chunk in transfer.frames(out_reader):
            writer.write(protocol.frame(protocol.DATA, chunk))
            await writer.drain()
        writer.write(protocol.frame(protocol.END))
        await writer.drain()
        kind, length = protocol.parse_head(await reader.readexactly(protocol.HEAD_SIZE))
        payload = await reader.readexactly(length)
        if kind != protocol.END:
            raise MoveFailed(f"the new host refused the copy: {payload[:300]!r}")
    except (ValueError, asyncio.IncompleteReadError) as error:
        raise MoveFailed(f"the copy failed: {error}") from None
    finally:
        out_writer.close()
        writer.close()
