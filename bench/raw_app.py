"""The benchmark's yardstick (a): a minimal raw-ASGI app doing by hand the work of one
authenticated key GET: parse Basic, hash (SHA-256 + the pepper's HMAC) and compare in constant
time, one indexed SELECT of the key row with the same driver as Keyhouse, a JSON envelope out.

Configured by BENCH_DATABASE_URL and KEYHOUSE_PEPPER; served by granian like Keyhouse.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import sqlite3
import uuid
from typing import Any

PEPPER = os.environ["KEYHOUSE_PEPPER"].encode()
DATABASE_URL = os.environ["BENCH_DATABASE_URL"]
QUERY = (
    "SELECT id, organization_id, name, key_secret_hash, state, key_suffix, created_at "
    "FROM api_keys WHERE key_id_hash = {p}"
)


def _connect() -> tuple[Any, str]:
    if DATABASE_URL.startswith("sqlite"):
        return sqlite3.connect(DATABASE_URL.split("///", 1)[1]), "?"
    import psycopg

    dsn = DATABASE_URL.replace("postgresql+psycopg://", "postgresql://")
    return psycopg.connect(dsn, autocommit=True), "%s"


connection, placeholder = _connect()
query = QUERY.format(p=placeholder)


def _digest(value: str) -> str:
    inner = base64.b64encode(hashlib.sha256(value.encode()).digest())
    return hmac.new(PEPPER, inner, hashlib.sha256).hexdigest()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    header = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
    status, body = 401, {"status": 401, "error": "UNAUTHORIZED: Key is not found"}
    try:
        key_id, _, secret = base64.b64decode(header[6:]).decode().partition(":")
    except ValueError:
        key_id = secret = ""
    row = connection.execute(query, (_digest(key_id),)).fetchone()
    if row is not None and hmac.compare_digest(_digest(secret), row[3]):
        status = 200
        body = {
            "status": 200,
            "result": {
                "id": str(row[0]),
                "organizationId": str(row[1]),
                "name": row[2],
                "state": row[4],
                "keySuffix": row[5],
                "createdAt": str(row[6]),
            },
        }
    body["requestId"] = str(uuid.uuid4())
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": payload})
