"""No route and no dependency is a plain function: FastAPI runs each one in a worker thread,
a silent thread hop per request. Every endpoint and every dependency is ``async``."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from keyhouse.api.route_table import api_routes
from keyhouse.app import create_app
from keyhouse.config import Settings


def _calls(dependant: Any) -> list[Any]:
    found = [dependant.call] if dependant.call is not None else []
    for sub in dependant.dependencies:
        found += _calls(sub)
    return found


def _is_async(call: Any) -> bool:
    target = call if inspect.isfunction(call) or inspect.ismethod(call) else call.__call__
    return inspect.iscoroutinefunction(target)


@pytest.mark.one_database
def test_every_endpoint_and_dependency_is_async(settings: Settings) -> None:
    app = create_app(settings)
    checked = 0
    for path, route in api_routes(app.routes):
        for call in _calls(route.dependant):
            name = getattr(call, "__qualname__", type(call).__qualname__)
            assert _is_async(call), f"{path}: {name} is not async (a thread hop)"
            checked += 1
    assert checked > 100
