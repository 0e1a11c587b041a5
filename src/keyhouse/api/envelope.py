"""The official envelope.

``{"status","requestId","result"}`` on success, ``{"status","requestId","error"}`` on error.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, Generic, TypeVar

from fastapi import Response
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

T = TypeVar("T")

request_id_var: ContextVar[str] = ContextVar("request_id", default="")


class Envelope(BaseModel, Generic[T]):
    """Documents a successful response; responses themselves are rendered by ``ok``."""

    model_config = ConfigDict(populate_by_name=True)

    status: int = Field(examples=[200])
    request_id: str = Field(alias="requestId")
    result: T


class EmptyEnvelope(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    status: int = Field(examples=[200])
    request_id: str = Field(alias="requestId")


class ErrorEnvelope(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    status: int
    request_id: str = Field(alias="requestId")
    error: str


_adapters: dict[Any, TypeAdapter[Any]] = {}


def _dump(result: Any) -> bytes:
    if isinstance(result, BaseModel):
        return result.model_dump_json(by_alias=True, exclude_none=True).encode()
    if isinstance(result, list) and result and isinstance(result[0], BaseModel):
        kind = type(result[0])
        adapter = _adapters.get(kind)
        if adapter is None:
            adapter = _adapters[kind] = TypeAdapter(list[kind])  # type: ignore[valid-type]
        return adapter.dump_json(result, by_alias=True, exclude_none=True)
    return json.dumps(result, separators=(",", ":")).encode()


def ok(
    result: Any = None, *, extra: Mapping[str, Any] | None = None, status: int = 200
) -> Response:
    """A 2xx envelope around ``result`` (omitted when ``None``, as DELETE answers)."""
    body = ok_body(result, extra=extra, status=status)
    return Response(body, status_code=status, media_type="application/json")


def ok_body(result: Any, *, extra: Mapping[str, Any] | None = None, status: int = 200) -> bytes:
    """The bytes of ``ok``'s envelope."""
    body = b'{"status":%d,"requestId":"' % status + request_id_var.get().encode() + b'"'
    if result is not None:
        body += b',"result":' + _dump(result)
    for name, value in (extra or {}).items():
        body += b"," + json.dumps(name).encode() + b":" + json.dumps(value).encode()
    return body + b"}"


def error_body(status: int, message: str) -> bytes:
    return json.dumps(
        {"status": status, "requestId": request_id_var.get(), "error": message},
        separators=(",", ":"),
    ).encode()
