"""Creating an organization with its first admin user and one admin API key, and optionally a
first service (provisioned: the server starts its engine), for the CLI."""

from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass

from keyhouse.api_keys import service as keys
from keyhouse.api_keys.schemas import ApiKeyPostRequest
from keyhouse.config import Settings, ca_path
from keyhouse.organizations.service import create_organization
from keyhouse.roles.service import user_principal
from keyhouse.services import service as services
from keyhouse.services.schemas import ServicePostRequest
from keyhouse.state import AppState


@dataclass(frozen=True)
class BootstrapResult:
    organization_id: uuid.UUID
    user_id: uuid.UUID
    email: str
    key_uuid: uuid.UUID
    key_id: str
    key_secret: str
    user_created: bool
    # With ``service_name``: the service (started by the server) and its password (shown once).
    service_id: uuid.UUID | None = None
    service_password: str | None = None
    # Where its ClickHouse HTTP interface will listen, and the CA file that verifies it.
    service_address: str | None = None
    ca_file: str | None = None


LOCAL_ONLY = [
    {"source": "127.0.0.1/32", "description": "this machine"},
    {"source": "::1/128", "description": "this machine"},
]


def _free_port(host: str) -> int:
    """A port for the demo service's interface, chosen now so that it can be printed now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def bootstrap(
    settings: Settings,
    *,
    org_name: str,
    email: str,
    user_name: str,
    password: str,
    service_name: str | None = None,
    state: AppState | None = None,
) -> BootstrapResult:
    """``state``: an app's own (its database connections), left open; without it, one made and
    closed here."""
    own = state is None
    state = state or AppState.from_settings(settings)
    try:
        with state.sessionmaker.begin() as session:
            created = create_organization(
                session, name=org_name, email=email, user_name=user_name, password=password
            )
            admin = user_principal(
                session,
                user_id=created.user_id,
                name=created.email,
                organization_id=created.organization_id,
            )
            key = keys.create_key(
                session,
                admin,
                ApiKeyPostRequest(name="Admin key (bootstrap)", roles=["admin"]),
                pepper=state.pepper,
                max_keys=settings.max_keys_per_organization,
            )
            assert key.key_id is not None  # noqa: S101
            assert key.key_secret is not None  # noqa: S101
            service_id = service_password = service_address = ca_file = None
            if service_name:
                defaults = services.ServiceDefaults.from_settings(settings)
                # Reachable from this machine only, until its IP access list is changed.
                request = ServicePostRequest.model_validate(
                    {"name": service_name, "ipAccessList": LOCAL_ONLY}
                )
                row, service_password = services.create_service(
                    session, admin, request, pepper=state.pepper, defaults=defaults
                )
                service_id = row.id
                row.http_port = _free_port(settings.clickhouse_host)
                service_address = f"https://{settings.clickhouse_host}:{row.http_port}"
                ca = ca_path(settings)
                ca_file = str(ca.resolve()) if ca else None
            return BootstrapResult(
                created.organization_id,
                created.user_id,
                created.email,
                key.key.id,
                key.key_id,
                key.key_secret,
                created.user_created,
                service_id,
                service_password,
                service_address,
                ca_file,
            )
    finally:
        if own:
            state.close()
