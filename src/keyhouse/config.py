"""Server settings: one object, built from flags or ``KEYHOUSE_*`` variables and passed in."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///./data/keyhouse.db"

_RATE_LIMIT = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*s\s*$")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KEYHOUSE_", extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
    # The server-side pepper keys every stored hash; a database dump without it is useless
    # for testing guesses. Given directly, or read from (and first created in) pepper_file.
    pepper: SecretStr | None = None
    pepper_file: Path = Path("./data/keyhouse.pepper")
    # "N/Ss" (N requests per S seconds, per key) or "off". ClickHouse Cloud: 10 per 10 s.
    rate_limit: str = "10/10s"
    # Shared counters for several replicas; in-process memory when unset.
    redis_url: str | None = None
    max_keys_per_organization: int = Field(default=100, ge=1)
    # Services an organization may hold (each runs an engine: memory and disk on this host).
    max_services_per_organization: int = Field(default=10, ge=1)
    # Comma-separated in the environment ("10.0.0.0/8, 192.168.0.1"), or a JSON list.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Invitations: lifetime, and where the acceptance link points (default: the request's host).
    invitation_ttl_days: int = Field(default=30, ge=1, le=365)
    public_url: str | None = None
    # Who may read GET /metrics besides loopback: a caller with Authorization: Bearer <token>.
    metrics_token: SecretStr | None = None
    # smtp://user:password@host:port (STARTTLS when offered) or smtps://...; unset: no email,
    # the create response carries the link in the acceptUrl extension field instead.
    smtp_url: SecretStr | None = None
    smtp_from: str = "keyhouse@localhost"
    # Console: sessions end after this much inactivity; failed sign-ins allowed per 15 minutes.
    session_idle_minutes: int = Field(default=120, ge=1)
    login_failures_per_account: int = Field(default=5, ge=1)
    login_failures_per_ip: int = Field(default=30, ge=1)
    # Threads (and database connections) per server process for requests' database work.
    # Two per core measured best here (4 vs 16 threads: +19 % on SQLite, +23 % on a local
    # PostgreSQL); raise it when the database is far away and requests mostly wait on it.
    # Request bodies over this many bytes are refused (413) before parsing or authentication.
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # Seconds to connect to the database, and at most for one statement (PostgreSQL) or one
    # wait for SQLite's write lock; past them a request fails fast with a 503.
    database_connect_timeout: float = Field(default=5, gt=0, le=300)
    database_statement_timeout: float = Field(default=30, gt=0, le=3600)
    # Failed authentications allowed per client address and per key ID ("N/Ss" or "off");
    # over them, 429 until the moving window has room again.
    auth_failures_per_ip: str = "30/60s"
    auth_failures_per_key_id: str = "10/60s"
    # Failed passwords per service on its ClickHouse port, from all addresses together (each
    # address also has auth_failures_per_ip); high, so that guesses from elsewhere cannot lock
    # the port for the service's own clients.
    clickhouse_auth_failures_per_service: str = "300/60s"
    # Services: each service's engine keeps its data under data_dir/services/<id>. One server
    # process owns the engines; a server run with several processes turns services off.
    data_dir: Path = Path("./data")
    services_enabled: bool = True
    # Every engine runs in an operating-system sandbox (keyhouse.engine.sandbox): "bubblewrap",
    # or "off" (unsafe: an engine then reaches whatever the server can; development only).
    engine_sandbox: Literal["bubblewrap", "off"] = "bubblewrap"
    # The most all engines on this host may hold together, in bytes (default: 80 % of the
    # host's memory; 0: no cap). Each engine caps itself at it (past it, ClickHouse's 241),
    # and the kernel caps their sum where a memory cgroup can be made (keyhouse.engine.memory).
    engines_max_memory_bytes: int | None = Field(default=None, ge=0)
    # How long a process's hold on a service's engine lasts unless renewed (a third of it
    # apart): another process on the same database takes a service over only once its
    # holder's lease has expired (at once when the holder's process, on this machine, is gone).
    engine_lease_seconds: float = Field(default=30.0, ge=1.0, le=3600.0)
    # How often each engine is pinged; one that misses 3 beats in a row (each ping given as
    # long) while sending nothing on any query is hung: killed and restarted, found in 15-30 s
    # rather than at its queries' answer timeouts.
    # An engine host (keyhouse agent) silent this long has its services turned degraded.
    host_silent_seconds: float = Field(default=15.0, ge=1.0, le=3600.0)
    engine_heartbeat_seconds: float = Field(default=5.0, ge=0.1, le=600.0)
    # How often the server process running services checks their backup schedules and the
    # backups asked for with `keyhouse backups take` (keyhouse.backups).
    backup_check_seconds: float = Field(default=5.0, ge=0.1, le=3600.0)
    # How often the process running services measures their usage (engine time, bytes on
    # disk) for usageCost, and the prices it is charged at, in ClickHouse Credits (all 0 by
    # default: usage is reported, at no cost).
    usage_sample_seconds: float = Field(default=60.0, ge=0.1, le=3600.0)
    price_compute_unit_hour: float = Field(default=0.0, ge=0.0)
    price_storage_gb_month: float = Field(default=0.0, ge=0.0)
    price_backup_gb_month: float = Field(default=0.0, ge=0.0)
    # The unprivileged uid/gid engines run under when Keyhouse runs as root.
    engine_uid: int = Field(default=65534, ge=1, le=2**32 - 2)
    engine_gid: int = Field(default=65534, ge=1, le=2**32 - 2)
    # Labels for the cloud-only fields of a service created without them (stored and echoed).
    service_default_provider: str = "aws"
    service_default_region: str = "us-east-1"
    # Per-query limits of the Query API, applied as the engine's own settings.
    query_max_execution_seconds: int = Field(default=60, ge=1)
    query_max_memory_bytes: int = Field(default=2 * 1024**3, ge=1024**2)
    query_max_result_bytes: int = Field(default=1024**3, ge=0)
    # The console's SQL page, the one answer built whole in the API process, stops past this
    # many bytes with ClickHouse's TOO_MANY_ROWS_OR_BYTES; streamed answers are not held.
    query_max_buffered_result_bytes: int = Field(default=64 * 1024**2, ge=1024)
    # The data of one insert through a service's ClickHouse HTTP interface, in bytes as the
    # engine receives them (decompressed); past it ClickHouse's TOO_MANY_BYTES, a 413. 0: none.
    query_max_insert_bytes: int = Field(default=4 * 1024**3, ge=0)
    # Queries (and inserts) at once on one service's engine, through every door together; past
    # it ClickHouse's TOO_MANY_SIMULTANEOUS_QUERIES (202), a 503 with Retry-After.
    query_max_concurrent_per_service: int = Field(default=100, ge=1, le=10_000)
    # Each running service's ClickHouse HTTP interface (HTTPS): the address it listens on and is
    # listed at, and the ports it may take ("9440-9539"; default: a free port, kept per service).
    clickhouse_host: str = "127.0.0.1"
    clickhouse_ports: str | None = Field(default=None, pattern=r"^\d{1,5}-\d{1,5}$")
    # Connections at once on one service's ClickHouse port (past it: 503).
    clickhouse_max_connections: int = Field(default=256, ge=2, le=65536)
    # Connections at once from one client address on one port (TLS handshakes included); past
    # it a new one is closed at once, so that one address cannot hold the whole port.
    clickhouse_max_connections_per_address: int = Field(default=64, ge=1, le=65536)
    # Seconds a connection has to finish its TLS handshake and a request's head (and, after an
    # answer, the next request's head); past it the connection is closed.
    clickhouse_request_head_timeout: float = Field(default=15.0, gt=0, le=3600)
    # The certificate those interfaces serve; default: one Keyhouse makes on first start under
    # data_dir/tls, signed by its own CA (data_dir/tls/ca.pem, for clients to verify).
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # ClickHouse servers a service may be attached to (``keyhouseAttach`` on create): a comma-
    # separated list of host or host:port, or "*" for any. Empty: attaching is turned off.
    attach_allowed_hosts: str = ""
    # Of those, the ones a service may be attached to over plain http ("host" or "host:port");
    # any other needs https (the server's password would otherwise cross in clear).
    attach_http_hosts: str = ""
    # The address clients reach the Query API at (clickhousectl: CLICKHOUSE_CLOUD_QUERY_HOST);
    # default: the request's own base URL.
    query_host: str | None = None
    # How often usedAt notes are written (and at a clean shutdown).
    usage_flush_seconds: float = Field(default=5.0, gt=0)
    worker_threads: int = Field(
        default_factory=lambda: min(32, 2 * (os.cpu_count() or 1)), ge=1, le=256
    )

    @field_validator(
        "rate_limit",
        "auth_failures_per_ip",
        "auth_failures_per_key_id",
        "clickhouse_auth_failures_per_service",
    )
    @classmethod
    def _check_rate_limit(cls, value: str) -> str:
        parse_rate_limit(value)
        return value

    @field_validator("engines_max_memory_bytes")
    @classmethod
    def _check_engines_memory(cls, value: int | None) -> int | None:
        if value and value < 128 * 1024**2:
            raise ValueError("engines_max_memory_bytes must be 0 (no cap) or at least 128 MiB")
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: object) -> object:
        if isinstance(value, str):
            if value.strip().startswith("["):
                return json.loads(value)
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: list[str]) -> list[str]:
        for entry in value:
            ipaddress.ip_network(entry, strict=False)
        return value

    @property
    def rate_limit_rule(self) -> tuple[int, int] | None:
        return parse_rate_limit(self.rate_limit)

    @property
    def trusted_proxy_networks(self) -> list[IPNetwork]:
        return [ipaddress.ip_network(entry, strict=False) for entry in self.trusted_proxies]

    def pepper_bytes(self) -> bytes:
        """The pepper; creates the pepper file (mode 0600) on first use if none is configured."""
        if self.pepper is not None:
            return self.pepper.get_secret_value().encode()
        path = self.pepper_file
        if not path.exists():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(32))
        return path.read_text().strip().encode()


# The services' ClickHouse HTTP interfaces' CA (``keyhouse.clickhouse_http.tls``).
CA_FILE = "ca.pem"


def ca_path(settings: Settings) -> Path | None:
    """The CA file clients verify the services' interfaces with (None: the operator's own
    certificate is used); Keyhouse verifies attached servers with it too."""
    if settings.tls_cert_file is not None:
        return None
    return settings.data_dir / "tls" / CA_FILE


def parse_rate_limit(value: str) -> tuple[int, int] | None:
    """``"10/10s"`` -> ``(10, 10)``; ``"off"`` -> ``None``."""
    if value.strip().lower() == "off":
        return None
    match = _RATE_LIMIT.match(value)
    if not match or int(match.group(1)) < 1 or int(match.group(2)) < 1:
        raise ValueError(f"rate limit must look like '10/10s' or 'off', got {value!r}")
    return int(match.group(1)), int(match.group(2))
