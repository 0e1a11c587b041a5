"""The README's compatibility table tells the truth about every official operation."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

README = Path(__file__).resolve().parents[1] / "README.md"
ROW = re.compile(r"^\| (\w+) \| `(\w+) (\S+)` \| (yes|not yet) \|$")


def test_compatibility_table_lists_every_official_operation_truthfully(
    client: TestClient, official_spec: dict[str, Any]
) -> None:
    rows = {}
    for line in README.read_text().splitlines():
        match = ROW.match(line)
        if match:
            operation_id, method, path, status = match.groups()
            rows[(method.lower(), path)] = (operation_id, status)
    ours = client.get("/v1/openapi.json").json()["paths"]
    official = [
        (method, path, op["operationId"])
        for path, methods in official_spec["paths"].items()
        for method, op in methods.items()
    ]
    assert len(rows) == len(official)
    for method, path, operation_id in official:
        assert rows[(method, path)][0] == operation_id
        implemented = method in ours.get(path, {})
        assert rows[(method, path)][1] == ("yes" if implemented else "not yet"), (method, path)
