"""The service state machine (``keyhouse.services.states``): one table per decision, and what
each front end answers for a query in every state."""

from __future__ import annotations

import pytest

from keyhouse.api.errors import BadRequest
from keyhouse.clickhouse_http.interface import REFUSALS as HTTP_INTERFACE_REFUSALS
from keyhouse.console.services import REFUSALS as CONSOLE_REFUSALS
from keyhouse.services.query_api import PARTIAL_ANSWERS
from keyhouse.services.states import (
    Admission,
    Command,
    Resume,
    State,
    Step,
    Transition,
    admit,
    command,
    idle_due,
    on_startup,
)

S = State

# What each front end answers a query, per state (keyhouse.services.states.admit, then the front
# end's own wire): "run" runs it (waiting for an engine coming up), "wake, run" wakes an idle
# service first (the wake recorded), anything else is the answer it gets instead.
FRONT_ENDS: dict[State, dict[str, str]] = {
    S.PROVISIONING: {"query-api": "run", "query-api wake": "run", "endpoint": "run",
                     "http": "run", "console": "run"},
    S.STARTING: {"query-api": "run", "query-api wake": "run", "endpoint": "run",
                 "http": "run", "console": "run"},
    S.AWAKING: {"query-api": "run", "query-api wake": "run", "endpoint": "run",
                "http": "run", "console": "run"},
    S.RUNNING: {"query-api": "run", "query-api wake": "run", "endpoint": "run",
                "http": "run", "console": "run"},
    S.DEGRADED: {"query-api": "run", "query-api wake": "run", "endpoint": "run",
                 "http": "run", "console": "run"},
    S.IDLE: {
        "query-api": "206 Confirm wake service",
        "query-api wake": "wake, run",
        "endpoint": "wake, run",
        "http": "wake, run",
        "console": "wake, run",
    },
    **{
        stopped: {
            "query-api": "206 Service is stopped",
            "query-api wake": "206 Service is stopped",
            "endpoint": "206 Service is stopped",
            "http": "503 Code: 0. The service is stopped: start it first.",
            "console": "The service is stopped: start it first.",
        }
        for stopped in (S.STOPPING, S.STOPPED, S.FAILED, S.TERMINATING)
    },
}  # fmt: skip


def _answer(admission: Admission, refusals: dict[Admission, str], prefix: str = "") -> str:
    if admission in refusals:
        return f"{prefix}{refusals[admission]}"
    return {Admission.RUN: "run", Admission.WAKE: "wake, run"}[admission]


@pytest.mark.parametrize("state", list(State))
def test_each_front_end_answers_a_query_in_each_state_as_the_table_says(state: State) -> None:
    answers = {
        "query-api": _answer(admit(state, may_wake=False), PARTIAL_ANSWERS, "206 "),
        "query-api wake": _answer(admit(state, may_wake=True), PARTIAL_ANSWERS, "206 "),
        "endpoint": _answer(admit(state, may_wake=True), PARTIAL_ANSWERS, "206 "),
        "http": _answer(admit(state, may_wake=True), HTTP_INTERFACE_REFUSALS, "503 "),
        "console": _answer(admit(state, may_wake=True), CONSOLE_REFUSALS),
    }
    assert answers == FRONT_ENDS[state]


def test_every_state_is_in_the_table_and_in_the_official_enum(
    official_spec: dict[str, object],
) -> None:
    assert set(FRONT_ENDS) == set(State)
    schemas = official_spec["components"]["schemas"]  # type: ignore[index]
    assert {s.value for s in State} <= set(schemas["Service"]["properties"]["state"]["enum"])


# (state, command) → (new state, activity, engine work after the commit); "400": refused.
COMMANDS: list[tuple[State, Command, Transition | str]] = [
    (S.RUNNING, Command.STOP, Transition(S.STOPPING, "service_stop", Step.STOP)),
    (S.IDLE, Command.STOP, Transition(S.STOPPING, "service_stop", Step.STOP)),
    (S.FAILED, Command.STOP, Transition(S.STOPPING, "service_stop", Step.STOP)),
    (S.PROVISIONING, Command.STOP, Transition(S.STOPPING, "service_stop", Step.STOP)),
    (S.STOPPING, Command.STOP, Transition()),
    (S.STOPPED, Command.STOP, Transition()),
    (S.STOPPED, Command.START, Transition(S.STARTING, "service_start", Step.START)),
    (S.STOPPING, Command.START, Transition(S.STARTING, "service_start", Step.START)),
    (S.FAILED, Command.START, Transition(S.STARTING, "service_start", Step.START)),
    (S.IDLE, Command.START, Transition(S.AWAKING, "service_awaken", Step.START)),
    (S.RUNNING, Command.START, Transition()),
    (S.STARTING, Command.START, Transition()),
    (S.IDLE, Command.AWAKE, Transition(S.AWAKING, "service_awaken", Step.START)),
    (S.RUNNING, Command.AWAKE, Transition()),
    (S.STOPPED, Command.AWAKE, "400"),
    (S.STOPPING, Command.AWAKE, "400"),
    *[(S.TERMINATING, given, "400") for given in Command],
]


@pytest.mark.parametrize(("state", "given", "expected"), COMMANDS)
def test_a_command_moves_a_service_as_the_table_says(
    state: State, given: Command, expected: Transition | str
) -> None:
    if expected == "400":
        with pytest.raises(BadRequest):
            command(state, given)
    else:
        assert command(state, given) == expected


def test_a_server_process_resumes_each_recorded_state() -> None:
    assert {state: on_startup(state) for state in State} == {
        S.PROVISIONING: Resume.START,
        S.STARTING: Resume.START,
        S.AWAKING: Resume.START,
        S.RUNNING: Resume.RESTART,  # its engine died with the process that ran it
        S.IDLE: Resume.LISTEN,  # no engine; its interface answers, and wakes it
        S.STOPPING: Resume.FINISH_STOP,
        S.STOPPED: None,
        S.FAILED: None,
        S.TERMINATING: None,
        S.DEGRADED: None,
    }


def test_a_service_goes_idle_once_unused_for_its_timeout() -> None:
    assert not idle_due(14 * 60 + 59, 15)
    assert idle_due(15 * 60, 15)
    assert idle_due(0, 0)


class _Runtime:
    """What run_admitted asks of the runtime, recorded (the engines themselves are exercised
    through every door in tests/test_services.py, test_query_endpoints.py and
    test_console_services.py)."""

    def __init__(self, comes_up: bool) -> None:
        self.comes_up = comes_up
        self.calls: list[str] = []

    async def bring_up(self, service_id: object) -> bool:
        self.calls.append("bring up")
        return self.comes_up

    async def run(self, grant: object, **query: object) -> str:
        self.calls.append(f"run {query['sql']}")
        return "answer"


def _admitted(admission: Admission, comes_up: bool = True) -> tuple[str, list[str]]:
    import asyncio
    import uuid
    from concurrent.futures import ThreadPoolExecutor

    from keyhouse.services.query_api import run_admitted
    from keyhouse.services.service import RunGrant

    runtime = _Runtime(comes_up)

    async def wake() -> None:
        runtime.calls.append("wake recorded")

    async def scenario() -> str:
        grant = RunGrant(uuid.uuid4(), "idle", False, 8)
        return await run_admitted(runtime, grant, admission, wake, sql="SELECT 1")  # type: ignore[arg-type, return-value]

    with ThreadPoolExecutor(1) as thread:  # (a loop of its own: see test_after_commit)
        return thread.submit(asyncio.run, scenario()).result(), runtime.calls


def test_every_door_runs_an_admitted_query_the_same_way() -> None:
    from keyhouse.api.errors import ServiceUnavailable

    assert _admitted(Admission.RUN) == ("answer", ["run SELECT 1"])
    assert _admitted(Admission.WAKE) == (
        "answer",
        ["wake recorded", "bring up", "run SELECT 1"],
    )
    with pytest.raises(ServiceUnavailable, match="could not be woken"):
        _admitted(Admission.WAKE, comes_up=False)
    for refused in (Admission.STOPPED, Admission.ASK_TO_WAKE):  # each door answers these itself
        with pytest.raises(ValueError, match="not a query"):
            _admitted(refused)
