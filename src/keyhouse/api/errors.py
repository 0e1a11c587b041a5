"""The error family. Every error the API returns is one of these, rendered in one handler::

    ApiError(status, message)
    ├── BadRequest          400  malformed JSON, wrong field type, invalid value
    ├── Unauthorized        401  missing, unknown, wrong, disabled, expired or deleted key
    ├── Forbidden           403  authenticated but not permitted (or outside the IP list)
    ├── NotFound            404  no such resource in the caller's organization
    ├── MethodNotAllowed    405
    ├── Conflict            409  quota reached, state conflict
    ├── TooManyRequests     429  per-key rate limit or too many failed authentications;
    │                            carries Retry-After / X-RateLimit-Reset
    └── ServiceUnavailable  503  the database cannot be reached or timed out; carries Retry-After

(A body over the size limit is refused with 413 by ``BodyLimitMiddleware``, before routing.)

Messages are safe to show: they never contain a secret or an internal detail.
"""

from __future__ import annotations


class ApiError(Exception):
    status: int = 500

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class MethodNotAllowed(ApiError):
    status = 405


class Conflict(ApiError):
    status = 409


class TooManyRequests(ApiError):
    status = 429


class ServiceUnavailable(ApiError):
    status = 503
