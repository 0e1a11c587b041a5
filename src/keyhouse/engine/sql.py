"""ClickHouse SQL text Keyhouse writes itself, in one place: literals and identifiers for the
statements it sends (``SET``, ``USE``, ``SET ROLE``), settings as URL parameter text, and query
parameters' text (``{name: Type}`` values, as a server parses them from ``param_<name>``)."""

from __future__ import annotations


def quoted(text: str) -> str:
    """A string literal: ``'...'`` with backslashes and quotes escaped."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def literal(value: object) -> str:
    """A setting's value in a ``SET``: booleans as 1/0, numbers as written, the rest quoted."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return repr(value)
    return quoted(str(value))


def identifier(name: str) -> str:
    """A database, table or role name: backquoted, backslashes and backquotes escaped."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def setting_text(value: object) -> str:
    """A setting's value as a URL parameter of the HTTP interface (booleans as 1/0)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def parameter_text(value: object) -> str:
    """A JSON value as a query parameter's text: strings as they are, arrays as array
    literals, null as ``\\N``; ``ValueError`` for anything else (an object)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "[" + ",".join(_element(item) for item in value) + "]"
    if value is None:
        return "\\N"
    if isinstance(value, int | float):
        return str(value)
    raise ValueError("values must be strings, numbers, booleans or arrays")


def _element(value: object) -> str:
    return quoted(value) if isinstance(value, str) else parameter_text(value)
