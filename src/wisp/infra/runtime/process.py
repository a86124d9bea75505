"""Standalone container backend: each action container is a sandboxed local process.

`ProcessContainerFactory` starts a runtime (runtimes/python_runtime.py or
runtimes/node_runtime.js) under `sandbox.Sandbox`, in a directory of its own
(`work_dirs`); `ProcessContainer` speaks the action-proxy protocol to it over HTTP on
127.0.0.1 (answers mapped by `responses`) and buffers its output (`logs`).
"""

from __future__ import annotations

import asyncio
import collections
import enum
import errno
import itertools
import json
import logging
import os
import pathlib
import re
import secrets
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from wisp.config.model import RuntimeConfig
from wisp.core.errors import ContainerStartupError
from wisp.infra.runtime import logs as log_buffer
from wisp.infra.runtime import work_dirs
from wisp.infra.runtime.container import (
    LOG_SENTINEL,
    ContainerSpec,
    RunOutcome,
    RunResult,
)
from wisp.infra.runtime.logs import (
    LOG_ISSUE_MESSAGE,
    LogBuffer,
    format_log_line,
    format_logs,
)
from wisp.infra.runtime.responses import (
    EXITED_MESSAGE,
    INIT_EXITED_MESSAGE,
    INIT_TIMEOUT_MESSAGE,
    MEMORY_MESSAGE,
    TIMEOUT_MESSAGE,
    UNAVAILABLE_MESSAGE,
    interpret_init_response,
    interpret_run_response,
    shows_memory_exhaustion,
)
from wisp.infra.runtime.sandbox import (
    RUNTIMES_DIR,
    UIDS,
    Sandbox,
    SandboxMode,
    plan_launch,
    resolve_sandbox,
)

log = logging.getLogger(__name__)

#: the body of an /init answer is read up to this size
INIT_RESPONSE_LIMIT_BYTES = 1024 * 1024
#: /init answers "connection refused" while the runtime starts: retry this often
INIT_RETRY_INTERVAL_S = 0.05
#: a line longer than this without a newline is split
MAX_LOG_LINE_BYTES = 1024 * 1024


def container_name(prefix: str, seq: int, name: str) -> str:
    """A readable unique id: letters, digits and `_` only, as OpenWhisk names them."""
    safe = re.sub(r"[^A-Za-z0-9_]", "_", name).strip("_")[:48]
    return f"{prefix}_{seq}_{safe}" if safe else f"{prefix}_{seq}"


# --- the container --------------------------------------------------------------


class ContainerState(enum.Enum):
    RUNNING = "running"
    SUSPENDED = "suspended"
    #: timed out or its process died: the owner should destroy it
    BROKEN = "broken"
    DESTROYED = "destroyed"


_TRANSITIONS: dict[ContainerState, frozenset[ContainerState]] = {
    ContainerState.RUNNING: frozenset(
        {ContainerState.SUSPENDED, ContainerState.BROKEN, ContainerState.DESTROYED}
    ),
    ContainerState.SUSPENDED: frozenset(
        {ContainerState.RUNNING, ContainerState.BROKEN, ContainerState.DESTROYED}
    ),
    ContainerState.BROKEN: frozenset({ContainerState.DESTROYED}),
    ContainerState.DESTROYED: frozenset(),
}


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    #: at most the read limit
    body: bytes
    #: the full length (Content-Length when given)
    size: int


def _now_ms() -> int:
    return int(time.time() * 1000)


def _millis(seconds: float) -> int:
    return int(round(seconds * 1000))


def _refused(exc: BaseException) -> bool:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return exc.os_error.errno == errno.ECONNREFUSED or isinstance(
            exc.os_error, ConnectionRefusedError
        )
    return False


class ProcessContainer:
    """One runtime process, reached over HTTP on 127.0.0.1:<port>."""

    def __init__(
        self,
        container_id: str,
        process: asyncio.subprocess.Process,
        *,
        work_dir: pathlib.Path,
        sandboxed: bool,
        on_destroyed: Callable[[ProcessContainer], None],
        uid: int | None = None,
        sentinel_wait_s: float = 2.0,
    ) -> None:
        self._id = container_id
        self._uid = uid
        self._process = process
        self._work_dir = work_dir
        self._sandboxed = sandboxed
        self._on_destroyed = on_destroyed
        self._sentinel_wait_s = sentinel_wait_s
        self._state = ContainerState.RUNNING
        self._port: int | None = None
        #: process groups to signal: the runtime's own, and bwrap's inner session
        self._groups = [process.pid]
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1024, force_close=True),
            timeout=aiohttp.ClientTimeout(total=None),
        )
        self._logs = LogBuffer(log_buffer.LOG_BUFFER_LIMIT_BYTES)
        self._log_arrived = asyncio.Event()
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=30)
        assert process.stdout is not None and process.stderr is not None
        self._readers = [
            asyncio.create_task(
                self._read_stream("stdout", process.stdout),
                name=f"{container_id}-stdout",
            ),
            asyncio.create_task(
                self._read_stream("stderr", process.stderr),
                name=f"{container_id}-stderr",
            ),
        ]

    @property
    def container_id(self) -> str:
        return self._id

    @property
    def state(self) -> ContainerState:
        return self._state

    @property
    def pid(self) -> int:
        """Host pid of the started process (bwrap when sandboxed)."""
        return self._process.pid

    @property
    def sandboxed(self) -> bool:
        return self._sandboxed

    @property
    def work_dir(self) -> pathlib.Path:
        """Host directory the action sees as /tmp (its cwd when not sandboxed)."""
        return self._work_dir

    def _transition(self, to: ContainerState, cause: str) -> None:
        if to not in _TRANSITIONS[self._state]:
            raise RuntimeError(f"container {self._id}: {self._state.name} -> {to.name}")
        log.debug(
            "container %s %s -> %s: %s", self._id, self._state.name, to.name, cause
        )
        self._state = to

    def _break(self, cause: str) -> None:
        if self._state in (ContainerState.RUNNING, ContainerState.SUSPENDED):
            self._transition(ContainerState.BROKEN, cause)

    # --- startup ----------------------------------------------------------------

    async def _await_startup(
        self, port_fd: int, info_fd: int | None, timeout_s: float
    ) -> None:
        """Learn the inner process group (bwrap) and the port; raises
        ContainerStartupError with the runtime's last output."""
        try:
            async with asyncio.timeout(timeout_s):
                if info_fd is not None:
                    info = json.loads(await _read_pipe(info_fd, b"}"))
                    self._groups.append(int(info["child-pid"]))
                self._port = int(await _read_pipe(port_fd, b"\n"))
        except TimeoutError:
            reason = f"did not open its port within {timeout_s:g} s"
        except (asyncio.IncompleteReadError, ValueError, KeyError, OSError) as exc:
            reason = f"exited before opening its port ({type(exc).__name__})"
        else:
            return
        finally:
            for fd in (port_fd, info_fd):
                if fd is not None:
                    _close_quietly(fd)

        await self._settle()
        code = self._process.returncode
        status = f" (exit status {code})" if code is not None else ""
        tail = " | ".join(self._stderr_tail) or "no output"
        raise ContainerStartupError(
            f"The runtime of container {self._id} {reason}{status}: {tail}"
        )

    # --- protocol ---------------------------------------------------------------

    async def initialize(self, payload: dict[str, Any], timeout_s: float) -> RunResult:
        start = _now_ms()
        if self._state is ContainerState.DESTROYED:
            return self._unavailable("the container was destroyed", start)

        try:
            async with asyncio.timeout(timeout_s):
                response = await self._init_with_retry(payload)
        except TimeoutError:
            self._break("init timed out")
            message = INIT_TIMEOUT_MESSAGE.format(ms=_millis(timeout_s))
            return RunResult(RunOutcome.TIMEOUT, {"error": message}, start, _now_ms())
        except (aiohttp.ClientError, OSError) as exc:
            log.info("container %s: init connection failed: %s", self._id, exc)
            self._break("init connection failed")
            message = await self._crash_message(INIT_EXITED_MESSAGE)
            return RunResult(
                RunOutcome.DEVELOPER_ERROR, {"error": message}, start, _now_ms()
            )

        outcome, result = interpret_init_response(
            response.status, response.body, response.size, INIT_RESPONSE_LIMIT_BYTES
        )
        return RunResult(outcome, result, start, _now_ms())

    async def _init_with_retry(self, payload: dict[str, Any]) -> _Response:
        while True:
            try:
                return await self._post(
                    "/init", {"value": payload}, INIT_RESPONSE_LIMIT_BYTES
                )
            except aiohttp.ClientConnectorError as exc:
                if not _refused(exc) or self._process.returncode is not None:
                    raise
            await asyncio.sleep(INIT_RETRY_INTERVAL_S)

    async def run(
        self, body: dict[str, Any], timeout_s: float, max_response_bytes: int
    ) -> RunResult:
        start = _now_ms()
        if self._state is ContainerState.DESTROYED:
            return self._unavailable("the container was destroyed", start)

        try:
            async with asyncio.timeout(timeout_s):
                response = await self._post("/run", body, max_response_bytes)
        except TimeoutError:
            self._break("run timed out")
            message = TIMEOUT_MESSAGE.format(ms=_millis(timeout_s))
            return RunResult(RunOutcome.TIMEOUT, {"error": message}, start, _now_ms())
        except (aiohttp.ClientError, OSError) as exc:
            if _refused(exc):
                return self._unavailable("the runtime refused the connection", start)
            log.info("container %s: run connection failed: %s", self._id, exc)
            self._break("run connection failed")
            message = await self._crash_message(EXITED_MESSAGE)
            return RunResult(
                RunOutcome.DEVELOPER_ERROR, {"error": message}, start, _now_ms()
            )

        outcome, result = interpret_run_response(
            response.status, response.body, response.size, max_response_bytes
        )
        return RunResult(outcome, result, start, _now_ms())

    def _unavailable(self, reason: str, start: int) -> RunResult:
        message = UNAVAILABLE_MESSAGE.format(reason=reason)
        return RunResult(RunOutcome.UNAVAILABLE, {"error": message}, start, _now_ms())

    async def _post(self, path: str, body: dict[str, Any], limit: int) -> _Response:
        url = f"http://127.0.0.1:{self._port}{path}"
        data = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        async with self._session.post(url, data=data, headers=headers) as response:
            declared = response.content_length
            kept: list[bytes] = []
            kept_size = size = 0
            async for chunk in response.content.iter_chunked(64 * 1024):
                size += len(chunk)
                if kept_size < limit:
                    piece = chunk[: limit - kept_size]
                    kept.append(piece)
                    kept_size += len(piece)
                # With a declared length there is no need to read the rest.
                if declared is not None and size > limit:
                    break
            return _Response(response.status, b"".join(kept), max(size, declared or 0))

    async def _crash_message(self, default: str) -> str:
        """Why the connection broke: memory exhaustion when the runtime's last output
        says so, else `default`."""
        await self._settle()
        # The rlimits make allocations fail, which the runtimes report (MemoryError,
        # V8's fatal out-of-memory text); they kill nothing. A signal such as SIGKILL
        # says only that someone stopped the process, so it is no evidence.
        if any(shows_memory_exhaustion(line) for line in self._stderr_tail):
            return MEMORY_MESSAGE
        return default

    async def _settle(self) -> None:
        """Give a dying process a moment to exit and its last output to arrive."""
        try:
            await asyncio.wait_for(asyncio.shield(self._process.wait()), 0.5)
            await asyncio.wait(self._readers, timeout=0.2)
        except TimeoutError:
            pass

    # --- logs -------------------------------------------------------------------

    async def _read_stream(self, stream: str, reader: asyncio.StreamReader) -> None:
        partial = b""
        try:
            while chunk := await reader.read(64 * 1024):
                at = time.time()
                pieces = (partial + chunk).split(b"\n")
                partial = pieces.pop()
                if len(partial) > MAX_LOG_LINE_BYTES:
                    pieces.append(partial)
                    partial = b""
                for raw in pieces:
                    self._append_line(stream, raw, at)
                self._log_arrived.set()
        except (OSError, ValueError) as exc:
            log.warning("container %s: reading %s failed: %s", self._id, stream, exc)
        finally:
            if partial:
                self._append_line(stream, partial, time.time())
            self._logs.close(stream)
            self._log_arrived.set()

    def _append_line(self, stream: str, raw: bytes, at: float) -> None:
        text = raw.decode("utf-8", errors="replace").rstrip("\r")
        self._logs.append(stream, text, at)
        if stream == "stderr" and text != LOG_SENTINEL:
            self._stderr_tail.append(text)

    async def logs(self, limit_bytes: int, wait_for_sentinel: bool) -> list[str]:
        wait_s = self._sentinel_wait_s if wait_for_sentinel else 0.1
        deadline = time.monotonic() + wait_s
        while not self._logs.complete():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._log_arrived.clear()
            try:
                await asyncio.wait_for(self._log_arrived.wait(), remaining)
            except TimeoutError:
                break

        complete = self._logs.complete()
        taken = self._logs.take()
        # A container runs one action: its later activations have this same limit.
        self._logs.activation_limit_bytes = max(limit_bytes, 1)
        lines = format_logs(taken.lines, limit_bytes, truncated=taken.dropped > 0)
        if wait_for_sentinel and not complete:
            lines.append(format_log_line(time.time(), "stderr", LOG_ISSUE_MESSAGE))
        return lines

    # --- lifecycle --------------------------------------------------------------

    def _signal(self, signum: int, *, groups: list[int]) -> None:
        for group in groups:
            try:
                os.killpg(group, signum)
            except ProcessLookupError:
                pass
            except PermissionError as exc:
                log.warning(
                    "container %s: cannot signal group %d: %s", self._id, group, exc
                )

    def _live_groups(self) -> list[int]:
        # Once our process is reaped its groups are gone (bwrap takes the sandbox
        # down with it), so nothing is signalled whose id could be reused.
        return self._groups if self._process.returncode is None else []

    async def suspend(self) -> None:
        if self._state is not ContainerState.RUNNING:
            return
        self._signal(signal.SIGSTOP, groups=list(reversed(self._live_groups())))
        self._transition(ContainerState.SUSPENDED, "suspend")

    async def resume(self) -> None:
        if self._state is not ContainerState.SUSPENDED:
            return
        self._signal(signal.SIGCONT, groups=self._live_groups())
        self._transition(ContainerState.RUNNING, "resume")

    async def destroy(self) -> None:
        if self._state is ContainerState.DESTROYED:
            return
        self._transition(ContainerState.DESTROYED, "destroy")

        # 1. kill: bwrap's inner group (the PID namespace dies with it), then our own
        #    group, which also catches leftovers of an unsandboxed runtime
        self._signal(signal.SIGKILL, groups=list(reversed(self._live_groups())))
        self._signal(signal.SIGKILL, groups=[self._process.pid])
        # 2. reap
        try:
            await asyncio.wait_for(self._process.wait(), 5.0)
        except TimeoutError:
            log.warning("container %s: process %d did not exit", self._id, self.pid)
        # 3. stop reading output, close the HTTP client, remove the work dir
        _, pending = await asyncio.wait(self._readers, timeout=1.0)
        for task in pending:
            task.cancel()
        await self._session.close()
        await asyncio.to_thread(shutil.rmtree, self._work_dir, ignore_errors=True)
        # 4. the uid is free again only now that none of its processes is left
        if self._uid is not None:
            UIDS.release(self._uid)
        self._on_destroyed(self)
        log.debug("container %s destroyed", self._id)


async def _read_pipe(fd: int, until: bytes) -> bytes:
    """Read from an inherited pipe up to `until`; raises IncompleteReadError at EOF."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    pipe = os.fdopen(os.dup(fd), "rb", buffering=0)
    try:
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe
        )
    except BaseException:
        pipe.close()
        raise
    try:
        return await reader.readuntil(until)
    finally:
        transport.close()


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


# --- the factory ----------------------------------------------------------------


class ProcessContainerFactory:
    """Starts action containers as sandboxed local processes. Their work directories
    live in a directory of this factory's own under `work_dir`, so several factories
    (and servers) can share `work_dir`; what the factories of dead processes left
    there is removed before the first container starts."""

    def __init__(
        self,
        config: RuntimeConfig,
        *,
        work_dir: pathlib.Path,
        name_prefix: str = "wsk0",
        sentinel_wait_s: float = 2.0,
    ) -> None:
        self._config = config
        # Absolute: the runtime starts in its own directory, and bwrap resolves the
        # paths it binds from there.
        self._work_dir = work_dir.resolve()
        self._prefix = name_prefix
        self._sentinel_wait_s = sentinel_wait_s
        self._seq = itertools.count(1)
        self._containers: dict[str, ProcessContainer] = {}
        self._sandbox: Sandbox | None = None
        self._sandbox_lock = asyncio.Lock()
        self._own_dir = self._work_dir / f"{name_prefix}-{secrets.token_hex(4)}"
        self._own_dir_claimed = False
        self._swept = False
        self._own_dir_lock = asyncio.Lock()

    @property
    def containers(self) -> list[ProcessContainer]:
        return list(self._containers.values())

    @property
    def own_dir(self) -> pathlib.Path:
        """This factory's directory: its containers' work directories are inside."""
        return self._own_dir

    async def sweep_stale(self) -> list[pathlib.Path]:
        """Remove the directories that factories of dead processes left in
        `work_dir`; returns them. Live factories' directories are never touched."""
        return await asyncio.to_thread(work_dirs.sweep, self._work_dir)

    async def _claim_own_dir(self) -> None:
        async with self._own_dir_lock:
            if not self._swept:
                self._swept = True
                await self.sweep_stale()
            if not self._own_dir_claimed:
                await asyncio.to_thread(work_dirs.claim, self._own_dir)
                self._own_dir_claimed = True

    async def sandbox(self) -> Sandbox:
        """The sandbox in use; the bwrap probe runs once, off the event loop."""
        async with self._sandbox_lock:
            if self._sandbox is None:
                self._sandbox = await asyncio.to_thread(
                    resolve_sandbox, self._config.sandbox
                )
                log.info("action sandbox: %s", self._sandbox.mode.value)
            return self._sandbox

    async def create_container(self, spec: ContainerSpec) -> ProcessContainer:
        sandbox = await self.sandbox()
        await self._claim_own_dir()
        container_id = container_name(self._prefix, next(self._seq), spec.name)
        work_dir = self._own_dir / container_id
        bwrap = sandbox.mode is SandboxMode.BWRAP

        # 1. descriptors the runtime (port) and bwrap (inner pid) report through
        port_read, port_write = os.pipe()
        info_read, info_write = os.pipe() if bwrap else (-1, -1)
        child_fds = [fd for fd in (port_write, info_write) if fd >= 0]
        uid: int | None = None
        try:
            plan = plan_launch(
                spec.kind,
                spec.memory_mb,
                self._config,
                port_write,
                runtimes_dir=sandbox.runtimes_dir(RUNTIMES_DIR),
            )
            uid = UIDS.acquire() if sandbox.privileged else None
            sandbox.prepare_work_dir(work_dir, uid)
            argv = sandbox.command(
                plan.argv,
                work_dir=work_dir,
                read_only=plan.read_only,
                uid=uid,
                info_fd=info_write if bwrap else None,
            )

            # 2. start in a session of its own, rlimits applied in the child
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=child_fds,
                start_new_session=True,
                preexec_fn=sandbox.child_setup(plan.limits),
                env=sandbox.environment(work_dir, spec.env),
                cwd=work_dir,
            )
        except (OSError, ContainerStartupError) as exc:
            for fd in (port_read, info_read):
                if fd >= 0:
                    _close_quietly(fd)
            if uid is not None:
                UIDS.release(uid)
            shutil.rmtree(work_dir, ignore_errors=True)
            if isinstance(exc, ContainerStartupError):
                raise
            raise ContainerStartupError(
                f"Cannot start the runtime for kind '{spec.kind}': {exc}"
            ) from exc
        finally:
            for fd in child_fds:
                _close_quietly(fd)

        # 3. wait until it listens; a runtime that does not come up is removed
        container = ProcessContainer(
            container_id,
            process,
            work_dir=work_dir,
            sandboxed=bwrap,
            on_destroyed=self._forget,
            uid=uid,
            sentinel_wait_s=self._sentinel_wait_s,
        )
        self._containers[container_id] = container
        try:
            await container._await_startup(
                port_read, info_read if bwrap else None, self._config.startup_timeout_s
            )
        except BaseException:
            await container.destroy()
            raise
        log.debug("container %s started (pid %d)", container_id, process.pid)
        return container

    def _forget(self, container: ProcessContainer) -> None:
        self._containers.pop(container.container_id, None)

    async def cleanup(self) -> None:
        """Destroy this factory's containers and remove its directory; other
        factories' directories in `work_dir` stay."""
        containers = list(self._containers.values())
        await asyncio.gather(*(c.destroy() for c in containers), return_exceptions=True)
        if containers:
            log.info("destroyed %d containers", len(containers))
        async with self._own_dir_lock:
            await asyncio.to_thread(work_dirs.remove, self._own_dir)
            self._own_dir_claimed = False
