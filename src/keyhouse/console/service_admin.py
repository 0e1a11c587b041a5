"""A service's Backups & settings page: its backups (restore one into a new service), its
backup configuration, its ClickHouse settings, and its metrics (Prometheus' text, read with
the console's session). The same domain functions as the API's operations."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from keyhouse.api.errors import ApiError, BadRequest
from keyhouse.auth.permissions import Permission, instance_resource
from keyhouse.backups import service as backups
from keyhouse.console.services import create_and_show
from keyhouse.console.web import (
    Acting,
    SignInRequired,
    acting,
    error_page,
    form_action,
    friendly,
    login_redirect,
    page,
    read_form,
)
from keyhouse.prometheus import service as prometheus
from keyhouse.prometheus.exposition import render
from keyhouse.service_settings import service as settings
from keyhouse.services import service as services
from keyhouse.services.engines import engines_of
from keyhouse.state import app_state

router = APIRouter(prefix="/console")


def _page_context(session: Session, a: Acting, service_id: uuid.UUID) -> dict[str, Any]:
    service = services.get_service(session, a.principal, service_id)
    resource = instance_resource(service.id)
    may_view_backups = a.principal.can(Permission.SERVICE_VIEW_BACKUPS, resource)
    return {
        "service": service,
        "backups": backups.list_backups(session, a.principal, service_id)
        if may_view_backups
        else [],
        "may_view_backups": may_view_backups,
        "config": backups.config_of(service).effective(),
        "can_manage_backups": a.principal.can(Permission.SERVICE_MANAGE_BACKUPS, resource),
        "can_restore": may_view_backups
        and a.principal.can(Permission.ORGANIZATION_CREATE_SERVICE, f"organization/{a.org.id}"),
        "settings": settings.list_settings(session, a.principal, service_id),
        "can_manage": a.principal.can(Permission.SERVICE_MANAGE, resource),
    }


def _back(org_id: uuid.UUID, service_id: uuid.UUID, notice: str) -> str:
    return f"/console/o/{org_id}/services/{service_id}/backups?msg={notice}"


@router.get("/o/{org_id}/services/{service_id}/backups")
async def backups_page(request: Request, org_id: uuid.UUID, service_id: uuid.UUID) -> Response:
    return await page(
        request,
        org_id,
        lambda session, a: _page_context(session, a, service_id),
        "service_backups.html",
        "services",
    )


@router.post("/o/{org_id}/services/{service_id}/backups/config")
async def backup_config(request: Request, org_id: uuid.UUID, service_id: uuid.UUID) -> Response:
    def work(session: Session, a: Acting, form: dict[str, Any]) -> None:
        changes: dict[str, Any] = {}
        for field, name, number in (
            ("period", "backupPeriodInHours", True),
            ("retention", "backupRetentionPeriodInHours", True),
            ("start_time", "backupStartTime", False),
        ):
            text = str(form.get(field) or "").strip()
            if not text:
                changes[name] = None  # empty: the default
            elif number:
                try:
                    changes[name] = float(text)
                except ValueError:
                    raise BadRequest(f"{name}: must be a number of hours") from None
            else:
                changes[name] = text
        backups.update_configuration(session, a.principal, service_id, changes)

    return await form_action(request, org_id, _back(org_id, service_id, "backups-configured"), work)


async def _refused(
    request: Request, org_id: uuid.UUID, service_id: uuid.UUID, error: ApiError
) -> Response:
    """This page again, saying why the change was refused."""
    return await page(
        request,
        org_id,
        lambda session, a: _page_context(session, a, service_id),
        "service_backups.html",
        "services",
        status=error.status,
        error=friendly(error),
    )


@router.post("/o/{org_id}/services/{service_id}/backups/{backup_id}/restore")
async def restore(
    request: Request, org_id: uuid.UUID, service_id: uuid.UUID, backup_id: uuid.UUID
) -> Response:
    """A new service from the backup (the official restore: ``backupId``, in its region)."""

    def body(session: Session, a: Acting, form: dict[str, Any]) -> dict[str, Any]:
        source = services.get_service(session, a.principal, service_id)
        name = str(form.get("name") or "")
        return {"name": name, "region": source.region, "backupId": str(backup_id)}

    async def refused(error: ApiError) -> Response:
        return await _refused(request, org_id, service_id, error)

    return await create_and_show(request, org_id, body, refused)


@router.post("/o/{org_id}/services/{service_id}/settings")
async def set_setting(request: Request, org_id: uuid.UUID, service_id: uuid.UUID) -> Response:
    """Set one setting: the engine checks it first (the API's own check)."""
    try:
        form = await read_form(request)
        values = {str(form.get("name") or "").strip(): str(form.get("value") or "")}
        await acting(
            request,
            org_id,
            lambda session, a: settings.check_writable(session, a.principal, service_id),
        )
        await settings.check_values(engines_of(app_state(request)), values)
        await acting(
            request,
            org_id,
            lambda session, a: settings.update_settings(session, a.principal, service_id, values),
        )
    except SignInRequired:
        return login_redirect(request)
    except ApiError as error:
        return await _refused(request, org_id, service_id, error)
    return Response(status_code=303, headers={"Location": _back(org_id, service_id, "setting-set")})


@router.post("/o/{org_id}/services/{service_id}/settings/{name}/delete")
async def reset_setting(
    request: Request, org_id: uuid.UUID, service_id: uuid.UUID, name: str
) -> Response:
    def work(session: Session, a: Acting, form: dict[str, Any]) -> None:
        settings.delete_setting(session, a.principal, service_id, name)

    return await form_action(request, org_id, _back(org_id, service_id, "setting-reset"), work)


@router.get("/o/{org_id}/services/{service_id}/metrics")
async def metrics(request: Request, org_id: uuid.UUID, service_id: uuid.UUID) -> Response:
    """The service's metrics as its Prometheus operation answers them (never waking it)."""
    state = app_state(request)
    try:
        target = await acting(
            request,
            org_id,
            lambda session, a: prometheus.service_target(session, a.principal, service_id),
        )
    except SignInRequired:
        return login_redirect(request)
    except ApiError as error:
        return error_page(request, error)
    scraped = await prometheus.scrape(state.engines, [target], state.settings.clickhouse_host)
    return Response(render(scraped), media_type="text/plain; charset=utf-8")
