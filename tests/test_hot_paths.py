"""The hot paths answered before FastAPI's stack (``keyhouse.fast_paths``) answer exactly as
FastAPI's own routes do, errors included, and keep the same last line of defence."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.types import Receive, Scope, Send

from keyhouse import fast_paths as hot_paths
from keyhouse.config import Settings
from keyhouse.state import AppState
from tests import services
from tests.conftest import Org, alongside, create_key, create_org, make_client


def _fastapi_only(fast: TestClient) -> TestClient:
    """A client of the same app whose requests skip the hot paths (FastAPI's route answers)."""
    app = fast.app

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        await FastAPI.__call__(app, scope, receive, send)  # type: ignore[arg-type]

    return alongside(fast, app=asgi)


@pytest.fixture
def both(state: AppState) -> Iterator[tuple[TestClient, TestClient]]:
    with make_client(state) as fast, _fastapi_only(fast) as slow:
        yield fast, slow


_COMPARED = (
    "content-type",
    "www-authenticate",
    "retry-after",
    "x-ratelimit-reset",
    "x-clickhouse-format",
    "x-clickhouse-query-id",
    "x-clickhouse-exception-code",
    "access-control-allow-origin",
)


def _answer(response: Any) -> tuple[int, Any, dict[str, str]]:
    """Status, body (its requestId checked and left out) and the headers that carry meaning."""
    body: Any = response.text
    if response.headers["content-type"] == "application/json":
        body = dict(response.json())
        if "requestId" in body:
            assert uuid.UUID(body.pop("requestId")).version == 4
            assert response.headers["x-request-id"]
    headers = {name: value for name, value in response.headers.items() if name in _COMPARED}
    return response.status_code, body, headers


def test_get_key_answers_as_fastapis_route_does(
    both: tuple[TestClient, TestClient], org: Org, settings: Settings
) -> None:
    fast, slow = both
    key = create_key(fast, org, name="watched", roles=["developer"])["key"]
    fenced = create_key(fast, org, roles=["admin"], ipAccessList=[{"source": "10.0.0.0/8"}])
    other = create_org(settings)
    url = org.url(f"/keys/{key['id']}")
    cases: list[tuple[str, dict[str, Any]]] = [
        (url, {"auth": org.auth}),  # 200
        (org.url(f"/keys/{uuid.uuid4()}"), {"auth": org.auth}),  # 404: no such key
        (other.url(f"/keys/{key['id']}"), {"auth": org.auth}),  # 404: not the caller's org
        (url, {"auth": (org.key_id, "khs_wrong")}),  # 401
        (url, {}),  # 401 with the Basic challenge
        (url, {"headers": {"Authorization": "Basic !!!"}}),  # 401: malformed
        (url, {"auth": (fenced["keyId"], fenced["keySecret"])}),  # 403: outside its IP list
    ]
    statuses = []
    for path, options in cases:
        answer = _answer(fast.get(path, **options))
        assert answer == _answer(slow.get(path, **options)), path
        statuses.append(answer[0])
    assert statuses == [200, 404, 404, 401, 401, 401, 403]


def test_the_key_list_answers_as_fastapis_route_does(
    both: tuple[TestClient, TestClient], org: Org, settings: Settings
) -> None:
    fast, slow = both
    for index in range(3):
        create_key(fast, org, name=f"k{index}", roles=["developer"])
    other = create_org(settings)
    first = fast.get(org.url("/keys"), params={"limit": 2}, auth=org.auth).json()
    cursor = first["nextCursor"]
    assert cursor
    cases: list[tuple[str, dict[str, Any]]] = [
        (org.url("/keys"), {}),  # 200, every key
        (org.url("/keys"), {"params": {"limit": 2}}),
        (org.url("/keys"), {"params": {"limit": 2, "cursor": cursor}}),  # the next page
        (org.url("/keys"), {"params": [("limit", "1"), ("limit", "3")]}),  # the last one counts
        (org.url("/keys"), {"params": {"cursor": ""}}),  # the first page
        (org.url("/keys"), {"params": {"cursor": "bm90IGEgY3Vyc29y"}}),  # 400
        (org.url("/keys"), {"params": {"limit": 0}}),  # 400: FastAPI's
        (org.url("/keys"), {"params": {"limit": 251}}),  # 400: FastAPI's
        (org.url("/keys"), {"params": {"limit": "2.0"}}),  # FastAPI's reading (it takes 2)
        (other.url("/keys"), {}),  # 404: not the caller's organization
        (org.url("/keys"), {"auth": (org.key_id, "khs_wrong")}),  # 401
    ]
    statuses = []
    for path, options in cases:
        options = {"auth": org.auth, **options}
        answer = _answer(fast.get(path, **options))
        assert answer == _answer(slow.get(path, **options)), options
        statuses.append(answer[0])
    assert statuses == [200, 200, 200, 200, 200, 400, 400, 400, 200, 404, 401]


@pytest.mark.parametrize("hot", ["get key", "key list", "run"])
def test_an_unexpected_error_on_a_hot_path_is_a_500_without_internals(
    client: TestClient, org: Org, monkeypatch: pytest.MonkeyPatch, hot: str
) -> None:
    def boom(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("secret internal detail")

    if hot == "get key":
        monkeypatch.setattr(hot_paths, "key_body", boom)
        response = client.get(org.url(f"/keys/{org.key_uuid}"), auth=org.auth)
    elif hot == "key list":
        monkeypatch.setattr(hot_paths, "key_list_body", boom)
        response = client.get(org.url("/keys"), auth=org.auth)
    else:
        monkeypatch.setattr(hot_paths, "answer_run", boom)
        response = client.post(
            f"/service/{uuid.uuid4()}/run", json={"sql": "SELECT 1"}, auth=org.auth
        )
    body = response.json()
    assert response.status_code == 500
    assert body == {"status": 500, "requestId": body["requestId"], "error": "Internal server error"}
    assert "secret" not in response.text
    assert response.headers["x-request-id"] == body["requestId"]


def test_failed_authentications_are_limited_on_a_hot_path_too(settings: Settings, org: Org) -> None:
    state = AppState.from_settings(settings.model_copy(update={"auth_failures_per_ip": "2/60s"}))
    url = org.url(f"/keys/{org.key_uuid}")
    try:
        with make_client(state, ip="192.0.2.40") as attacker, make_client(state) as other:
            assert attacker.get(url, auth=org.auth).status_code == 200
            for _ in range(2):
                assert attacker.get(url, auth=(org.key_id, "khs_wrong")).status_code == 401
            refused = attacker.get(url, auth=org.auth)  # even the right secret, from there
            assert refused.status_code == 429
            assert int(refused.headers["retry-after"]) > 0
            assert other.get(url, auth=org.auth).status_code == 200
    finally:
        state.close()


@pytest.mark.services
def test_the_query_api_answers_as_fastapis_route_does(
    both: tuple[TestClient, TestClient], org: Org, state: AppState
) -> None:
    fast, slow = both
    sid = services.create(fast, org)["service"]["id"]
    services.wait_for(fast, org, sid, "running")
    services.bind(fast, org, sid, [org.key_id])
    other = create_key(fast, org)
    too_large = b"x" * (state.settings.max_body_bytes + 1)
    run_id = str(uuid.uuid4())
    cases: list[dict[str, Any]] = [
        {"params": {"format": "JSONEachRow"}, "json": {"sql": "SELECT 1 AS a", "runId": run_id}},
        {"json": {"sql": "SELECT 1", "runId": run_id}, "headers": {"origin": "https://x.example"}},
        {"json": {"sql": "SELEKT", "runId": run_id}},  # the engine's 400 and its code
        {"content": b"not json"},  # 400
        {"json": {"sql": "SELECT 1"}, "auth": (org.key_id, "khs_wrong")},  # 401
        {"json": {"sql": "SELECT 1"}, "auth": (other["keyId"], other["keySecret"])},  # 403
        {"content": too_large},  # 413
        {"json": {"sql": "SELECT 1"}, "params": {"format": "JSON;DROP"}},  # 400: FastAPI's
    ]
    statuses = []
    for case in cases:
        options = {"auth": org.auth, **case}
        answer = _answer(fast.post(f"/service/{sid}/run", **options))
        assert answer == _answer(slow.post(f"/service/{sid}/run", **options)), case
        statuses.append(answer[0])
    assert statuses == [200, 200, 400, 400, 401, 403, 413, 400]
