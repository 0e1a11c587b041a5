"""The memory of all engines on this host together, capped by the kernel.

Each engine caps itself (``max_server_memory_usage`` in its configuration: past it, ClickHouse's
MEMORY_LIMIT_EXCEEDED, 241), but an engine's own count cannot see the others. The total is the
kernel's: every worker starts inside one memory cgroup of this server's, whose limit is the
total; past it the kernel reclaims the engines' caches and then kills an engine process of
that group (its supervisor restarts it; acknowledged rows are on disk) -- never the server,
never another process of the host.

The group is made under the server's own cgroup, in the memory controller's cgroup v1
hierarchy or in the cgroup v2 hierarchy when that holds the controller (v2 needs the memory
controller delegated: a server in a systemd unit with ``Delegate=yes``). A worker joins the
group before it executes anything (``join``: a shell that writes its own PID into the group,
then execs the sandbox), so no allocation of an engine is ever outside it.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = "keyhouse-engines-"
_NUMBERS = itertools.count(1)
# The group's files, by hierarchy version: its limit; its swap ("memory and swap together" in
# v1, set to the limit; "swap" in v2, set to none: either way the limit is the group's whole
# footprint; absent where the kernel keeps no swap accounting); the most it held; its events.
_FILES = {
    1: {
        "limit": "memory.limit_in_bytes",
        "swap": "memory.memsw.limit_in_bytes",
        "peak": "memory.max_usage_in_bytes",
        "events": "memory.oom_control",
    },
    2: {
        "limit": "memory.max",
        "swap": "memory.swap.max",
        "peak": "memory.peak",
        "events": "memory.events",
    },
}


class MemoryGroupUnavailable(Exception):
    """The host offers no memory cgroup this server may create (the reason is the message)."""


def host_memory_bytes() -> int:
    """The host's physical memory."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@dataclass(frozen=True)
class MemoryGroup:
    """One memory cgroup of this server, which every engine worker joins."""

    path: Path
    version: int  # 1 or 2

    @classmethod
    def create(cls, limit: int) -> MemoryGroup:
        """A new group under this process's own memory cgroup, limited to ``limit`` bytes;
        ``MemoryGroupUnavailable`` when the host has none this server may make."""
        parent, version = own_memory_cgroup()
        _remove_stale(parent)
        if version == 2:
            try:  # the children of ``parent`` get the memory controller
                (parent / "cgroup.subtree_control").write_text("+memory")
            except OSError as error:
                raise MemoryGroupUnavailable(
                    f"the memory controller cannot be delegated below {parent} ({error}); run "
                    "Keyhouse in a cgroup of its own with the controller delegated (systemd: "
                    "Delegate=yes)"
                ) from None
        path = parent / f"{PREFIX}{os.getpid()}-{next(_NUMBERS)}"
        files = _FILES[version]
        try:
            path.mkdir(mode=0o755)
            (path / files["limit"]).write_text(str(limit))
            if version == 1 and (path / files["swap"]).exists():
                (path / files["swap"]).write_text(str(limit))
        except OSError as error:
            with contextlib.suppress(OSError):
                path.rmdir()
            raise MemoryGroupUnavailable(f"cannot create {path}: {error}") from None
        if version == 2 and (path / files["swap"]).exists():
            with contextlib.suppress(OSError):
                (path / files["swap"]).write_text("0")
        return cls(path, version)

    @property
    def limit(self) -> int:
        return int((self.path / _FILES[self.version]["limit"]).read_text())

    @property
    def peak(self) -> int:
        """The most the group has held at once (v2 kernels before 5.19 do not say: 0)."""
        try:
            return int((self.path / _FILES[self.version]["peak"]).read_text())
        except FileNotFoundError:
            return 0

    @property
    def kills(self) -> int:
        """Engine processes the kernel has killed for the group's limit."""
        for line in (self.path / _FILES[self.version]["events"]).read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def join(self, command: list[str]) -> list[str]:
        """``command`` started inside the group: a shell writes its own PID into the group
        and then becomes ``command`` (so the group holds it from its first allocation)."""
        procs = str(self.path / "cgroup.procs")
        return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', procs, *command]

    def remove(self) -> None:
        """Remove the group (once its processes have ended; a busy group stays, and a later
        server removes it as stale)."""
        with contextlib.suppress(OSError):
            self.path.rmdir()


def own_memory_cgroup() -> tuple[Path, int]:
    """The directory of this process's memory cgroup and its hierarchy's version."""
    try:
        memberships = Path("/proc/self/cgroup").read_text().splitlines()
        mounts = [line.split() for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    except OSError as error:
        raise MemoryGroupUnavailable(f"cgroups cannot be read: {error}") from None
    unified: str | None = None
    for membership in memberships:
        _, controllers, path = membership.split(":", 2)
        if "memory" in controllers.split(","):
            for mount in _mounts(mounts, "cgroup"):
                if "memory" in mount[-1].split(","):
                    return _within(mount, path), 1
        if controllers == "":
            unified = path
    if unified is not None:
        for mount in _mounts(mounts, "cgroup2"):
            directory = _within(mount, unified)
            with contextlib.suppress(OSError):
                if "memory" in (directory / "cgroup.controllers").read_text().split():
                    return directory, 2
    raise MemoryGroupUnavailable("this host has no memory cgroup controller")


def _mounts(mounts: list[list[str]], fstype: str) -> list[list[str]]:
    """Mount lines of ``fstype`` (mountinfo: fields, ``-``, type, source, super options)."""
    found = []
    for fields in mounts:
        if "-" in fields:
            separator = fields.index("-")
            if fields[separator + 1 : separator + 2] == [fstype]:
                found.append(fields)
    return found


def _within(mount: list[str], path: str) -> Path:
    """``path`` (as /proc/self/cgroup names it) under ``mount``, whose root may itself be a
    cgroup of the hierarchy (a container's view)."""
    root, point = mount[3], mount[4]
    if root != "/" and (path == root or path.startswith(root + "/")):
        path = path[len(root) :]
    return Path(point) / path.lstrip("/")


def _remove_stale(parent: Path) -> None:
    """Empty groups of servers that have ended (killed before they removed theirs)."""
    with contextlib.suppress(OSError):
        for group in parent.glob(f"{PREFIX}*"):
            pid = group.name[len(PREFIX) :].split("-", 1)[0]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                with contextlib.suppress(OSError):
                    group.rmdir()
