"""Container work directories on the host: each factory instance keeps its containers
in a directory of its own under the shared work dir, marked with the owner process,
so a later factory can remove what a factory of a dead process left behind.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import shutil
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: inside each factory directory: who owns it
OWNER_FILE = "owner.json"

_PROC = pathlib.Path("/proc")


def process_start_ticks(pid: int) -> int | None:
    """When process `pid` started, in clock ticks after boot; None if it is gone
    or /proc does not say."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
        # Field 22; the command name (field 2) may hold spaces and parentheses.
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _read_proc(*parts: str) -> str | None:
    try:
        return _PROC.joinpath(*parts).read_text().strip()
    except OSError:
        return None


def _pid_namespace() -> str | None:
    try:
        return os.readlink(_PROC / "self" / "ns" / "pid")
    except OSError:
        return None


def _pid_exists(pid: int) -> bool:
    try:
        # Signal 0 only checks that the process exists; nothing is sent.
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True, slots=True)
class Owner:
    """The process that owns a factory directory."""

    pid: int
    #: tells the owner apart from a later process that got the same pid
    start_ticks: int | None
    #: the machine's boot: pids of another boot mean nothing now
    boot_id: str | None
    #: pids are only comparable within one pid namespace
    pid_namespace: str | None

    @classmethod
    def current(cls) -> Owner:
        pid = os.getpid()
        return cls(
            pid,
            process_start_ticks(pid),
            _read_proc("sys", "kernel", "random", "boot_id"),
            _pid_namespace(),
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "pid": self.pid,
                "start_ticks": self.start_ticks,
                "boot_id": self.boot_id,
                "pid_namespace": self.pid_namespace,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Owner:
        raw = json.loads(text)
        ticks = raw.get("start_ticks")
        return cls(
            int(raw["pid"]),
            int(ticks) if ticks is not None else None,
            raw.get("boot_id"),
            raw.get("pid_namespace"),
        )

    def is_gone(self, here: Owner) -> bool:
        """True only when the owner certainly no longer runs, as seen from the
        process `here`; when in doubt (another pid namespace, no /proc) the owner
        counts as alive."""
        if None not in (self.boot_id, here.boot_id) and self.boot_id != here.boot_id:
            return True
        if self.pid_namespace != here.pid_namespace or here.start_ticks is None:
            return False
        if not _pid_exists(self.pid):
            return True
        ticks = process_start_ticks(self.pid)
        return None not in (ticks, self.start_ticks) and ticks != self.start_ticks


def claim(directory: pathlib.Path) -> None:
    """Create `directory` (if needed) and mark it as this process's."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Written aside and renamed: a reader never sees half an owner file.
    partial = directory / f".{OWNER_FILE}.tmp"
    partial.write_text(Owner.current().to_json())
    partial.replace(directory / OWNER_FILE)


def read_owner(directory: pathlib.Path) -> Owner | None:
    """The owner of a factory directory; None when it has no readable owner file."""
    try:
        return Owner.from_json((directory / OWNER_FILE).read_text())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def remove(directory: pathlib.Path) -> None:
    """Remove a factory directory; the owner file goes last, so a removal cut short
    is found stale again next time."""
    try:
        children = list(directory.iterdir())
    except FileNotFoundError:
        return
    for child in children:
        if child.name == OWNER_FILE:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
    (directory / OWNER_FILE).unlink(missing_ok=True)
    try:
        directory.rmdir()
    except OSError as exc:
        log.warning("cannot remove %s: %s", directory, exc)


def stale(work_dir: pathlib.Path) -> list[pathlib.Path]:
    """Factory directories under `work_dir` whose owner process is gone. A directory
    without an owner file is never stale: nothing says whose it is."""
    try:
        entries = sorted(work_dir.iterdir())
    except FileNotFoundError:
        return []
    here = Owner.current()
    found = []
    for entry in entries:
        if not entry.is_dir() or entry.is_symlink():
            continue
        owner = read_owner(entry)
        if owner is not None and owner.is_gone(here):
            found.append(entry)
    return found


def sweep(work_dir: pathlib.Path) -> list[pathlib.Path]:
    """Remove the factory directories of dead processes under `work_dir` (their
    processes are gone already: nothing is signalled); returns what was removed."""
    removed = stale(work_dir)
    for directory in removed:
        remove(directory)
    if removed:
        log.info("removed %d stale container directories in %s", len(removed), work_dir)
    return removed
