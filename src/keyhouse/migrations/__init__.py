"""Alembic migrations, run with ``keyhouse db upgrade`` (and by ``keyhouse serve``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from keyhouse.db import normalize_database_url

HERE = Path(__file__).parent


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.set_main_option("file_template", "%%(year)d%%(month).2d%%(day).2d_%%(slug)s")
    config.attributes["database_url"] = normalize_database_url(database_url)
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)
