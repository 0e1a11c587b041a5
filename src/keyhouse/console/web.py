"""What every console page shares: rendering with the security headers, the signed-in user's
transaction (``acting``), form reading with the origin and CSRF checks, and friendly errors.
Each handler calls the same service functions as the API, acting as the signed-in user, so
permissions, no-escalation, limits and activity records are the same."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import select
from sqlalchemy.orm import Session

from keyhouse.api.errors import ApiError, BadRequest, Forbidden, NotFound
from keyhouse.api.wire import unstorable_text
from keyhouse.auth.network import in_networks, request_address
from keyhouse.auth.permissions import Permission, organization_resource
from keyhouse.auth.principal import Principal
from keyhouse.console.sessions import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    SignedIn,
    csrf_ok,
    csrf_token,
    current_user,
    new_csrf_token,
)
from keyhouse.db import utcnow
from keyhouse.models import Membership, Organization, Role
from keyhouse.roles import service as roles
from keyhouse.roles.service import user_principal
from keyhouse.state import app_state
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
    "service-updated": "The service was updated.",
    "service-deleted": "The service was deleted.",
    "endpoint-created": "The Query API endpoint was created: call its URL with one of its keys.",
    "endpoint-deleted": "The Query API endpoint was deleted.",
    "backups-configured": "The backup configuration was saved.",
    "setting-set": "The setting was checked by the engine and saved: new queries run with it.",
    "setting-reset": "The setting is back to the engine's default.",
}

# No inline script or style anywhere in the console, no framing, forms post only to itself.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)


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


def client_ip(request: Request) -> str | None:
    return request_address(request, app_state(request).trusted_proxies)


def served_over_https(request: Request) -> bool:
    """HTTPS directly, or behind a trusted proxy that says so (X-Forwarded-Proto)."""
    if request.url.scheme == "https":
        return True
    peer = request.client.host if request.client else None
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return (
        forwarded == "https"
        and peer is not None
        and in_networks(peer, app_state(request).trusted_proxies)
    )


def base_url(request: Request) -> str:
    return (app_state(request).settings.public_url or str(request.base_url)).rstrip("/")


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
    token = csrf_token(app_state(request).pepper, request.cookies.get(SESSION_COOKIE), csrf)
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
            secure=served_over_https(request),
            path="/console",
        )
    return response


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def set_session_cookie(request: Request, response: Response, token: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        samesite="lax",
        secure=served_over_https(request),
        path="/console",
    )


def same_origin(request: Request) -> bool:
    """A browser names the page a post comes from in ``Origin`` (and ``Sec-Fetch-Site``); a
    post from any other site is refused. Clients that send neither are judged by the token."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    allowed = {request.headers.get("host", "")}
    public_url = app_state(request).settings.public_url
    if public_url:
        allowed.add(urlsplit(public_url).netloc)
    return origin != "null" and urlsplit(origin).netloc in allowed


async def read_form(request: Request) -> dict[str, Any]:
    """The submitted form, after the origin and CSRF checks (otherwise refused, 403)."""
    if not same_origin(request):
        raise Forbidden("This form was posted from another site and was refused.")
    form = await request.form()
    values: dict[str, Any] = {key: form.get(key) for key in form}
    for multiple in ("roles", "api_keys"):  # checkbox groups
        values[multiple] = [str(v) for v in form.getlist(multiple)]
    for key in form:
        for value in form.getlist(key):
            problem = unstorable_text(value) if isinstance(value, str) else "must be text"
            if problem:
                raise BadRequest(f"The field {key!r} {problem}.")
    expected = csrf_token(
        app_state(request).pepper,
        request.cookies.get(SESSION_COOKIE),
        request.cookies.get(CSRF_COOKIE) or "",
    )
    if not csrf_ok(expected, values.get("csrf_token")):
        raise Forbidden(
            "This form has expired or did not come from this console. Reload the page and retry."
        )
    return values


def orgs_of(session: Session, user_id: uuid.UUID) -> list[OrgView]:
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
    state = app_state(request)
    token = request.cookies.get(SESSION_COOKIE)
    idle = dt.timedelta(minutes=state.settings.session_idle_minutes)
    ip, agent = client_ip(request), request.headers.get("user-agent")

    def run(session: Session) -> T | _SignedOut:
        user = current_user(session, state.pepper, token, idle=idle)
        if user is None:  # commit, so that an idle session current_user deleted stays deleted
            return _SignedOut()
        orgs = orgs_of(session, user.user_id)
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


def login_redirect(request: Request) -> RedirectResponse:
    return redirect("/console/login?" + urlencode({"next": request.url.path}))


def error_page(request: Request, error: ApiError) -> HTMLResponse:
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
        return login_redirect(request)
    except ApiError as error:
        return error_page(request, error)
    who: Acting = context.pop("_acting")
    notice = NOTICES.get(request.query_params.get("msg", ""))
    return render_as(
        request, template, who, nav, status=status, notice=notice, **{**extra, **context}
    )


def render_as(
    request: Request, template: str, who: Acting, nav: str, status: int = 200, **context: Any
) -> HTMLResponse:
    """A page inside the console's frame, for ``who`` (menu, organization switcher)."""
    return render(
        request,
        template,
        status=status,
        user=who.user,
        org=who.org,
        orgs=who.orgs,
        nav=nav,
        **context,
    )


def can(acting_as: Acting, permission: Permission) -> bool:
    return acting_as.principal.can(permission, organization_resource(acting_as.org.id))


def grantable(session: Session, acting_as: Acting) -> list[Role]:
    return roles.grantable_roles(session, acting_as.principal)


async def form_action(
    request: Request,
    org_id: uuid.UUID,
    target: str | Callable[[dict[str, Any]], str],
    work: Callable[[Session, Acting, dict[str, Any]], T],
) -> Response:
    """A form post that changes something: CSRF check, ``work`` as the signed-in user, then
    back to ``target`` (or ``target(form)``); a refusal is a friendly page."""
    try:
        form = await read_form(request)
        await acting(request, org_id, lambda session, a: work(session, a, form))
    except SignInRequired:
        return login_redirect(request)
    except ApiError as error:
        return render(
            request,
            "error.html",
            status=error.status,
            title="That did not work",
            message=friendly(error),
        )
    return redirect(target(form) if callable(target) else target)
