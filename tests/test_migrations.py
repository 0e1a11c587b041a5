"""The migrations create exactly the schema the models describe, on both databases, and every
one of them goes down as well as up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from alembic import command

from keyhouse.config import Settings
from keyhouse.db import normalize_database_url
from keyhouse.migrations import alembic_config
from tests.conftest import BACKENDS, POSTGRES_ADMIN_DSN, _postgres_database


def test_models_and_migrations_agree(settings: Settings) -> None:
    command.check(alembic_config(settings.database_url))  # raises when autogenerate finds a diff


@pytest.fixture(params=BACKENDS)
def empty_database(
    request: pytest.FixtureRequest, tmp_path: Path, worker_id_safe: str
) -> Iterator[str]:
    """A database of this test's own (the suite's are upgraded and in use)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrations.db'}"
    else:
        name = f"keyhouse_test_{worker_id_safe}_migrations"
        yield _postgres_database(f"{worker_id_safe}_migrations")
        with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(normalize_database_url(url))
    try:
        return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_the_migrations_go_up_down_to_base_and_up_again(empty_database: str) -> None:
    config = alembic_config(empty_database)
    command.upgrade(config, "head")
    tables = _tables(empty_database)
    assert {"services", "api_keys", "engine_leases"} <= tables
    command.downgrade(config, "base")
    assert _tables(empty_database) == set()
    command.upgrade(config, "head")
    assert _tables(empty_database) == tables
    command.check(config)
