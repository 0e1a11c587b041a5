"""API key credentials: generation, the secret format, and peppered hashes.

Format (documented in docs/security.md):

* ``keyId``: 20 characters of ``[0-9A-Za-z]``; the last four are the ``keySuffix``.
* ``keySecret``: ``khs_`` + 43 random ``[0-9A-Za-z]`` characters (256 bits) + 6 characters of
  checksum (CRC32 of the random part, base62, zero-padded). A scanner can recognise a leaked
  secret with ``khs_[0-9A-Za-z]{49}`` and confirm it with ``secret_checksum_ok`` offline.

Stored hashes: ``HMAC-SHA256(pepper, base64(sha256(value)))``, hex. The inner digest is the one
ClickHouse Cloud's ``hashData`` documents, so a client may send it instead of the value; the
pepper (kept outside the database) makes a database dump useless for testing guesses.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import string
import zlib

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase
SECRET_PREFIX = "khs_"
KEY_ID_LENGTH = 20
SECRET_RANDOM_LENGTH = 43
CHECKSUM_LENGTH = 6


def _random(length: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def _base62(number: int, width: int) -> str:
    digits = []
    while number:
        number, rest = divmod(number, 62)
        digits.append(ALPHABET[rest])
    return "".join(reversed(digits)).rjust(width, "0")


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), CHECKSUM_LENGTH)


def generate_key_id() -> str:
    return _random(KEY_ID_LENGTH)


def generate_key_secret() -> str:
    body = _random(SECRET_RANDOM_LENGTH)
    return SECRET_PREFIX + body + _checksum(body)


def secret_checksum_ok(secret: str) -> bool:
    """True when ``secret`` has Keyhouse's format and a valid checksum (no database needed)."""
    if not secret.startswith(SECRET_PREFIX):
        return False
    rest = secret[len(SECRET_PREFIX) :]
    if len(rest) != SECRET_RANDOM_LENGTH + CHECKSUM_LENGTH or any(c not in ALPHABET for c in rest):
        return False
    body, checksum = rest[:SECRET_RANDOM_LENGTH], rest[SECRET_RANDOM_LENGTH:]
    return hmac.compare_digest(_checksum(body), checksum)


def sha256_b64(value: str) -> str:
    """The ``hashData`` digest: standard padded base64 of SHA-256 of the UTF-8 value."""
    return binascii.b2a_base64(hashlib.sha256(value.encode()).digest(), newline=False).decode()


def is_sha256_b64(value: str) -> bool:
    try:
        return len(base64.b64decode(value, validate=True)) == 32
    except (binascii.Error, ValueError):
        return False


def pepper_digest(pepper: bytes, digest_b64: str) -> str:
    return hmac.digest(pepper, digest_b64.encode(), "sha256").hex()


def hash_value(pepper: bytes, value: str) -> str:
    return pepper_digest(pepper, sha256_b64(value))


# Compared against when a key id is unknown, so that unknown ids cost the same work.
DUMMY_HASH = "0" * 64


def hashes_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _box(pepper: bytes) -> Fernet:
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"keyhouse sealed secrets"
    ).derive(pepper)
    return Fernet(base64.urlsafe_b64encode(key))


def seal(pepper: bytes, secret: str) -> str:
    """A secret Keyhouse must use again (an attached server's password), encrypted with a key
    derived from the pepper; ``unseal`` gives it back."""
    return _box(pepper).encrypt(secret.encode()).decode()


def unseal(pepper: bytes, sealed: str) -> str:
    return _box(pepper).decrypt(sealed.encode()).decode()
