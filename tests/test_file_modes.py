"""What Keyhouse writes to disk is readable by the server alone: the SQLite control-plane
database (every key's hash, attached servers' sealed passwords) 0600 in a 0700 directory, the
pepper 0600. (A service's own files: tests/engine/test_sandbox.py.)"""

from __future__ import annotations

from pathlib import Path

from keyhouse.config import Settings
from keyhouse.db import make_engine


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_the_sqlite_database_and_the_pepper_are_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    engine = make_engine(f"sqlite:///{data / 'keyhouse.db'}")
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("CREATE TABLE t (a INTEGER)")
    finally:
        engine.dispose()
    assert _mode(data) == 0o700
    assert _mode(data / "keyhouse.db") == 0o600
    Settings(pepper_file=data / "keyhouse.pepper").pepper_bytes()
    assert _mode(data / "keyhouse.pepper") == 0o600


def test_an_existing_database_file_is_made_private(tmp_path: Path) -> None:
    database = tmp_path / "keyhouse.db"
    database.touch(mode=0o644)
    database.chmod(0o644)
    make_engine(f"sqlite:///{database}").dispose()
    assert _mode(database) == 0o600
