"""The memory of all engines on a host together is capped: each engine refuses past it as
ClickHouse does, and the kernel holds their sum to it (one memory cgroup for every worker)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from pathlib import Path

import pytest

from keyhouse.config import Settings
from keyhouse.engine.memory import MemoryGroup, MemoryGroupUnavailable, own_memory_cgroup
from keyhouse.engine.protocol import ClickHouseError
from keyhouse.engine.supervisor import EngineSupervisor, EngineUnavailable
from keyhouse.runtime import engines_memory
from tests.engine.test_supervisor import _collect, _run

MiB = 1024**2


def test_one_engine_past_the_total_is_clickhouses_memory_limit_error(tmp_path: Path) -> None:
    async def scenario() -> None:
        supervisor = EngineSupervisor(tmp_path, memory_limit=512 * MiB)
        service = uuid.uuid4()
        try:
            await supervisor.start(service)
            with pytest.raises(ClickHouseError) as failed:
                await _collect(
                    supervisor, service, sql="SELECT length(groupArray(number)) FROM numbers(2e8)"
                )
            assert failed.value.code == 241  # MEMORY_LIMIT_EXCEEDED
            assert "(total) memory limit exceeded" in str(failed.value)
            # The engine lives on and answers the next query.
            assert await _collect(supervisor, service, sql="SELECT 1") == b"1\n"
        finally:
            await supervisor.close()

    _run(scenario())


def test_the_kernel_holds_all_engines_together_to_the_total(tmp_path: Path) -> None:
    """Two engines each below the total, together above it: each engine's own count sees only
    itself, the kernel sees the group and ends one engine (the one holding most, which may be
    the first: its query had succeeded); the group never held more than the total, this
    process was never touched, and both engines start again."""
    try:
        own_memory_cgroup()
    except MemoryGroupUnavailable as error:
        pytest.skip(f"this host offers no memory cgroup: {error}")
    total = 1024 * MiB
    hold = "CREATE TABLE held ENGINE = Memory AS SELECT number FROM numbers(8e7)"  # ~640 MB

    async def scenario() -> None:
        supervisor = EngineSupervisor(tmp_path, memory_limit=total)
        first, second = uuid.uuid4(), uuid.uuid4()
        try:
            await asyncio.gather(supervisor.start(first), supervisor.start(second))
            group = supervisor.memory_group
            assert isinstance(group, MemoryGroup)
            assert group.limit == total
            for service in (first, second):
                pid = supervisor._workers[service].pid
                assert f"/{group.path.name}\n" in Path(f"/proc/{pid}/cgroup").read_text()
            for service in (first, second):
                # The engine the kernel ends, or not: ended before its answer began, it is
                # unavailable; ended part-way, the answer is an engine error.
                with contextlib.suppress(ClickHouseError, EngineUnavailable):
                    await _collect(supervisor, service, sql=hold, session_id="s")
            assert group.kills >= 1
            assert 0 < group.peak <= total
            # The supervisor brings the ended engine back (once it has seen it end: until then
            # the engine is still "running" and a query finds it gone).
            for service in (first, second):
                deadline = time.monotonic() + 60
                while True:
                    await supervisor.start(service)
                    try:
                        answer = await _collect(supervisor, service, sql="SELECT 1")
                        break
                    except EngineUnavailable:
                        assert time.monotonic() < deadline, "the ended engine never came back"
                        await asyncio.sleep(0.1)
                assert answer == b"1\n"
        finally:
            await supervisor.close()
        assert not group.path.exists()  # removed with the last engine

    _run(scenario())


def test_the_total_defaults_to_most_of_the_hosts_memory() -> None:
    default = engines_memory(Settings())
    assert default > 0
    assert engines_memory(Settings(engines_max_memory_bytes=0)) == 0
    assert engines_memory(Settings(engines_max_memory_bytes=2 * 1024**3)) == 2 * 1024**3
    with pytest.raises(ValueError, match="128 MiB"):
        Settings(engines_max_memory_bytes=1000)
