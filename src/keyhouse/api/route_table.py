"""The app's route table as it is served: every FastAPI route with its full path (FastAPI keeps
an included router's routes under their own, unprefixed paths)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi.routing import APIRoute


def api_routes(routes: Sequence[Any], prefix: str = "") -> list[tuple[str, APIRoute]]:
    """Every APIRoute of an app with its full path, descending into included routers."""
    found: list[tuple[str, APIRoute]] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append((prefix + route.path, route))
        elif hasattr(route, "original_router"):
            include_prefix = getattr(getattr(route, "include_context", None), "prefix", "")
            found += api_routes(route.original_router.routes, prefix + include_prefix)
    return found
