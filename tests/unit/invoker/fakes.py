"""Fakes and builders for the invoker's unit tests: containers, clients, registries."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from wisp.core.activation import ActivationMessage, WhiskActivation
from wisp.core.entity import (
    ActionLimits,
    Exec,
    Identity,
    WhiskAction,
)
from wisp.core.errors import ContainerStartupError
from wisp.core.ids import (
    ControllerInstanceId,
    SchedulerInstanceId,
    TransactionId,
    new_activation_id,
    new_creation_id,
    now_ms,
)
from wisp.core.messages import ContainerCreationMessage
from wisp.infra.runtime.container import ContainerSpec, RunOutcome, RunResult
from wisp.invoker.proxy.activation_client import (
    ActivationClientError,
    ClientCreationError,
)

NAMESPACE = "alice"
USER = Identity(subject="alice", namespace=NAMESPACE, uuid="uuid-1", key="secret")

_ids = itertools.count(1)


# --- builders ------------------------------------------------------------------------


def make_action(
    name: str = "hello",
    *,
    namespace: str = NAMESPACE,
    rev: str = "1-aaa",
    memory_mb: int = 256,
    timeout_ms: int = 1000,
    logs_mb: int = 1,
    concurrency: int = 1,
    kind: str = "python:3",
) -> WhiskAction:
    return WhiskAction(
        namespace=namespace,
        name=name,
        exec=Exec(kind, "def main(args):\n    return args\n"),
        limits=ActionLimits(
            timeout_ms=timeout_ms,
            memory_mb=memory_mb,
            logs_mb=logs_mb,
            concurrency=concurrency,
        ),
        rev=rev,
    )


def make_creation(
    action: WhiskAction,
    *,
    host: str = "127.0.0.1",
    rpc_port: int = 13001,
    invocation_namespace: str = NAMESPACE,
    sid: str = "0",
    revision: str | None = None,
) -> ContainerCreationMessage:
    return ContainerCreationMessage(
        transid=TransactionId.new(),
        invocation_namespace=invocation_namespace,
        action=action.fqn,
        revision=action.rev if revision is None else revision,
        action_metadata=action.metadata_json(),
        root_scheduler_index=SchedulerInstanceId(sid),
        scheduler_host=host,
        rpc_port=rpc_port,
        creation_id=new_creation_id(),
    )


def make_message(
    action: WhiskAction,
    *,
    blocking: bool = True,
    content: Any = None,
    init_args: frozenset[str] = frozenset(),
    revision: str | None = None,
    start_ms: int | None = None,
) -> ActivationMessage:
    return ActivationMessage(
        transid=TransactionId("tid-1", now_ms() if start_ms is None else start_ms),
        action=action.fqn,
        revision=action.rev if revision is None else revision,
        user=USER,
        activation_id=new_activation_id(),
        root_controller_index=ControllerInstanceId("0"),
        blocking=blocking,
        content={"name": "x"} if content is None else content,
        init_args=init_args,
    )


def run_ok(result: Any = None) -> RunResult:
    now = now_ms()
    return RunResult(
        RunOutcome.OK, {"ok": True} if result is None else result, now, now + 5
    )


def outcome(kind: RunOutcome, result: Any = None, duration_ms: int = 5) -> RunResult:
    now = now_ms()
    return RunResult(
        kind,
        result if result is not None else {"error": "boom"},
        now,
        now + duration_ms,
    )


# --- containers ------------------------------------------------------------------------


class FakeContainer:
    """Answers /init and /run from scripted results (OK by default)."""

    def __init__(self, container_id: str) -> None:
        self._id = container_id
        self.init_results: list[RunResult] = []
        self.run_results: list[RunResult] = []
        self.init_payloads: list[dict[str, Any]] = []
        self.run_bodies: list[dict[str, Any]] = []
        self.log_lines: list[str] = ["2024-01-01T00:00:00.000Z      stdout: hi"]
        self.logs_error: Exception | None = None
        self.logs_calls: list[tuple[int, bool]] = []
        #: when set, /run waits for it (to hold runs in flight)
        self.run_gate: asyncio.Event | None = None
        self.running = 0
        self.max_running = 0
        self.suspended = 0
        self.resumed = 0
        self.destroyed = False
        self.resume_error: Exception | None = None

    @property
    def container_id(self) -> str:
        return self._id

    async def initialize(self, payload: dict[str, Any], timeout_s: float) -> RunResult:
        self.init_payloads.append(payload)
        if self.init_results:
            return self.init_results.pop(0)
        return run_ok({})

    async def run(
        self, body: dict[str, Any], timeout_s: float, max_response_bytes: int
    ) -> RunResult:
        self.run_bodies.append(body)
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            if self.run_gate is not None:
                await self.run_gate.wait()
            if self.run_results:
                return self.run_results.pop(0)
            return run_ok(body.get("value"))
        finally:
            self.running -= 1

    async def logs(self, limit_bytes: int, wait_for_sentinel: bool) -> list[str]:
        self.logs_calls.append((limit_bytes, wait_for_sentinel))
        if self.logs_error is not None:
            raise self.logs_error
        return list(self.log_lines)

    async def suspend(self) -> None:
        self.suspended += 1

    async def resume(self) -> None:
        if self.resume_error is not None:
            raise self.resume_error
        self.resumed += 1

    async def destroy(self) -> None:
        self.destroyed = True


class FakeContainerFactory:
    def __init__(self) -> None:
        self.specs: list[ContainerSpec] = []
        self.containers: list[FakeContainer] = []
        self.fail_with: Exception | None = None
        #: applied to each new container before it is handed out
        self.setup: Callable[[FakeContainer], None] | None = None
        self.cleaned_up = False

    async def create_container(self, spec: ContainerSpec) -> FakeContainer:
        self.specs.append(spec)
        if self.fail_with is not None:
            raise self.fail_with
        container = FakeContainer(f"c{next(_ids)}")
        if self.setup is not None:
            self.setup(container)
        self.containers.append(container)
        return container

    async def cleanup(self) -> None:
        self.cleaned_up = True


def failing_startup() -> Exception:
    return ContainerStartupError("runtime did not open its port")


# --- the pull client ------------------------------------------------------------------


class FakeActivationClient:
    """Serves activations put into `inbox`; an empty poll takes `poll_s`."""

    def __init__(self, container_id: str, poll_s: float = 0.02) -> None:
        self.container_id = container_id
        self.poll_s = poll_s
        self.inbox: asyncio.Queue[ActivationMessage | Exception] = asyncio.Queue()
        self.connect_error: Exception | None = None
        self.connected = False
        self.closed = False
        self.warmed = False
        self.reschedule_answer = True
        self.rescheduled: list[ActivationMessage] = []
        self.retargets: list[tuple[str, int]] = []
        self.last_durations: list[int | None] = []
        #: a snapshot of the registry's keys when close() was called
        self.keys_at_close: set[str] | None = None
        self.registry: FakeRegistry | None = None

    async def connect(self) -> None:
        if self.connect_error is not None:
            raise self.connect_error
        self.connected = True

    async def fetch(
        self, last_duration_ms: int | None = None
    ) -> ActivationMessage | None:
        if self.closed:
            raise ActivationClientError("closed")
        self.last_durations.append(last_duration_ms)
        try:
            item = await asyncio.wait_for(self.inbox.get(), self.poll_s)
        except TimeoutError:
            return None
        if isinstance(item, Exception):
            raise item
        return item

    async def reschedule(self, msg: ActivationMessage) -> bool:
        self.rescheduled.append(msg)
        return self.reschedule_answer

    async def retarget(self, host: str, rpc_port: int) -> None:
        self.retargets.append((host, rpc_port))

    def mark_warmed(self) -> None:
        self.warmed = True

    async def close(self) -> None:
        if self.registry is not None:
            self.keys_at_close = set(self.registry.keys)
        self.closed = True


class FakeClientFactory:
    def __init__(
        self, registry: FakeRegistry | None = None, poll_s: float = 0.02
    ) -> None:
        self.clients: list[FakeActivationClient] = []
        self.creations: list[ContainerCreationMessage] = []
        self.connect_error: Exception | None = None
        self._registry = registry
        self._poll_s = poll_s

    def __call__(
        self, creation: ContainerCreationMessage, container_id: str
    ) -> FakeActivationClient:
        client = FakeActivationClient(container_id, self._poll_s)
        client.registry = self._registry
        if self.connect_error is not None:
            client.connect_error = self.connect_error
        self.creations.append(creation)
        self.clients.append(client)
        return client


def unreachable() -> Exception:
    return ClientCreationError("scheduler unreachable")


# --- etcd writes, acks, the pool ----------------------------------------------------------


class FakeRegistry:
    """DataManagementService stand-in: the keys currently registered, and a log."""

    def __init__(self) -> None:
        self.keys: dict[str, str] = {}
        self.ops: list[tuple[str, str]] = []
        self.published: list[tuple[str, str]] = []

    def register_data(self, key: str, value: str, *, failover: bool = True) -> None:
        self.keys[key] = value
        self.ops.append(("register", key))

    def unregister_data(self, key: str) -> None:
        self.keys.pop(key, None)
        self.ops.append(("unregister", key))

    def update_data_on_change(self, key: str, value: str) -> None:
        if self.keys.get(key) == value:
            return
        self.keys[key] = value
        self.published.append((key, value))


class FakeAck:
    def __init__(self) -> None:
        self.records: list[tuple[ActivationMessage, WhiskActivation]] = []
        self._arrived = asyncio.Condition()

    async def complete(
        self, msg: ActivationMessage, activation: WhiskActivation
    ) -> None:
        async with self._arrived:
            self.records.append((msg, activation))
            self._arrived.notify_all()

    async def wait_for(
        self, count: int, timeout_s: float = 2.0
    ) -> list[WhiskActivation]:
        async with self._arrived:
            await asyncio.wait_for(
                self._arrived.wait_for(lambda: len(self.records) >= count), timeout_s
            )
        return [a for _, a in self.records]


@dataclass
class FakeParent:
    """Records what a proxy tells its pool."""

    events: list[tuple[str, Any]] = field(default_factory=list)

    def names(self) -> list[str]:
        return [name for name, _ in self.events]

    def proxy_ready(self, proxy: Any) -> None:
        self.events.append(("ready", proxy))

    def proxy_creation_failed(self, proxy: Any, reason: str) -> None:
        self.events.append(("creation_failed", reason))

    def proxy_paused(self, proxy: Any) -> None:
        self.events.append(("paused", proxy))

    def proxy_resumed(self, proxy: Any) -> None:
        self.events.append(("resumed", proxy))

    def proxy_resume_failed(
        self, proxy: Any, creation: ContainerCreationMessage
    ) -> None:
        self.events.append(("resume_failed", creation))

    def proxy_removed(self, proxy: Any) -> None:
        self.events.append(("removed", proxy))


async def eventually(check: Callable[[], bool], timeout_s: float = 2.0) -> None:
    """Wait until `check()` holds (polling), failing the test after `timeout_s`."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


async def eventually_async(
    check: Callable[[], Awaitable[bool]], timeout_s: float = 2.0
) -> None:
    """Like `eventually`, for checks that must await (etcd reads)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)
