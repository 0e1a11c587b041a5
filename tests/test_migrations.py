"""The migrations create exactly the schema the models describe, on both databases."""

from __future__ import annotations

from alembic import command

from keyhouse.config import Settings
from keyhouse.migrations import alembic_config


def test_models_and_migrations_agree(settings: Settings) -> None:
    command.check(alembic_config(settings.database_url))  # raises when autogenerate finds a diff
