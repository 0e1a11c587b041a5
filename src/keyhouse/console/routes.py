"""Console pages. Each handler does its database work in one transaction on the app's threads
(``run_in_transaction``) and calls the same service functions as the API, acting as the signed-in
user, so roles, limits, no-escalation and activity records are the same."""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlencode, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from keyhouse.activities import service as activities
from keyhouse.activities.service import record
from keyhouse.api.errors import ApiError, BadRequest, Forbidden, NotFound
from keyhouse.api.wire import unstorable_text
from keyhouse.api_keys import service as keys
from keyhouse.api_keys.schemas import ApiKeyPatchRequest, ApiKeyPostRequest, IpAccessListEntry
from keyhouse.auth.network import in_networks, request_address
from keyhouse.auth.permissions import Permission, organization_resource
from keyhouse.auth.principal import Principal
from keyhouse.auth.service import user_principal
from keyhouse.console.sessions import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    SignedIn,
    check_password,
    csrf_ok,
    csrf_token,
    current_user,
    end_session,
    new_csrf_token,
    purge_idle_sessions,
    start_session,
)
from keyhouse.db import utcnow
from keyhouse.invitations import service as invitations
from keyhouse.members import service as members
from keyhouse.models import Membership, Organization, Role
from keyhouse.organizations.service import create_organization
from keyhouse.roles import service as roles
from keyhouse.state import AppState
from keyhouse.transactions import run_in_transaction

T = TypeVar("T")

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
EXPIRATIONS = [
    ("never", "Never"),
    ("30", "30 days"),
    ("90", "90 days"),
    ("180", "180 days"),
    ("365", "365 days"),
    ("date", "On a date…"),
]
NOTICES = {
    "updated": "The API key was updated.",
    "disabled": "The API key was disabled: requests with it are refused from now on.",
    "enabled": "The API key was enabled.",
    "deleted": "The API key was deleted. Every client using it is cut off.",
    "already-created": "That key was already created; its secret is shown only once.",
    "member-updated": "The member's role was changed.",
    "member-removed": "The member was removed and signed out.",
    "invited": "The invitation was sent.",
    "invitation-deleted": "The invitation was deleted.",
    "welcome": "Welcome! You joined the organization.",
}

# No inline script or style anywhere in the console, no framing, forms post only to itself.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)

router = APIRouter(prefix="/console", include_in_schema=False)


class SignInRequired(Exception):
    pass


class _SignedOut:
    """Returned (not raised) from a transaction that found no live session, so it commits."""


@dataclass(frozen=True)
class OrgView:
    id: uuid.UUID
    name: str


@dataclass(frozen=True)
class Acting:
    """The signed-in user, acting in one of their organizations."""

    user: SignedIn
    principal: Principal
    org: OrgView
    orgs: list[OrgView]


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.keyhouse
    return state


def _client_ip(request: Request) -> str | None:
    return request_address(request, _state(request).trusted_proxies)


def _served_over_https(request: Request) -> bool:
    """HTTPS directly, or behind a trusted proxy that says so (X-Forwarded-Proto)."""
    if request.url.scheme == "https":
        return True
    peer = request.client.host if request.client else None
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return (
        forwarded == "https"
        and peer is not None
        and in_networks(peer, _state(request).trusted_proxies)
    )


def _base_url(request: Request) -> str:
    return (_state(request).settings.public_url or str(request.base_url)).rstrip("/")


def friendly(error: ApiError) -> str:
    """Service messages without the wire's 'FORBIDDEN:'-style prefixes."""
    message = error.message
    for prefix in ("FORBIDDEN: ", "UNAUTHORIZED: "):
        message = message.removeprefix(prefix)
    if error.status == 403 and "requires the" in message:
        return "Your role does not allow this. " + message
    return message


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    csrf = request.cookies.get(CSRF_COOKIE) or new_csrf_token()
    token = csrf_token(_state(request).pepper, request.cookies.get(SESSION_COOKIE), csrf)
    response = TEMPLATES.TemplateResponse(
        request, template, {"csrf_token": token, "now": utcnow(), **context}, status_code=status
    )
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    if request.cookies.get(CSRF_COOKIE) != csrf:
        response.set_cookie(
            CSRF_COOKIE,
            csrf,
            httponly=True,
            samesite="lax",
            secure=_served_over_https(request),
            path="/console",
        )
    return response


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _session_cookie(request: Request, response: Response, token: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        samesite="lax",
        secure=_served_over_https(request),
        path="/console",
    )


def _same_origin(request: Request) -> bool:
    """A browser names the page a post comes from in ``Origin`` (and ``Sec-Fetch-Site``); a
    post from any other site is refused. Clients that send neither are judged by the token."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    allowed = {request.headers.get("host", "")}
    public_url = _state(request).settings.public_url
    if public_url:
        allowed.add(urlsplit(public_url).netloc)
    return origin != "null" and urlsplit(origin).netloc in allowed


async def _form(request: Request) -> dict[str, Any]:
    """The submitted form, after the origin and CSRF checks (otherwise refused, 403)."""
    if not _same_origin(request):
        raise Forbidden("This form was posted from another site and was refused.")
    form = await request.form()
    values: dict[str, Any] = {key: form.get(key) for key in form}
    values["roles"] = [str(v) for v in form.getlist("roles")]
    for key in form:
        for value in form.getlist(key):
            problem = unstorable_text(value) if isinstance(value, str) else "must be text"
            if problem:
                raise BadRequest(f"The field {key!r} {problem}.")
    expected = csrf_token(
        _state(request).pepper,
        request.cookies.get(SESSION_COOKIE),
        request.cookies.get(CSRF_COOKIE) or "",
    )
    if not csrf_ok(expected, values.get("csrf_token")):
        raise Forbidden(
            "This form has expired or did not come from this console. Reload the page and retry."
        )
    return values


def _orgs_of(session: Session, user_id: uuid.UUID) -> list[OrgView]:
    rows = session.execute(
        select(Organization.id, Organization.name)
        .join(Membership, Membership.organization_id == Organization.id)
        .where(Membership.user_id == user_id)
        .order_by(Organization.name)
    )
    return [OrgView(org_id, name) for org_id, name in rows]


async def acting(
    request: Request, org_id: uuid.UUID | None, work: Callable[[Session, Acting], T]
) -> T:
    """Run ``work`` in one transaction as the signed-in user in ``org_id``."""
    state = _state(request)
    token = request.cookies.get(SESSION_COOKIE)
    idle = dt.timedelta(minutes=state.settings.session_idle_minutes)
    ip, agent = _client_ip(request), request.headers.get("user-agent")

    def run(session: Session) -> T | _SignedOut:
        user = current_user(session, state.pepper, token, idle=idle)
        if user is None:  # commit, so that an idle session current_user deleted stays deleted
            return _SignedOut()
        orgs = _orgs_of(session, user.user_id)
        org = next((o for o in orgs if o.id == org_id), None) if org_id else None
        if org is None:
            if org_id is not None or not orgs:
                raise NotFound("You are not a member of this organization")
            org = orgs[0]
        principal = user_principal(
            session,
            user_id=user.user_id,
            name=user.email,
            organization_id=org.id,
            ip_address=ip,
            user_agent=agent,
        )
        return work(session, Acting(user, principal, org, orgs))

    result = await run_in_transaction(state, run)
    if isinstance(result, _SignedOut):
        raise SignInRequired
    return result


def _login_redirect(request: Request) -> RedirectResponse:
    return redirect("/console/login?" + urlencode({"next": request.url.path}))


def _error_page(request: Request, error: ApiError) -> HTMLResponse:
    title = {403: "Not allowed", 404: "Not found"}.get(error.status, "Something went wrong")
    return render(request, "error.html", status=error.status, title=title, message=friendly(error))


async def page(
    request: Request,
    org_id: uuid.UUID | None,
    work: Callable[[Session, Acting], dict[str, Any]],
    template: str,
    nav: str,
    status: int = 200,
    **extra: Any,
) -> Response:
    """A GET page: the user's data, rendered; sign-in and errors handled alike everywhere."""
    try:
        context = await acting(request, org_id, lambda s, a: {**work(s, a), "_acting": a})
    except SignInRequired:
        return _login_redirect(request)
    except ApiError as error:
        return _error_page(request, error)
    who: Acting = context.pop("_acting")
    notice = NOTICES.get(request.query_params.get("msg", ""))
    return render(
        request,
        template,
        status=status,
        user=who.user,
        org=who.org,
        orgs=who.orgs,
        nav=nav,
        notice=notice,
        **{**extra, **context},
    )


# --- entry, setup, sign-in ------------------------------------------------------------------


def _has_organization(session: Session) -> bool:
    return bool(session.scalar(select(func.count()).select_from(Organization)))


@router.get("")
async def home(request: Request) -> Response:
    if not await run_in_transaction(_state(request), _has_organization):
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
    if await run_in_transaction(_state(request), _has_organization):
        return redirect("/console/login")
    return render(request, "setup.html", form={})


@router.post("/setup")
async def setup(request: Request) -> Response:
    state = _state(request)
    try:
        form = await _form(request)
    except ApiError as error:
        return _error_page(request, error)

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
    _session_cookie(request, response, token)
    return response


@router.get("/login")
async def login_page(request: Request, next: str = "") -> Response:  # noqa: A002
    if not await run_in_transaction(_state(request), _has_organization):
        return redirect("/console/setup")
    return render(request, "login.html", next=next)


@router.post("/login")
async def login(request: Request) -> Response:
    state = _state(request)
    try:
        form = await _form(request)
    except ApiError as error:
        return _error_page(request, error)
    email = str(form.get("email") or "").strip().lower()
    password = str(form.get("password") or "")
    target = str(form.get("next") or "")
    if not target.startswith("/console/") or target.startswith("//"):
        target = "/console"
    ip, agent = _client_ip(request), request.headers.get("user-agent")
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
            for org in _orgs_of(session, subject):
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
    _session_cookie(request, response, token)
    return response


def _user_id_by_email(session: Session, email: str) -> uuid.UUID | None:
    from keyhouse.models import User

    return session.scalar(select(User.id).where(User.email == email))


@router.post("/logout")
async def logout(request: Request) -> Response:
    state = _state(request)
    try:
        await _form(request)
    except ApiError as error:
        return _error_page(request, error)
    token = request.cookies.get(SESSION_COOKIE)
    await run_in_transaction(state, lambda s: end_session(s, state.pepper, token))
    response = redirect("/console/login")
    response.delete_cookie(SESSION_COOKIE, path="/console")
    return response


# --- invitations ----------------------------------------------------------------------------


@router.get("/invitations/accept")
async def accept_page(request: Request, token: str = "") -> Response:
    state = _state(request)

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
    state = _state(request)
    try:
        form = await _form(request)
    except ApiError as error:
        return _error_page(request, error)
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
    _session_cookie(request, response, session_token)
    return response


# --- API keys -------------------------------------------------------------------------------


def _can(acting_as: Acting, permission: Permission) -> bool:
    return acting_as.principal.can(permission, organization_resource(acting_as.org.id))


def _grantable(session: Session, acting_as: Acting) -> list[Role]:
    return roles.grantable_roles(session, acting_as.principal)


@router.get("/o/{org_id}/keys")
async def keys_page(request: Request, org_id: uuid.UUID) -> Response:
    def work(session: Session, a: Acting) -> dict[str, Any]:
        found = []
        if _can(a, Permission.ORGANIZATION_VIEW_API_KEYS):
            found = keys.describe(
                session, keys.list_keys(session, a.principal, limit=250, cursor=None).keys
            )
        return {
            "keys": found,
            "can_create": _can(a, Permission.ORGANIZATION_CREATE_API_KEYS),
            "can_update": _can(a, Permission.ORGANIZATION_UPDATE_API_KEYS),
            "can_delete": _can(a, Permission.ORGANIZATION_DELETE_API_KEYS),
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
        if not _can(a, Permission.ORGANIZATION_CREATE_API_KEYS):
            raise Forbidden("Your role cannot create API keys")
        return {"roles": _grantable(session, a)}

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
    state = _state(request)
    try:
        form = await _form(request)
    except ApiError as error:
        return _error_page(request, error)
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
        return _login_redirect(request)
    except ApiError as error:
        if "already created" in error.message:
            return redirect(f"/console/o/{org_id}/keys?msg=already-created")

        def again(session: Session, a: Acting) -> dict[str, Any]:
            return {"roles": _grantable(session, a), "acting": a}

        try:
            context = await acting(request, org_id, again)
        except (SignInRequired, ApiError):
            return _error_page(request, error)
        who = context.pop("acting")
        return render(
            request,
            "key_form.html",
            status=error.status,
            user=who.user,
            org=who.org,
            orgs=who.orgs,
            nav="keys",
            form=_key_form(form),
            expirations=EXPIRATIONS,
            nonce=secrets.token_urlsafe(24),
            action=f"/console/o/{org_id}/keys",
            key=None,
            error=friendly(error),
            **context,
        )
    who = result.pop("acting")
    return render(
        request,
        "key_created.html",
        user=who.user,
        org=who.org,
        orgs=who.orgs,
        nav="keys",
        base_url=_base_url(request),
        **result,
    )


@router.get("/o/{org_id}/keys/{key_id}/edit")
async def edit_key_page(request: Request, org_id: uuid.UUID, key_id: uuid.UUID) -> Response:
    def work(session: Session, a: Acting) -> dict[str, Any]:
        if not _can(a, Permission.ORGANIZATION_UPDATE_API_KEYS):
            raise Forbidden("Your role cannot change API keys")
        key = keys.get_key_view(session, a.principal, key_id)
        grantable = _grantable(session, a)
        held = {str(r.role_id) for r in key.assigned_roles}
        return {
            "key": key,
            "roles": grantable,
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
        if not _can(a, Permission.ORGANIZATION_DELETE_API_KEYS):
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


async def form_action(
    request: Request,
    org_id: uuid.UUID,
    target: str | Callable[[dict[str, Any]], str],
    work: Callable[[Session, Acting, dict[str, Any]], None],
) -> Response:
    """A form post that changes something: CSRF check, ``work`` as the signed-in user, then
    back to ``target`` (or ``target(form)``); a refusal is a friendly page, never a trace."""
    try:
        form = await _form(request)
        await acting(request, org_id, lambda session, a: work(session, a, form))
    except SignInRequired:
        return _login_redirect(request)
    except ApiError as error:
        return render(
            request,
            "error.html",
            status=error.status,
            title="That did not work",
            message=friendly(error),
        )
    return redirect(target(form) if callable(target) else target)


# --- members --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _InvitationView:
    row: Any
    email: str
    roles: list[Any]


def _members_context(session: Session, a: Acting) -> dict[str, Any]:
    open_invitations = [
        _InvitationView(row, row.email, invitations.roles_of(session, row))
        for row in invitations.list_invitations(session, a.principal)
    ]
    return {
        "members": members.list_members(session, a.principal),
        "invitations": open_invitations,
        "grantable": _grantable(session, a),
        "can_manage": _can(a, Permission.ORGANIZATION_MANAGE),
    }


@router.get("/o/{org_id}/members")
async def members_page(request: Request, org_id: uuid.UUID) -> Response:
    return await page(request, org_id, _members_context, "members.html", "members")


@router.post("/o/{org_id}/members/invite")
async def invite(request: Request, org_id: uuid.UUID) -> Response:
    state = _state(request)
    try:
        form = await _form(request)
    except ApiError as error:
        return _error_page(request, error)
    email = str(form.get("email") or "")

    def work(session: Session, a: Acting) -> dict[str, Any]:
        try:
            role_id = uuid.UUID(str(form.get("role") or ""))
        except ValueError:
            raise BadRequest("Choose a role") from None
        created = invitations.create_invitation(
            session,
            a.principal,
            email=email,
            legacy_role=None,
            role_ids=[role_id],
            pepper=state.pepper,
            ttl_days=state.settings.invitation_ttl_days,
        )
        link = f"{_base_url(request)}{invitations.ACCEPT_PATH}?token={quote(created.token)}"
        if state.settings.smtp_url is not None:
            from keyhouse import mail

            mail.send(
                state.settings.smtp_url.get_secret_value(),
                sender=state.settings.smtp_from,
                to=created.invitation.email,
                subject=f"You are invited to {a.org.name} on Keyhouse",
                body=f"Accept the invitation to {a.org.name}: {link}\n",
            )
            link = ""
        return {"link": link, "email": created.invitation.email}

    try:
        result = await acting(request, org_id, work)
    except SignInRequired:
        return _login_redirect(request)
    except ApiError as error:
        return await page(
            request,
            org_id,
            _members_context,
            "members.html",
            "members",
            status=error.status,
            error=friendly(error),
        )
    if not result["link"]:
        return redirect(f"/console/o/{org_id}/members?msg=invited")
    return await page(
        request,
        org_id,
        _members_context,
        "members.html",
        "members",
        accept_url=result["link"],
        invited_email=result["email"],
    )


@router.post("/o/{org_id}/members/{user_id}/roles")
async def change_member_role(request: Request, org_id: uuid.UUID, user_id: uuid.UUID) -> Response:
    def work(session: Session, a: Acting, form: dict[str, Any]) -> None:
        try:
            role_id = uuid.UUID(str(form.get("role") or ""))
        except ValueError:
            raise BadRequest("Choose a role") from None
        members.update_member_roles(
            session, a.principal, user_id, legacy_role=None, role_ids=[role_id]
        )

    return await form_action(
        request, org_id, f"/console/o/{org_id}/members?msg=member-updated", work
    )


@router.get("/o/{org_id}/members/{user_id}/remove")
async def remove_member_page(request: Request, org_id: uuid.UUID, user_id: uuid.UUID) -> Response:
    def work(session: Session, a: Acting) -> dict[str, Any]:
        member = members.get_member(session, a.principal, user_id)
        if not _can(a, Permission.ORGANIZATION_MANAGE):
            raise Forbidden("Your role cannot remove members")
        return {
            "title": f"Remove {member.user.email}",
            "warning": (
                f"{member.user.name} loses access to {a.org.name} and is signed out at once. "
                "API keys they created keep working."
            ),
        }

    return await page(
        request,
        org_id,
        work,
        "confirm.html",
        "members",
        action=f"/console/o/{org_id}/members/{user_id}/remove",
        button="Remove member",
        cancel=f"/console/o/{org_id}/members",
    )


@router.post("/o/{org_id}/members/{user_id}/remove")
async def remove_member(request: Request, org_id: uuid.UUID, user_id: uuid.UUID) -> Response:
    def work(session: Session, a: Acting, form: dict[str, Any]) -> None:
        members.remove_member(session, a.principal, user_id)

    return await form_action(
        request, org_id, f"/console/o/{org_id}/members?msg=member-removed", work
    )


@router.post("/o/{org_id}/invitations/{invitation_id}/delete")
async def delete_invitation(
    request: Request, org_id: uuid.UUID, invitation_id: uuid.UUID
) -> Response:
    def work(session: Session, a: Acting, form: dict[str, Any]) -> None:
        invitations.delete_invitation(session, a.principal, invitation_id)

    return await form_action(
        request, org_id, f"/console/o/{org_id}/members?msg=invitation-deleted", work
    )


# --- roles and activity ---------------------------------------------------------------------


@router.get("/o/{org_id}/roles")
async def roles_page(request: Request, org_id: uuid.UUID) -> Response:
    def work(session: Session, a: Acting) -> dict[str, Any]:
        found = roles.list_roles(session, a.principal)
        return {"roles": found, "actors": roles.role_actors(session, [r.id for r in found])}

    return await page(request, org_id, work, "roles.html", "roles")


@router.get("/o/{org_id}/activity")
async def activity_page(request: Request, org_id: uuid.UUID) -> Response:
    from_value = request.query_params.get("from", "")
    to_value = request.query_params.get("to", "")

    def day(value: str, end: bool) -> dt.datetime | None:
        if not value:
            return None
        try:
            parsed = dt.date.fromisoformat(value)
        except ValueError:
            raise BadRequest(f"Not a date: {value}") from None
        return dt.datetime.combine(parsed, dt.time.max if end else dt.time.min, tzinfo=dt.UTC)

    def work(session: Session, a: Acting) -> dict[str, Any]:
        if not _can(a, Permission.ORGANIZATION_VIEW_ACTIVITIES):
            raise Forbidden("Your role cannot view the activity log")
        found = activities.list_activities(
            session, a.principal, from_date=day(from_value, False), to_date=day(to_value, True)
        )
        return {"activities": found[:500]}

    return await page(
        request,
        org_id,
        work,
        "activity.html",
        "activity",
        from_value=from_value,
        to_value=to_value,
    )
