"""Fakes for controller tests: a QueueService gRPC servicer and a "scheduler" that
consumes `scheduler{sid}` and answers every activation on `completed0`."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest

from wisp.config.load import load_config
from wisp.config.model import WispConfig
from wisp.core.activation import ActivationMessage, ActivationResponse, WhiskActivation
from wisp.core.ids import SchedulerInstanceId, now_ms
from wisp.core.messages import (
    CompletionAck,
    CreateQueueRequest,
    SchedulerEndpoints,
    SchedulerStates,
    decode,
    encode,
)
from wisp.infra.etcd.keys import EtcdKeys
from wisp.infra.etcd.memory import MemoryEtcd
from wisp.infra.messaging.acks import ActiveAck
from wisp.infra.messaging.memory import MemoryBroker
from wisp.infra.messaging.topics import completed_topic, scheduler_topic
from wisp.infra.rpc import activation_pb2, activation_pb2_grpc
from wisp.infra.store.memory import MemoryStore

KEYS = EtcdKeys()
INSTANCE = {"instance": 0, "userMemory": "2048 MB", "instanceType": "invoker"}


def controller_config(**overrides: Any) -> WispConfig:
    base: dict[str, Any] = {"controller.port": 0, "store.backend": "memory"}
    base.update(overrides)
    return load_config(environ={}, overrides=base)


class FakeQueueService(activation_pb2_grpc.QueueServiceServicer):
    """Records CreateQueue requests; answers `success` (or fails the RPC)."""

    def __init__(self, *, success: bool = True, abort: bool = False) -> None:
        self.success = success
        self.abort = abort
        self.requests: list[CreateQueueRequest] = []
        self.called = asyncio.Event()
        self._server: grpc.aio.Server | None = None
        self.port = 0

    async def CreateQueue(  # noqa: N802 (gRPC method name)
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> Any:
        self.requests.append(CreateQueueRequest.from_json(json.loads(request.request)))
        self.called.set()
        if self.abort:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "scheduler is busy")
        return activation_pb2.CreateQueueResponse(success=self.success)

    async def start(self) -> None:
        self._server = grpc.aio.server()
        activation_pb2_grpc.add_QueueServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(None)

    def endpoints(self) -> SchedulerEndpoints:
        return SchedulerEndpoints("127.0.0.1", self.port)


async def register_scheduler(
    etcd: MemoryEtcd, sid: str, endpoints: SchedulerEndpoints, queue_size: int = 0
) -> None:
    state = SchedulerStates(SchedulerInstanceId(sid), queue_size, endpoints)
    await etcd.put(KEYS.scheduler(sid), json.dumps(state.to_json()))


def record_for(msg: ActivationMessage, response: ActivationResponse) -> WhiskActivation:
    start = now_ms()
    return WhiskActivation(
        namespace=msg.invocation_namespace,
        name=msg.action.name,
        subject=msg.user.subject,
        activation_id=msg.activation_id,
        start_ms=start,
        end_ms=start + 3,
        response=response,
        version=msg.action.version or "0.0.1",
        logs=[f"stdout: ran {msg.action.name}"],
        annotations={"path": msg.action.unversioned(), "kind": "python:3"},
    )


def default_behaviour(msg: ActivationMessage) -> ActivationResponse | None:
    """By parameter `mode`: ok (echo), fail (application error), whisk, nan (a result
    with non-finite numbers), slow (never)."""
    content = msg.content if isinstance(msg.content, dict) else {}
    mode = content.get("mode", "ok")
    if mode == "slow":
        return None
    if mode == "fail":
        return ActivationResponse.application_error("it failed")
    if mode == "whisk":
        return ActivationResponse.whisk_error("the platform failed")
    if mode == "nan":
        return ActivationResponse.ok({"nan": float("nan"), "inf": [float("inf"), 1.5]})
    return ActivationResponse.ok({"echo": content})


class FakeScheduler:
    """Takes activations from `scheduler{sid}`, stores a record and acks it like an
    invoker would (ActiveAck). `shrunk=True` sends completion-only acks."""

    def __init__(
        self,
        etcd: MemoryEtcd,
        broker: MemoryBroker,
        store: MemoryStore,
        *,
        sid: str = "0",
        behaviour: Callable[[ActivationMessage], ActivationResponse | None] = (
            default_behaviour
        ),
    ) -> None:
        self.etcd = etcd
        self.broker = broker
        self.store = store
        self.sid = sid
        self.behaviour = behaviour
        self.shrunk = False
        self.queue_service = FakeQueueService()
        self.received: list[ActivationMessage] = []
        self._task: asyncio.Task[None] | None = None
        self._producer = broker.producer()
        self._ack = ActiveAck(self._producer, store, INSTANCE)

    def use_store(self, store: Any) -> None:
        """Record activations in `store` from now on (where the API reads)."""
        self.store = store
        self._ack = ActiveAck(self._producer, store, INSTANCE)

    async def start(self) -> None:
        await self.queue_service.start()
        await register_scheduler(self.etcd, self.sid, self.queue_service.endpoints())
        consumer = await self.broker.consumer(scheduler_topic(self.sid), "s", 16)
        self._task = asyncio.get_running_loop().create_task(self._run(consumer))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.queue_service.stop()

    async def _run(self, consumer: Any) -> None:
        while True:
            for payload in await consumer.peek(16, 0.2):
                msg = ActivationMessage.from_json(decode(payload))
                self.received.append(msg)
                response = self.behaviour(msg)
                if response is None:
                    continue
                record = record_for(msg, response)
                if self.shrunk:
                    await self.store.put_activation(record)
                    ack = CompletionAck.completion(
                        msg.transid, msg.activation_id, False, INSTANCE
                    )
                    topic = completed_topic(msg.root_controller_index.as_string)
                    await self._producer.send(topic, encode(ack.to_json()))
                else:
                    await self._ack.complete(msg, record)


@pytest.fixture
async def etcd() -> AsyncIterator[MemoryEtcd]:
    client = MemoryEtcd()
    yield client
    await client.close()


@pytest.fixture
def broker() -> MemoryBroker:
    return MemoryBroker()


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
async def queue_service() -> AsyncIterator[FakeQueueService]:
    service = FakeQueueService()
    await service.start()
    yield service
    await service.stop()
