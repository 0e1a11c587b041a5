"""Takes the console screenshots in docs/screenshots/ (run by hand: .venv/bin/python
scripts/screenshots.py). Starts a real server on a throw-away SQLite database and walks the
API Keys flow in Debian's Chromium."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2 as httpx
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "screenshots"
PORT = 18777
BASE = f"http://127.0.0.1:{PORT}"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "KEYHOUSE_PEPPER": "screenshots", "KEYHOUSE_RATE_LIMIT": "off"}
        server = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "keyhouse"),
                "serve",
                "--port",
                str(PORT),
                "--database-url",
                f"sqlite:///{tmp}/shots.db",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(100):
                try:
                    httpx.get(f"{BASE}/healthz", timeout=1)
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            shoot()
        finally:
            server.terminate()
            server.wait()


def shoot() -> None:
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
            ],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 760})
        page.goto(f"{BASE}/console")
        page.screenshot(path=OUT / "setup.png")
        page.get_by_label("Organization name").fill("Acme Analytics")
        page.get_by_label("Your name").fill("Ada Lovelace")
        page.get_by_label("Email").fill("ada@acme.example")
        page.get_by_label("Password").fill("a long admin password")
        page.get_by_role("button", name="Create organization").click()
        page.screenshot(path=OUT / "keys-empty.png")
        page.get_by_role("link", name="New API Key").first.click()
        page.get_by_label("Key name").fill("terraform-prod")
        page.get_by_label(re.compile(r"^Admin\b")).check()
        page.get_by_label("Expiration", exact=True).select_option("90")
        page.screenshot(path=OUT / "key-new.png", full_page=True)
        page.get_by_role("button", name="Generate API Key").click()
        page.screenshot(path=OUT / "key-created.png")
        org = re.search(r"/console/o/([0-9a-f-]{36})/", page.url).group(1)  # type: ignore[union-attr]
        for name, role in (("ci-readonly", "Developer"), ("billing-export", "Billing")):
            page.goto(f"{BASE}/console/o/{org}/keys/new")
            page.get_by_label("Key name").fill(name)
            page.get_by_label(re.compile(rf"^{role}\b")).check()
            page.get_by_role("button", name="Generate API Key").click()
        page.goto(f"{BASE}/console/o/{org}/keys")
        page.locator("tr", has_text="billing-export").get_by_role("button", name="Disable").click()
        page.screenshot(path=OUT / "keys.png")
        page.goto(f"{BASE}/console/o/{org}/members")
        page.get_by_label("Email").fill("grace@acme.example")
        page.get_by_role("button", name="Send invitation").click()
        page.screenshot(path=OUT / "members.png")
        page.goto(f"{BASE}/console/o/{org}/activity")
        page.screenshot(path=OUT / "activity.png")
        browser.close()


if __name__ == "__main__":
    main()
