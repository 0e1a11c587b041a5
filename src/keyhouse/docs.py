"""Generated README sections, so they cannot drift from the code: the compatibility table
(every official operation, and whether Keyhouse implements it) and the permission each
operation needs. ``python -m keyhouse.docs README.md SPEC.json`` rewrites them in place;
a test fails when the README is out of date."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from keyhouse.api.route_table import api_routes
from keyhouse.context import AUTHENTICATED, Require

SECTIONS = ("compatibility", "permissions")


def requirements(dependant: Any) -> list[Require]:
    found = [d.call for d in dependant.dependencies if isinstance(d.call, Require)]
    for sub in dependant.dependencies:
        found += requirements(sub)
    return found


def compatibility_table(app: FastAPI, official: dict[str, Any]) -> str:
    ours = app.openapi()["paths"]
    lines = ["| Operation | Method and path | Keyhouse |", "|---|---|---|"]
    for path, methods in official["paths"].items():
        for method, operation in methods.items():
            status = "yes" if method in ours.get(path, {}) else "not yet"
            lines.append(f"| {operation['operationId']} | `{method.upper()} {path}` | {status} |")
    return "\n".join(lines)


def permission_table(app: FastAPI) -> str:
    lines = ["| Operation | Method and path | Permission |", "|---|---|---|"]
    rows = []
    for path, route in api_routes(app.routes):
        declared = requirements(route.dependant)
        if not declared:
            continue
        permission = declared[0].permission
        shown = "any valid key" if permission == AUTHENTICATED else f"`{permission}`"
        for method in sorted(route.methods or ()):
            rows.append(f"| {route.operation_id} | `{method} {path}` | {shown} |")
    return "\n".join(lines + sorted(rows, key=lambda row: row.split("`")[1].split(" ", 1)[1]))


def render(readme: str, app: FastAPI, official: dict[str, Any]) -> str:
    tables = {
        "compatibility": compatibility_table(app, official),
        "permissions": permission_table(app),
    }
    for name in SECTIONS:
        start, end = f"<!-- {name}:start -->\n", f"<!-- {name}:end -->"
        head, found, rest = readme.partition(start)
        if found:
            _old, found_end, tail = rest.partition(end)
            if found_end:
                readme = head + start + tables[name] + "\n" + end + tail
    return readme


def main(readme_path: str, spec_path: str) -> None:
    from keyhouse.app import create_app
    from keyhouse.config import Settings

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(database_url=f"sqlite:///{tmp}/docs.db", pepper="docs")
        app = create_app(settings)
        app.state.keyhouse.close()
    official = json.loads(Path(spec_path).read_text())
    path = Path(readme_path)
    path.write_text(render(path.read_text(), app, official))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
