"""The wire base models and the value types every request body shares.

``Wire`` is camelCase on the wire (aliases) and snake_case in Python. ``WireRequest`` is the
base of every request body: before any field is parsed it refuses text that no database stores
(NUL characters, which PostgreSQL rejects, and unpaired surrogates, which neither database can
encode), so such input is a 400 naming the field, never a 500. ``UtcDateTime`` reads any
ISO-8601 time, refuses one that falls outside what a datetime can hold once converted to UTC,
and ``OptionalUtcDateTime`` reads ``""`` as "none" (the official spec: empty means never).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, model_validator

# Lists a caller may send whose size would otherwise only be bounded by the body limit.
MAX_LIST_ITEMS = 256


class Wire(BaseModel):
    model_config = ConfigDict(populate_by_name=True)


def unstorable_text(value: str) -> str | None:
    """Why ``value`` cannot be stored, or None when it can."""
    if "\x00" in value:
        return "must not contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode (no unpaired surrogates)"
    return None


def _check_text(data: Any, path: str) -> None:
    if isinstance(data, str):
        problem = unstorable_text(data)
        if problem:
            raise ValueError(f"{path or 'body'}: {problem}")
    elif isinstance(data, dict):
        for key, value in data.items():
            _check_text(key, path)
            _check_text(value, f"{path}.{key}" if path else str(key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            _check_text(value, f"{path}[{index}]")


class WireRequest(Wire):
    @model_validator(mode="before")
    @classmethod
    def _storable_text(cls, data: Any) -> Any:
        _check_text(data, "")
        return data


def _to_utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:
        raise ValueError("date is out of range once converted to UTC") from None


def _empty_is_none(value: Any) -> Any:
    return None if value == "" else value


UtcDateTime = Annotated[dt.datetime, AfterValidator(_to_utc)]
OptionalUtcDateTime = Annotated[UtcDateTime | None, BeforeValidator(_empty_is_none)]
