"""The engine sandbox: a worker runs under bubblewrap, alone in its namespaces, with no
network, no capabilities and (when Keyhouse is root) its own unprivileged uid; no engine starts
unconfined when the sandbox cannot be set up."""

# ruff: noqa: S608 (SQL built from test paths is what these tests send)

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from keyhouse.engine.protocol import ClickHouseError
from keyhouse.engine.sandbox import OFF_SETTING, Sandbox, SandboxUnavailable
from keyhouse.engine.supervisor import EngineSupervisor, EngineUnavailable
from tests.engine.test_supervisor import _collect, _run, _with_one_service


def test_a_worker_is_alone_unprivileged_and_offline(tmp_path: Path) -> None:
    async def scenario(supervisor: EngineSupervisor, service: uuid.UUID) -> None:
        async def lines(path: str) -> list[str]:
            sql = f"SELECT * FROM file('{path}', 'LineAsString')"
            answer = await _collect(supervisor, service, sql=sql, format="TSVRaw")
            return answer.decode().splitlines()

        status = dict(line.split(":", 1) for line in await lines("/proc/self/status"))
        if os.geteuid() == 0:
            assert status["Uid"].split() == ["65534"] * 4
            assert status["Gid"].split() == ["65534"] * 4
        assert int(status["CapEff"], 16) == 0
        assert int(status["CapBnd"], 16) == 0 or os.geteuid() != 0
        assert status["NoNewPrivs"].strip() == "1"
        # Its own PID and network namespaces.
        assert status["NSpid"].split() == ["1"]  # PID 1 of a namespace of its own
        interfaces = [line.split(":")[0].strip() for line in (await lines("/proc/net/dev"))[2:]]
        assert interfaces == ["lo"]
        assert await lines("/proc/self/environ") != []  # its own, clean environment:
        assert "KEYHOUSE" not in (await lines("/proc/self/environ"))[0]

    _with_one_service(tmp_path, scenario)


def test_the_service_directories_belong_to_the_engine_and_nobody_else(tmp_path: Path) -> None:
    async def scenario(supervisor: EngineSupervisor, service: uuid.UUID) -> None:
        data = supervisor.data_path(service)
        assert data.stat().st_mode & 0o777 == 0o700
        if os.geteuid() == 0:
            assert (data.stat().st_uid, data.stat().st_gid) == (65534, 65534)
        created = "CREATE TABLE t (a UInt8) ENGINE = MergeTree ORDER BY a"
        await _collect(supervisor, service, sql=created)

    _with_one_service(tmp_path, scenario)


def test_no_engine_starts_unconfined_when_bubblewrap_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))

    async def scenario() -> None:
        supervisor = EngineSupervisor(tmp_path)
        try:
            with pytest.raises(EngineUnavailable) as refused:
                await supervisor.start(uuid.uuid4())
            assert OFF_SETTING in str(refused.value)
            assert "bubblewrap" in str(refused.value)
        finally:
            await supervisor.close()

    _run(scenario())


def test_a_data_directory_inside_the_runtime_is_refused(tmp_path: Path) -> None:
    sandbox = Sandbox(runtime=(tmp_path,))
    with pytest.raises(SandboxUnavailable) as refused:
        sandbox.check(tmp_path / "data")
    assert "KEYHOUSE_DATA_DIR" in str(refused.value)


def test_the_sandbox_binds_the_runtime_read_only_and_the_service_read_write() -> None:
    sandbox = Sandbox(runtime=(Path("/opt/python"),))
    command = sandbox.command(
        ["python", "-m", "keyhouse.engine.worker"], writable=[Path("/srv/data/services/x")]
    )
    pairs = list(zip(command, command[1:], strict=False))
    assert ("--ro-bind", "/opt/python") in pairs
    assert ("--bind", "/srv/data/services/x") in pairs
    assert not any(option == "--bind" and path == "/srv/data" for option, path in pairs)
    for isolated in ("--unshare-net", "--unshare-pid", "--clearenv", "--die-with-parent"):
        assert isolated in command
    assert command[-3:] == ["python", "-m", "keyhouse.engine.worker"]
    assert Sandbox(enabled=False).command(["python"], writable=[]) == ["python"]


def test_a_worker_without_the_sandbox_still_serves(tmp_path: Path) -> None:
    """KEYHOUSE_ENGINE_SANDBOX=off (development only) runs the same worker unconfined."""

    async def scenario() -> None:
        supervisor = EngineSupervisor(tmp_path, sandbox=Sandbox(enabled=False))
        service = uuid.uuid4()
        try:
            await supervisor.start(service)
            assert await _collect(supervisor, service, sql="SELECT 1") == b"1\n"
        finally:
            await asyncio.shield(supervisor.close())

    _run(scenario())


def test_a_burst_of_concurrent_queries_is_served_not_refused(tmp_path: Path) -> None:
    """64 queries at once on one engine all complete (the worker's listen backlog was 5: the
    rest were refused while the engine ran)."""

    async def scenario(supervisor: EngineSupervisor, service: uuid.UUID) -> None:
        queries = [
            _collect(supervisor, service, sql=f"SELECT {n}, sleep(0.2)", format="TSVRaw")
            for n in range(64)
        ]
        answers = await asyncio.gather(*queries)
        assert answers == [f"{n}\t0\n".encode() for n in range(64)]

    _with_one_service(tmp_path, scenario)


def test_a_services_files_are_private(tmp_path: Path) -> None:
    async def scenario(supervisor: EngineSupervisor, service: uuid.UUID) -> None:
        for sql in (
            "CREATE TABLE t (a UInt64) ENGINE = MergeTree ORDER BY a",
            "INSERT INTO t SELECT number FROM numbers(10)",
        ):
            await _collect(supervisor, service, sql=sql)
        assert (tmp_path / "services").stat().st_mode & 0o777 == 0o700
        paths = list(supervisor.data_path(service).rglob("*"))
        assert len(paths) > 10
        shared = [p for p in paths if not p.is_symlink() and p.stat().st_mode & 0o077]
        assert shared == []

    _with_one_service(tmp_path, scenario)


def test_past_its_limit_an_engine_refuses_a_query_as_clickhouse_does(tmp_path: Path) -> None:
    """A configured limit on queries at once: past it, ClickHouse's 202 at once (a 503 with
    Retry-After at the doors); the queries already running are untouched."""

    async def run() -> None:
        supervisor = EngineSupervisor(tmp_path, max_queries=2)
        service = uuid.uuid4()
        try:
            await supervisor.start(service)

            async def sleeper() -> bytes:
                while True:  # as a client told Retry-After does: a probe may hold a slot
                    try:
                        return await _collect(supervisor, service, sql="SELECT sleep(2)")
                    except ClickHouseError as error:
                        if error.code != 202:
                            raise
                        await asyncio.sleep(0.05)

            sleepers = [asyncio.ensure_future(sleeper()) for _ in range(2)]
            refused = None
            while refused is None and not all(s.done() for s in sleepers):
                try:
                    await _collect(supervisor, service, sql="SELECT 1")
                except ClickHouseError as error:
                    refused = error
                await asyncio.sleep(0.05)
            assert refused is not None
            assert refused.code == 202
            assert "Too many simultaneous queries. Maximum: 2" in refused.message
            assert await asyncio.gather(*sleepers) == [b"0\n", b"0\n"]
            assert await _collect(supervisor, service, sql="SELECT 1") == b"1\n"  # room again
        finally:
            await supervisor.close()

    _run(run())


def test_the_doors_answer_that_limit_with_503_and_retry_after() -> None:
    from keyhouse.api.errors import ServiceUnavailable
    from keyhouse.clickhouse_http.interface import ClickHouseInterface
    from keyhouse.services.query_api import QueryFailed

    busy = ClickHouseError(
        202, "Code: 202. DB::Exception: Too many simultaneous queries. Maximum: 2."
    )
    failed = QueryFailed(busy)  # the Query API and endpoints
    assert failed.status == 503
    assert failed.headers == {"X-ClickHouse-Exception-Code": "202", "Retry-After": "1"}
    assert QueryFailed(ClickHouseError(60, "Code: 60. Unknown table")).status == 400

    async def answered(error: Exception) -> dict[bytes, bytes]:  # the HTTP interface
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        async def handle(scope: Any, receive: Any, send: Any) -> None:
            raise error

        interface = ClickHouseInterface.__new__(ClickHouseInterface)
        interface._handle = handle  # type: ignore[method-assign]
        interface.guard = None
        await interface({"type": "http"}, None, send)  # type: ignore[arg-type]
        assert sent[0]["status"] == 503
        return dict(sent[0]["headers"])

    busy_port = _run(answered(busy))
    assert busy_port[b"retry-after"] == b"1"
    assert busy_port[b"x-clickhouse-exception-code"] == b"202"
    stopped = ServiceUnavailable("The service is not running", headers={"Retry-After": "5"})
    assert _run(answered(stopped))[b"retry-after"] == b"5"  # the domain's own answer
