"""Users: accounts with an email and an argon2id password hash.

The hasher uses the library's recommended parameters. ``use_password_hasher`` swaps it for
cheaper parameters where hashing cost does not matter (the test suite); the dummy hash that
unknown emails are checked against is made by the same hasher, so their work stays equal.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from sqlalchemy import select
from sqlalchemy.orm import Session

from keyhouse.api.errors import BadRequest
from keyhouse.models import User

_hasher = PasswordHasher()  # argon2id with the library's recommended parameters
_dummy_hash: str | None = None


def use_password_hasher(hasher: PasswordHasher) -> None:
    global _hasher, _dummy_hash
    _hasher, _dummy_hash = hasher, None


MIN_PASSWORD_LENGTH = 12


def normalize_email(email: str) -> str:
    email = email.strip().lower()
    local, sep, domain = email.partition("@")
    if not sep or not local or "." not in domain or " " in email:
        raise BadRequest(f"email: {email!r} is not a valid email address")
    return email


def get_or_create_user(session: Session, *, email: str, name: str, password: str) -> User:
    """The user with this email, created (with this password) if there is none yet."""
    email = normalize_email(email)
    user = session.scalar(select(User).where(User.email == email))
    if user is not None:
        return user
    if len(password) < MIN_PASSWORD_LENGTH:
        raise BadRequest(f"password: must be at least {MIN_PASSWORD_LENGTH} characters")
    user = User(email=email, name=name.strip() or email, password_hash=_hasher.hash(password))
    session.add(user)
    session.flush()
    return user


def verify_password(user: User, password: str) -> bool:
    try:
        return _hasher.verify(user.password_hash, password)
    except Exception:  # argon2 raises VerifyMismatchError / InvalidHashError
        return False


def verify_unknown(password: str) -> None:
    """Spend the work of one verification, for an email that has no account."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = _hasher.hash("no such user: equal work for unknown emails")
    try:
        _hasher.verify(_dummy_hash, password)
    except Exception:  # noqa: S110 - only the time spent matters here
        pass
