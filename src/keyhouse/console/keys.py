"""The API Keys page: list, create (the secret shown once), edit, disable/enable, delete."""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from keyhouse.api.errors import ApiError, BadRequest, Forbidden
from keyhouse.api_keys import service as keys
from keyhouse.api_keys.schemas import ApiKeyPatchRequest, ApiKeyPostRequest, IpAccessListEntry
from keyhouse.auth.permissions import Permission
from keyhouse.console.web import (
    EXPIRATIONS,
    Acting,
    SignInRequired,
    acting,
    base_url,
    can,
    error_page,
    form_action,
    friendly,
    grantable,
    login_redirect,
    page,
    read_form,
    redirect,
    render_as,
)
from keyhouse.db import utcnow
from keyhouse.state import app_state

router = APIRouter(prefix="/console")


@router.get("/o/{org_id}/keys")
async def keys_page(request: Request, org_id: uuid.UUID) -> Response:
    def work(session: Session, a: Acting) -> dict[str, Any]:
        found = []
        if can(a, Permission.ORGANIZATION_VIEW_API_KEYS):
            found = list(keys.key_view_page(session, a.principal, limit=250, cursor=None).keys)
        return {
            "keys": found,
            "can_create": can(a, Permission.ORGANIZATION_CREATE_API_KEYS),
            "can_update": can(a, Permission.ORGANIZATION_UPDATE_API_KEYS),
            "can_delete": can(a, Permission.ORGANIZATION_DELETE_API_KEYS),
        }

    return await page(request, org_id, work, "keys.html", "keys")


def _expiry(form: dict[str, Any]) -> tuple[bool, dt.datetime | None]:
    """(given, value) from the expiration choice; raises BadRequest for a bad date."""
    choice = str(form.get("expiration") or "never")
    if choice == "keep":
        return False, None
    if choice == "never":
        return True, None
    if choice == "date":
        try:
            day = dt.date.fromisoformat(str(form.get("expire_date") or ""))
        except ValueError:
            raise BadRequest("Choose an expiration date") from None
        return True, dt.datetime.combine(day, dt.time(23, 59, 59), tzinfo=dt.UTC)
    if choice not in {value for value, _ in EXPIRATIONS}:
        raise BadRequest("Choose an expiration")
    return True, utcnow() + dt.timedelta(days=int(choice))


def _ip_list(form: dict[str, Any]) -> list[IpAccessListEntry] | None:
    text = str(form.get("ip_access_list") or "")
    entries = [part.strip() for part in text.replace(",", "\n").splitlines() if part.strip()]
    if not entries:
        return None
    parsed = []
    for entry in entries:
        try:
            parsed.append(IpAccessListEntry(source=entry))
        except ValidationError:
            raise BadRequest(f"Invalid IP address or CIDR: {entry}") from None
    return parsed


def _key_form(form: dict[str, Any] | None = None, **defaults: Any) -> dict[str, Any]:
    values = {"name": "", "roles": [], "expiration": "never", "expire_date": "", **defaults}
    values.update({k: v for k, v in (form or {}).items() if k != "csrf_token"})
    return values


@router.get("/o/{org_id}/keys/new")
async def new_key_page(request: Request, org_id: uuid.UUID) -> Response:
    def work(session: Session, a: Acting) -> dict[str, Any]:
        if not can(a, Permission.ORGANIZATION_CREATE_API_KEYS):
            raise Forbidden("Your role cannot create API keys")
        return {"roles": grantable(session, a)}

    return await page(
        request,
        org_id,
        work,
        "key_form.html",
        "keys",
        form=_key_form(),
        expirations=EXPIRATIONS,
        nonce=secrets.token_urlsafe(24),
        action=f"/console/o/{org_id}/keys",
        key=None,
    )


@router.post("/o/{org_id}/keys")
async def create_key(request: Request, org_id: uuid.UUID) -> Response:
    state = app_state(request)
    try:
        form = await read_form(request)
    except ApiError as error:
        return error_page(request, error)
    nonce = str(form.get("nonce") or "")[:64] or None

    def work(session: Session, a: Acting) -> dict[str, Any]:
        try:
            _given, expire_at = _expiry(form)
            body = ApiKeyPostRequest(
                name=str(form.get("name") or "").strip() or "",
                assigned_role_ids=[uuid.UUID(r) for r in form["roles"]],
                expire_at=expire_at,
                ip_access_list=_ip_list(form),
            )
        except (ValueError, ValidationError):
            raise BadRequest("Give the key a name and choose its permissions") from None
        created = keys.create_key(
            session,
            a.principal,
            body,
            pepper=state.pepper,
            max_keys=state.settings.max_keys_per_organization,
            creation_nonce=nonce,
        )
        return {"key_id": created.key_id, "key_secret": created.key_secret, "acting": a}

    try:
        result = await acting(request, org_id, work)
    except SignInRequired:
        return login_redirect(request)
    except ApiError as error:
        if "already created" in error.message:
            return redirect(f"/console/o/{org_id}/keys?msg=already-created")

        def again(session: Session, a: Acting) -> dict[str, Any]:
            return {"roles": grantable(session, a), "acting": a}

        try:
            context = await acting(request, org_id, again)
        except (SignInRequired, ApiError):
            return error_page(request, error)
        who = context.pop("acting")
        return render_as(
            request,
            "key_form.html",
            who,
            "keys",
            status=error.status,
            form=_key_form(form),
            expirations=EXPIRATIONS,
            nonce=secrets.token_urlsafe(24),
            action=f"/console/o/{org_id}/keys",
            key=None,
            error=friendly(error),
            **context,
        )
    who = result.pop("acting")
    return render_as(request, "key_created.html", who, "keys", base_url=base_url(request), **result)


@router.get("/o/{org_id}/keys/{key_id}/edit")
async def edit_key_page(request: Request, org_id: uuid.UUID, key_id: uuid.UUID) -> Response:
    def work(session: Session, a: Acting) -> dict[str, Any]:
        if not can(a, Permission.ORGANIZATION_UPDATE_API_KEYS):
            raise Forbidden("Your role cannot change API keys")
        key = keys.get_key_view(session, a.principal, key_id)
        offered = grantable(session, a)
        held = {str(r.role_id) for r in key.assigned_roles}
        return {
            "key": key,
            "roles": offered,
            "form": _key_form(name=key.name, roles=list(held), expiration="keep"),
        }

    return await page(
        request,
        org_id,
        work,
        "key_form.html",
        "keys",
        expirations=EXPIRATIONS,
        nonce=None,
        action=f"/console/o/{org_id}/keys/{key_id}/edit",
    )


@router.post("/o/{org_id}/keys/{key_id}/edit")
async def edit_key(request: Request, org_id: uuid.UUID, key_id: uuid.UUID) -> Response:
    def work(session: Session, a: Acting, form: dict[str, Any]) -> None:
        given, expire_at = _expiry(form)
        changes: dict[str, Any] = {
            "name": str(form.get("name") or "").strip(),
            "assigned_role_ids": [uuid.UUID(r) for r in form["roles"]],
        }
        if given:
            changes["expire_at"] = expire_at
        try:
            patch = ApiKeyPatchRequest(**changes)
        except ValidationError:
            raise BadRequest("Give the key a name") from None
        keys.update_key(session, a.principal, key_id, patch)

    return await form_action(request, org_id, f"/console/o/{org_id}/keys?msg=updated", work)


@router.post("/o/{org_id}/keys/{key_id}/state")
async def key_state(request: Request, org_id: uuid.UUID, key_id: uuid.UUID) -> Response:
    def wanted(form: dict[str, Any]) -> str:
        return "enabled" if form.get("state") == "enabled" else "disabled"

    def work(session: Session, a: Acting, form: dict[str, Any]) -> None:
        keys.update_key(session, a.principal, key_id, ApiKeyPatchRequest(state=wanted(form)))

    return await form_action(
        request, org_id, lambda form: f"/console/o/{org_id}/keys?msg={wanted(form)}", work
    )


@router.get("/o/{org_id}/keys/{key_id}/delete")
async def delete_key_page(request: Request, org_id: uuid.UUID, key_id: uuid.UUID) -> Response:
    def work(session: Session, a: Acting) -> dict[str, Any]:
        key = keys.get_key_view(session, a.principal, key_id)
        if not can(a, Permission.ORGANIZATION_DELETE_API_KEYS):
            raise Forbidden("Your role cannot delete API keys")
        return {
            "title": f"Delete API key “{key.name}”",
            "warning": (
                f"Deleting the key ending in {key.key_suffix} is permanent. Every script, "
                "CLI and Terraform run that uses it is cut off at once, on every server."
            ),
        }

    return await page(
        request,
        org_id,
        work,
        "confirm.html",
        "keys",
        action=f"/console/o/{org_id}/keys/{key_id}/delete",
        button="Delete API key",
        cancel=f"/console/o/{org_id}/keys",
    )


@router.post("/o/{org_id}/keys/{key_id}/delete")
async def delete_key(request: Request, org_id: uuid.UUID, key_id: uuid.UUID) -> Response:
    def work(session: Session, a: Acting, form: dict[str, Any]) -> None:
        keys.delete_key(session, a.principal, key_id)

    return await form_action(request, org_id, f"/console/o/{org_id}/keys?msg=deleted", work)
