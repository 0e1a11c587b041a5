"""Console sign-in: server-side sessions and CSRF tokens (the sign-in throttle lives beside
the rate limiter, in ``keyhouse.auth.ratelimit``).

The session cookie holds a random token; the database keeps only its peppered hash, so a session
is revoked by deleting its row (removing a member does that at once). Sessions end after
``session_idle_minutes`` without a request: an idle session is deleted when it is met, and all
idle ones are purged at each sign-in. Every form carries a CSRF token bound to the session
(``csrf_token``), every post must come from the console's own origin, and the cookies are
``SameSite=Lax`` and ``HttpOnly``.
"""

from __future__ import annotations

import datetime as dt
import hmac
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from keyhouse.auth import credentials
from keyhouse.db import utcnow
from keyhouse.models import ConsoleSession, User
from keyhouse.users.service import verify_password, verify_unknown

SESSION_COOKIE = "kh_session"
CSRF_COOKIE = "kh_csrf"


@dataclass(frozen=True)
class SignedIn:
    user_id: uuid.UUID
    email: str
    name: str


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_token(pepper: bytes, session_token: str | None, anonymous: str) -> str:
    """The token every form carries. Signed in, it is bound to the session: an HMAC of the
    session's secret token, which no other site (nor a sibling subdomain that can set cookies)
    can know. Before sign-in it is the random ``kh_csrf`` cookie, submitted back (double
    submit)."""
    if session_token:
        return hmac.new(pepper, b"csrf|" + session_token.encode(), "sha256").hexdigest()
    return anonymous


def csrf_ok(expected: str | None, submitted: str | None) -> bool:
    if not expected or not submitted:
        return False
    return hmac.compare_digest(expected.encode(), submitted.encode())


def purge_idle_sessions(session: Session, *, idle: dt.timedelta) -> int:
    """Delete every session idle for longer than ``idle``; returns how many."""
    result = session.execute(
        delete(ConsoleSession).where(ConsoleSession.last_seen_at < utcnow() - idle)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def start_session(session: Session, pepper: bytes, user_id: uuid.UUID) -> str:
    token = secrets.token_urlsafe(32)
    session.add(ConsoleSession(user_id=user_id, token_hash=credentials.hash_value(pepper, token)))
    session.flush()
    return token


def current_user(
    session: Session, pepper: bytes, token: str | None, *, idle: dt.timedelta
) -> SignedIn | None:
    if not token:
        return None
    row = session.execute(
        select(ConsoleSession, User)
        .join(User, User.id == ConsoleSession.user_id)
        .where(ConsoleSession.token_hash == credentials.hash_value(pepper, token))
    ).first()
    if row is None:
        return None
    console_session, user = row
    now = utcnow()
    if console_session.last_seen_at + idle < now:
        session.delete(console_session)
        return None
    if now - console_session.last_seen_at > dt.timedelta(minutes=1):
        console_session.last_seen_at = now
    return SignedIn(user.id, user.email, user.name)


def end_session(session: Session, pepper: bytes, token: str | None) -> None:
    if token:
        session.execute(
            delete(ConsoleSession).where(
                ConsoleSession.token_hash == credentials.hash_value(pepper, token)
            )
        )


def check_password(session: Session, email: str, password: str) -> User | None:
    """The user when the password matches; the same argon2 work when the email is unknown."""
    user = session.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None:
        verify_unknown(password)
        return None
    return user if verify_password(user, password) else None
