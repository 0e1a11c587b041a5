"""What an agent and the control plane say to each other (JSON over the control plane's
``/internal/hosts`` routes; not part of the Cloud API)."""

from __future__ import annotations

import re
import uuid

from pydantic import BaseModel, ConfigDict, Field, field_validator

from keyhouse.services.states import Observed

_CHANNEL = re.compile(r"^[A-Za-z0-9.\-]{1,253}:[0-9]{1,5}$|^\[[0-9A-Fa-f:.]+\]:[0-9]{1,5}$")
_HOST = re.compile(r"^[A-Za-z0-9.\-:]{1,253}$")


class JoinRequest(BaseModel):
    """The agent as it runs: its name, labels, memory, channel and certificate authority."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=255)
    labels: dict[str, str] = Field(default_factory=dict, max_length=32)
    memory_gb: int = Field(ge=1, le=1_000_000)
    channel: str  # HOST:PORT the control plane reaches the agent at
    advertise: str  # the host name clients get in endpoints
    ca_pem: str = Field(max_length=16384)
    version: str = Field(default="", max_length=64)

    @field_validator("channel")
    @classmethod
    def _channel(cls, value: str) -> str:
        if not _CHANNEL.match(value):
            raise ValueError("must be HOST:PORT")
        return value

    @field_validator("advertise")
    @classmethod
    def _advertise(cls, value: str) -> str:
        if not _HOST.match(value):
            raise ValueError("must be a host name or address")
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key, label in value.items():
            if not re.fullmatch(r"[A-Za-z0-9_.\-/]{1,63}", key) or len(label) > 255:
                raise ValueError(f"{key!r}: keys are 1-63 of [A-Za-z0-9_.-/], values ≤255")
        return value

    @field_validator("ca_pem")
    @classmethod
    def _pem(cls, value: str) -> str:
        if "-----BEGIN CERTIFICATE-----" not in value:
            raise ValueError("must be a PEM certificate")
        return value


class Usage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seconds: float = Field(ge=0, le=86400)
    data_bytes: int = Field(ge=0)
    backup_bytes: int = Field(ge=0)


class ServiceReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: Observed
    # The version of what it was told that it acts on (None: an agent that does not say).
    generation: int | None = Field(default=None, ge=0)
    version: str | None = Field(default=None, max_length=32)
    failure: str | None = Field(default=None, max_length=512)
    port: int | None = Field(default=None, ge=1, le=65535)
    # Seconds since its last query (through the channel or the host's port), while it runs.
    idle_seconds: float | None = Field(default=None, ge=0)
    # What it used since the host's last usage sample (usageCost): engine seconds, and the
    # bytes of its data and its backups on the host's disk now.
    usage: Usage | None = None


class HostSync(JoinRequest):
    """A heartbeat: the agent as it runs, what it observed of each service it was given, and
    the services whose data it holds."""

    services: dict[str, ServiceReport] = Field(default_factory=dict, max_length=10000)
    data: list[str] = Field(default_factory=list, max_length=10000)


class GateRequest(BaseModel):
    """A client's credentials on the host's port of one of its services."""

    model_config = ConfigDict(extra="forbid")

    service: uuid.UUID
    user: str = Field(max_length=1024)
    password: str = Field(max_length=4096)
    address: str | None = Field(default=None, max_length=64)
