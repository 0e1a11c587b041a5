"""Invitations: create, list, get, delete, accept (single use, expiring), optional SMTP."""

from __future__ import annotations

import datetime as dt
import io
import socket
import uuid
from collections.abc import Iterator
from email import message_from_bytes
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select

from keyhouse import cli
from keyhouse.config import Settings
from keyhouse.invitations.service import accept_invitation
from keyhouse.models import Invitation
from keyhouse.state import AppState
from tests.conftest import PEPPER, Org, create_org, invite_and_accept, make_client, role_id


def _invite(client: TestClient, org: Org, **body: Any) -> Any:
    body.setdefault("email", f"new-{uuid.uuid4().hex[:8]}@example.com")
    body.setdefault("role", "developer")
    return client.post(org.url("/invitations"), json=body, auth=org.auth)


def _accept(session: Any, state: AppState, token: str, name: str) -> Any:
    return accept_invitation(
        session, pepper=state.pepper, token=token, name=name, password="long password"
    )


def _token(invitation: dict[str, Any]) -> str:
    return str(invitation["acceptUrl"].split("token=", 1)[1])


def test_create_returns_a_link_and_stores_the_email_lowercase(
    client: TestClient, org: Org, state: AppState
) -> None:
    response = _invite(client, org, email="Someone@Example.COM")
    assert response.status_code == 200, response.text
    invitation = response.json()["result"]
    assert invitation["email"] == "someone@example.com"
    assert invitation["role"] == "developer"
    assert invitation["acceptUrl"].startswith("http://testserver/console/invitations/accept?token=")
    assert len(_token(invitation)) >= 43  # 256 bits, url-safe base64
    expires = dt.datetime.fromisoformat(invitation["expireAt"])
    created = dt.datetime.fromisoformat(invitation["createdAt"])
    assert expires - created == dt.timedelta(days=30)
    with state.sessionmaker() as session:
        row = session.get(Invitation, uuid.UUID(invitation["id"]))
        assert row is not None
        assert _token(invitation) not in row.token_hash
    listed = client.get(org.url("/invitations"), auth=org.auth).json()["result"]
    assert [i["id"] for i in listed] == [invitation["id"]]
    assert "acceptUrl" not in listed[0]
    got = client.get(org.url(f"/invitations/{invitation['id']}"), auth=org.auth).json()
    assert got["result"]["email"] == "someone@example.com"


def test_one_open_invitation_per_email(client: TestClient, org: Org, state: AppState) -> None:
    first = _invite(client, org, email="twice@example.com").json()["result"]
    again = _invite(client, org, email="TWICE@example.com")
    assert again.status_code == 409
    # Once expired, a new invitation replaces it.
    with state.sessionmaker.begin() as session:
        row = session.get(Invitation, uuid.UUID(first["id"]))
        assert row is not None
        row.expire_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    assert _invite(client, org, email="twice@example.com").status_code == 200


def test_inviting_a_member_is_409(client: TestClient, org: Org) -> None:
    admin = client.get(org.url(f"/members/{org.user_id}"), auth=org.auth).json()["result"]
    assert _invite(client, org, email=admin["email"]).status_code == 409


def test_bad_invitations_are_400(client: TestClient, org: Org) -> None:
    assert _invite(client, org, email="not-an-email").status_code == 400
    assert _invite(client, org, role="owner").status_code == 400


def test_accept_creates_the_member_with_the_invited_roles(
    client: TestClient, org: Org, state: AppState
) -> None:
    billing = role_id(client, org, "Billing")
    invitation = _invite(client, org, role=None, assignedRoleIds=[billing]).json()["result"]
    with state.sessionmaker.begin() as session:
        accepted = _accept(session, state, _token(invitation), "Ada")
    member = client.get(org.url(f"/members/{accepted.user_id}"), auth=org.auth).json()["result"]
    assert member["name"] == "Ada"
    assert [r["roleName"] for r in member["assignedRoles"]] == ["Billing"]
    assert client.get(org.url("/invitations"), auth=org.auth).json()["result"] == []
    types = {a["type"] for a in client.get(org.url("/activities"), auth=org.auth).json()["result"]}
    assert {"organization_invite_create", "organization_member_join"} <= types


def test_a_token_works_once_and_not_after_expiry(
    client: TestClient, org: Org, state: AppState
) -> None:
    from keyhouse.api.errors import NotFound

    invitation = _invite(client, org).json()["result"]
    with state.sessionmaker.begin() as session:
        _accept(session, state, _token(invitation), "A")
    with pytest.raises(NotFound), state.sessionmaker.begin() as session:
        _accept(session, state, _token(invitation), "A")
    late = _invite(client, org).json()["result"]
    with state.sessionmaker.begin() as session:
        row = session.get(Invitation, uuid.UUID(late["id"]))
        assert row is not None
        row.expire_at = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    with pytest.raises(NotFound), state.sessionmaker.begin() as session:
        _accept(session, state, _token(late), "A")


def test_the_same_person_joins_a_second_organization(
    client: TestClient, org: Org, settings: Settings, state: AppState
) -> None:
    email = f"both-{uuid.uuid4().hex[:6]}@example.com"
    first = invite_and_accept(client, org, state, email=email)
    other = create_org(settings)
    second = invite_and_accept(client, other, state, email=email)
    assert first == second


def test_delete_invitation(client: TestClient, org: Org, state: AppState) -> None:
    invitation = _invite(client, org).json()["result"]
    url = org.url(f"/invitations/{invitation['id']}")
    assert client.delete(url, auth=org.auth).status_code == 200
    assert client.get(url, auth=org.auth).status_code == 404
    from keyhouse.api.errors import NotFound

    with pytest.raises(NotFound), state.sessionmaker.begin() as session:
        _accept(session, state, _token(invitation), "A")
    types = {a["type"] for a in client.get(org.url("/activities"), auth=org.auth).json()["result"]}
    assert "organization_invite_delete" in types


def test_accept_from_the_command_line(
    client: TestClient,
    org: Org,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("KEYHOUSE_PEPPER", PEPPER)
    monkeypatch.setattr("sys.stdin", io.StringIO("a long passphrase\n"))
    invitation = _invite(client, org, email="cli-user@example.com").json()["result"]
    code = cli.main(
        [
            "invitations",
            "accept",
            _token(invitation),
            "--name",
            "Cli User",
            "--password-stdin",
            "--database-url",
            settings.database_url,
        ]
    )
    assert code == 0
    assert "cli-user@example.com joined" in capsys.readouterr().out
    emails = [m["email"] for m in client.get(org.url("/members"), auth=org.auth).json()["result"]]
    assert "cli-user@example.com" in emails


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(envelope.content)
        return "250 OK"


@pytest.fixture
def smtp_server() -> Iterator[tuple[str, _Inbox]]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield f"smtp://127.0.0.1:{port}", inbox
    finally:
        controller.stop()


def test_with_smtp_the_link_is_emailed_not_returned(
    settings: Settings, org: Org, smtp_server: tuple[str, _Inbox]
) -> None:
    url, inbox = smtp_server
    mailing = AppState.from_settings(
        settings.model_copy(
            update={"smtp_url": SecretStr(url), "public_url": "https://keys.example.com"}
        )
    )
    try:
        with make_client(mailing) as client:
            response = _invite(client, org, email="mailed@example.com")
    finally:
        mailing.close()
    assert response.status_code == 200, response.text
    assert "acceptUrl" not in response.json()["result"]
    [raw] = inbox.messages
    message = message_from_bytes(raw)
    assert message["To"] == "mailed@example.com"
    body = message.get_payload(decode=True).decode()  # type: ignore[union-attr]
    assert "https://keys.example.com/console/invitations/accept?token=" in body


def test_when_the_mail_server_refuses_nothing_is_created(
    settings: Settings, org: Org, state: AppState
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]  # closed again: nothing listens there
    mailing = AppState.from_settings(
        settings.model_copy(update={"smtp_url": SecretStr(f"smtp://127.0.0.1:{dead}")})
    )
    try:
        with make_client(mailing) as client:
            response = _invite(client, org, email="lost@example.com")
    finally:
        mailing.close()
    assert response.status_code == 502
    with state.sessionmaker() as session:
        assert (
            session.scalars(select(Invitation).where(Invitation.email == "lost@example.com")).all()
            == []
        )


def test_concurrent_invitations_for_one_email_are_a_conflict_not_an_error(
    client: TestClient, org: Org, state: AppState
) -> None:
    import asyncio
    import concurrent.futures

    from keyhouse.api.errors import Conflict
    from keyhouse.invitations.service import create_invitation
    from keyhouse.roles.service import user_principal
    from keyhouse.transactions import run_in_transaction

    def invite(session: Any) -> None:
        admin = user_principal(session, user_id=org.user_id, name="a", organization_id=org.id)
        create_invitation(
            session,
            admin,
            email="race@example.com",
            legacy_role="developer",
            role_ids=None,
            pepper=state.pepper,
            ttl_days=30,
        )

    async def race() -> list[BaseException | None]:
        return await asyncio.gather(
            *(run_in_transaction(state, invite) for _ in range(6)), return_exceptions=True
        )

    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # a loop of its own, in any thread
        outcomes = pool.submit(asyncio.run, race()).result()
    assert outcomes.count(None) == 1
    assert all(isinstance(o, Conflict) for o in outcomes if o is not None)


def test_tokens_never_start_with_a_dash() -> None:
    """A token is an argument of `keyhouse invitations accept`: a leading "-" would make it an
    option (1 token in 64 did, and the command failed)."""
    from keyhouse.invitations.service import _new_token

    assert not any(_new_token().startswith("-") for _ in range(2000))
