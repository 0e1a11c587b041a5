"""What the services' front ends need of the runtime that runs engines (``keyhouse.runtime``
provides it), and how they find it: a front end asks for a query to run and, to wake a service,
for its engine to come up; starting and stopping engines otherwise follows a committed change
(``keyhouse.services.states.EngineWork``)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol, cast

from keyhouse.api.errors import ServiceUnavailable

if TYPE_CHECKING:
    from keyhouse.engine.limits import QueryLimits
    from keyhouse.engine.protocol import Answer, ClickHouseError
    from keyhouse.services.service import RunGrant
    from keyhouse.state import AppState


class InterfaceRuntime(Protocol):
    """What a service's ClickHouse HTTP interface needs: to wake the service, and to run its
    queries and inserts (the control plane's runtime, or an engine host's agent)."""

    async def bring_up(self, service_id: uuid.UUID) -> bool:
        """Start the service's engine (or reach its attached server) unless it runs; False
        (the service ``failed``, or run by another process) when it cannot."""
        ...

    async def run(
        self,
        grant: RunGrant,
        *,
        sql: str,
        fmt: str,
        database: str | None = None,
        query_id: str | None = None,
        params: dict[str, str] | None = None,
        session_id: str | None = None,
        extra_settings: dict[str, Any] | None = None,
        session_timeout: float | None = None,
    ) -> Answer: ...

    async def insert(
        self,
        grant: RunGrant,
        *,
        sql: str,
        fmt: str,
        data: AsyncIterator[bytes],
        database: str | None = None,
        session_id: str | None = None,
        extra_settings: dict[str, Any] | None = None,
        session_timeout: float | None = None,
    ) -> dict[str, Any]: ...


class EngineRuntime(InterfaceRuntime, Protocol):
    """The control plane's runtime (``keyhouse.runtime.Engines``)."""

    async def read_if_running(self, service_id: uuid.UUID, sql: str) -> bytes | None:
        """The control plane's own read of a running service's engine (JSONEachRow); None
        when it does not run here. Never wakes it, never counts as its use."""
        ...

    async def reference(self, statements: list[str]) -> list[bytes | ClickHouseError]:
        """Each statement's answer from the reference engine (a worker on an empty directory,
        never a tenant's), or its error."""
        ...

    async def catalog(self) -> bytes:
        """The engine's ``system.settings`` (JSONEachRow)."""
        ...


def query_request(
    grant: RunGrant,
    limits: QueryLimits,
    configured: dict[str, str] | None,
    *,
    sql: str,
    fmt: str,
    database: str | None = None,
    query_id: str | None = None,
    params: dict[str, str] | None = None,
    session_id: str | None = None,
    extra_settings: dict[str, Any] | None = None,
    session_timeout: float | None = None,
    frozen: bool = False,
) -> dict[str, Any]:
    """A query's request to a worker (``keyhouse.engine.protocol``) for a caller the domain
    layer granted: under the operator's ``limits`` and the service's memory cap (the engine's
    constraint: a query may lower its cap, never raise it past the operator's), the engine's
    ``readonly`` when the grant says so or the service is ``frozen`` (moving between engine
    hosts: writes wait), and the service's own ``configured`` settings under the caller's
    (which win)."""
    return {
        "sql": sql,
        "format": fmt,
        "database": database,
        "readonly": grant.readonly or frozen,
        "roles": list(grant.roles),
        "params": params or {},
        "session_id": session_id,
        "session_timeout": session_timeout,
        "query_id": query_id or str(uuid.uuid4()),
        "limits": limits.for_service(grant.max_memory_gb).as_settings(),
        "settings": {**(configured or {}), **(extra_settings or {})},
    }


def insert_request(
    grant: RunGrant,
    limits: QueryLimits,
    configured: dict[str, str] | None,
    *,
    sql: str,
    fmt: str,
    database: str | None = None,
    session_id: str | None = None,
    extra_settings: dict[str, Any] | None = None,
    session_timeout: float | None = None,
    frozen: bool = False,
) -> dict[str, Any]:
    """An insert's request to a worker, under the same limits and settings as a query's (a
    query's request without what only a query has); a ``frozen`` service refuses it."""
    if frozen:
        raise moving()
    request = query_request(
        grant,
        limits,
        configured,
        sql=sql,
        fmt=fmt,
        database=database,
        session_id=session_id,
        extra_settings=extra_settings,
        session_timeout=session_timeout,
    )
    for only_a_query in ("readonly", "roles", "params", "query_id"):
        del request[only_a_query]
    return request


def engines_of(state: AppState) -> EngineRuntime:
    """The runtime of the app serving ``state``; 503 when services are turned off."""
    if state.engines is None:
        raise ServiceUnavailable(
            "Services are turned off on this server (KEYHOUSE_SERVICES_ENABLED=false)"
        )
    return cast(EngineRuntime, state.engines)


def moving() -> ClickHouseError:
    """An insert while the service moves between engine hosts (its queries run read-only)."""
    from keyhouse.engine.protocol import ClickHouseError

    return ClickHouseError(
        164,
        "Code: 164. The service is moving to another engine host: writes resume once it is "
        "there. (READONLY)",
    )


def restoring() -> ServiceUnavailable:
    """A query while the service's backup is restored (its engine runs, its data is not all
    in)."""
    return ServiceUnavailable(
        "The service is being restored from a backup", headers={"Retry-After": "5"}
    )


def not_running() -> ServiceUnavailable:
    return ServiceUnavailable("The service is not running", headers={"Retry-After": "5"})
