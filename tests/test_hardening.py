"""Bad input cannot hurt the server: every case here was a 500, a hang, a bypass or a leak.

Sizes are refused before parsing and authentication; bytes no database stores are a 400 naming
the field; dates are bounded; lists are bounded; addresses are read across header lines; the
database's absence or slowness is a 503 in the envelope; rate limits use moving windows and
failed authentications are limited; the console's sign-in throttle cannot be raced; forms are
bound to the session and to the console's origin; pages carry a Content-Security-Policy.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import sqlite3
import threading
import time
import uuid
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from keyhouse.config import Settings
from keyhouse.context import Context
from keyhouse.db import utcnow
from keyhouse.models import ApiKey, ConsoleSession
from keyhouse.state import AppState
from tests.conftest import (
    Org,
    create_key,
    create_org,
    invite_and_accept,
    key_auth,
    make_client,
    make_settings,
)

LIMIT = 1024 * 1024


# --- sizes ----------------------------------------------------------------------------------


def test_a_body_over_the_limit_is_413_before_authentication(client: TestClient, org: Org) -> None:
    big = b'{"name": "' + b"x" * (2 * LIMIT) + b'"}'
    response = client.post(
        org.url("/keys"), content=big, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413  # not 401: nothing was parsed or authenticated
    body = response.json()
    assert body["status"] == 413
    assert "too large" in body["error"]
    assert response.headers["x-request-id"] == body["requestId"]


def test_a_streamed_body_over_the_limit_is_413(client: TestClient, org: Org) -> None:
    def chunks() -> Any:
        for _ in range(40):
            yield b"x" * 65536

    response = client.post(org.url("/keys"), content=chunks(), auth=org.auth)
    assert response.status_code == 413


def test_the_body_limit_is_configurable(database_urls: dict[str, str], backend: str) -> None:
    settings = make_settings(database_urls[backend], max_body_bytes=2048)
    org = create_org(settings)
    state = AppState.from_settings(settings)
    try:
        with make_client(state) as client:
            ok = client.post(org.url("/keys"), json={"name": "k" * 200}, auth=org.auth)
            assert ok.status_code == 200, ok.text
            body = {
                "name": "k",
                "ipAccessList": [{"source": "10.0.0.1", "description": "d" * 200}] * 20,
            }
            assert client.post(org.url("/keys"), json=body, auth=org.auth).status_code == 413
    finally:
        state.close()


def test_ip_access_lists_are_bounded(client: TestClient, org: Org) -> None:
    entries = [{"source": f"10.0.{i // 256}.{i % 256}"} for i in range(257)]
    response = client.post(
        org.url("/keys"), json={"name": "k", "ipAccessList": entries}, auth=org.auth
    )
    assert response.status_code == 400
    assert "ipAccessList" in response.json()["error"]
    assert create_key(client, org, ipAccessList=entries[:256])["key"]["ipAccessList"]


# --- bytes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw", [b"Basic \xff\xfe\xfd", b"Basic \xc3\xa9t\xc3\xa9", "Basic é".encode("latin-1")]
)
def test_non_ascii_authorization_is_401(client: TestClient, org: Org, raw: bytes) -> None:
    response = client.get(org.url(), headers=[(b"authorization", raw)])
    assert response.status_code == 401
    assert response.json()["status"] == 401


@pytest.mark.parametrize(
    ("path", "method", "body"),
    [
        ("/keys", "POST", {"name": "a\x00b", "roles": ["admin"]}),
        (
            "/keys",
            "POST",
            {"name": "k", "ipAccessList": [{"source": "10.0.0.1", "description": "\x00"}]},
        ),
        ("", "PATCH", {"name": "org\x00"}),
        ("/roles", "POST", {"name": "r\x00", "actors": [], "policies": []}),
        ("/invitations", "POST", {"email": "a\x00@example.com"}),
    ],
)
def test_nul_characters_are_400_on_both_databases(
    client: TestClient, org: Org, path: str, method: str, body: dict[str, Any]
) -> None:
    response = client.request(method, org.url(path), json=body, auth=org.auth)
    assert response.status_code == 400, response.text
    assert "NUL" in response.json()["error"]


def test_unpaired_surrogates_are_400(client: TestClient, org: Org) -> None:
    response = client.post(
        org.url("/keys"),
        content=b'{"name": "\\ud800", "roles": ["admin"]}',
        headers={"content-type": "application/json"},
        auth=org.auth,
    )
    assert response.status_code == 400
    assert "name" in response.json()["error"]


def test_console_forms_refuse_nul_characters(client: TestClient, org: Org) -> None:
    page = client.get("/console/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    response = client.post(
        "/console/login", data={"email": "a\x00@example.com", "password": "x", "csrf_token": token}
    )
    assert response.status_code == 400


def test_control_characters_in_user_agent_are_stored_safely(client: TestClient, org: Org) -> None:
    response = client.post(
        org.url("/keys"),
        json={"name": "ua", "roles": ["developer"]},
        headers={"user-agent": "evil\x01agent"},
        auth=org.auth,
    )
    assert response.status_code == 200, response.text
    activities = client.get(org.url("/activities"), auth=org.auth).json()["result"]
    assert activities[0]["userAgent"] == "evil\ufffdagent"


# --- dates ----------------------------------------------------------------------------------


@pytest.mark.parametrize("when", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"])
def test_dates_that_overflow_in_utc_are_400(client: TestClient, org: Org, when: str) -> None:
    response = client.post(
        org.url("/keys"), json={"name": "k", "roles": ["admin"], "expireAt": when}, auth=org.auth
    )
    assert response.status_code == 400
    assert "expireAt" in response.json()["error"]
    listed = client.get(org.url("/activities"), params={"from_date": when}, auth=org.auth)
    assert listed.status_code == 400


def test_an_empty_expire_at_means_never(client: TestClient, org: Org) -> None:
    created = create_key(client, org, expireAt="")
    assert created["key"].get("expireAt") is None
    key_url = org.url(f"/keys/{created['key']['id']}")
    client.patch(key_url, json={"expireAt": "2999-01-01T00:00:00Z"}, auth=org.auth)
    patched = client.patch(key_url, json={"expireAt": ""}, auth=org.auth)
    assert patched.status_code == 200
    assert patched.json()["result"].get("expireAt") is None


# --- addresses ------------------------------------------------------------------------------


def test_forwarded_for_is_read_across_every_header_line(settings: Settings, org: Org) -> None:
    # The trusted proxy appends its own line with the real client; the client's own line must
    # not choose the address.
    proxied = settings.model_copy(update={"trusted_proxies": ["127.0.0.1/32"]})
    state = AppState.from_settings(proxied)
    try:
        with make_client(state) as client:
            key = create_key(client, org, ipAccessList=[{"source": "203.0.113.5"}])
            headers = [(b"x-forwarded-for", b"203.0.113.5"), (b"x-forwarded-for", b"198.51.100.7")]
            response = client.get(org.url(), headers=headers, auth=key_auth(key))
            assert response.status_code == 403
            one_line = [(b"x-forwarded-for", b"198.51.100.7, 203.0.113.5")]
            assert client.get(org.url(), headers=one_line, auth=key_auth(key)).status_code == 200
    finally:
        state.close()


# --- the database ---------------------------------------------------------------------------


def test_an_unreachable_database_is_503_with_retry_after_and_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Nothing listens on port 1: every connection is refused at once.
    settings = make_settings("postgresql://127.0.0.1:1/nowhere", database_connect_timeout=2)
    state = AppState.from_settings(settings)
    try:
        with make_client(state) as client, caplog.at_level(logging.WARNING):
            response = client.get(f"/v1/organizations/{uuid.uuid4()}", auth=("id", "secret"))
            assert response.status_code == 503
            assert response.headers["retry-after"]
            assert response.json()["status"] == 503
            assert "unavailable" in response.json()["error"]
            assert client.get("/readyz").status_code == 503
            assert client.get("/healthz").status_code == 200
    finally:
        state.close()
    outage = [
        r
        for r in caplog.records
        if r.name == "keyhouse.database" and "(request -)" not in r.getMessage()
    ]
    assert len(outage) == 2  # one per failed request (the rest are start-up retries)
    assert all(r.exc_info is None for r in outage)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_locked_database_times_out_as_503_instead_of_hanging(
    database_urls: dict[str, str], backend: str
) -> None:
    settings = make_settings(database_urls[backend], database_statement_timeout=1)
    org = create_org(settings)
    state = AppState.from_settings(settings)
    url = database_urls[backend]
    if backend == "sqlite":
        holder: Any = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # holds the write lock
    else:
        holder = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"))
        holder.execute("SELECT id FROM api_keys WHERE id = %s FOR UPDATE", (org.key_uuid,))
    try:
        with make_client(state) as client:
            started = time.monotonic()
            response = client.patch(
                org.url(f"/keys/{org.key_uuid}"), json={"name": "renamed"}, auth=org.auth
            )
            assert response.status_code == 503, response.text
            assert time.monotonic() - started < 10
        assert client.get("/readyz").status_code == 200  # reads still work
    finally:
        holder.rollback()
        holder.close()
        state.close()


def test_context_repr_shows_no_secret(state: AppState) -> None:
    ctx = Context(
        state=state,
        key_id="AAAABBBBCCCCDDDDEEEE",
        key_secret="khs_the-secret",
        ip_address=None,
        user_agent=None,
        permission="x",
        organization_id=None,
    )
    assert "khs_the-secret" not in repr(ctx)
    assert "AAAABBBBCCCCDDDDEEEE" in repr(ctx)


# --- rate limits ----------------------------------------------------------------------------


def test_the_rate_limit_window_moves(settings: Settings, org: Org) -> None:
    """3 per 2 s: a fixed window lets 5 through within half a second around its edge."""
    state = AppState.from_settings(settings.model_copy(update={"rate_limit": "3/2s"}))
    try:
        with make_client(state) as client:
            assert client.get(org.url(), auth=org.auth).status_code == 200  # t = 0
            time.sleep(1.8)
            statuses = [client.get(org.url(), auth=org.auth).status_code for _ in range(2)]
            assert statuses == [200, 200]
            time.sleep(0.35)  # past t = 2: a fixed window would start afresh
            late = [client.get(org.url(), auth=org.auth).status_code for _ in range(3)]
            assert late.count(200) == 1  # only the t = 0 request left the window
            assert late[-1] == 429
    finally:
        state.close()


def test_failed_authentications_are_limited_per_address(settings: Settings, org: Org) -> None:
    limited = settings.model_copy(update={"auth_failures_per_ip": "3/60s"})
    state = AppState.from_settings(limited)
    try:
        with make_client(state, ip="192.0.2.10") as attacker, make_client(state) as other:
            for _ in range(3):
                assert attacker.get(org.url(), auth=(org.key_id, "wrong")).status_code == 401
            refused = attacker.get(org.url(), auth=org.auth)  # even a right key, from there
            assert refused.status_code == 429
            assert int(refused.headers["retry-after"]) > 0
            assert other.get(org.url(), auth=org.auth).status_code == 200
    finally:
        state.close()


def test_failed_authentications_are_limited_per_key_id(settings: Settings, org: Org) -> None:
    limited = settings.model_copy(update={"auth_failures_per_key_id": "2/60s"})
    state = AppState.from_settings(limited)
    try:
        for index in range(2):
            with make_client(state, ip=f"192.0.2.{20 + index}") as client:
                assert client.get(org.url(), auth=(org.key_id, "wrong")).status_code == 401
        with make_client(state, ip="192.0.2.30") as client:
            assert client.get(org.url(), auth=(org.key_id, "wrong")).status_code == 429
            assert client.get(org.url(), auth=("AnotherKeyId00000000", "x")).status_code == 401
    finally:
        state.close()


# --- the console ----------------------------------------------------------------------------


def _token(client: TestClient, path: str = "/console/login") -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text)
    assert match
    return match.group(1)


def _email(client: TestClient, org: Org) -> str:
    return str(
        client.get(org.url(f"/members/{org.user_id}"), auth=org.auth).json()["result"]["email"]
    )


def test_sign_in_throttle_cannot_be_raced(settings: Settings, org: Org) -> None:
    throttled = settings.model_copy(update={"login_failures_per_account": 3})
    state = AppState.from_settings(throttled)
    try:
        with make_client(state) as admin:
            email = _email(admin, org)
        clients = [make_client(state, ip=f"198.51.100.{i}") for i in range(10)]
        tokens = [_token(c) for c in clients]
        barrier = threading.Barrier(len(clients))
        statuses: list[int] = []

        def attempt(client: TestClient, token: str) -> None:
            barrier.wait()
            response = client.post(
                "/console/login",
                data={"email": email, "password": "wrong password!", "csrf_token": token},
            )
            statuses.append(response.status_code)

        threads = [
            threading.Thread(target=attempt, args=pair)
            for pair in zip(clients, tokens, strict=True)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(statuses) == [401] * 3 + [429] * 7
    finally:
        for client in clients:
            client.close()
        state.close()


def _signed_in(state: AppState, org: Org) -> TestClient:
    client = make_client(state)
    email = _email(client, org)
    response = client.post(
        "/console/login",
        data={"email": email, "password": "correct horse battery", "csrf_token": _token(client)},
        follow_redirects=False,
    )
    assert response.status_code == 303
    return client


def test_csrf_tokens_are_bound_to_the_session(state: AppState, org: Org) -> None:
    with _signed_in(state, org) as victim:
        page = f"/console/o/{org.id}/keys"
        token = _token(victim, page)
        assert token != victim.cookies.get("kh_csrf")  # not the cookie any more
        # An attacker who planted a known kh_csrf cookie and submits it gets nothing.
        victim.cookies.set("kh_csrf", "planted", path="/console")
        forged = victim.post(
            f"/console/o/{org.id}/keys",
            data={"name": "forged", "expiration": "never", "csrf_token": "planted"},
        )
        assert forged.status_code == 403
        # Another session's token does not work either.
        with _signed_in(state, org) as other:
            other_token = _token(other, page)
        assert other_token != token
        stolen = victim.post(
            f"/console/o/{org.id}/keys/{org.key_uuid}/state",
            data={"state": "disabled", "csrf_token": other_token},
        )
        assert stolen.status_code == 403


def test_posts_from_another_origin_are_refused(state: AppState, org: Org) -> None:
    with _signed_in(state, org) as client:
        page = f"/console/o/{org.id}/keys"
        token = _token(client, page)
        target = f"/console/o/{org.id}/keys/{org.key_uuid}/state"
        data = {"state": "disabled", "csrf_token": token}
        for headers in (
            {"origin": "https://evil.example"},
            {"origin": "null"},
            {"sec-fetch-site": "cross-site"},
        ):
            response = client.post(target, data=data, headers=headers)
            assert response.status_code == 403, headers
        with state.sessionmaker() as session:
            assert session.get(ApiKey, org.key_uuid).state == "enabled"  # type: ignore[union-attr]
        same = client.post(
            target, data=data, headers={"origin": "http://testserver"}, follow_redirects=False
        )
        assert same.status_code == 303


def test_console_pages_carry_a_content_security_policy(state: AppState, org: Org) -> None:
    with _signed_in(state, org) as client:
        for path in ("/console/login", f"/console/o/{org.id}/keys", f"/console/o/{org.id}/members"):
            policy = client.get(path).headers["content-security-policy"]
            assert "frame-ancestors 'none'" in policy
            assert "script-src 'self'" in policy
            assert "unsafe-inline" not in policy
        html = client.get(f"/console/o/{org.id}/keys").text
        assert "style=" not in html
        assert "<script>" not in html


def test_idle_console_sessions_are_deleted(state: AppState, org: Org) -> None:
    with _signed_in(state, org) as client:
        with state.sessionmaker.begin() as session:
            session.execute(
                update(ConsoleSession)
                .where(ConsoleSession.user_id == org.user_id)
                .values(last_seen_at=utcnow() - dt.timedelta(hours=5))
            )
        assert (
            "/console/login" in client.get("/console", follow_redirects=False).headers["location"]
        )
        with state.sessionmaker() as session:
            rows = session.scalars(
                select(ConsoleSession).where(ConsoleSession.user_id == org.user_id)
            )
            assert list(rows) == []


def test_sign_in_purges_every_idle_session(state: AppState, org: Org, client: TestClient) -> None:
    other = uuid.UUID(invite_and_accept(client, org, state))
    with state.sessionmaker.begin() as session:
        session.add(
            ConsoleSession(
                user_id=other,
                token_hash=uuid.uuid4().hex * 2,
                last_seen_at=utcnow() - dt.timedelta(hours=9),
            )
        )
    _signed_in(state, org).close()
    with state.sessionmaker() as session:
        assert (
            list(session.scalars(select(ConsoleSession).where(ConsoleSession.user_id == other)))
            == []
        )
