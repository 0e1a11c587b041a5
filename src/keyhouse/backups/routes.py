"""The official Backup operations: a service's backups and its backup configuration. (Restore
is ``POST .../services`` with ``backupId``, in ``keyhouse.services.routes``.)"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Response
from sqlalchemy.orm import Session

from keyhouse.api.envelope import Envelope, ok
from keyhouse.auth.permissions import Permission
from keyhouse.auth.principal import Principal
from keyhouse.backups import service
from keyhouse.backups.schemas import Backup, BackupConfiguration, BackupConfigurationPatchRequest
from keyhouse.context import Context, RequireOnService

router = APIRouter(prefix="/organizations/{organizationId}/services/{serviceId}", tags=["Backup"])

ServiceId = Annotated[uuid.UUID, Path(alias="serviceId", description="ID of the service.")]


def _on_service(permission: Permission) -> Any:
    return Depends(RequireOnService(permission))


@router.get("/backups", operation_id="backupGetList", response_model=Envelope[list[Backup]])
async def list_backups(
    ctx: Annotated[Context, _on_service(Permission.SERVICE_VIEW_BACKUPS)], service_id: ServiceId
) -> Response:
    """The service's backups, the most recent first."""

    def backups(session: Session, principal: Principal) -> list[Backup]:
        return [
            Backup.from_row(row) for row in service.list_backups(session, principal, service_id)
        ]

    return ok(await ctx.run(backups))


@router.get("/backups/{backupId}", operation_id="backupGet", response_model=Envelope[Backup])
async def get_backup(
    ctx: Annotated[Context, _on_service(Permission.SERVICE_VIEW_BACKUPS)],
    service_id: ServiceId,
    backup_id: Annotated[uuid.UUID, Path(alias="backupId", description="ID of the backup.")],
) -> Response:
    def backup(session: Session, principal: Principal) -> Backup:
        return Backup.from_row(service.get_backup(session, principal, service_id, backup_id))

    return ok(await ctx.run(backup))


@router.get(
    "/backupConfiguration",
    operation_id="backupConfigurationGet",
    response_model=Envelope[BackupConfiguration],
)
async def get_configuration(
    ctx: Annotated[Context, _on_service(Permission.SERVICE_VIEW_BACKUPS)], service_id: ServiceId
) -> Response:
    def configuration(session: Session, principal: Principal) -> BackupConfiguration:
        config = service.get_configuration(session, principal, service_id)
        return BackupConfiguration.from_config(config)

    return ok(await ctx.run(configuration))


@router.patch(
    "/backupConfiguration",
    operation_id="backupConfigurationUpdate",
    response_model=Envelope[BackupConfiguration],
)
async def update_configuration(
    ctx: Annotated[Context, _on_service(Permission.SERVICE_MANAGE_BACKUPS)],
    service_id: ServiceId,
    body: Annotated[BackupConfigurationPatchRequest, Body()],
) -> Response:
    """Set the fields given; ``null`` resets one to its default."""

    def update(session: Session, principal: Principal) -> BackupConfiguration:
        config = service.update_configuration(session, principal, service_id, body.changes())
        return BackupConfiguration.from_config(config)

    return ok(await ctx.run(update))
