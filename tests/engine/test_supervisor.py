"""The engine supervisor with real chDB workers: one process per service, each on its own data
directory; results stream; engine errors carry ClickHouse's code; read-only is the engine's own
setting; a crashed worker is restarted, and one that keeps crashing is given up on; data
survives a stop and a start."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from keyhouse.engine.protocol import Answer, ClickHouseError
from keyhouse.engine.supervisor import EngineSupervisor, EngineUnavailable
from tests.conftest import worker_pids


async def _collect(supervisor: EngineSupervisor, service: uuid.UUID, **request: Any) -> bytes:
    request.setdefault("format", "TabSeparated")
    chunks = await supervisor.query(service, request)
    return b"".join([chunk async for chunk in chunks])


def _run(coro: Any, seconds: float = 240) -> Any:
    """Each scenario on its own event loop, in its own (daemon) thread (the main thread may
    hold another library's loop, as Playwright's sync API does). A scenario that hangs fails
    the test after ``seconds`` instead of holding the test process for ever (an executor's
    thread would be joined at its exit)."""
    outcome: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def scenario() -> None:
        try:
            outcome.set_result(asyncio.run(coro))
        except BaseException as error:  # noqa: BLE001 (handed over to the test's thread)
            outcome.set_exception(error)

    threading.Thread(target=scenario, daemon=True).start()
    try:
        return outcome.result(timeout=seconds)
    except concurrent.futures.TimeoutError:
        raise AssertionError(f"the scenario did not end within {seconds} s") from None


async def _until(condition: Callable[[], object], seconds: float = 30, step: float = 0.1) -> None:
    for _ in range(int(seconds / step)):
        if condition():
            return
        await asyncio.sleep(step)
    raise AssertionError("condition not reached")


def _with_one_service(
    tmp_path: Path, scenario: Callable[[EngineSupervisor, uuid.UUID], Awaitable[None]]
) -> None:
    """Run ``scenario`` with a supervisor and one started service, closed afterwards."""

    async def run() -> None:
        supervisor = EngineSupervisor(tmp_path)
        service = uuid.uuid4()
        try:
            await supervisor.start(service)
            await scenario(supervisor, service)
        finally:
            await supervisor.close()

    _run(run())


class _OwnDatabase:
    """The shared engine's supervisor, each query and insert of one test in a database of its
    own (its tables cannot meet another test's)."""

    def __init__(self, supervisor: EngineSupervisor, database: str) -> None:
        self.supervisor = supervisor
        self.database = database

    async def query(self, service: uuid.UUID, request: dict[str, Any]) -> Any:
        return await self.supervisor.query(service, {"database": self.database, **request})

    async def insert(
        self, service: uuid.UUID, request: dict[str, Any], data: AsyncIterator[bytes]
    ) -> dict[str, Any]:
        return await self.supervisor.insert(service, {"database": self.database, **request}, data)


@pytest.fixture(scope="module")
def shared_engine(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[asyncio.AbstractEventLoop, EngineSupervisor, uuid.UUID]]:
    """One engine for the tests that only query it (each in a database of its own), on an
    event loop of its own thread: a start costs seconds, a database nothing."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    supervisor = EngineSupervisor(tmp_path_factory.mktemp("shared-engine"))
    service = uuid.uuid4()
    asyncio.run_coroutine_threadsafe(supervisor.start(service), loop).result(timeout=120)
    try:
        yield loop, supervisor, service
    finally:
        asyncio.run_coroutine_threadsafe(supervisor.close(), loop).result(timeout=120)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


def _on_the_shared_engine(
    shared: tuple[asyncio.AbstractEventLoop, EngineSupervisor, uuid.UUID],
    scenario: Callable[[Any, uuid.UUID], Awaitable[None]],
) -> None:
    """Run ``scenario`` on the shared engine, in a fresh database dropped afterwards."""
    loop, supervisor, service = shared
    database = f"test_{uuid.uuid4().hex}"

    async def run() -> None:
        await _collect(supervisor, service, sql=f"CREATE DATABASE {database}")
        try:
            await scenario(_OwnDatabase(supervisor, database), service)
        finally:
            await _collect(supervisor, service, sql=f"DROP DATABASE {database}")

    asyncio.run_coroutine_threadsafe(run(), loop).result(timeout=240)


def test_two_services_run_side_by_side_on_their_own_data(tmp_path: Path) -> None:
    async def scenario() -> None:
        supervisor = EngineSupervisor(tmp_path)
        a, b = uuid.uuid4(), uuid.uuid4()
        try:
            version_a, version_b = await asyncio.gather(supervisor.start(a), supervisor.start(b))
            assert version_a == version_b
            assert version_a.count(".") >= 2  # the engine's real version, e.g. 26.9.2.1
            await _collect(
                supervisor, a, sql="CREATE TABLE t (x UInt8) ENGINE = MergeTree ORDER BY x"
            )
            await _collect(supervisor, a, sql="INSERT INTO t VALUES (1), (2)")
            assert await _collect(supervisor, a, sql="SELECT sum(x) FROM t") == b"3\n"
            with pytest.raises(ClickHouseError) as missing:
                await _collect(supervisor, b, sql="SELECT * FROM t")
            assert missing.value.code == 60  # UNKNOWN_TABLE: b has its own data
            assert supervisor.data_path(a) != supervisor.data_path(b)
        finally:
            await supervisor.close()

    _run(scenario())


def test_results_stream_in_the_requested_format_with_parameters(shared_engine: Any) -> None:
    async def scenario(supervisor: Any, service: uuid.UUID) -> None:
        chunks = await supervisor.query(
            service, {"sql": "SELECT number FROM numbers(300000)", "format": "JSONEachRow"}
        )
        parts = [chunk async for chunk in chunks]
        assert len([p for p in parts if p]) > 1  # streamed, not one block
        body = b"".join(parts)
        assert body.count(b"\n") == 300000
        assert body.startswith(b'{"number":0}\n')
        answer = await _collect(
            supervisor,
            service,
            sql="SELECT {x:UInt32} + 1 AS y",
            format="JSONEachRow",
            params={"x": 41},
        )
        assert answer == b'{"y":42}\n'

    _on_the_shared_engine(shared_engine, scenario)


def test_read_only_is_enforced_by_the_engine(shared_engine: Any) -> None:
    async def scenario(supervisor: Any, service: uuid.UUID) -> None:
        with pytest.raises(ClickHouseError) as refused:
            await _collect(
                supervisor,
                service,
                sql="CREATE TABLE t (x UInt8) ENGINE = Memory",
                readonly=True,
            )
        assert refused.value.code == 164  # READONLY
        # A query cannot lift it for itself either.
        with pytest.raises(ClickHouseError):
            await _collect(supervisor, service, sql="SELECT 1 SETTINGS readonly = 0", readonly=True)
        # Nor does one query's setting reach the next: each runs on a fresh handle.
        await _collect(supervisor, service, sql="CREATE TABLE t (x UInt8) ENGINE = Memory")

    _on_the_shared_engine(shared_engine, scenario)


def test_limits_apply_as_settings(shared_engine: Any) -> None:
    async def scenario(supervisor: Any, service: uuid.UUID) -> None:
        with pytest.raises(ClickHouseError) as timeout:
            await _collect(
                supervisor,
                service,
                sql="SELECT count() FROM numbers(100000000000) WHERE sleepEachRow(0) = 0",
                settings={"max_execution_time": 1},
            )
        assert timeout.value.code == 159  # TIMEOUT_EXCEEDED

    _on_the_shared_engine(shared_engine, scenario)


def test_the_operators_limits_are_constraints_no_query_lifts(tmp_path: Path) -> None:
    """An engine starts with the operator's limits as constraints: a query's limits (in its
    connection string) and the caller's own settings may lower them, neither SET nor a
    SETTINGS clause may lift them (ClickHouse's 452), and 0 ("no limit") is lifting too."""

    async def run() -> None:
        supervisor = EngineSupervisor(
            tmp_path, limits={"max_execution_time": 30, "max_memory_usage": 1 << 30}
        )
        service = uuid.uuid4()
        show = "SELECT getSetting('max_execution_time'), getSetting('max_memory_usage')"
        try:
            await supervisor.start(service)
            assert await _collect(supervisor, service, sql=show) == b"30\t1073741824\n"
            lowered = {"max_execution_time": 10, "max_memory_usage": 1 << 20}
            assert await _collect(supervisor, service, sql=show, limits=lowered) == (
                b"10\t1048576\n"
            )
            for sql in (
                "SELECT 1 SETTINGS max_execution_time = 0",
                "SELECT 1 SETTINGS max_memory_usage = 2147483648",
                "SET max_execution_time = 31",
            ):
                with pytest.raises(ClickHouseError) as refused:
                    await _collect(supervisor, service, sql=sql, limits=lowered)
                assert refused.value.code == 452  # SETTING_CONSTRAINT_VIOLATION
            with pytest.raises(ClickHouseError) as refused:
                await _collect(
                    supervisor, service, sql="SELECT 1", settings={"max_memory_usage": 0}
                )
            assert refused.value.code == 452
            with pytest.raises(ClickHouseError):  # only the operator's limits, by name
                await _collect(supervisor, service, sql="SELECT 1", limits={"path": "elsewhere"})
        finally:
            await supervisor.close()

    _run(run())


def test_a_session_is_free_as_soon_as_its_answer_is(shared_engine: Any) -> None:
    """A client's next request in a session may follow the last answer at once: it finds the
    session free, not locked by the request that answered (373)."""

    async def scenario(supervisor: Any, service: uuid.UUID) -> None:
        session = {"session_id": "back-to-back"}
        await _collect(supervisor, service, sql="CREATE TEMPORARY TABLE t (a UInt8)", **session)
        for index in range(40):
            insert = f"INSERT INTO t VALUES ({index})"  # noqa: S608 (an int)
            await _collect(supervisor, service, sql=insert, **session)
            counted = await _collect(supervisor, service, sql="SELECT count() FROM t", **session)
            assert counted == f"{index + 1}\n".encode()

    _on_the_shared_engine(shared_engine, scenario)


def test_data_survives_a_stop_and_a_start(tmp_path: Path) -> None:
    async def scenario(supervisor: EngineSupervisor, service: uuid.UUID) -> None:
        await _collect(
            supervisor, service, sql="CREATE TABLE t (x UInt8) ENGINE = MergeTree ORDER BY x"
        )
        await _collect(supervisor, service, sql="INSERT INTO t VALUES (7)")
        await supervisor.stop(service)
        assert not supervisor.running(service)
        with pytest.raises(EngineUnavailable):
            await supervisor.query(service, {"sql": "SELECT 1"})
        await supervisor.start(service)
        assert await _collect(supervisor, service, sql="SELECT x FROM t") == b"7\n"

    _with_one_service(tmp_path, scenario)


def test_a_crashed_worker_restarts_and_one_that_keeps_crashing_is_given_up(tmp_path: Path) -> None:
    failed: list[uuid.UUID] = []

    async def on_failed(service_id: uuid.UUID, _why: str) -> None:
        failed.append(service_id)

    async def scenario() -> None:
        supervisor = EngineSupervisor(tmp_path, max_restarts=1, on_failed=on_failed)
        service = uuid.uuid4()
        try:
            await supervisor.start(service)
            first = supervisor._workers[service].pid
            os.kill(first, signal.SIGKILL)
            await _until(
                lambda: supervisor.running(service) and supervisor._workers[service].pid != first
            )
            assert await _collect(supervisor, service, sql="SELECT 1") == b"1\n"
            os.kill(supervisor._workers[service].pid, signal.SIGKILL)
            await _until(lambda: failed == [service])
            assert not supervisor.running(service)
        finally:
            await supervisor.close()

    _run(scenario())


def test_a_worker_that_stops_answering_fails_its_query_instead_of_holding_it(
    tmp_path: Path,
) -> None:
    """A hung engine (here: a stopped process) never holds a caller forever: after the answer
    timeout the query fails with ClickHouse's TIMEOUT_EXCEEDED, and the engine serves again
    once it moves."""

    async def scenario() -> None:
        supervisor = EngineSupervisor(tmp_path, answer_timeout=1)
        service = uuid.uuid4()
        try:
            await supervisor.start(service)
            pid = supervisor._workers[service].pid
            os.kill(pid, signal.SIGSTOP)
            try:
                with pytest.raises(ClickHouseError) as silent:
                    await asyncio.wait_for(_collect(supervisor, service, sql="SELECT 1"), 20)
                assert silent.value.code == 159
            finally:
                os.kill(pid, signal.SIGCONT)
            assert await _collect(supervisor, service, sql="SELECT 1") == b"1\n"
        finally:
            await supervisor.close()

    _run(scenario())


def test_a_start_cancelled_while_the_engine_starts_leaves_no_engine_behind(
    tmp_path: Path,
) -> None:
    """A start abandoned midway (the server stopping, or the caller's event loop ending) kills
    the worker it spawned and waits for it: no engine runs on unknown to the supervisor."""

    async def scenario() -> None:
        supervisor = EngineSupervisor(tmp_path)
        service = uuid.uuid4()
        try:
            starting = asyncio.create_task(supervisor.start(service))
            await _until(lambda: worker_pids(service), seconds=5, step=0.01)
            assert not starting.done(), "the engine was ready before the start was cancelled"
            starting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await starting
            assert worker_pids(service) == []
            assert not supervisor.running(service)
            await supervisor.start(service)  # the data directory is free
            assert await _collect(supervisor, service, sql="SELECT 1") == b"1\n"
        finally:
            await supervisor.close()

    _run(scenario())


def test_closing_a_result_early_leaves_the_worker_serving(shared_engine: Any) -> None:
    async def scenario(supervisor: Any, service: uuid.UUID) -> None:
        chunks = await supervisor.query(
            service, {"sql": "SELECT number FROM numbers(100000000)", "format": "TabSeparated"}
        )
        assert isinstance(chunks, Answer)
        async for chunk in chunks:
            if chunk:
                break
        await chunks.aclose()
        assert await _collect(supervisor, service, sql="SELECT 2") == b"2\n"

    _on_the_shared_engine(shared_engine, scenario)


def test_a_worker_whose_server_dies_exits_and_frees_its_data(tmp_path: Path) -> None:
    """kill -9 of the API process must not leave an engine holding the data directory."""
    import subprocess
    import sys
    import time

    script = (
        "import asyncio, sys, uuid, pathlib\n"
        "from keyhouse.engine.supervisor import EngineSupervisor\n"
        "async def main():\n"
        f"    s = EngineSupervisor(pathlib.Path({str(tmp_path)!r}))\n"
        f"    await s.start(uuid.UUID({str(uuid.UUID(int=7))!r}))\n"
        "    print(list(s._workers.values())[0].pid, flush=True)\n"
        "    await asyncio.sleep(3600)\n"
        "asyncio.run(main())\n"
    )
    server = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    worker_pid = int(server.stdout.readline())
    server.kill()
    server.wait()
    server.stdout.close()
    for _ in range(100):
        try:
            os.kill(worker_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(worker_pid, signal.SIGKILL)
        raise AssertionError("the orphaned worker kept running")

    async def restart() -> None:
        supervisor = EngineSupervisor(tmp_path)
        try:
            await supervisor.start(uuid.UUID(int=7))
            assert await _collect(supervisor, uuid.UUID(int=7), sql="SELECT 1") == b"1\n"
        finally:
            await supervisor.close()

    _run(restart())


async def _rows(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def test_database_roles_restrict_one_query_alone(shared_engine: Any) -> None:
    async def scenario(supervisor: Any, service: uuid.UUID) -> None:
        await _collect(supervisor, service, sql="CREATE TABLE t (x UInt8) ENGINE = Memory")
        reader = ["sql_console_read_only"]
        with pytest.raises(ClickHouseError) as refused:
            await _collect(supervisor, service, sql="INSERT INTO t VALUES (1)", roles=reader)
        assert refused.value.code == 497  # ACCESS_DENIED
        assert await _collect(supervisor, service, sql="SELECT count() FROM t", roles=reader) == (
            b"0\n"
        )
        with pytest.raises(ClickHouseError) as unknown:
            await _collect(supervisor, service, sql="SELECT 1", roles=["no_such_role"])
        assert unknown.value.code == 511  # UNKNOWN_ROLE
        # The next query, on its own handle, has the default role again.
        await _collect(supervisor, service, sql="INSERT INTO t VALUES (1)")

    _on_the_shared_engine(shared_engine, scenario)


def test_inserts_stream_data_and_report_what_they_wrote(shared_engine: Any) -> None:
    async def scenario(supervisor: Any, service: uuid.UUID) -> None:
        create = "CREATE TABLE t (x UInt8, s String) ENGINE = Memory"
        await _collect(supervisor, service, sql=create)
        head = {"sql": "INSERT INTO t (x, s)", "format": "TabSeparated"}
        written = await supervisor.insert(service, head, _rows(b"1\ta\n2\tb\n", b"3\tc\n"))
        assert written["written_rows"] == 3
        with pytest.raises(ClickHouseError) as bad:
            await supervisor.insert(service, head, _rows(b"not a number\tx\n"))
        assert bad.value.code == 27  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
        with pytest.raises(ClickHouseError) as missing:
            await supervisor.insert(service, {**head, "sql": "INSERT INTO nope (x)"}, _rows())
        assert missing.value.code == 60  # UNKNOWN_TABLE
        assert await _collect(supervisor, service, sql="SELECT sum(x) FROM t") == b"6\n"

    _on_the_shared_engine(shared_engine, scenario)


def test_data_the_engine_refuses_midway_gets_its_error_and_stops_the_sending(
    shared_engine: Any,
) -> None:
    """A bad row early in a long insert: the caller gets the engine's own error (never "the
    engine stopped"), and stops sending once the engine has answered."""
    sent = 0

    async def rows() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b"not a number\tx\n"
        for _ in range(2000):
            sent += 1
            yield b"1\ta\n" * 2000
            await asyncio.sleep(0)

    async def scenario(supervisor: Any, service: uuid.UUID) -> None:
        nonlocal sent
        await _collect(
            supervisor, service, sql="CREATE TABLE t (x UInt8, s String) ENGINE = Memory"
        )
        head = {"sql": "INSERT INTO t (x, s)", "format": "TabSeparated"}
        for _ in range(20):
            sent = 0
            with pytest.raises(ClickHouseError) as bad:
                await supervisor.insert(service, head, rows())
            assert bad.value.code == 27, bad.value.message  # CANNOT_PARSE_INPUT_...
            assert sent < 2000  # it stopped before the end of the data
        assert await _collect(supervisor, service, sql="SELECT count() FROM t") == b"0\n"

    _on_the_shared_engine(shared_engine, scenario)


def test_a_session_keeps_its_handle_between_queries(shared_engine: Any) -> None:
    async def scenario(supervisor: Any, service: uuid.UUID) -> None:
        setting = "SELECT value FROM system.settings WHERE name = 'max_threads'"
        await _collect(supervisor, service, sql="SET max_threads = 3", session_id="a")
        assert await _collect(supervisor, service, sql=setting, session_id="a") == b"3\n"
        assert await _collect(supervisor, service, sql=setting, session_id="b") != b"3\n"
        assert await _collect(supervisor, service, sql=setting) != b"3\n"
        # One request at a time per session, as ClickHouse's HTTP interface does: a result
        # that has started and waits for its reader holds the session.
        large = await supervisor.query(
            service,
            {"sql": "SELECT number FROM numbers(3000000)", "format": "TSV", "session_id": "a"},
        )
        assert await anext(large) == b""  # the result has started
        assert await anext(large)  # its first piece; the engine waits for the reader
        with pytest.raises(ClickHouseError) as locked:
            await _collect(supervisor, service, sql="SELECT 1", session_id="a")
        assert locked.value.code == 373  # SESSION_IS_LOCKED
        assert [chunk async for chunk in large][-1].endswith(b"\n2999999\n")
        assert await _collect(supervisor, service, sql="SELECT 1", session_id="a") == b"1\n"

    _on_the_shared_engine(shared_engine, scenario)


def test_a_worker_that_hangs_is_killed_and_started_again(tmp_path: Path) -> None:
    """A worker that stops answering (stopped here with SIGSTOP) never exits on its own: the
    heartbeat finds it within a few beats, kills it, and the supervisor starts it again."""

    async def scenario() -> None:
        supervisor = EngineSupervisor(tmp_path, heartbeat=0.3)
        service = uuid.uuid4()
        try:
            await supervisor.start(service)
            hung = supervisor._workers[service].pid
            os.kill(hung, signal.SIGSTOP)
            await _until(
                lambda: supervisor.running(service) and supervisor._workers[service].pid != hung,
                seconds=60,
            )
            assert await _collect(supervisor, service, sql="SELECT 1") == b"1\n"
        finally:
            await supervisor.close()

    _run(scenario())


def test_a_worker_that_streams_an_answer_is_alive_whatever_its_pings_say(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under load a busy worker may answer its pings late: while it sends an answer's frames it
    is not counted as hung (here every ping fails, and ten beats pass while a query streams)."""

    async def unanswered(*_args: Any) -> None:
        raise TimeoutError

    async def scenario() -> None:
        supervisor = EngineSupervisor(tmp_path, heartbeat=0.1)
        monkeypatch.setattr(supervisor, "_ping", unanswered)
        service = uuid.uuid4()
        try:
            await supervisor.start(service)
            busy = supervisor._workers[service].pid
            chunks = await supervisor.query(
                service, {"sql": "SELECT number FROM numbers(1e12)", "format": "TabSeparated"}
            )
            read, began = 0, asyncio.get_running_loop().time()
            async for chunk in chunks:
                read += len(chunk)
                if asyncio.get_running_loop().time() - began > 2.0:  # ten beats and more
                    break
                await asyncio.sleep(0.01)  # a slow reader: frames keep coming, slowly
            await chunks.aclose()
            assert read > 0
            assert supervisor._workers[service].pid == busy  # never killed
            # Once it sends nothing (no query), three failed pings in a row end it.
            await _until(lambda: supervisor._workers[service].pid != busy, seconds=30)
        finally:
            await supervisor.close()

    _run(scenario())
