"""Taking, pruning and restoring backups with the engine's own ``BACKUP`` and ``RESTORE``.

A service's engine has one backup disk, its backup directory (``EngineSupervisor.backup_path``,
outside its data directory, writable by its sandboxed worker and nothing else of the host). A
backup is ``BACKUP ALL EXCEPT DATABASES system, ... TO Disk('backups', '<backup id>') ASYNC``,
with ``base_backup`` set to the chain's previous backup for an incremental one, watched in the
engine's ``system.backups`` until it is created or failed. Anything that ends the watch first (the
worker killed, the server stopping) leaves the backup ``error`` and its directory removed; the
service's engine restarts as after any crash.

A restore runs in a new service's engine before it first reports ``running``: the chain's
directories are copied into the new service's backup directory, ``RESTORE ALL ... FROM
Disk('backups', '<id>')`` runs, and the copies are removed.

The runner belongs to the server process that runs the services' engines (their leases):
``tick`` begins what is due or asked for among the services it holds, and prunes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import shutil
import uuid
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from sqlalchemy.orm import Session

from keyhouse.backups import service as backups
from keyhouse.db import utcnow
from keyhouse.engine.protocol import ClickHouseError
from keyhouse.engine.sql import literal
from keyhouse.engine.supervisor import EngineSupervisor, EngineUnavailable
from keyhouse.engine.worker import BACKUP_DISK
from keyhouse.transactions import run_in_transaction

if TYPE_CHECKING:
    from keyhouse.state import AppState

log = logging.getLogger("keyhouse.backups")

# What a backup holds: every database but the engine's own.
_WHAT = "ALL EXCEPT DATABASES system, information_schema, INFORMATION_SCHEMA"
POLL_SECONDS = 0.2
NOT_RUNNING = "the service's engine is not running (start it, then take the backup)"


class BackupFailed(Exception):
    """The engine could not take (or restore) a backup; the message says why."""


def _disk(name: uuid.UUID | str) -> str:
    return f"Disk({literal(BACKUP_DISK)}, {literal(str(name))})"


def backup_statement(name: uuid.UUID | str) -> str:
    """A whole backup (every database but the engine's own) onto the service's backup disk,
    under ``name``; the runner adds its base backup and ``ASYNC``."""
    return f"BACKUP {_WHAT} TO {_disk(name)}"


def restore_statement(name: uuid.UUID | str) -> str:
    return f"RESTORE {_WHAT} FROM {_disk(name)}"


def tree_bytes(path: Path) -> int:
    """The bytes of the files under ``path`` (0 when it does not exist)."""
    total = 0
    for directory, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(directory, name)).st_size
    return total


class BackupEngines(Protocol):
    """Where the runner's services' engines and backup files are: this process's supervisor
    (``LocalEngines``), or engine hosts (``keyhouse.hosts.remote.HostBackupEngines``)."""

    async def running(self, service_id: uuid.UUID) -> bool: ...

    async def sql(self, service_id: uuid.UUID, sql: str) -> bytes:
        """The control plane's own statement on the engine (JSONEachRow)."""
        ...

    async def remove(self, service_id: uuid.UUID, backup_id: uuid.UUID) -> None:
        """Delete one backup's files."""
        ...

    async def size(self, service_id: uuid.UUID, backup_id: uuid.UUID) -> int:
        """One backup's bytes on disk."""
        ...


class LocalEngines:
    """The engines of this process's supervisor, and their backup directories."""

    def __init__(self, supervisor: EngineSupervisor) -> None:
        self.supervisor = supervisor

    async def running(self, service_id: uuid.UUID) -> bool:
        return self.supervisor.running(service_id)

    async def sql(self, service_id: uuid.UUID, sql: str) -> bytes:
        answer = await self.supervisor.query(
            service_id, {"sql": sql, "format": "JSONEachRow", "query_id": str(uuid.uuid4())}
        )
        return await answer.whole()

    async def remove(self, service_id: uuid.UUID, backup_id: uuid.UUID) -> None:
        path = self.supervisor.backup_path(service_id) / str(backup_id)
        await asyncio.to_thread(shutil.rmtree, path, True)

    async def size(self, service_id: uuid.UUID, backup_id: uuid.UUID) -> int:
        path = self.supervisor.backup_path(service_id) / str(backup_id)
        return await asyncio.to_thread(tree_bytes, path)


class BackupRunner:
    def __init__(
        self,
        state: AppState,
        supervisor: EngineSupervisor | None,
        runner: str,
        *,
        poll: float = POLL_SECONDS,
        engines: BackupEngines | None = None,
    ) -> None:
        self.state = state
        # This process's engines (restores copy backup directories between them), or None.
        self.supervisor = supervisor
        if engines is None:
            if supervisor is None:
                raise ValueError("a backup runner needs engines")
            engines = LocalEngines(supervisor)
        self.engines = engines
        self.runner = runner  # this process's lease holder name
        self.poll = poll
        self._busy: set[uuid.UUID] = set()  # services with a backup in flight here
        self._tasks: set[asyncio.Task[uuid.UUID]] = set()

    # --- the engine -----------------------------------------------------------------------

    async def _sql(self, service_id: uuid.UUID, sql: str) -> bytes:
        return await self.engines.sql(service_id, sql)

    async def _watch(self, service_id: uuid.UUID, operation: str, done: str) -> None:
        """Wait until the engine's ``system.backups`` says ``operation`` ended; BackupFailed
        unless it ended as ``done``."""
        while True:
            rows = await self._sql(
                service_id,
                f"SELECT status, error FROM system.backups WHERE id = {literal(operation)}",  # noqa: S608
            )
            row = json.loads(rows.splitlines()[0]) if rows.strip() else None
            if row is None:
                raise BackupFailed("the engine lost track of the operation")
            if row["status"] == done:
                return
            if not row["status"].startswith(("CREATING", "RESTORING")):
                raise BackupFailed(ClickHouseError(0, row["error"] or "").reason or row["status"])
            await asyncio.sleep(self.poll)

    async def _run(self, service_id: uuid.UUID, sql: str, done: str) -> None:
        try:
            answer = await self._sql(service_id, f"{sql} ASYNC")
            operation = json.loads(answer.splitlines()[0])["id"]
            await self._watch(service_id, operation, done)
        except ClickHouseError as error:
            raise BackupFailed(error.reason or "the engine refused the backup") from None
        except EngineUnavailable as error:
            raise BackupFailed(str(error) or "the engine is not running") from None
        except (ValueError, KeyError, IndexError):
            raise BackupFailed("the engine's answer could not be read") from None

    # --- backups --------------------------------------------------------------------------

    async def take(self, service_id: uuid.UUID, requested: uuid.UUID | None = None) -> uuid.UUID:
        """Take one backup of a running service now (the ``requested`` one, or a scheduled
        one), and prune; the backup's id (its status says how it went)."""
        self._busy.add(service_id)
        try:
            return await self._take(service_id, requested)
        finally:
            self._busy.discard(service_id)

    async def _take(self, service_id: uuid.UUID, requested: uuid.UUID | None) -> uuid.UUID:
        runner = self.runner
        backup = await run_in_transaction(
            self.state, lambda session: _begun(session, service_id, runner, requested)
        )
        backup_id, base_id = backup
        sql = backup_statement(backup_id)
        if base_id is not None:
            sql += f" SETTINGS base_backup = {_disk(base_id)}"
        try:
            if not await self.engines.running(service_id):
                raise BackupFailed("the service's engine is not running")
            await self._run(service_id, sql, "BACKUP_CREATED")
        except (BackupFailed, asyncio.CancelledError) as error:
            why = str(error) if isinstance(error, BackupFailed) else "the server stopped"
            log.error("service %s: backup %s failed: %s", service_id, backup_id, why)
            with contextlib.suppress(Exception):  # (an engine host that is away keeps them)
                await self.engines.remove(service_id, backup_id)
            await run_in_transaction(
                self.state, lambda session: backups.fail(session, backup_id, why)
            )
            self.state.metrics.backups.labels("error").inc()
            if isinstance(error, asyncio.CancelledError):
                raise
            return backup_id
        size = await self.engines.size(service_id, backup_id)
        await run_in_transaction(
            self.state, lambda session: backups.finish(session, backup_id, size)
        )
        self.state.metrics.backups.labels("done").inc()
        log.info("service %s: backup %s taken (%d bytes)", service_id, backup_id, size)
        await self.prune(service_id)
        return backup_id

    async def prune(self, service_id: uuid.UUID, now: dt.datetime | None = None) -> list[uuid.UUID]:
        """Apply retention to one service's backups: their records, then their files."""
        at = now or utcnow()
        gone = await run_in_transaction(
            self.state, lambda session: backups.prune(session, service_id, at)
        )
        await self._remove_files(service_id, gone)
        return gone

    async def _remove_files(self, service_id: uuid.UUID, gone: list[uuid.UUID]) -> None:
        for backup_id in gone:
            await self.engines.remove(service_id, backup_id)

    async def tick(self, held: Collection[uuid.UUID], now: dt.datetime | None = None) -> None:
        """One round of the schedule over the services this process holds: fail backups a gone
        process left in progress, begin those asked for and those due (in the background), note
        why due ones of services that do not run are not taken, and prune."""
        at = now or utcnow()
        ids, runner = [s for s in held if s not in self._busy], self.runner

        def round_(
            session: Session,
        ) -> tuple[dict[uuid.UUID, uuid.UUID | None], dict[uuid.UUID, list[uuid.UUID]]]:
            """What begins now (service -> the backup asked for, None: a scheduled one), and
            what retention let go of the others (their records deleted in this round)."""
            backups.note(session, backups.stopped_notes(session, at))
            if not ids:
                return {}, {}
            backups.abandon(session, ids, runner)
            ready, notes = backups.due(session, ids, at)
            backups.note(session, notes)
            starting: dict[uuid.UUID, uuid.UUID | None] = dict.fromkeys(ready)
            starting.update(backups.requested(session, ids))
            gone = {
                service_id: backups.prune(session, service_id, at)
                for service_id in ids
                if service_id not in starting  # (a backup prunes its service after it)
            }
            return starting, gone

        starting, gone = await run_in_transaction(self.state, round_)
        for service_id, wanted in starting.items():
            if await self.engines.running(service_id):
                self._begin(service_id, wanted)
            elif wanted is not None:
                await self._not_taken(wanted)
        for service_id, backup_ids in gone.items():
            await self._remove_files(service_id, backup_ids)

    async def _not_taken(self, backup_id: uuid.UUID) -> None:
        await run_in_transaction(
            self.state, lambda session: backups.fail(session, backup_id, NOT_RUNNING)
        )

    def _begin(self, service_id: uuid.UUID, requested: uuid.UUID | None) -> None:
        self._busy.add(service_id)
        task = asyncio.create_task(self.take(service_id, requested))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait(self) -> None:
        """Until the backups begun in the background are over (tests, and shutting down)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.wait()

    # --- restore --------------------------------------------------------------------------

    async def restore(self, service_id: uuid.UUID, backup_id: uuid.UUID) -> None:
        """Restore ``backup_id`` (of another service) into the running engine of the new
        service ``service_id``; BackupFailed says why it could not."""
        if self.supervisor is None:
            raise BackupFailed("a restore runs where the new service's engine runs")
        members = await run_in_transaction(
            self.state,
            lambda session: [(b.service_id, b.id) for b in backups.chain(session, backup_id)],
        )
        target = self.supervisor.backup_path(service_id)
        copies = [target / str(member) for _, member in members]
        try:
            for source_service, member in members:
                source = self.supervisor.backup_path(source_service) / str(member)
                if not source.is_dir():
                    raise BackupFailed(f"backup {member} is no longer on disk")
                await asyncio.to_thread(_copy_tree, source, target / str(member))
            # The copies are the new engine's to read (the server wrote them).
            await asyncio.to_thread(self.supervisor.sandbox.prepare, target, *copies)
            await self._run(service_id, restore_statement(backup_id), "RESTORED")
        finally:
            for copy in copies:
                await asyncio.to_thread(shutil.rmtree, copy, True)
        log.info("service %s restored from backup %s", service_id, backup_id)


def _begun(
    session: Session, service_id: uuid.UUID, runner: str, requested: uuid.UUID | None
) -> tuple[uuid.UUID, uuid.UUID | None]:
    backup = backups.begin(session, service_id, runner, requested)
    return backup.id, backup.base_id


def _copy_tree(source: Path, target: Path) -> None:
    """A copy of ``source`` at ``target`` (never hard links: the new service's engine may write
    in its backup directory, and must not reach the original's files through a shared inode)."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
