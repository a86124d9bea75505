"""Fakes and builders shared by the scheduler service tests.

FakeQueue follows the MemoryQueue API of the scheduler contract; FakeDms and
FakeWatcher record what the services ask of the etcd plumbing.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from wisp.core.activation import ActivationMessage, WhiskActivation
from wisp.core.entity import FullyQualifiedEntityName, Identity
from wisp.core.ids import (
    ControllerInstanceId,
    SchedulerInstanceId,
    TransactionId,
    new_activation_id,
    now_ms,
)
from wisp.core.messages import (
    NO_ACTIVATION,
    ContainerCreationError,
    ContainerCreationMessage,
    FetchResult,
)
from wisp.infra.etcd.client import EventType, WatchEvent

NS = "alice"
ACTION = FullyQualifiedEntityName("bob/utils", "resize", "0.0.1")
FQN = ACTION.unversioned()


def identity(namespace: str = NS) -> Identity:
    return Identity("alice-subject", namespace, "uuid-" + namespace, "key")


def activation(
    *,
    revision: str | None = "1-aaa",
    action: FullyQualifiedEntityName = ACTION,
    namespace: str = NS,
    age_ms: int = 0,
    blocking: bool = False,
) -> ActivationMessage:
    return ActivationMessage(
        transid=TransactionId("tid", now_ms() - age_ms),
        action=action,
        revision=revision,
        user=identity(namespace),
        activation_id=new_activation_id(),
        root_controller_index=ControllerInstanceId("0"),
        blocking=blocking,
    )


def metadata(
    *,
    kind: str = "python:3",
    memory_mb: int = 256,
    annotations: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "namespace": ACTION.path,
        "name": ACTION.name,
        "version": "0.0.1",
        "exec": {"kind": kind, "binary": False},
        "limits": {"timeout": 60000, "memory": memory_mb, "logs": 10, "concurrency": 1},
        "annotations": [{"key": k, "value": v} for k, v in (annotations or {}).items()],
    }


def creation(
    creation_id: str = "c0",
    *,
    revision: str = "1-aaa",
    retry_count: int = 0,
    meta: dict[str, Any] | None = None,
    namespace: str = NS,
) -> ContainerCreationMessage:
    return ContainerCreationMessage(
        transid=TransactionId.system("sid_containerCreation"),
        invocation_namespace=namespace,
        action=ACTION,
        revision=revision,
        action_metadata=meta if meta is not None else metadata(),
        root_scheduler_index=SchedulerInstanceId("0"),
        scheduler_host="127.0.0.1",
        rpc_port=1,
        creation_id=creation_id,
        retry_count=retry_count,
    )


def put_event(key: str, value: str = "") -> WatchEvent:
    return WatchEvent(EventType.PUT, key, value, "", 1)


def delete_event(key: str) -> WatchEvent:
    return WatchEvent(EventType.DELETE, key, "", "", 1)


@dataclass(frozen=True)
class Key:
    invocation_namespace: str
    fqn: str
    revision: str


@dataclass
class FakeQueue:
    """The MemoryQueue API of the contract, recording every call."""

    invocation_namespace: str
    action: FullyQualifiedEntityName
    revision: str
    action_metadata: dict[str, Any]
    parent: Any = None
    namespace_limit: Any = None
    started: list[bool] = field(default_factory=list)
    puts: list[ActivationMessage] = field(default_factory=list)
    succeeded: list[str] = field(default_factory=list)
    failed: list[tuple[str, ContainerCreationError, str]] = field(default_factory=list)
    fetches: list[dict[str, Any]] = field(default_factory=list)
    shutdowns: int = 0
    outdated: int = 0
    stopped: bool = False
    answer: FetchResult = NO_ACTIVATION
    answer_delay_s: float = 0.0
    #: like MemoryQueue without containers: an outdated queue hands its backlog over
    hands_back: bool = False
    start_error: Exception | None = None

    @property
    def key(self) -> Key:
        return Key(self.invocation_namespace, self.action.unversioned(), self.revision)

    async def start(self, *, version_updated: bool = False) -> None:
        if self.start_error is not None:
            raise self.start_error
        self.started.append(version_updated)

    def put(self, msg: ActivationMessage) -> None:
        self.puts.append(msg)

    async def get_activation(
        self,
        container_id: str,
        *,
        warmed: bool,
        last_duration_ms: int | None,
        alive: bool,
    ) -> FetchResult:
        self.fetches.append(
            {
                "container_id": container_id,
                "warmed": warmed,
                "last_duration_ms": last_duration_ms,
                "alive": alive,
            }
        )
        if self.answer_delay_s:
            await asyncio.sleep(self.answer_delay_s)
        return self.answer

    def creation_succeeded(self, creation_id: str) -> None:
        self.succeeded.append(creation_id)

    def creation_failed(
        self, creation_id: str, error: ContainerCreationError, reason: str
    ) -> None:
        self.failed.append((creation_id, error, reason))

    def graceful_shutdown(self) -> None:
        self.shutdowns += 1

    def stop_as_outdated(self) -> None:
        self.outdated += 1
        if self.hands_back and self.parent is not None:
            self.parent.queue_outdated(self)
            backlog, self.puts = self.puts, []
            self.parent.forward(backlog)

    def status(self) -> dict[str, Any]:
        return {
            "invocationNamespace": self.invocation_namespace,
            "fqn": str(self.action),
            "waitingActivation": [m.activation_id for m in self.puts],
            "status": "Running",
            "data": "RunningData",
        }

    def waiting_count(self) -> int:
        return len(self.puts)

    async def stop(self) -> None:
        self.stopped = True


class FakeQueueFactory:
    def __init__(self) -> None:
        self.created: list[FakeQueue] = []
        self.hands_back = False
        self.start_error: Exception | None = None

    def __call__(self, **kwargs: Any) -> FakeQueue:
        queue = FakeQueue(
            **kwargs, hands_back=self.hands_back, start_error=self.start_error
        )
        self.created.append(queue)
        return queue


class FakeDms:
    """DataManagementService as a recorder; elections answer `leader`."""

    def __init__(self, *, leader: bool = True) -> None:
        self.leader = leader
        self.elections: list[tuple[str, str]] = []
        self.election_gate: asyncio.Event | None = None
        self.registered: dict[str, str] = {}
        self.register_calls: list[tuple[str, str, bool]] = []
        self.unregistered: list[str] = []
        self.updates: list[tuple[str, str]] = []

    async def elect_leader(self, key: str, value: str) -> bool:
        self.elections.append((key, value))
        if self.election_gate is not None:
            await self.election_gate.wait()
        return self.leader

    def register_data(self, key: str, value: str, *, failover: bool = True) -> None:
        self.registered[key] = value
        self.register_calls.append((key, value, failover))

    def unregister_data(self, key: str) -> None:
        self.registered.pop(key, None)
        self.unregistered.append(key)

    def update_data_on_change(self, key: str, value: str) -> None:
        if self.updates and self.updates[-1] == (key, value):
            return
        self.updates.append((key, value))

    async def flush(self, timeout_s: float = 5.0) -> None:
        return None


class FakeWatcher:
    def __init__(self) -> None:
        self.subscriptions: dict[tuple[str, bool, str], tuple[Any, Any]] = {}

    def watch(
        self,
        key: str,
        *,
        prefix: bool,
        name: str,
        on_put: Any = None,
        on_delete: Any = None,
    ) -> None:
        self.subscriptions[(key, prefix, name)] = (on_put, on_delete)

    def unwatch(self, key: str, *, prefix: bool, name: str) -> None:
        self.subscriptions.pop((key, prefix, name), None)

    def put(self, key: str, value: str = "") -> None:
        for (watched, prefix, _), (on_put, _) in list(self.subscriptions.items()):
            if on_put is not None and (
                key.startswith(watched) if prefix else key == watched
            ):
                on_put(put_event(key, value))

    def delete(self, key: str) -> None:
        for (watched, prefix, _), (_, on_delete) in list(self.subscriptions.items()):
            if on_delete is not None and (
                key.startswith(watched) if prefix else key == watched
            ):
                on_delete(delete_event(key))


class FakeAck:
    """ActiveAck as a recorder of failed activations."""

    def __init__(self) -> None:
        self.completed: list[tuple[ActivationMessage, WhiskActivation]] = []
        self.event = asyncio.Event()

    async def complete(self, msg: ActivationMessage, record: WhiskActivation) -> None:
        self.completed.append((msg, record))
        self.event.set()

    def errors(self) -> list[str]:
        return [record.response.result["error"] for _, record in self.completed]


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.fail = False

    async def send(self, topic: str, payload: bytes) -> None:
        if self.fail:
            from wisp.core.errors import MessagingError

            raise MessagingError("down")
        self.sent.append((topic, json.loads(payload)))

    async def close(self) -> None:
        return None


async def until(predicate: Any, timeout_s: float = 1.0) -> None:
    """Wait (bounded) until `predicate()` is true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


class FakeEntityStore:
    """The EntityStore calls the scheduler makes: actions by name, identities."""

    def __init__(self) -> None:
        self.actions: dict[tuple[str, str], Any] = {}
        self.identities: dict[str, Identity] = {}
        self.fail = False
        self.action_reads = 0
        self.identity_reads = 0

    def add_action(
        self, revision: str, *, version: str = "0.0.1", kind: str = "python:3"
    ) -> None:
        from wisp.core.entity import Exec, WhiskAction

        self.actions[(ACTION.path, ACTION.name)] = WhiskAction(
            namespace=ACTION.path,
            name=ACTION.name,
            exec=Exec(kind, "def main(a): return a"),
            version=version,
            rev=revision,
        )

    async def get_action(self, namespace: str, name: str) -> Any:
        self.action_reads += 1
        if self.fail:
            from wisp.core.errors import StoreError

            raise StoreError("database is down")
        return self.actions.get((namespace, name))

    async def identity_by_namespace(self, namespace: str) -> Identity | None:
        self.identity_reads += 1
        if self.fail:
            from wisp.core.errors import StoreError

            raise StoreError("database is down")
        return self.identities.get(namespace)
