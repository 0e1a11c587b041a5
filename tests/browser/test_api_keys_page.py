"""The API Keys page, steps 1-6 as ClickHouse Cloud's console does it, in a real browser."""

from __future__ import annotations

import re
import uuid

import httpx2 as httpx
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import ConsoleServer

PASSWORD = "a long admin password"


def _org_id(page: Page) -> str:
    match = re.search(r"/console/o/([0-9a-f-]{36})/", page.url)
    assert match, page.url
    return match.group(1)


def _setup(page: Page, server: ConsoleServer) -> str:
    page.goto(f"{server.base_url}/console")
    expect(page).to_have_url(re.compile(r"/console/setup$"))
    page.get_by_label("Organization name").fill("Browser org")
    page.get_by_label("Your name").fill("Ada Admin")
    page.get_by_label("Email").fill("ada@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create organization").click()
    expect(page).to_have_url(re.compile(r"/console/o/.+/keys$"))
    return _org_id(page)


def _sign_in(page: Page, server: ConsoleServer) -> None:
    page.goto(f"{server.base_url}/console/login")
    page.get_by_label("Email").fill("ada@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def _create_key(page: Page, name: str, role: str, expiration: str = "90") -> tuple[str, str]:
    page.get_by_role("link", name="New API Key").first.click()
    page.get_by_label("Key name").fill(name)
    page.get_by_label(re.compile(rf"^{role}\b")).check()
    page.get_by_label("Expiration", exact=True).select_option(expiration)
    page.get_by_role("button", name="Generate API Key").click()
    key_id = page.get_by_test_id("key-id").inner_text().strip()
    secret = page.get_by_test_id("key-secret").inner_text().strip()
    return key_id, secret


def test_api_keys_page_end_to_end(browser: Browser, console_server: ConsoleServer) -> None:
    context = browser.new_context()
    page = context.new_page()
    org_id = _setup(page, console_server)
    api = f"{console_server.base_url}/v1/organizations/{org_id}"

    # 1-2: the API Keys tab, and the first-key prompt on an empty page.
    expect(page.get_by_role("link", name="API Keys")).to_be_visible()
    expect(page.get_by_role("heading", name="Create your first API key")).to_be_visible()

    # 3-4: the create form, then the one-time reveal.
    key_id, secret = _create_key(page, "ci-pipeline", "Admin")
    assert re.fullmatch(r"[0-9A-Za-z]{20}", key_id)
    assert secret.startswith("khs_")
    # 5: how to use it, with this server's real address; and it works right away.
    expect(page.locator("#curl-line")).to_contain_text(
        f"curl --user {key_id}:{secret} {console_server.base_url}/v1/organizations"
    )
    assert (
        httpx.get(f"{console_server.base_url}/v1/organizations", auth=(key_id, secret)).status_code
        == 200
    )

    # Reloading or coming back shows no secret.
    page.reload()
    assert secret not in page.content()
    page.goto(f"{console_server.base_url}/console/o/{org_id}/keys")
    assert secret not in page.content()

    # 6: the list, with its columns.
    row = page.locator("tr", has_text="ci-pipeline")
    expect(row).to_contain_text(f"…{key_id[-4:]}")
    expect(row).to_contain_text("Admin")
    expect(row).to_contain_text("Enabled")
    expect(row).to_contain_text("ada@example.com")  # the creator
    expect(page.get_by_role("link", name="New API Key")).to_be_visible()

    # Disable: the very next request with the key is refused; enable brings it back.
    row.get_by_role("button", name="Disable").click()
    expect(page.locator("tr", has_text="ci-pipeline")).to_contain_text("Disabled")
    assert httpx.get(api, auth=(key_id, secret)).status_code == 401
    page.locator("tr", has_text="ci-pipeline").get_by_role("button", name="Enable").click()
    expect(page.locator("tr", has_text="ci-pipeline")).to_contain_text("Enabled")
    assert httpx.get(api, auth=(key_id, secret)).status_code == 200

    # Edit: name, permissions, expiration.
    page.locator("tr", has_text="ci-pipeline").get_by_role("link", name="Edit").click()
    page.get_by_label("Key name").fill("ci-readonly")
    page.get_by_label(re.compile(r"^Admin\b")).uncheck()
    page.get_by_label(re.compile(r"^Developer\b")).check()
    page.get_by_label("Expiration", exact=True).select_option("never")
    page.get_by_role("button", name="Save changes").click()
    row = page.locator("tr", has_text="ci-readonly")
    expect(row).to_contain_text("Developer")
    expect(row).to_contain_text("Never")
    assert (
        httpx.post(
            f"{api}/keys", json={"name": "x", "roles": ["developer"]}, auth=(key_id, secret)
        ).status_code
        == 403
    )

    # Delete: the page warns first; then the key is cut off at once.
    row.get_by_role("link", name="Delete").click()
    expect(page.get_by_text("permanent")).to_be_visible()
    expect(page.get_by_text("cut off at once")).to_be_visible()
    page.get_by_role("button", name="Delete API key").click()
    expect(page.get_by_role("status")).to_contain_text("was deleted")
    expect(page.locator("tr", has_text="ci-readonly")).to_have_count(0)
    assert httpx.get(api, auth=(key_id, secret)).status_code == 401
    context.close()


def test_invalid_ip_is_a_friendly_error(browser: Browser, console_server: ConsoleServer) -> None:
    context = browser.new_context()
    page = context.new_page()
    _sign_in(page, console_server)
    page.get_by_role("link", name="New API Key").first.click()
    page.get_by_label("Key name").fill("bad-ip")
    page.get_by_label(re.compile(r"^Developer\b")).check()
    page.get_by_label("IP allow list").fill("300.1.2.3")
    page.get_by_role("button", name="Generate API Key").click()
    expect(page.get_by_role("alert")).to_contain_text("Invalid IP address or CIDR: 300.1.2.3")
    assert "Traceback" not in page.content()
    context.close()


def test_a_developer_cannot_grant_admin(browser: Browser, console_server: ConsoleServer) -> None:
    admin = browser.new_context()
    page = admin.new_page()
    _sign_in(page, console_server)
    org_id = _org_id(page)
    # Invite a developer; without SMTP the page shows the acceptance link.
    page.get_by_role("link", name="Members").click()
    email = f"dev-{uuid.uuid4().hex[:6]}@example.com"
    page.get_by_label("Email").fill(email)
    page.get_by_label("Role", exact=True).select_option(label="Developer")
    page.get_by_role("button", name="Send invitation").click()
    link = page.get_by_test_id("accept-url").inner_text().strip()
    admin_role = (
        page.get_by_label("Role", exact=True)
        .locator("option", has_text=re.compile(r"^Admin$"))
        .get_attribute("value")
    )

    developer = browser.new_context()
    dev = developer.new_page()
    dev.goto(link)
    dev.get_by_label("Your name").fill("Dee Developer")
    dev.get_by_label("Password").fill("another long password")
    dev.get_by_role("button", name="Accept invitation").click()
    expect(dev).to_have_url(re.compile(rf"/console/o/{org_id}/keys"))
    # Read-only: no way to create a key is offered ...
    expect(dev.get_by_role("link", name="New API Key")).to_have_count(0)
    # ... and a forged form post asking for Admin is refused, politely.
    csrf = next(c["value"] for c in developer.cookies() if c["name"] == "kh_csrf")
    response = developer.request.post(
        f"{console_server.base_url}/console/o/{org_id}/keys",
        form={
            "csrf_token": csrf,
            "name": "escalate",
            "roles": admin_role or "",
            "expiration": "never",
        },
    )
    assert response.status == 403
    assert "Traceback" not in response.text()
    keys = page.request.get(f"{console_server.base_url}/console/o/{org_id}/keys").text()
    assert "escalate" not in keys
    admin.close()
    developer.close()


def test_form_posts_without_csrf_are_refused(
    browser: Browser, console_server: ConsoleServer
) -> None:
    context = browser.new_context()
    page = context.new_page()
    _sign_in(page, console_server)
    org_id = _org_id(page)
    response = context.request.post(
        f"{console_server.base_url}/console/o/{org_id}/keys",
        form={"name": "no-csrf", "expiration": "never"},
    )
    assert response.status == 403
    context.close()


def test_every_key_action_works_with_javascript_off(
    browser: Browser, console_server: ConsoleServer
) -> None:
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    _sign_in(page, console_server)
    org_id = _org_id(page)
    api = f"{console_server.base_url}/v1/organizations/{org_id}"
    key_id, secret = _create_key(page, "no-js", "Developer", expiration="30")
    assert httpx.get(api, auth=(key_id, secret)).status_code == 200
    page.get_by_role("link", name="Back to API Keys").click()
    page.locator("tr", has_text="no-js").get_by_role("button", name="Disable").click()
    expect(page.locator("tr", has_text="no-js")).to_contain_text("Disabled")
    assert httpx.get(api, auth=(key_id, secret)).status_code == 401
    page.locator("tr", has_text="no-js").get_by_role("link", name="Delete").click()
    page.get_by_role("button", name="Delete API key").click()
    expect(page.get_by_role("status")).to_contain_text("was deleted")
    expect(page.locator("tr", has_text="no-js")).to_have_count(0)
    # The organization switcher falls back to a plain submit button.
    expect(page.get_by_role("button", name="Switch")).to_be_visible()
    context.close()
