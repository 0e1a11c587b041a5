"""The operating-system sandbox every engine worker runs in.

SQL on a service is a tenant's code, and ClickHouse's own grants cannot confine it (``INTO
OUTFILE`` obeys no grant, and revoking ``FILE`` breaks MergeTree), so the boundary is the
operating system: each worker runs under bubblewrap (``bwrap``, the sandbox Flatpak runs
untrusted applications in), in new mount, PID, network, IPC, UTS and cgroup namespaces:

- the filesystem is an empty tmpfs with, read-only, only what starting Python and chDB needs
  (``/usr`` and the ``/lib*`` links, the interpreter's prefix, the virtual environment, the
  directory ``keyhouse`` is imported from, ``/etc/ld.so.cache`` and ``/etc/localtime``), and,
  read-write, the service's own data directory and its socket directory (each at its own
  path). Not the rest of the data directory (other services, the control-plane database, the
  pepper, TLS keys), not ``/etc``, not home directories;
- a fresh ``/proc`` (its own processes only), a minimal ``/dev`` and a small ``/tmp``;
- no network: a namespace of its own with nothing but an unconfigured loopback. The Unix
  socket to the server (a file in the bound socket directory) is its only channel;
- an empty environment but for ``PATH``, ``LANG``, ``HOME=/tmp`` (and ``TZ`` when the server
  has one); Python started with ``-I`` (no ``PYTHON*`` variables, no user site);
- no new privileges; when Keyhouse runs as root, ``setpriv`` switches to the engine's own
  unprivileged uid/gid (``KEYHOUSE_ENGINE_UID``/``_GID``) with every capability dropped before
  Python starts, and the service's directories belong to that uid (mode 0700). Bubblewrap runs
  as root there (no user namespace is needed); as any other user it needs unprivileged user
  namespaces, and the worker runs under the server's own uid.

``KEYHOUSE_ENGINE_SANDBOX=off`` runs workers without it: unsafe, for development on a machine
without bubblewrap only. A worker is never started unconfined when the sandbox is on but
cannot be set up: ``SandboxUnavailable`` says why and names that setting.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import keyhouse

OFF_SETTING = "KEYHOUSE_ENGINE_SANDBOX=off"
_TMP = "/tmp"  # noqa: S108 (the sandbox's own tmpfs)
TMP_BYTES = 64 * 1024 * 1024  # the sandbox's /tmp (memory): chDB keeps its own temporary data
# in the service's directory


class SandboxUnavailable(Exception):
    """The sandbox cannot be set up on this machine; no engine starts without it."""


def _is_within(path: Path, other: Path) -> bool:
    return path == other or other in path.parents


def _runtime_paths() -> tuple[Path, ...]:
    """What a worker needs to start, read-only: the interpreter's prefixes and the directory
    ``keyhouse`` is imported from (an editable install's ``src``), outermost first."""
    package_root = Path(keyhouse.__file__).resolve().parent.parent
    candidates = {
        Path(sys.base_prefix).resolve(),
        Path(sys.base_exec_prefix).resolve(),
        Path(sys.prefix).resolve(),
        Path(sys.exec_prefix).resolve(),
        package_root,
    }
    # /usr is bound whole; a prefix inside it needs nothing more.
    paths = sorted(path for path in candidates if not _is_within(path, Path("/usr")))
    return tuple(
        path
        for path in paths
        if not any(_is_within(path, other) for other in paths if other != path)
    )


def environment() -> dict[str, str]:
    """A worker's whole environment (the server's may hold the pepper or database passwords)."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": _TMP}
    if "TZ" in os.environ:
        env["TZ"] = os.environ["TZ"]
    return env


@dataclass(frozen=True)
class Sandbox:
    """How engine workers are confined: ``enabled`` (bubblewrap) or off, and the uid/gid they
    run under when the server is root."""

    enabled: bool = True
    uid: int = 65534
    gid: int = 65534
    runtime: tuple[Path, ...] = field(default_factory=_runtime_paths)

    @property
    def switches_user(self) -> bool:
        return self.enabled and os.geteuid() == 0

    def check(self, data_dir: Path) -> None:
        """Refuse (``SandboxUnavailable``) when the sandbox is on but cannot confine a worker."""
        if not self.enabled:
            return
        if shutil.which("bwrap") is None:
            raise SandboxUnavailable(
                "the engine sandbox needs bubblewrap (bwrap), which is not installed: install it "
                f"(Debian: apt-get install bubblewrap), or set {OFF_SETTING} (unsafe: engines "
                "then reach everything the server can; for development only)"
            )
        if self.switches_user and shutil.which("setpriv") is None:
            raise SandboxUnavailable(
                "the engine sandbox needs setpriv (util-linux) to run engines under their own "
                f"uid when Keyhouse runs as root; install it, or set {OFF_SETTING} (unsafe)"
            )
        if self.switches_user and (self.uid == 0 or self.gid == 0):
            raise SandboxUnavailable("KEYHOUSE_ENGINE_UID and KEYHOUSE_ENGINE_GID must not be 0")
        data = data_dir.resolve()
        for path in self.runtime:
            if _is_within(data, path) or _is_within(path, data):
                raise SandboxUnavailable(
                    f"the data directory {data} and the runtime directory {path} overlap: an "
                    "engine would see one through the other; move KEYHOUSE_DATA_DIR"
                )

    def prepare(self, *directories: Path) -> None:
        """Create the directories a worker may write (0700), owned by the engine's uid when
        the server is root (also data a worker run as root left behind, from older versions)."""
        for directory in directories:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            directory.chmod(0o700)
            if self.switches_user:
                _chown_tree(directory, self.uid, self.gid)

    def command(
        self,
        argv: Sequence[str],
        *,
        writable: Iterable[Path],
        readable: Iterable[Path] = (),
        info_fd: int | None = None,
    ) -> list[str]:
        """``argv`` (a Python worker) run in the sandbox, or as it is when the sandbox is off.
        ``info_fd`` receives bubblewrap's JSON with the worker's ``child-pid``."""
        if not self.enabled:
            return list(argv)
        command = [
            "bwrap",
            # Kills the worker with bubblewrap, except after setpriv's uid switch (the kernel
            # clears the signal then): the worker's stdin pipe from the server covers both.
            "--die-with-parent",
            "--new-session",  # no terminal to inject input into
            "--as-pid-1",  # the worker itself is PID 1: the server signals it directly
            "--unshare-ipc",
            "--unshare-pid",
            "--unshare-net",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--clearenv",
            "--hostname",
            "engine",
        ]
        if not self.switches_user:
            command.append("--unshare-user")
        for name, value in environment().items():
            command += ["--setenv", name, value]
        command += _root_filesystem()
        command += ["--proc", "/proc", "--dev", "/dev"]
        command += ["--perms", "1777", "--size", str(TMP_BYTES), "--tmpfs", _TMP]
        binds = [("--ro-bind", path) for path in (*self.runtime, *readable)]
        binds += [("--bind", path) for path in writable]
        # The directories above each bound path, traversable (bubblewrap run as root makes
        # them 0700, which the engine's uid could not cross); they hold nothing else.
        parents = {parent for _, path in binds for parent in path.parents}
        for parent in sorted(parents - {Path("/"), Path(_TMP)}):
            if not _is_within(parent, Path("/usr")):
                command += ["--perms", "0755", "--dir", str(parent)]
        for option, path in binds:
            command += [option, str(path), str(path)]
        command += ["--remount-ro", "/", "--chdir", _TMP]
        if info_fd is not None:
            command += ["--info-fd", str(info_fd)]
        command.append("--")
        if self.switches_user:
            command += [
                "setpriv",
                f"--reuid={self.uid}",
                f"--regid={self.gid}",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--no-new-privs",
            ]
        return command + list(argv)


def _root_filesystem() -> list[str]:
    """/usr read-only, the /lib*, /bin and /sbin entries as the host has them (links on a
    merged-/usr system), and the two files of /etc that the loader and the clock read."""
    arguments = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            arguments += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            arguments += ["--ro-bind", str(path), str(path)]
    arguments += ["--perms", "0755", "--dir", "/etc"]
    for name in ("/etc/ld.so.cache", "/etc/localtime"):
        if os.path.islink(name):  # the time zone's name is the link's target
            arguments += ["--symlink", os.readlink(name), name]
        else:
            arguments += ["--ro-bind-try", name, name]
    return arguments


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    if _owned_by(root, uid, gid):
        return  # prepared before: everything below was written by the engine itself
    for directory, names, files in os.walk(root):
        os.chown(directory, uid, gid, follow_symlinks=False)
        for name in (*names, *files):
            os.chown(os.path.join(directory, name), uid, gid, follow_symlinks=False)


def _owned_by(path: Path, uid: int, gid: int) -> bool:
    stat = path.lstat()
    return stat.st_uid == uid and stat.st_gid == gid
