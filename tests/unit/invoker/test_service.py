"""Invoker end to end on the in-process etcd, broker and store, a fake container
backend and a fake scheduler serving FetchActivation on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from tests.unit.invoker.fakes import (
    FakeContainerFactory,
    eventually_async,
    make_action,
    make_creation,
    make_message,
)
from wisp.config.load import load_config
from wisp.core.activation import ResponseStatus
from wisp.core.messages import (
    NO_ACTIVATION,
    CompletionAck,
    ContainerCreationAckMessage,
    FetchResult,
    decode,
    encode,
)
from wisp.infra.etcd.keys import EtcdKeys
from wisp.infra.etcd.memory import MemoryEtcd
from wisp.infra.messaging.memory import MemoryBroker
from wisp.infra.rpc import activation_pb2, activation_pb2_grpc
from wisp.infra.store.memory import MemoryStore
from wisp.invoker.service import Invoker

pytestmark = pytest.mark.timeout(20)

KEYS = EtcdKeys()


class OneShotScheduler(activation_pb2_grpc.ActivationServiceServicer):
    """Hands out the queued activations once each, then has nothing."""

    def __init__(self) -> None:
        self.queue: list[Any] = []
        self.goodbyes: list[str] = []

    async def FetchActivation(self, request: Any, context: Any) -> Any:  # noqa: N802
        if not request.alive:
            self.goodbyes.append(request.containerId)
            answer = NO_ACTIVATION
        elif self.queue:
            answer = FetchResult(message=self.queue.pop(0))
        else:
            answer = NO_ACTIVATION
        return activation_pb2.FetchResponse(
            activationMessage=json.dumps(answer.to_json())
        )

    async def RescheduleActivation(self, request: Any, context: Any) -> Any:  # noqa: N802
        return activation_pb2.RescheduleResponse(isRescheduled=False)


@dataclass
class World:
    etcd: MemoryEtcd
    broker: MemoryBroker
    store: MemoryStore
    factory: FakeContainerFactory
    scheduler: OneShotScheduler
    port: int
    invoker: Invoker


@pytest.fixture
async def world() -> AsyncIterator[World]:
    server = grpc.aio.server()
    scheduler = OneShotScheduler()
    activation_pb2_grpc.add_ActivationServiceServicer_to_server(scheduler, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    config = load_config(
        overrides={
            "invoker.proxy.pause_grace_s": 0.3,
            "invoker.memory_sync_interval_s": 0.05,
            "etcd.retry_interval_s": 0.05,
        },
        environ={},
    )
    etcd, broker, store, factory = (
        MemoryEtcd(),
        MemoryBroker(),
        MemoryStore(),
        FakeContainerFactory(),
    )
    invoker = Invoker(
        config,
        etcd=etcd,
        messaging=broker,
        entity_store=store,
        activation_store=store,
        container_factory=factory,
        health_probe=False,
    )
    await invoker.start()
    yield World(etcd, broker, store, factory, scheduler, port, invoker)
    await invoker.stop()
    await server.stop(0)


async def health_record(etcd: MemoryEtcd) -> dict[str, Any] | None:
    kv = await etcd.get(KEYS.invoker(0))
    return json.loads(kv.value) if kv is not None else None


async def status_is(etcd: MemoryEtcd, status: str) -> bool:
    record = await health_record(etcd)
    return record is not None and record["status"] == status


async def test_started_invoker_is_up_in_etcd_with_its_memory(world: World) -> None:
    await eventually_async(lambda: status_is(world.etcd, "up"))

    record = await health_record(world.etcd)

    assert record is not None
    assert record["status"] == "up"
    assert record["freeMemory"] == 2048
    assert await world.etcd.get(KEYS.instance_lease("invoker0")) is not None


async def test_creation_runs_an_activation_and_cleans_up_on_stop(world: World) -> None:
    action = await world.store.put_action(make_action(), overwrite=False)
    msg = make_message(action, blocking=True, content={"hello": "world"})
    world.scheduler.queue.append(msg)
    acks = await world.broker.consumer("creationAck0", "s0", 10)
    completions = await world.broker.consumer("completed0", "c0", 10)
    creation = make_creation(action, rpc_port=world.port)

    await world.broker.publish("invoker0", encode(creation.to_json()))
    [raw_ack] = await acks.peek(1, 5.0)
    [raw_done] = await completions.peek(1, 5.0)
    existing = await world.etcd.get_prefix(KEYS.existing_prefix("alice", "alice/hello"))
    stored = await world.store.get_activation("alice", msg.activation_id)
    await world.invoker.stop()
    left = await world.etcd.get_prefix(
        "whisk/namespace/"
    ) + await world.etcd.get_prefix("whisk/warmed/")

    ack = ContainerCreationAckMessage.from_json(decode(raw_ack))
    done = CompletionAck.from_json(decode(raw_done))
    assert ack.creation_id == creation.creation_id and ack.error is None
    assert done.activation is not None
    assert done.activation.response.status is ResponseStatus.SUCCESS
    assert done.activation.response.result == {"hello": "world"}
    assert done.instance is not None and done.instance["instance"] == 0
    assert len(existing) == 1
    assert stored is not None
    assert left == []
    assert world.factory.containers[0].destroyed
    assert world.scheduler.goodbyes == [world.factory.containers[0].container_id]
    assert await health_record(world.etcd) is None


async def test_creation_for_a_missing_action_is_acked_as_db_fetch_error(
    world: World,
) -> None:
    acks = await world.broker.consumer("creationAck0", "s0", 10)
    creation = make_creation(make_action("ghost"), rpc_port=world.port)

    await world.broker.publish("invoker0", encode(creation.to_json()))
    [raw_ack] = await acks.peek(1, 5.0)

    ack = ContainerCreationAckMessage.from_json(decode(raw_ack))
    assert ack.error is not None and ack.error.value == "DBFetchError"
    assert world.factory.specs == []


async def test_disabled_invoker_publishes_down_and_refuses_creations(
    world: World,
) -> None:
    action = await world.store.put_action(make_action(), overwrite=False)
    acks = await world.broker.consumer("creationAck0", "s0", 10)

    await world.invoker.disable()
    await world.broker.publish(
        "invoker0", encode(make_creation(action, rpc_port=world.port).to_json())
    )
    [raw_ack] = await acks.peek(1, 5.0)
    await eventually_async(lambda: status_is(world.etcd, "down"))

    ack = ContainerCreationAckMessage.from_json(decode(raw_ack))
    assert ack.error is not None and ack.error.value == "ShuttingDownError"
    assert not world.invoker.is_enabled()
