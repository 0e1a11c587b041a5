"""The console over HTTP (no browser): sessions, CSRF, throttling, and the same rules as the API.
The browser walk-through of the pages is in tests/browser."""

from __future__ import annotations

import datetime as dt
import re
import uuid

from fastapi.testclient import TestClient
from sqlalchemy import update

from keyhouse.config import Settings
from keyhouse.models import ConsoleSession
from keyhouse.state import AppState
from tests.conftest import Org, create_org, invite_and_accept, make_client

PASSWORD = "correct horse battery"


def _csrf(client: TestClient, path: str = "/console/login") -> str:
    html = client.get(path).text
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html[:500]
    return match.group(1)


def _email(client: TestClient, org: Org) -> str:
    member = client.get(org.url(f"/members/{org.user_id}"), auth=org.auth).json()["result"]
    return str(member["email"])


def sign_in(client: TestClient, email: str, password: str = PASSWORD) -> object:
    token = _csrf(client)
    return client.post(
        "/console/login",
        data={"email": email, "password": password, "csrf_token": token},
        follow_redirects=False,
    )


def test_sign_in_sets_a_hardened_session_cookie(client: TestClient, org: Org) -> None:
    response = sign_in(client, _email(client, org))
    assert response.status_code == 303  # type: ignore[attr-defined]
    cookie = response.headers["set-cookie"]  # type: ignore[attr-defined]
    assert "kh_session=" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie or "samesite=lax" in cookie.lower()
    page = client.get("/console", follow_redirects=True)
    assert page.status_code == 200
    assert "API Keys" in page.text
    assert page.headers["cache-control"] == "no-store"


def test_wrong_password_is_refused_and_recorded(client: TestClient, org: Org) -> None:
    response = sign_in(client, _email(client, org), "wrong password!")
    assert response.status_code == 401  # type: ignore[attr-defined]
    assert "Wrong email or password" in response.text  # type: ignore[attr-defined]
    types = [a["type"] for a in client.get(org.url("/activities"), auth=org.auth).json()["result"]]
    assert "user_login_failed" in types
    sign_in(client, _email(client, org))
    types = [a["type"] for a in client.get(org.url("/activities"), auth=org.auth).json()["result"]]
    assert "user_login" in types


def test_posts_without_the_csrf_token_are_refused(client: TestClient, org: Org) -> None:
    sign_in(client, _email(client, org))
    response = client.post(
        f"/console/o/{org.id}/keys",
        data={"name": "forged", "roles": "x", "expiration": "never"},
        follow_redirects=False,
    )
    assert response.status_code == 403
    assert "did not come from this console" in response.text
    wrong = client.post(
        "/console/login",
        data={"email": "a@b.co", "password": "x", "csrf_token": "not-the-cookie"},
    )
    assert wrong.status_code == 403


def test_sign_in_is_throttled_per_account(settings: Settings, org: Org) -> None:
    throttled = AppState.from_settings(
        settings.model_copy(update={"login_failures_per_account": 2})
    )
    try:
        with make_client(throttled) as client:
            email = _email(client, org)
            codes = [sign_in(client, email, "nope nope nope").status_code for _ in range(3)]  # type: ignore[attr-defined]
            right = sign_in(client, email)
    finally:
        throttled.close()
    assert codes == [401, 401, 429]
    assert right.status_code == 429  # type: ignore[attr-defined]
    assert "Too many sign-in attempts" in right.text  # type: ignore[attr-defined]


def test_idle_sessions_expire(client: TestClient, org: Org, state: AppState) -> None:
    sign_in(client, _email(client, org))
    assert client.get(f"/console/o/{org.id}/keys", follow_redirects=False).status_code == 200
    with state.sessionmaker.begin() as session:
        session.execute(
            update(ConsoleSession).values(
                last_seen_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
            )
        )
    response = client.get(f"/console/o/{org.id}/keys", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/console/login")


def test_removing_a_member_signs_them_out_at_once(
    client: TestClient, org: Org, state: AppState
) -> None:
    email = f"leaver-{uuid.uuid4().hex[:6]}@example.com"
    user_id = invite_and_accept(client, org, state, email=email)
    with make_client(state) as member:
        sign_in(member, email, "long enough pw")
        assert member.get(f"/console/o/{org.id}/keys", follow_redirects=False).status_code == 200
        client.delete(org.url(f"/members/{user_id}"), auth=org.auth)
        response = member.get(f"/console/o/{org.id}/keys", follow_redirects=False)
    assert response.status_code == 303


def test_another_organization_is_not_found(
    client: TestClient, org: Org, settings: Settings
) -> None:
    other = create_org(settings)
    sign_in(client, _email(client, org))
    response = client.get(f"/console/o/{other.id}/keys")
    assert response.status_code == 404
    assert "Traceback" not in response.text


def test_setup_is_closed_once_an_organization_exists(client: TestClient, org: Org) -> None:
    assert client.get("/console/setup", follow_redirects=False).headers["location"] == (
        "/console/login"
    )
    token = _csrf(client)
    response = client.post(
        "/console/setup",
        data={
            "org_name": "Sneaky",
            "name": "x",
            "email": "sneaky@example.com",
            "password": "long password here",
            "csrf_token": token,
        },
    )
    assert response.status_code == 403


def test_a_key_created_in_the_console_works_and_reload_shows_no_secret(
    client: TestClient, org: Org
) -> None:
    sign_in(client, _email(client, org))
    form = client.get(f"/console/o/{org.id}/keys/new").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]
    nonce = re.search(r'name="nonce" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]
    admin_role = re.search(r'value="([0-9a-f-]{36})"[^>]*>Admin ', form).group(1)  # type: ignore[union-attr]
    data = {
        "csrf_token": token,
        "nonce": nonce,
        "name": "from the console",
        "roles": admin_role,
        "expiration": "30",
        "ip_access_list": "",
    }
    created = client.post(f"/console/o/{org.id}/keys", data=data)
    assert created.status_code == 200, created.text
    key_id = re.search(r'data-testid="key-id">([^<]+)<', created.text).group(1)  # type: ignore[union-attr]
    secret = re.search(r'data-testid="key-secret">([^<]+)<', created.text).group(1)  # type: ignore[union-attr]
    assert client.get(org.url(), auth=(key_id, secret)).status_code == 200
    again = client.post(f"/console/o/{org.id}/keys", data=data)  # a reload re-submits
    assert secret not in again.text
    assert "already created" in again.text
    listing = client.get(f"/console/o/{org.id}/keys").text
    assert secret not in listing
    assert key_id[-4:] in listing
    assert listing.count('data-key-row="from the console"') == 1
    keys = client.get(org.url("/keys"), auth=org.auth).json()["result"]
    assert keys[-1]["createdBy"]["type"] == "user"


def test_cookies_are_secure_behind_a_trusted_https_proxy(settings: Settings, org: Org) -> None:
    proxied = AppState.from_settings(
        settings.model_copy(update={"trusted_proxies": ["10.0.0.0/8"]})
    )
    try:
        with make_client(proxied, ip="10.0.0.5") as via_proxy:
            https = via_proxy.get("/console/login", headers={"X-Forwarded-Proto": "https"})
        with make_client(proxied, ip="203.0.113.5") as direct:
            spoofed = direct.get("/console/login", headers={"X-Forwarded-Proto": "https"})
    finally:
        proxied.close()
    assert "secure" in https.headers["set-cookie"].lower()
    assert "secure" not in spoofed.headers["set-cookie"].lower()


def test_reaching_the_key_quota_is_a_friendly_message(settings: Settings) -> None:
    limited = AppState.from_settings(settings.model_copy(update={"max_keys_per_organization": 1}))
    org = create_org(settings)  # its bootstrap key fills the quota
    try:
        with make_client(limited) as client:
            sign_in(client, _email(client, org))
            form = client.get(f"/console/o/{org.id}/keys/new").text
            token = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]
            role = re.search(r'value="([0-9a-f-]{36})"[^>]*>Developer ', form).group(1)  # type: ignore[union-attr]
            response = client.post(
                f"/console/o/{org.id}/keys",
                data={
                    "csrf_token": token,
                    "name": "one too many",
                    "roles": role,
                    "expiration": "never",
                },
            )
    finally:
        limited.close()
    assert response.status_code == 409
    assert "at most 1 API keys" in response.text
    assert 'role="alert"' in response.text


def test_expiration_on_a_date_and_a_missing_date(client: TestClient, org: Org) -> None:
    sign_in(client, _email(client, org))
    form = client.get(f"/console/o/{org.id}/keys/new").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]
    role = re.search(r'value="([0-9a-f-]{36})"[^>]*>Developer ', form).group(1)  # type: ignore[union-attr]
    day = (dt.datetime.now(dt.UTC) + dt.timedelta(days=45)).date().isoformat()
    base = {"csrf_token": token, "roles": role, "expiration": "date"}
    created = client.post(
        f"/console/o/{org.id}/keys", data={**base, "name": "dated", "expire_date": day}
    )
    assert created.status_code == 200
    keys = client.get(org.url("/keys"), auth=org.auth).json()["result"]
    assert next(k for k in keys if k["name"] == "dated")["expireAt"].startswith(day)
    missing = client.post(f"/console/o/{org.id}/keys", data={**base, "name": "undated"})
    assert missing.status_code == 400
    assert "Choose an expiration date" in missing.text
