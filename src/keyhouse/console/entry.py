"""Console entry: first-run setup, sign-in and sign-out, and accepting an invitation."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from keyhouse.activities.service import record
from keyhouse.api.errors import ApiError, Forbidden, NotFound
from keyhouse.auth.principal import Principal
from keyhouse.console.sessions import (
    SESSION_COOKIE,
    check_password,
    end_session,
    purge_idle_sessions,
    start_session,
)
from keyhouse.console.web import (
    SignInRequired,
    acting,
    client_ip,
    error_page,
    friendly,
    orgs_of,
    read_form,
    redirect,
    render,
    set_session_cookie,
)
from keyhouse.invitations import service as invitations
from keyhouse.models import Organization
from keyhouse.organizations.service import create_organization
from keyhouse.state import app_state
from keyhouse.transactions import run_in_transaction

router = APIRouter(prefix="/console")


def _has_organization(session: Session) -> bool:
    return bool(session.scalar(select(func.count()).select_from(Organization)))


@router.get("")
async def home(request: Request) -> Response:
    if not await run_in_transaction(app_state(request), _has_organization):
        return redirect("/console/setup")
    try:
        org = await acting(request, None, lambda _s, a: a.org)
    except SignInRequired:
        return redirect("/console/login")
    except NotFound:
        return render(
            request,
            "error.html",
            title="No organization",
            message="You are not a member of any organization any more.",
        )
    return redirect(f"/console/o/{org.id}/keys")


@router.get("/switch")
async def switch(request: Request, org: uuid.UUID) -> Response:
    return redirect(f"/console/o/{org}/keys")


@router.get("/setup")
async def setup_page(request: Request) -> Response:
    if await run_in_transaction(app_state(request), _has_organization):
        return redirect("/console/login")
    return render(request, "setup.html", form={})


@router.post("/setup")
async def setup(request: Request) -> Response:
    state = app_state(request)
    try:
        form = await read_form(request)
    except ApiError as error:
        return error_page(request, error)

    def create(session: Session) -> str:
        if _has_organization(session):
            raise Forbidden("Keyhouse is already set up: sign in instead")
        created = create_organization(
            session,
            name=str(form.get("org_name") or ""),
            email=str(form.get("email") or ""),
            user_name=str(form.get("name") or ""),
            password=str(form.get("password") or ""),
        )
        token = start_session(session, state.pepper, created.user_id)
        return f"{token}|{created.organization_id}"

    try:
        result = await run_in_transaction(state, create)
    except ApiError as error:
        return render(request, "setup.html", status=error.status, form=form, error=friendly(error))
    token, org_id = result.split("|")
    response = redirect(f"/console/o/{org_id}/keys")
    set_session_cookie(request, response, token)
    return response


@router.get("/login")
async def login_page(request: Request, next: str = "") -> Response:  # noqa: A002
    if not await run_in_transaction(app_state(request), _has_organization):
        return redirect("/console/setup")
    return render(request, "login.html", next=next)


@router.post("/login")
async def login(request: Request) -> Response:
    state = app_state(request)
    try:
        form = await read_form(request)
    except ApiError as error:
        return error_page(request, error)
    email = str(form.get("email") or "").strip().lower()
    password = str(form.get("password") or "")
    target = str(form.get("next") or "")
    if not target.startswith("/console/") or target.startswith("//"):
        target = "/console"
    ip, agent = client_ip(request), request.headers.get("user-agent")
    throttle = state.login_throttle
    if not throttle.attempt(email, ip):
        return render(
            request,
            "login.html",
            status=429,
            email=email,
            next=target,
            error="Too many sign-in attempts. Wait 15 minutes and try again.",
        )

    idle = dt.timedelta(minutes=state.settings.session_idle_minutes)

    def sign_in(session: Session) -> str | None:
        purge_idle_sessions(session, idle=idle)
        user = check_password(session, email, password)
        outcome = "user_login" if user else "user_login_failed"
        subject = user.id if user else _user_id_by_email(session, email)
        if subject is not None:
            for org in orgs_of(session, subject):
                actor = Principal(
                    actor_type="user",
                    actor_id=subject,
                    organization_id=org.id,
                    name=email,
                    ip_address=ip,
                    user_agent=agent,
                )
                record(session, actor, outcome)
        return start_session(session, state.pepper, user.id) if user else None

    token = await run_in_transaction(state, sign_in)
    if token is None:
        return render(
            request,
            "login.html",
            status=401,
            email=email,
            next=target,
            error="Wrong email or password.",
        )
    throttle.succeeded(email)
    response = redirect(target)
    set_session_cookie(request, response, token)
    return response


def _user_id_by_email(session: Session, email: str) -> uuid.UUID | None:
    from keyhouse.models import User

    return session.scalar(select(User.id).where(User.email == email))


@router.post("/logout")
async def logout(request: Request) -> Response:
    state = app_state(request)
    try:
        await read_form(request)
    except ApiError as error:
        return error_page(request, error)
    token = request.cookies.get(SESSION_COOKIE)
    await run_in_transaction(state, lambda s: end_session(s, state.pepper, token))
    response = redirect("/console/login")
    response.delete_cookie(SESSION_COOKIE, path="/console")
    return response


@router.get("/invitations/accept")
async def accept_page(request: Request, token: str = "") -> Response:
    state = app_state(request)

    def look(session: Session) -> dict[str, Any]:
        try:
            invitation = invitations.find_by_token(session, pepper=state.pepper, token=token)
        except NotFound:
            return {"invitation_ok": False}
        org = session.get(Organization, invitation.organization_id)
        return {
            "invitation_ok": True,
            "organization_name": org.name if org else "",
            "email": invitation.email,
            "existing": _user_id_by_email(session, invitation.email) is not None,
        }

    context = await run_in_transaction(state, look)
    return render(request, "accept.html", token=token, **context)


@router.post("/invitations/accept")
async def accept(request: Request) -> Response:
    state = app_state(request)
    try:
        form = await read_form(request)
    except ApiError as error:
        return error_page(request, error)
    token = str(form.get("token") or "")
    password = str(form.get("password") or "")

    def join(session: Session) -> str:
        invitation = invitations.find_by_token(session, pepper=state.pepper, token=token)
        existing = _user_id_by_email(session, invitation.email)
        if existing is not None and check_password(session, invitation.email, password) is None:
            raise Forbidden("Enter the password of your existing Keyhouse account")
        accepted = invitations.accept_invitation(
            session,
            pepper=state.pepper,
            token=token,
            name=str(form.get("name") or ""),
            password=password,
        )
        session_token = start_session(session, state.pepper, accepted.user_id)
        return f"{session_token}|{accepted.organization_id}"

    try:
        result = await run_in_transaction(state, join)
    except ApiError as error:
        return render(
            request,
            "accept.html",
            status=error.status,
            token=token,
            invitation_ok=error.status != 404,
            error=friendly(error),
        )
    session_token, org_id = result.split("|")
    response = redirect(f"/console/o/{org_id}/keys?msg=welcome")
    set_session_cookie(request, response, session_token)
    return response
