"""The after-commit channel (``keyhouse.transactions.after_commit``): engine work a domain
function queues reaches the runtime once, and only once its transaction committed."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from keyhouse.auth.principal import system_principal
from keyhouse.models import Service
from keyhouse.services import service
from keyhouse.services.schemas import ServicePostRequest
from keyhouse.services.states import Command, EngineWork, Step
from keyhouse.state import AppState
from keyhouse.transactions import after_commit, run_in_transaction
from tests.conftest import Org

T = TypeVar("T")


class Refused(Exception):
    pass


def _run(work: Coroutine[Any, Any, T]) -> T:
    """``work`` on an event loop of its own thread (the main thread may hold another library's
    running loop, as Playwright's sync API does in the browser tests)."""
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, work).result()


def _received(state: AppState) -> list[Any]:
    got: list[Any] = []
    state.on_commit.append(got.append)
    return got


def test_a_committed_transaction_hands_its_work_over_once_in_order(state: AppState) -> None:
    got = _received(state)

    def work(session: Session) -> str:
        after_commit(session, "first")
        after_commit(session, "second")
        return "done"

    assert _run(run_in_transaction(state, work)) == "done"
    assert got == ["first", "second"]
    _run(run_in_transaction(state, lambda session: None))
    assert got == ["first", "second"]  # nothing is handed over twice


def test_a_rolled_back_transaction_hands_nothing_over(state: AppState) -> None:
    got = _received(state)

    def work(session: Session) -> None:
        after_commit(session, "never")
        raise Refused

    with pytest.raises(Refused):
        _run(run_in_transaction(state, work))
    _run(run_in_transaction(state, lambda session: None))
    assert got == []


def _create(session: Session, org: Org, name: str) -> uuid.UUID:
    row, _password = service.create_service(
        session,
        system_principal(org.id, "test"),
        ServicePostRequest(name=name),
        pepper=b"p" * 32,
        defaults=service.ServiceDefaults("keyhouse", "local"),
    )
    return row.id


def test_creating_a_service_starts_its_engine_only_once_it_is_committed(
    state: AppState, org: Org
) -> None:
    got = _received(state)

    def create_then_fail(session: Session) -> None:
        _create(session, org, "rolled back")
        raise Refused

    with pytest.raises(Refused):
        _run(run_in_transaction(state, create_then_fail))
    assert got == []
    with state.sessionmaker() as session:
        names = session.scalars(select(Service.name).where(Service.organization_id == org.id))
        assert list(names) == []

    created = _run(run_in_transaction(state, lambda s: _create(s, org, "kept")))
    assert got == [EngineWork(created, Step.START)]


def test_commands_queue_the_engine_work_their_transition_names(state: AppState, org: Org) -> None:
    got = _received(state)
    principal = system_principal(org.id, "test")
    service_id = _run(run_in_transaction(state, lambda s: _create(s, org, "commanded")))

    def command(given: Command) -> None:
        _run(
            run_in_transaction(
                state, lambda s: service.request_state(s, principal, service_id, given)
            )
        )

    command(Command.STOP)
    command(Command.STOP)  # already stopping: nothing more to do
    command(Command.START)
    command(Command.START)  # already starting

    def stop_and_delete(session: Session) -> None:
        service.request_state(session, principal, service_id, Command.STOP)
        session.get_one(Service, service_id).state = "stopped"  # as the runtime leaves it
        session.flush()
        service.delete_service(session, principal, service_id)

    _run(run_in_transaction(state, stop_and_delete))
    assert [work.step for work in got] == [
        Step.START,  # created
        Step.STOP,
        Step.START,
        Step.STOP,
        Step.REMOVE,
    ]
    assert {work.service_id for work in got} == {service_id}
