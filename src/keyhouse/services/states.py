"""The service state machine, as pure functions: no database, no engine, no HTTP.

States are the official enum's (Keyhouse uses ten of its fourteen), moved by three kinds of
event, each decided here and carried out elsewhere::

    create ─► provisioning ─► running ◄─► idle (idle scaling; ``awake`` or a query wakes it)
                                 │  ▲
                          stop   ▼  │ start
                     stopping ─► stopped ─► (DELETE) gone
    a worker that keeps crashing ─► failed (``start`` tries again, ``stop`` settles it)

- **Commands** (``start``/``stop``/``awake``, from the API or the console): ``command()`` says
  the new state, the activity to record and the engine work that must follow the commit
  (``EngineWork``, queued with ``keyhouse.transactions.after_commit``; the runtime does it
  once the transaction committed, and never for one that rolled back).
- **Queries**, through any front end: ``admit()`` says whether a query runs, wakes the service
  first, must ask the caller to confirm the wake, or is refused because the service is stopped;
  each front end maps that answer to its own wire (the Query API's official 206 answers, the
  HTTP interface's 503, the console's message).
- **The runtime's own events**: ``on_startup()`` (what a server process does with a recorded
  state when it starts or takes a service over) and ``idle_due()`` (idle scaling).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

from keyhouse.api.errors import BadRequest


class State(StrEnum):
    PROVISIONING = "provisioning"
    STARTING = "starting"
    AWAKING = "awaking"
    RUNNING = "running"
    IDLE = "idle"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"
    TERMINATING = "terminating"
    DEGRADED = "degraded"


# An engine is on its way up: a query waits for it.
COMING_UP = frozenset({State.PROVISIONING, State.STARTING, State.AWAKING})
RUNNING_STATES = COMING_UP | {State.RUNNING}
STOPPED_STATES = frozenset({State.STOPPING, State.STOPPED})
# A query is answered "Service is stopped" (and ``start`` is what helps).
NOT_QUERYABLE = STOPPED_STATES | {State.FAILED, State.TERMINATING}
# Some server process runs the service (or, idle, listens for it): another process takes it
# over when its holder is gone.
TAKEN_OVER = RUNNING_STATES | {State.IDLE}
# What a server process looks at when it starts.
RECONCILED = TAKEN_OVER | {State.STOPPING}


class Command(StrEnum):
    START = "start"
    STOP = "stop"
    AWAKE = "awake"


class Step(StrEnum):
    """Engine work that follows a committed change."""

    START = "start"  # bring the engine up (or reach the attached server)
    STOP = "stop"  # take it down; the service becomes ``stopped``
    REMOVE = "remove"  # the service is gone: stop its engine and remove its data
    CONFIGURE = "configure"  # its ClickHouse settings changed (``settings``): apply them


@dataclass(frozen=True)
class EngineWork:
    service_id: uuid.UUID
    step: Step
    settings: dict[str, str] | None = None  # (CONFIGURE)


@dataclass(frozen=True)
class Transition:
    """What a command does: nothing (``state`` None, the command is already satisfied), or the
    new state, the activity to record, and the engine work after the commit."""

    state: State | None = None
    activity: str | None = None
    step: Step | None = None


def command(state: State, given: Command) -> Transition:
    """The transition ``given`` makes from ``state``; a 400 when it cannot apply."""
    if state == State.TERMINATING:
        raise BadRequest("The service is being deleted")
    if given == Command.STOP:
        if state in STOPPED_STATES:
            return Transition()
        return Transition(State.STOPPING, "service_stop", Step.STOP)
    if given == Command.START:
        if state in (State.STOPPED, State.STOPPING, State.FAILED):
            return Transition(State.STARTING, "service_start", Step.START)
        if state == State.IDLE:
            return Transition(State.AWAKING, "service_awaken", Step.START)
        return Transition()
    # awake
    if state in STOPPED_STATES:
        raise BadRequest("The service is stopped: start it instead")
    if state == State.IDLE:
        return Transition(State.AWAKING, "service_awaken", Step.START)
    return Transition()


class Admission(StrEnum):
    """May a query run now?"""

    RUN = "run"  # it runs (waiting for an engine that is coming up)
    WAKE = "wake"  # the service is idle: wake it (recorded), then run
    ASK_TO_WAKE = "ask to wake"  # idle, and the caller has not said it may be woken
    STOPPED = "stopped"  # refused: the service must be started first


def admit(state: State, *, may_wake: bool) -> Admission:
    """The one rule every front end follows. ``may_wake``: the caller's query may wake an idle
    service (the Query API's ``wake-service: true``; endpoints, the ClickHouse HTTP interface
    and the console always may)."""
    if state in NOT_QUERYABLE:
        return Admission.STOPPED
    if state == State.IDLE:
        return Admission.WAKE if may_wake else Admission.ASK_TO_WAKE
    return Admission.RUN


class Resume(StrEnum):
    """What a server process does with a service's recorded state when it starts (or takes the
    service over from a process that is gone)."""

    FINISH_STOP = "finish stop"  # ``stopping`` → ``stopped``: the stop was interrupted
    LISTEN = "listen"  # ``idle``: no engine, but its interface answers (and wakes it)
    RESTART = "restart"  # ``running`` → ``starting``, then start: its engine died with its process
    START = "start"  # coming up: start it


def on_startup(state: State) -> Resume | None:
    """None: nothing to do for a service in ``state``."""
    if state == State.STOPPING:
        return Resume.FINISH_STOP
    if state == State.IDLE:
        return Resume.LISTEN
    if state == State.RUNNING:
        return Resume.RESTART
    if state in COMING_UP:
        return Resume.START
    return None


def idle_due(unused_seconds: float, timeout_minutes: int) -> bool:
    """A running service with idle scaling on, unused this long, goes idle."""
    return unused_seconds >= timeout_minutes * 60


# --- services on engine hosts (keyhouse.hosts): desired state out, observed state back ------

# An engine host runs the engine of a service in one of these states (its agent starts it);
# it stops it in any other.
RUN_ON_HOST = RUNNING_STATES | {State.DEGRADED}


class Observed(StrEnum):
    """What an engine host reports of a service it was given."""

    STARTING = "starting"  # its engine is coming up
    RUNNING = "running"
    STOPPED = "stopped"
    FAILED = "failed"  # its engine could not start, or kept crashing


def on_report(state: State, observed: Observed) -> State | None:
    """The service's new state once its host reported ``observed`` (None: unchanged). A host's
    report never overrides a later command: ``running`` only ends a start (or a silence),
    ``stopped`` only a stop, ``failed`` only a run."""
    if observed == Observed.RUNNING and state in COMING_UP | {State.DEGRADED}:
        return State.RUNNING
    if observed == Observed.STOPPED and state == State.STOPPING:
        return State.STOPPED
    if observed == Observed.FAILED and state in RUN_ON_HOST:
        return State.FAILED
    return None


def on_silence(state: State) -> State | None:
    """The service's new state once its host has been silent past the threshold."""
    return State.DEGRADED if state in RUNNING_STATES else None
