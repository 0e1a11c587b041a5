"""The keyhouse command: bootstrap, db upgrade, keys revoke."""

from __future__ import annotations

import io
import json
import uuid

import pytest
from fastapi.testclient import TestClient

from keyhouse import cli
from keyhouse.config import Settings
from keyhouse.models import Organization
from keyhouse.state import AppState
from tests.conftest import PEPPER, create_key, create_org, make_client


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> Settings:
    monkeypatch.setenv("KEYHOUSE_PEPPER", PEPPER)
    monkeypatch.setenv("KEYHOUSE_RATE_LIMIT", "off")
    return settings


def _bootstrap(settings: Settings, capsys: pytest.CaptureFixture[str], *extra: str) -> dict:  # type: ignore[type-arg]
    email = f"Owner-{uuid.uuid4().hex[:8]}@Example.com"
    code = cli.main(
        [
            "bootstrap",
            "--org-name",
            "CLI org",
            "--email",
            email,
            "--database-url",
            settings.database_url,
            "--json",
            *extra,
        ]
    )
    assert code == 0
    output: dict = json.loads(capsys.readouterr().out)  # type: ignore[type-arg]
    return output


def test_bootstrap_prints_credentials_that_work(
    env: Settings, capsys: pytest.CaptureFixture[str], state: AppState
) -> None:
    output = _bootstrap(env, capsys)
    for field in ("organizationId", "userId", "email", "password", "keyId", "keySecret"):
        assert output[field]
    assert output["email"] == output["email"].lower()
    with make_client(state) as client:
        response = client.get(
            f"/v1/organizations/{output['organizationId']}",
            auth=(output["keyId"], output["keySecret"]),
        )
    assert response.status_code == 200
    assert response.json()["result"]["name"] == "CLI org"


def test_bootstrap_twice_adds_another_organization(
    env: Settings, capsys: pytest.CaptureFixture[str], state: AppState
) -> None:
    first = _bootstrap(env, capsys)
    second = _bootstrap(env, capsys)
    assert first["organizationId"] != second["organizationId"]
    with state.sessionmaker() as session:
        for output in (first, second):
            assert session.get(Organization, uuid.UUID(output["organizationId"])) is not None


def test_bootstrap_reads_the_password_from_stdin(
    env: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("a very long passphrase\n"))
    output = _bootstrap(env, capsys, "--password-stdin")
    assert output["password"] == "a very long passphrase"


def test_bootstrap_rejects_a_short_password(
    env: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    code = cli.main(
        [
            "bootstrap",
            "--org-name",
            "x",
            "--email",
            "short@example.com",
            "--password-stdin",
            "--database-url",
            env.database_url,
        ]
    )
    assert code == 2
    assert "password" in capsys.readouterr().err


def test_db_upgrade_is_idempotent(env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["db", "upgrade", "--database-url", env.database_url]) == 0
    assert "up to date" in capsys.readouterr().out


def test_keys_revoke_offline(
    env: Settings, capsys: pytest.CaptureFixture[str], client: TestClient
) -> None:
    org = create_org(env)
    leaked = create_key(client, org, name="leaked")
    by_id = create_key(client, org, name="by id")
    url = env.database_url
    assert cli.main(["keys", "revoke", "--key-id", leaked["keyId"], "--database-url", url]) == 0
    assert cli.main(["keys", "revoke", "--id", by_id["key"]["id"], "--database-url", url]) == 0
    assert "revoked" in capsys.readouterr().out
    for created in (leaked, by_id):
        response = client.get(org.url(), auth=(created["keyId"], created["keySecret"]))
        assert response.status_code == 401
    activities = client.get(org.url("/activities"), auth=org.auth).json()["result"]
    assert {a["targetKeyId"] for a in activities if a["type"] == "key_delete"} == {
        leaked["key"]["id"],
        by_id["key"]["id"],
    }
    assert cli.main(["keys", "revoke", "--key-id", "nope", "--database-url", url]) == 1


def test_bad_rate_limit_flag_is_a_usage_error() -> None:
    with pytest.raises(SystemExit):
        cli.main(["serve", "--rate-limit", "fast"])


def test_bootstrap_with_an_existing_email_keeps_its_password(
    env: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("first password here\n"))
    email = f"twice-{uuid.uuid4().hex[:6]}@example.com"
    args = ["bootstrap", "--org-name", "A", "--email", email, "--database-url", env.database_url]
    assert cli.main([*args, "--json", "--password-stdin"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert cli.main([*args, "--json"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert first["password"] == "first password here"
    assert second["password"] is None
    assert second["userId"] == first["userId"]
