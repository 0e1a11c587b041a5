"""Reads on the event loop (``keyhouse.loop_reads``) return what a session returns, several
reads in one call come back in order, and the key view read with a caller's authentication
never shows a key of another organization."""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from sqlalchemy import text, update

from keyhouse.api.errors import NotFound
from keyhouse.api_keys.service import KEY_VIEW_QUERY, key_view, key_view_reads
from keyhouse.auth.principal import Principal, system_principal
from keyhouse.auth.service import AUTH_QUERY
from keyhouse.config import Settings
from keyhouse.loop_reads import READER_APPLICATION, Read
from keyhouse.models import API_KEYS
from keyhouse.state import AppState
from tests.conftest import Org, create_org

T = TypeVar("T")


def on_loop(state: AppState, read: Callable[[], Awaitable[T]]) -> T:
    """``read`` on an event loop of its own, in a thread of its own (the test's thread may hold
    another library's loop, as Playwright's sync API does)."""

    async def main() -> T:
        state.reader.open_loop()  # as an app does at its start
        try:
            return await read()
        finally:
            await state.reader.close_loop()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main()).result()


def test_a_read_returns_what_a_session_returns(state: AppState, org: Org) -> None:
    expires = dt.datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC)
    with state.sessionmaker.begin() as session:
        session.execute(
            update(API_KEYS)
            .where(API_KEYS.c.id == org.key_uuid)
            .values(expire_at=expires, ip_access_list=[{"source": "10.0.0.0/8"}])
        )
    values = {"key_id": org.key_uuid, "org_id": org.id}
    with state.sessionmaker() as session:
        expected = [tuple(row) for row in session.execute(KEY_VIEW_QUERY, values)]
    for _ in range(2):  # the second time, from the remembered UUIDs and datetimes
        rows = on_loop(state, lambda: state.reader.all(KEY_VIEW_QUERY, values))
        assert [tuple(row) for row in rows] == expected
    row = rows[0]
    assert row.id == org.key_uuid
    assert isinstance(row.id, uuid.UUID)
    assert row.expire_at == expires
    assert row.expire_at.tzinfo is not None
    assert json.loads(row.ip_access_list) == [{"source": "10.0.0.0/8"}]  # its text, as read


def test_a_loop_no_app_opened_reads_and_leaves_no_connection_behind(
    state: AppState, org: Org
) -> None:
    """A loop that ends with its request (a client without a lifespan) has nobody to close a
    pool: each of its reads has a connection of its own, closed at once. (A pool left there
    kept its connection for ever, and its maintenance tasks could swallow the cancellation
    that ends the loop: the request never returned.)"""
    values = {"key_id": org.key_uuid, "org_id": org.id}

    def foreign_read() -> list[Any]:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, state.reader.all(KEY_VIEW_QUERY, values)).result()

    if state.reader.sqlite:  # one connection per thread, the thread's for its lifetime
        assert [row.id for row in foreign_read()] == [org.key_uuid]
        return
    before = _reader_connections(state)
    for _ in range(3):
        assert [row.id for row in foreign_read()] == [org.key_uuid]
    # A closed connection's server process exits after the client has gone: it leaves
    # pg_stat_activity a moment later (a loaded machine saw it there right after the close).
    deadline = time.monotonic() + 30
    while _reader_connections(state) > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _reader_connections(state) == before


def _reader_connections(state: AppState) -> int:
    """The readers' connections to this test's database."""
    with state.sessionmaker() as session:
        return int(
            session.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND application_name = :name"
                ),
                {"name": READER_APPLICATION},
            ).scalar_one()
        )


def test_several_reads_come_back_in_order(state: AppState, org: Org) -> None:
    unknown = Read(AUTH_QUERY, {"lookup": "0" * 64})
    (view,) = key_view_reads(org.id, org.key_uuid)
    first, second, third = on_loop(state, lambda: state.reader.all_of(view, unknown, view))
    assert second == []
    assert first == third
    assert first[0].id == org.key_uuid


def test_the_key_view_never_shows_another_organizations_key(
    state: AppState, org: Org, settings: Settings
) -> None:
    other = create_org(settings)
    rows = on_loop(state, lambda: state.reader.all_of(*key_view_reads(other.id, other.key_uuid)))[0]
    assert rows
    caller = _principal(org)
    with pytest.raises(NotFound):
        key_view(caller, rows)
    assert key_view(_principal(other), rows).id == other.key_uuid


def _principal(org: Org) -> Principal:
    return system_principal(org.id, "caller")  # holds everything in its organization
