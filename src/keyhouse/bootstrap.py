"""Creating an organization with its first admin user and one admin API key (used by the CLI)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from keyhouse.api_keys import service as keys
from keyhouse.api_keys.schemas import ApiKeyPostRequest
from keyhouse.auth.service import user_principal
from keyhouse.config import Settings
from keyhouse.organizations.service import create_organization
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


def bootstrap(
    settings: Settings, *, org_name: str, email: str, user_name: str, password: str
) -> BootstrapResult:
    state = AppState.from_settings(settings)
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
            return BootstrapResult(
                created.organization_id,
                created.user_id,
                created.email,
                key.key.id,
                key.key_id,
                key.key_secret,
                created.user_created,
            )
    finally:
        state.close()
