"""One place that renders every error into the official envelope."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from keyhouse.api.envelope import error_body
from keyhouse.api.errors import ApiError

_STARLETTE_MESSAGES = {
    404: "Not found",
    405: "Method not allowed",
}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(
        error_body(status, message),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _field_path(loc: tuple[Any, ...]) -> str:
    parts = [str(part) for part in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts)


def describe_validation_error(exc: RequestValidationError) -> str:
    errors = exc.errors()
    for error in errors:
        if error.get("type") == "json_invalid":
            return "Malformed JSON in request body"
    messages = []
    for error in errors[:5]:
        field = _field_path(tuple(error.get("loc", ())))
        message = str(error.get("msg", "invalid value"))
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        if error.get("type") == "missing" and not field:
            messages.append("Request body is required")
        elif error.get("type") in ("model_attributes_type", "dict_type") and not field:
            messages.append(
                "Request body must be a JSON object (send Content-Type: application/json)"
            )
        else:
            messages.append(f"{field}: {message}" if field else message)
    return "Invalid request: " + "; ".join(messages)


def install(app: FastAPI) -> None:
    async def api_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)  # noqa: S101
        return error_response(exc.status, exc.message, exc.headers)

    async def validation_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)  # noqa: S101
        return error_response(400, describe_validation_error(exc))

    async def http_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)  # noqa: S101
        message = _STARLETTE_MESSAGES.get(exc.status_code, str(exc.detail))
        return error_response(exc.status_code, message, dict(exc.headers or {}))

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
