"""ClickHouse clients nobody here wrote read a MergeTree table of many types (250,000 rows,
ordered, several engine blocks; ``tests/typed_table.py``) through a service's ClickHouse HTTP
interface, and each value is compared with the formula that made it. Each of them had read such
results wrong before (a header or a document per engine block). Here: the official Node.js
client (@clickhouse/client from npm: JSON, streamed JSONEachRow, CSVWithNames, insert)."""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import pytest

from keyhouse.config import Settings
from tests.typed_table import (
    NODE,
    ROWS,
    _ca,
    typed,
)

pytestmark = [pytest.mark.services, pytest.mark.one_database]  # (tests/conftest.py)

__all__ = ["typed"]  # the fixture, used by name


def test_the_official_nodejs_client_reads_and_inserts(
    settings: Settings, typed: tuple[dict[str, Any], str]
) -> None:
    endpoint, password = typed
    node = shutil.which("node")
    assert node is not None, "Node.js is needed (the official client's test)"
    assert (NODE / "node_modules" / "@clickhouse" / "client").is_dir(), (
        "the Node.js client is not installed: make test runs npm ci in tests/clients/node"
    )
    url = f"https://{endpoint['host']}:{endpoint['port']}"
    ran = subprocess.run(
        [node, "check.mjs", url, password, str(_ca(settings)), "typed", str(ROWS)],
        cwd=NODE,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    report = json.loads(ran.stdout.strip().splitlines()[-1])
    assert report["mismatches"] == 0, report["firstMismatch"]
    assert report["found"] == {
        "json": ROWS,
        "jsonRowsField": ROWS,
        "jsonEachRow": ROWS,
        "csvHeaders": 1,
        "csv": ROWS,
        "inserted": {"c": 100_000, "s": 4_999_950_000},
    }
