"""The README's generated sections (compatibility, permissions) match the code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from keyhouse.docs import render
from tests.test_openapi import implemented_official

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.one_database
def test_readme_tables_are_generated_from_the_code(
    client: TestClient, official_spec: dict[str, Any]
) -> None:
    app = client.app
    assert isinstance(app, FastAPI)
    current = README.read_text()
    assert render(current, app, official_spec) == current, (
        "README is out of date: run `.venv/bin/python -m keyhouse.docs README.md "
        "reference/clickhouse-cloud-openapi.json`"
    )
    ours = client.get("/v1/openapi.json").json()
    assert current.count("| yes |") == len(implemented_official(ours, official_spec))
