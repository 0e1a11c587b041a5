"""The official ``clickhouseSettings`` operations (beta): list, get one, the schema, set
(PATCH) and reset one (DELETE)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Request, Response
from sqlalchemy.orm import Session

from keyhouse.api.envelope import EmptyEnvelope, Envelope, ok
from keyhouse.auth.permissions import Permission
from keyhouse.auth.principal import Principal
from keyhouse.context import Context, RequireOnService
from keyhouse.service_settings import service
from keyhouse.service_settings.schemas import (
    ServiceClickhouseSetting,
    ServiceClickhouseSettingSchemaEntry,
    ServiceClickhouseSettingsList,
    ServiceClickhouseSettingsPatchRequest,
    ServiceClickhouseSettingsPatchResponse,
    ServiceClickhouseSettingsSchema,
)
from keyhouse.services.engines import engines_of
from keyhouse.state import app_state

router = APIRouter(
    prefix="/organizations/{organizationId}/services/{serviceId}/clickhouseSettings",
    tags=["Service"],
)

ServiceId = Annotated[uuid.UUID, Path(alias="serviceId", description="ID of the service.")]
SettingName = Annotated[
    str, Path(alias="settingName", description="Name of the setting.", max_length=255)
]


def _on_service(permission: Permission) -> Any:
    return Depends(RequireOnService(permission))


async def _known(request: Request) -> dict[str, service.SettingInfo]:
    return service.catalog(await engines_of(app_state(request)).catalog())


@router.get(
    "",
    operation_id="serviceClickhouseSettingsListGet",
    response_model=Envelope[ServiceClickhouseSettingsList],
)
async def list_settings(
    ctx: Annotated[Context, _on_service(Permission.SERVICE_VIEW)], service_id: ServiceId
) -> Response:
    """The settings set on the service (only those)."""

    def settings(session: Session, principal: Principal) -> ServiceClickhouseSettingsList:
        values = service.list_settings(session, principal, service_id)
        return ServiceClickhouseSettingsList(
            settings=[ServiceClickhouseSetting(name=n, value=v) for n, v in values.items()]
        )

    return ok(await ctx.run(settings))


@router.get(
    "/schema",
    operation_id="serviceClickhouseSettingsSchemaGet",
    response_model=Envelope[ServiceClickhouseSettingsSchema],
)
async def schema(
    request: Request,
    ctx: Annotated[Context, _on_service(Permission.SERVICE_VIEW)],
    service_id: ServiceId,
) -> Response:
    """Every setting the service may set: the engine's own, with their types, descriptions,
    defaults (as ``example``) and the warnings of disruptive ones."""
    await ctx.run(lambda session, principal: service.check_readable(session, principal, service_id))
    known = await _known(request)
    entries = [
        ServiceClickhouseSettingSchemaEntry(
            name=info.name,
            type=info.type,
            description=info.description,
            enum=[0, 1] if info.type == "Bool" else None,
            warning=service.WARNINGS.get(info.name),
            example=info.default,
        )
        for info in known.values()
    ]
    return ok(ServiceClickhouseSettingsSchema(settings=entries))


@router.get(
    "/{settingName}",
    operation_id="serviceClickhouseSettingGet",
    response_model=Envelope[ServiceClickhouseSetting],
)
async def get_setting(
    request: Request,
    ctx: Annotated[Context, _on_service(Permission.SERVICE_VIEW)],
    service_id: ServiceId,
    name: SettingName,
) -> Response:
    """The setting's value for the service: its own, else the engine's default."""
    own = await ctx.run(
        lambda session, principal: service.list_settings(session, principal, service_id)
    )
    if name in own:
        return ok(ServiceClickhouseSetting(name=name, value=own[name]))
    return ok(
        ServiceClickhouseSetting(name=name, value=service.default_of(name, await _known(request)))
    )


@router.patch(
    "",
    operation_id="serviceClickhouseSettingsUpdate",
    response_model=Envelope[ServiceClickhouseSettingsPatchResponse],
)
async def update_settings(
    request: Request,
    ctx: Annotated[Context, _on_service(Permission.SERVICE_MANAGE)],
    service_id: ServiceId,
    body: Annotated[ServiceClickhouseSettingsPatchRequest, Body()],
) -> Response:
    """Set one or more settings; each is checked by the engine first (a 400 names the one it
    refuses), and nothing is stored unless all pass."""
    values = service.requested(body.model_dump())
    await ctx.run(lambda session, principal: service.check_writable(session, principal, service_id))
    await service.check_values(engines_of(app_state(request)), values)

    def update(session: Session, principal: Principal) -> ServiceClickhouseSettingsPatchResponse:
        applied = service.update_settings(session, principal, service_id, values)
        return ServiceClickhouseSettingsPatchResponse.model_validate(
            {"settings": applied, "warnings": service.warnings(applied)}
        )

    return ok(await ctx.run(update))


@router.delete(
    "/{settingName}", operation_id="serviceClickhouseSettingDelete", response_model=EmptyEnvelope
)
async def delete_setting(
    ctx: Annotated[Context, _on_service(Permission.SERVICE_MANAGE)],
    service_id: ServiceId,
    name: SettingName,
) -> Response:
    """Back to the engine's default (a setting never set: nothing to do, 200)."""
    await ctx.run(
        lambda session, principal: service.delete_setting(session, principal, service_id, name)
    )
    return ok(None)
