"""A new service on an engine host, created from a backup (``backupId``) of a service on an
engine host: its agent starts an empty engine (reporting it running changes nothing while the
restore is pending, and its queries get 503 meanwhile); the process holding the deployment's
host-backups schedule copies the backup's chain from the source's host to the new service's,
runs ``RESTORE ALL`` there, removes the copies, and clears the pending restore. A restore that
fails turns the service ``failed`` with the reason (delete it, and restore into a new one)."""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from keyhouse.backups import service as backups
from keyhouse.backups.runner import restore_statement
from keyhouse.engine.protocol import ClickHouseError
from keyhouse.engine.supervisor import EngineUnavailable
from keyhouse.hosts import channel
from keyhouse.hosts.channel import ChannelError
from keyhouse.hosts.drain import MoveFailed, copy_between, statement
from keyhouse.hosts.remote import RemoteHosts
from keyhouse.models import Service
from keyhouse.services.states import COMING_UP, State
from keyhouse.transactions import run_in_transaction

if TYPE_CHECKING:
    from keyhouse.state import AppState

log = logging.getLogger("keyhouse.hosts")


def pending(session: Any) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """(service, backup) for each service on a host coming up with a restore pending."""
    rows = session.execute(
        select(Service.id, Service.restore_from).where(
            Service.host_id.is_not(None),
            Service.restore_from.is_not(None),
            Service.state.in_([state.value for state in COMING_UP]),
        )
    )
    return [(service_id, backup_id) for service_id, backup_id in rows]


async def restore_on_host(
    state: AppState, hosts: RemoteHosts, service_id: uuid.UUID, backup_id: uuid.UUID
) -> None:
    """Restore ``backup_id`` into the new service ``service_id`` on its host (see above)."""
    members = await run_in_transaction(
        state, lambda session: [(b.service_id, b.id) for b in backups.chain(session, backup_id)]
    )
    target = await hosts.placed(service_id)
    copied: list[uuid.UUID] = []
    try:
        if target is None or target.route.unix is not None:
            raise MoveFailed("the new service runs on no engine host")
        for source_service, member in members:
            source = await hosts.placed(source_service)
            if source is None or source.route.unix is not None:
                raise MoveFailed(f"backup {member} is not on an engine host")
            more = {"name": str(member)}
            await copy_between(source.route, source_service, target.route, service_id,
                               "backup", more)  # fmt: skip
            copied.append(member)
        await statement(target.route, service_id, restore_statement(backup_id), wait=True)
    except (MoveFailed, ChannelError, ClickHouseError, EngineUnavailable, OSError) as error:
        why = f"restoring backup {backup_id} failed: {error}"
        log.error("service %s: %s", service_id, why)

        def failed(session: Any) -> None:
            service = session.get(Service, service_id, with_for_update=True)
            if service is not None and State(service.state) in COMING_UP:
                service.state, service.failure = State.FAILED.value, why[:512]

        await run_in_transaction(state, failed)
        return
    finally:
        if target is not None and target.route.unix is None:
            for member in copied:  # (restored: the engine's tables hold the data now)
                try:
                    await channel.ask(target.route, "forget", service_id, what="backup",
                                      name=str(member))  # fmt: skip
                except (ChannelError, OSError, TimeoutError) as error:
                    log.warning("service %s: a restored copy stays (%s)", service_id, error)
    await run_in_transaction(state, lambda session: backups.restored(session, service_id))
    hosts.forget(service_id)
    log.info("service %s restored from backup %s on its host", service_id, backup_id)
