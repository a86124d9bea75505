"""What runs an action process and how it is fenced in: the runtime's command and
memory flags (`plan_launch`), rlimits set in the child, the bubblewrap command line.

Used by `process.ProcessContainerFactory`. What the sandbox achieves, as measured on
the development machine (Debian 12, bwrap 0.8, Wisp running as root):

* bwrap mode: new mount, PID, IPC and UTS namespaces. The action sees a read-only
  /usr (with the /bin, /lib* links), a few /etc files, the interpreter's install
  prefix and the runtime scripts (at /opt/wisp/runtimes); nothing else of the host
  (no /home, /work, /var; /root only as the path to the interpreter). /tmp is the
  container's own work directory (writable, removed with the container), /proc shows
  only the sandbox's processes, /dev is minimal. No capabilities, no_new_privs set.
  - invoker is root: bwrap runs privileged and `setpriv` switches the action to a
    uid of its own (one per live container, from `UidPool`). It can read only what
    is world-readable and RLIMIT_NPROC counts exactly its processes and threads.
    (A user namespace would not do: its uid maps back to root, and the kernel
    never applies RLIMIT_NPROC to root's processes.)
  - invoker is not root: bwrap adds a user namespace mapping uid 65534 to the
    invoker's uid; RLIMIT_NPROC is then counted per sandbox by the kernel's
    per-namespace counters.
  The network namespace is shared: the runtime must listen on the host's 127.0.0.1,
  so the action can also reach other services on loopback.
* rlimits (both modes, set in the child before exec): address space and data from
  the action's memory, open files, processes, no core dumps.
* none mode: a plain child process in its own session with the rlimits above, a
  clean environment and the work directory as cwd and TMPDIR. It sees the whole host
  file system with the invoker's rights; run as root, its process limit is not
  enforced and children that leave its process group survive destroy().
"""

from __future__ import annotations

import ctypes
import enum
import functools
import logging
import os
import pathlib
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from wisp.config.model import RuntimeConfig
from wisp.core.errors import ContainerStartupError

log = logging.getLogger(__name__)

BWRAP_PATH = "/usr/bin/bwrap"
#: util-linux; drops the privileged sandbox to the container's uid
SETPRIV_PATH = "/usr/bin/setpriv"

#: where the runtime scripts appear inside the sandbox
SANDBOX_RUNTIMES_DIR = pathlib.Path("/opt/wisp/runtimes")

#: uid and gid the action sees inside a user namespace (nobody / nogroup)
NAMESPACE_UID = 65534
#: uids given to privileged sandboxes: far above the ranges distributions hand out
SANDBOX_UID_BASE = 1_000_000_000
SANDBOX_UID_COUNT = 1_000_000

#: system directories bound read-only (those that are symlinks are recreated as links)
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")

#: the few /etc entries programs need to start, resolve names and find certificates;
#: the rest of /etc (shadow, keys, service configs) stays hidden
ETC_PATHS = (
    "/etc/alternatives",
    "/etc/ca-certificates",
    "/etc/group",
    "/etc/host.conf",
    "/etc/hosts",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/mime.types",
    "/etc/nsswitch.conf",
    "/etc/passwd",
    "/etc/protocols",
    "/etc/resolv.conf",
    "/etc/services",
    "/etc/ssl",
)

_PR_SET_PDEATHSIG = 1

#: the runtime scripts on the host
RUNTIMES_DIR = pathlib.Path(__file__).resolve().parent / "runtimes"
MIB = 1024 * 1024

#: python: RLIMIT_AS = memory + this. The interpreter with the runtime loaded maps
#: ~25 MiB and every concurrent request thread reserves a 2 MiB stack.
PYTHON_OVERHEAD_MB = 128
#: node: V8 reserves ~800 MiB of address space at start whatever the heap size (it
#: will not start below that), so RLIMIT_AS cannot bound its memory. The JS heap is
#: bounded by --max-old-space-size=<memory>, what the process commits (V8 pages,
#: Buffers, malloc) by RLIMIT_DATA = memory + this; RLIMIT_AS is a loose backstop.
NODE_DATA_OVERHEAD_MB = 128
NODE_ADDRESS_SPACE_OVERHEAD_MB = 1024


class SandboxMode(enum.Enum):
    BWRAP = "bwrap"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class ResourceLimits:
    """Kernel limits of one action process; None leaves a limit as inherited."""

    address_space_bytes: int | None
    data_bytes: int | None
    open_files: int
    processes: int

    def rlimits(self) -> list[tuple[int, int]]:
        """(resource, value) pairs, clamped to the hard limits this process has."""
        wanted = [
            (resource.RLIMIT_AS, self.address_space_bytes),
            (resource.RLIMIT_DATA, self.data_bytes),
            (resource.RLIMIT_NOFILE, self.open_files),
            (resource.RLIMIT_NPROC, self.processes),
            (resource.RLIMIT_CORE, 0),
        ]
        pairs = []
        for kind, value in wanted:
            if value is None:
                continue
            _, hard = resource.getrlimit(kind)
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)
            pairs.append((kind, value))
        return pairs


# --- what to start -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LaunchPlan:
    """How to start one runtime: argv, what it must see, kernel limits."""

    argv: list[str]
    #: (host path, path seen by the runtime) pairs
    read_only: list[tuple[pathlib.Path, pathlib.Path]]
    limits: ResourceLimits


def _resolve_executable(name: str) -> pathlib.Path:
    found = shutil.which(name)
    if found is None:
        raise ContainerStartupError(f"The runtime interpreter '{name}' was not found.")
    return pathlib.Path(os.path.realpath(found))


def _install_prefix(executable: pathlib.Path) -> pathlib.Path:
    """<prefix>/bin/<interpreter> -> <prefix>: libraries live beside the binary."""
    return executable.parent.parent


def plan_launch(
    kind: str,
    memory_mb: int,
    config: RuntimeConfig,
    port_fd: int,
    *,
    runtimes_dir: pathlib.Path = RUNTIMES_DIR,
) -> LaunchPlan:
    """The command and limits for a runtime of `kind`, whose scripts it sees in
    `runtimes_dir`; ContainerStartupError if the kind is unknown or its interpreter
    is missing."""
    scripts = (RUNTIMES_DIR, runtimes_dir)
    if kind == "python:3":
        # The real binary, not a venv shim: the runtime needs only the stdlib.
        python = _resolve_executable(config.python_executable or sys.executable)
        script = runtimes_dir / "python_runtime.py"
        prefix = _install_prefix(python)
        # -I: no PYTHON* variables, no user site. Wisp's own interpreter also gets -S:
        # its site-packages are Wisp's environment, not the action's, and loading
        # them costs ~40 ms a start; actions then see the stdlib only.
        flags = ["-I", "-u"] if config.python_executable else ["-I", "-S", "-u"]
        return LaunchPlan(
            argv=[str(python), *flags, str(script), "--port-fd", str(port_fd)],
            read_only=[(prefix, prefix), scripts],
            limits=ResourceLimits(
                address_space_bytes=(memory_mb + PYTHON_OVERHEAD_MB) * MIB,
                data_bytes=None,
                open_files=config.max_open_files,
                processes=config.max_processes,
            ),
        )
    if kind == "nodejs:20":
        node = _resolve_executable(config.node_executable)
        script = runtimes_dir / "node_runtime.js"
        prefix = _install_prefix(node)
        return LaunchPlan(
            argv=[
                str(node),
                f"--max-old-space-size={memory_mb}",
                str(script),
                "--port-fd",
                str(port_fd),
            ],
            read_only=[(prefix, prefix), scripts],
            limits=ResourceLimits(
                address_space_bytes=(memory_mb + NODE_ADDRESS_SPACE_OVERHEAD_MB) * MIB,
                data_bytes=(memory_mb + NODE_DATA_OVERHEAD_MB) * MIB,
                open_files=config.max_open_files,
                processes=config.max_processes,
            ),
        )
    raise ContainerStartupError(f"Unknown runtime kind '{kind}'.")


# --- the child and its sandbox -------------------------------------------------


def child_setup(limits: ResourceLimits, *, die_with_parent: bool) -> Callable[[], None]:
    """The preexec function: applies the rlimits (soft = hard, so the action cannot
    raise them) and optionally asks for SIGKILL when the invoker dies."""
    pairs = limits.rlimits()
    prctl = _libc_prctl() if die_with_parent else None

    def setup() -> None:
        # Runs between fork and exec: everything it needs is prepared beforehand.
        for kind, value in pairs:
            resource.setrlimit(kind, (value, value))
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

    return setup


def _libc_prctl() -> Callable[[int, int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    prctl: Callable[[int, int], int] = libc.prctl
    return prctl


class UidPool:
    """Unprivileged uids for privileged sandboxes, one per live container, so that
    RLIMIT_NPROC counts each container's processes alone. Shared by the process."""

    def __init__(
        self, base: int = SANDBOX_UID_BASE, count: int = SANDBOX_UID_COUNT
    ) -> None:
        self._free = iter(range(base, base + count))
        self._released: list[int] = []
        self._in_use: set[int] = set()

    def acquire(self) -> int:
        uid = self._released.pop() if self._released else next(self._free, -1)
        if uid < 0:
            raise ContainerStartupError("No sandbox uid is free.")
        self._in_use.add(uid)
        return uid

    def release(self, uid: int) -> None:
        if uid in self._in_use:
            self._in_use.remove(uid)
            self._released.append(uid)


UIDS = UidPool()


class Sandbox:
    """Builds the command line and environment of a sandboxed runtime process."""

    def __init__(
        self,
        mode: SandboxMode,
        *,
        bwrap_path: str = BWRAP_PATH,
        privileged: bool | None = None,
    ) -> None:
        self.mode = mode
        self._bwrap = bwrap_path
        #: root runs bwrap without a user namespace and drops to a uid per container
        self.privileged = mode is SandboxMode.BWRAP and (
            os.geteuid() == 0 if privileged is None else privileged
        )

    def runtimes_dir(self, host_dir: pathlib.Path) -> pathlib.Path:
        """Where the runtime scripts in `host_dir` are seen by the runtime."""
        return SANDBOX_RUNTIMES_DIR if self.mode is SandboxMode.BWRAP else host_dir

    def prepare_work_dir(self, work_dir: pathlib.Path, uid: int | None) -> None:
        """Create the container's work dir, owned by the action's uid if it has one."""
        work_dir.mkdir(mode=0o700, parents=True, exist_ok=False)
        if uid is not None:
            os.chown(work_dir, uid, uid)

    def command(
        self,
        argv: Sequence[str],
        *,
        work_dir: pathlib.Path,
        read_only: Sequence[tuple[pathlib.Path, pathlib.Path]],
        uid: int | None = None,
        info_fd: int | None = None,
    ) -> list[str]:
        """The argv that runs `argv` in the sandbox: `read_only` holds (host path,
        sandbox path) pairs, `work_dir` becomes /tmp, `uid` is the action's uid
        (privileged sandboxes only)."""
        if self.mode is SandboxMode.NONE:
            return list(argv)
        args = [self._bwrap, *_system_links()]
        binds = _etc_binds() + _outside_system(read_only)
        # bwrap would create missing parents as 0700, closed to the action's uid.
        for parent in _parents([target for _, target in binds]):
            args += ["--perms", "0755", "--dir", str(parent)]
        for source, target in binds:
            args += ["--ro-bind", str(source), str(target)]
        args += [
            "--bind", str(work_dir), "/tmp",
            "--chdir", "/tmp",
            "--proc", "/proc",
            "--dev", "/dev",
            "--unshare-pid", "--unshare-ipc", "--unshare-uts",
            "--hostname", "action",
            "--die-with-parent",
            "--new-session",
        ]  # fmt: skip
        if info_fd is not None:
            args += ["--info-fd", str(info_fd)]
        if not self.privileged:
            args += ["--unshare-user", "--uid", str(NAMESPACE_UID)]
            args += ["--gid", str(NAMESPACE_UID)]
            return [*args, "--", *argv]
        if uid is None:
            raise ValueError("a privileged sandbox needs the action's uid")
        # Only setpriv gets these two capabilities; setuid() then clears them all.
        args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--"]
        switch = [SETPRIV_PATH, f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        return [*args, *switch, "--inh-caps=-all", "--", *argv]

    def environment(
        self, work_dir: pathlib.Path, extra: dict[str, str]
    ) -> dict[str, str]:
        """A clean environment: nothing of the invoker's own leaks into actions."""
        tmp = "/tmp" if self.mode is SandboxMode.BWRAP else str(work_dir)
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": tmp,
            "TMPDIR": tmp,
            "LANG": "C.UTF-8",
            # Each glibc arena reserves 64 MiB of address space; keep that off the limit.
            "MALLOC_ARENA_MAX": "2",
        }
        env.update(extra)
        return env

    def child_setup(self, limits: ResourceLimits) -> Callable[[], None]:
        # bwrap's --die-with-parent covers the sandboxed processes already.
        return child_setup(limits, die_with_parent=self.mode is SandboxMode.NONE)


def _system_links() -> list[str]:
    args: list[str] = []
    for name in SYSTEM_PATHS:
        path = pathlib.Path(name)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), name]
        elif path.is_dir():
            args += ["--ro-bind", name, name]
    return args


def _etc_binds() -> list[tuple[pathlib.Path, pathlib.Path]]:
    paths = [pathlib.Path(name) for name in ETC_PATHS]
    return [(path, path) for path in paths if path.exists()]


def _outside_system(
    binds: Sequence[tuple[pathlib.Path, pathlib.Path]],
) -> list[tuple[pathlib.Path, pathlib.Path]]:
    """The binds not already visible through the system binds, without repeats."""
    kept: list[tuple[pathlib.Path, pathlib.Path]] = []
    for source, target in binds:
        real = source.resolve()
        if (real == target and real.parts[:2] == ("/", "usr")) or (
            real,
            target,
        ) in kept:
            continue
        kept.append((real, target))
    return kept


def _parents(targets: Sequence[pathlib.Path]) -> list[pathlib.Path]:
    """Every ancestor of the targets (not / itself), parents before children."""
    found: set[pathlib.Path] = set()
    for target in targets:
        found.update(p for p in target.parents if p != pathlib.Path("/"))
    return sorted(found, key=lambda p: len(p.parts))


@functools.cache
def bwrap_works(bwrap_path: str = BWRAP_PATH) -> bool:
    """Probe once per process: can bwrap build our sandbox here and run `true`?"""
    if not os.access(bwrap_path, os.X_OK):
        return False
    with tempfile.TemporaryDirectory(prefix="wisp-bwrap-probe-") as work:
        sandbox = Sandbox(SandboxMode.BWRAP, bwrap_path=bwrap_path)
        # Probe with a uid no container gets, through the same setpriv switch.
        argv = sandbox.command(
            ["/usr/bin/true"],
            work_dir=pathlib.Path(work),
            read_only=[],
            uid=SANDBOX_UID_BASE - 1,
        )
        try:
            done = subprocess.run(argv, capture_output=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("bwrap probe failed: %s", exc)
            return False
    if done.returncode != 0:
        log.warning(
            "bwrap probe exited %d: %s",
            done.returncode,
            done.stderr.decode(errors="replace").strip(),
        )
    return done.returncode == 0


def resolve_sandbox(mode: str, *, bwrap_path: str = BWRAP_PATH) -> Sandbox:
    """Turn RuntimeConfig.sandbox ("auto", "bwrap", "none") into a Sandbox."""
    if mode == "none":
        return Sandbox(SandboxMode.NONE, bwrap_path=bwrap_path)
    if mode not in ("auto", "bwrap"):
        raise ContainerStartupError(
            f"Unknown sandbox mode '{mode}' (expected auto, bwrap or none)."
        )
    if bwrap_works(bwrap_path):
        return Sandbox(SandboxMode.BWRAP, bwrap_path=bwrap_path)
    if mode == "bwrap":
        raise ContainerStartupError(
            f"The sandbox 'bwrap' is required but {bwrap_path} does not work here."
        )
    log.warning("bwrap unusable, actions run without a sandbox (rlimits only)")
    return Sandbox(SandboxMode.NONE, bwrap_path=bwrap_path)
