"""Every console page and form gives each person exactly what the API gives them.

Four people sign in (Member, Developer, a custom role, Admin); each has a twin API key with the
same roles. For every page and form, the twin's API call and the person's console request run on
twin targets made alike; both must be allowed or both refused, and a refused console action
must change nothing at all.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx2 import Response
from sqlalchemy import text

from keyhouse.state import AppState
from tests.conftest import Org, create_key, invite_and_accept, key_auth, make_client, role_id

PASSWORD = "long enough pw"
PERSONAS = ["Member", "Developer", "custom", "Admin"]


@dataclass
class Person:
    console: TestClient
    auth: tuple[str, str]


@dataclass
class World:
    client: TestClient
    org: Org
    state: AppState
    people: dict[str, Person]
    developer_role: str


def _csrf(client: TestClient, path: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text)
    assert match
    return match.group(1)


@pytest.fixture
def world(client: TestClient, org: Org, state: AppState) -> World:
    developer = role_id(client, org, "Developer")
    developer_policies = next(
        r
        for r in client.get(org.url("/roles"), auth=org.auth).json()["result"]
        if r["name"] == "Developer"
    )["policies"]
    custom = client.post(
        org.url("/roles"),
        json={
            "name": "Key keeper",
            "actors": [],
            "policies": [
                *(
                    {k: p[k] for k in ("allowDeny", "permissions", "resources")}
                    for p in developer_policies
                ),
                {
                    "allowDeny": "ALLOW",
                    "permissions": [
                        "control-plane:organization:create-api-keys",
                        "control-plane:organization:update-api-keys",
                    ],
                    "resources": [f"organization/{org.id}"],
                },
            ],
        },
        auth=org.auth,
    ).json()["result"]["id"]
    roles = {
        "Member": role_id(client, org, "Member"),
        "Developer": developer,
        "custom": custom,
        "Admin": role_id(client, org, "Admin"),
    }
    people = {}
    for persona, role in roles.items():
        email = f"{persona.lower()}-{uuid.uuid4().hex[:8]}@example.com"
        invite_and_accept(client, org, state, email=email, role_ids=[role])
        console = make_client(state)
        token = _csrf(console, "/console/login")
        signed = console.post(
            "/console/login",
            data={"email": email, "password": PASSWORD, "csrf_token": token},
            follow_redirects=False,
        )
        assert signed.status_code == 303, signed.text
        twin = key_auth(create_key(client, org, name=f"twin {persona}", assignedRoleIds=[role]))
        people[persona] = Person(console, twin)
    return World(client, org, state, people, developer)


def _snapshot(world: World) -> dict[str, Any]:
    """Everything an action could change in the organization."""
    org = str(world.org.id).replace("-", "")
    queries = {
        "keys": "SELECT id, name, state, expire_at FROM api_keys WHERE organization_id {o}",
        "assignments": (
            "SELECT ra.role_id, ra.actor_type, ra.actor_id FROM role_assignments ra "
            "JOIN roles r ON r.id = ra.role_id WHERE r.organization_id {o}"
        ),
        "members": "SELECT user_id FROM memberships WHERE organization_id {o}",
        "invitations": "SELECT id, email FROM invitations WHERE organization_id {o}",
        "activities": "SELECT count(*) FROM activities WHERE organization_id {o}",
    }
    with world.state.engine.connect() as connection:
        is_pg = connection.dialect.name == "postgresql"
        where = "= CAST(:org AS uuid)" if is_pg else "= :org"
        value = str(world.org.id) if is_pg else org
        return {
            name: sorted(
                tuple(str(v) for v in row)
                for row in connection.execute(text(sql.format(o=where)), {"org": value})
            )
            for name, sql in queries.items()
        }


# A target: something an action works on, made fresh (and alike) for the API and the console.
def _key(world: World) -> str:
    return str(create_key(world.client, world.org, name="target", roles=["developer"])["key"]["id"])


def _member(world: World) -> str:
    return invite_and_accept(world.client, world.org, world.state, role="developer")


def _invitation(world: World) -> str:
    email = f"invitee-{uuid.uuid4().hex[:8]}@example.com"
    response = world.client.post(
        world.org.url("/invitations"),
        json={"email": email, "role": "developer"},
        auth=world.org.auth,
    )
    return str(response.json()["result"]["id"])


def _none(world: World) -> str:
    return ""


ApiCall = Callable[[World, Person, str], Response]
ConsoleCall = Callable[[World, Person, str], Response]


def _page(path: str) -> ConsoleCall:
    def call(world: World, person: Person, target: str) -> Response:
        return person.console.get(path.format(org=world.org.id, target=target))

    return call


def _form(path: str, **fields: Any) -> ConsoleCall:
    def call(world: World, person: Person, target: str) -> Response:
        url = path.format(org=world.org.id, target=target)
        token = _csrf(person.console, f"/console/o/{world.org.id}/keys")
        values = {k: (v(world) if callable(v) else v) for k, v in fields.items()}
        return person.console.post(
            url, data={**values, "csrf_token": token}, follow_redirects=False
        )

    return call


def _api(method: str, path: str, body: Any = None) -> ApiCall:
    def call(world: World, person: Person, target: str) -> Response:
        url = world.org.url(path.format(target=target))
        json_body = body(world) if callable(body) else body
        return world.client.request(method, url, json=json_body, auth=person.auth)

    return call


def _new_email(_world: World) -> str:
    return f"new-{uuid.uuid4().hex[:8]}@example.com"


def _developer(world: World) -> str:
    return world.developer_role


def _member_role(world: World) -> str:
    return role_id(world.client, world.org, "Member")


ACTIONS: dict[str, tuple[Callable[[World], str], ApiCall, ConsoleCall]] = {
    "keys page lists keys": (_none, _api("GET", "/keys"), _page("/console/o/{org}/keys")),
    "new key page": (
        _none,
        _api("POST", "/keys", {"name": "api twin", "roles": ["developer"]}),
        _page("/console/o/{org}/keys/new"),
    ),
    "create key": (
        _none,
        _api("POST", "/keys", {"name": "api twin", "roles": ["developer"]}),
        _form("/console/o/{org}/keys", name="console twin", roles=_developer, expiration="never"),
    ),
    "edit key page": (
        _key,
        _api("PATCH", "/keys/{target}", {"name": "renamed"}),
        _page("/console/o/{org}/keys/{target}/edit"),
    ),
    "edit key": (
        _key,
        _api("PATCH", "/keys/{target}", {"name": "renamed"}),
        _form(
            "/console/o/{org}/keys/{target}/edit",
            name="renamed",
            roles=_developer,
            expiration="keep",
        ),
    ),
    "disable key": (
        _key,
        _api("PATCH", "/keys/{target}", {"state": "disabled"}),
        _form("/console/o/{org}/keys/{target}/state", state="disabled"),
    ),
    "delete key page": (
        _key,
        _api("DELETE", "/keys/{target}"),
        _page("/console/o/{org}/keys/{target}/delete"),
    ),
    "delete key": (
        _key,
        _api("DELETE", "/keys/{target}"),
        _form("/console/o/{org}/keys/{target}/delete"),
    ),
    "members page": (_none, _api("GET", "/members"), _page("/console/o/{org}/members")),
    "invite": (
        _none,
        _api("POST", "/invitations", lambda w: {"email": _new_email(w), "role": "developer"}),
        _form("/console/o/{org}/members/invite", email=_new_email, role=_developer),
    ),
    "change member role": (
        _member,
        _api("PATCH", "/members/{target}", lambda w: {"assignedRoleIds": [_member_role(w)]}),
        _form("/console/o/{org}/members/{target}/roles", role=_member_role),
    ),
    "remove member page": (
        _member,
        _api("DELETE", "/members/{target}"),
        _page("/console/o/{org}/members/{target}/remove"),
    ),
    "remove member": (
        _member,
        _api("DELETE", "/members/{target}"),
        _form("/console/o/{org}/members/{target}/remove"),
    ),
    "delete invitation": (
        _invitation,
        _api("DELETE", "/invitations/{target}"),
        _form("/console/o/{org}/invitations/{target}/delete"),
    ),
    "roles page": (_none, _api("GET", "/roles"), _page("/console/o/{org}/roles")),
    "services page": (_none, _api("GET", "/services"), _page("/console/o/{org}/services")),
    "create service": (
        _none,
        _api("POST", "/services", lambda w: {"name": f"api {uuid.uuid4().hex[:6]}"}),
        _form("/console/o/{org}/services", name=lambda w: f"console {uuid.uuid4().hex[:6]}"),
    ),
    "activity page": (_none, _api("GET", "/activities"), _page("/console/o/{org}/activity")),
}

# What the API gives each person, written out: the console must give the same.
EXPECTED_ALLOWED = {
    "Member": {"services page"},
    "Developer": {
        "keys page lists keys",
        "members page",
        "roles page",
        "activity page",
        "services page",
    },
    "custom": {
        "services page",
        "keys page lists keys",
        "members page",
        "roles page",
        "activity page",
        "new key page",
        "create key",
        "edit key page",
        "edit key",
        "disable key",
    },
    "Admin": set(ACTIONS),
}


def _console_allowed(action: str, response: Response, world: World) -> bool:
    if action == "keys page lists keys":
        assert response.status_code == 200
        return "twin Admin" in response.text  # a key's name shows only when keys are listed
    if response.status_code in (200, 303):
        location = response.headers.get("location", "")
        assert "/console/login" not in location
        return True
    assert response.status_code in (400, 403, 404, 409), response.text
    return False


@pytest.mark.services  # (the table creates services)
@pytest.mark.parametrize("persona", PERSONAS)
def test_the_console_gives_each_person_what_the_api_gives_them(world: World, persona: str) -> None:
    person = world.people[persona]
    for action, (make_target, api_call, console_call) in ACTIONS.items():
        api = api_call(world, person, make_target(world))
        api_allowed = api.status_code == 200
        assert api.status_code in (200, 403), (action, api.text)

        target = make_target(world)
        before = _snapshot(world)
        console = console_call(world, person, target)
        allowed = _console_allowed(action, console, world)

        assert api_allowed == (action in EXPECTED_ALLOWED[persona]), (persona, action, api.text)
        assert allowed == api_allowed, (persona, action, console.status_code, console.text[:400])
        if not allowed:
            assert _snapshot(world) == before, (persona, action)
