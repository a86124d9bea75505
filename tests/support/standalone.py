"""Start a real `wisp standalone` process on a free loopback port for e2e tests."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

GUEST_KEY = (
    "23bc46b1-71f6-4ed5-8c54-816aa4f8c502:"
    "123zO3xZCLrMN6v2BKK1dXYFpXlPkccOFqm12CdAsMgRU4VrNZ9lyGVCGuMDGIwP"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def basic_auth(key: str = GUEST_KEY) -> str:
    return "Basic " + base64.b64encode(key.encode()).decode()


class StandaloneProcess:
    """One `python -m wisp standalone` child, stopped by its PID only."""

    def __init__(
        self,
        data_dir: Path,
        env: dict[str, str] | None = None,
        extra_args: tuple[str, ...] = (),
        cwd: Path | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.env = {**os.environ, **(env or {})}
        self.extra_args = list(extra_args)
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "standalone.log"
        #: host:port of the real etcd it runs on, None on the embedded store
        self.etcd_endpoint: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> None:
        base = self.cwd or Path.cwd()
        (base / self.data_dir).mkdir(parents=True, exist_ok=True)
        self.log_path = base / self.data_dir / "standalone.log"
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "wisp",
                "standalone",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
                *self.extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.cwd,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"standalone exited early:\n{self.logs()}")
            try:
                with urllib.request.urlopen(self.url + "/api/v1", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"standalone did not come up:\n{self.logs()}")

    def stop(self, timeout_s: float = 20.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def logs(self) -> str:
        try:
            return self.log_path.read_text()[-6000:]
        except OSError:
            return ""

    def __enter__(self) -> StandaloneProcess:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
