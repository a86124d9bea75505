"""The Scheduler composition root on MemoryEtcd, MemoryBroker and an in-test store:
queue creation over gRPC, the pull path, and an orderly stop."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc
import pytest

from wisp.config.load import load_config
from wisp.core.activation import WhiskActivation
from wisp.core.entity import Identity, WhiskAction
from wisp.core.messages import (
    CreateQueueRequest,
    FetchError,
    FetchResult,
    SchedulerEndpoints,
    SchedulerStates,
    encode,
)
from wisp.infra.etcd.keys import EtcdKeys
from wisp.infra.etcd.memory import MemoryEtcd
from wisp.infra.messaging.memory import MemoryBroker
from wisp.infra.rpc import activation_pb2, activation_pb2_grpc
from wisp.scheduler.service import Scheduler

from .fakes import ACTION, FQN, NS, activation, metadata

pytestmark = pytest.mark.timeout(20)

KEYS = EtcdKeys()
REV = "1-aaa"


class InTestStore:
    """EntityStore + ActivationStore with only what a scheduler asks for."""

    def __init__(self) -> None:
        self.actions: dict[tuple[str, str], WhiskAction] = {}
        self.activations: list[WhiskActivation] = []

    async def get_action(self, namespace: str, name: str) -> WhiskAction | None:
        return self.actions.get((namespace, name))

    async def identity_by_namespace(self, namespace: str) -> Identity | None:
        return None

    async def put_activation(self, record: WhiskActivation) -> None:
        self.activations.append(record)

    async def average_duration(
        self, namespace: str, path: str, since_ms: int
    ) -> tuple[float | None, int]:
        return None, 0


@dataclass
class Running:
    scheduler: Scheduler
    etcd: MemoryEtcd
    broker: MemoryBroker
    activations: Any
    queues: Any


def make_scheduler(
    etcd: MemoryEtcd,
    broker: MemoryBroker,
    instance_id: str = "0",
    admin_port: int = -1,
    graceful_s: float = 0.2,
) -> Scheduler:
    config = load_config(
        overrides={
            "scheduler.instance_id": instance_id,
            "scheduler.host": "127.0.0.1",
            "scheduler.rpc_port": 0,
            "scheduler.admin_port": admin_port,
            "scheduler.queue.graceful_shutdown_timeout_s": graceful_s,
            "scheduler.queue.long_poll_s": 0.2,
            "scheduler.state_publish_interval_s": 0.05,
        }
    )
    store = InTestStore()
    return Scheduler(
        config,
        etcd=etcd,
        messaging=broker,
        entity_store=store,  # type: ignore[arg-type]
        activation_store=store,  # type: ignore[arg-type]
    )


@pytest.fixture
def graceful_s() -> float:
    return 0.2


@pytest.fixture
async def running(graceful_s: float) -> AsyncIterator[Running]:
    etcd = MemoryEtcd()
    broker = MemoryBroker()
    scheduler = make_scheduler(etcd, broker, graceful_s=graceful_s)
    await scheduler.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{scheduler.rpc_port}")
    yield Running(
        scheduler,
        etcd,
        broker,
        activation_pb2_grpc.ActivationServiceStub(channel),
        activation_pb2_grpc.QueueServiceStub(channel),
    )
    await channel.close()
    await scheduler.stop()
    await etcd.close()


async def create_queue(running: Running) -> Any:
    request = CreateQueueRequest(NS, ACTION, REV, metadata())
    return await running.queues.CreateQueue(
        activation_pb2.CreateQueueRequest(request=json.dumps(request.to_json())),
        timeout=5,
    )


async def fetch(running: Running, container_id: str = "ctr1") -> FetchResult:
    response = await running.activations.FetchActivation(
        activation_pb2.FetchRequest(
            transactionId=json.dumps(["tid", 1]),
            invocationNamespace=NS,
            fqn=json.dumps(ACTION.to_json()),
            rev=json.dumps(REV),
            containerId=container_id,
            alive=True,
        ),
        timeout=5,
    )
    return FetchResult.from_json(json.loads(response.activationMessage))


async def fetch_until_message(running: Running, attempts: int = 10) -> FetchResult:
    """Fetch as a container does: ask again after NoActivationMessage (bounded)."""
    result = await fetch(running)
    for _ in range(attempts - 1):
        if result.message is not None:
            break
        result = await fetch(running)
    return result


async def value_of(etcd: MemoryEtcd, key: str) -> str | None:
    kv = await etcd.get(key)
    return kv.value if kv is not None else None


async def test_create_queue_over_grpc_elects_this_scheduler_and_starts_a_queue(
    running: Running,
) -> None:
    response = await create_queue(running)

    assert response.success is True
    leader = await value_of(running.etcd, KEYS.queue_leader(NS, FQN))
    assert leader is not None
    endpoints = SchedulerEndpoints.from_json(json.loads(leader))
    assert endpoints == running.scheduler.endpoints
    assert endpoints.rpc_port == running.scheduler.rpc_port
    assert running.scheduler.queue_manager.lookup(NS, FQN, REV) is not None


async def test_fetch_for_an_unknown_action_answers_no_memory_queue(
    running: Running,
) -> None:
    result = await fetch(running)

    assert result.error is FetchError.NO_MEMORY_QUEUE


async def test_scheduler_record_is_published_with_its_queue_count(
    running: Running,
) -> None:
    await create_queue(running)

    size = -1
    for _ in range(100):
        raw = await value_of(running.etcd, KEYS.scheduler("0"))
        size = SchedulerStates.from_json(json.loads(raw)).queue_size if raw else -1
        if size == 1:
            break
        await asyncio.sleep(0.01)

    assert size == 1
    assert await value_of(running.etcd, KEYS.instance_lease("scheduler0")) is not None


async def test_activation_on_the_scheduler_topic_is_fetched_by_a_container(
    running: Running,
) -> None:
    await create_queue(running)
    msg = activation(revision=REV)

    await running.broker.publish("scheduler0", encode(msg.to_json()))
    result = await fetch_until_message(running)

    assert result.message is not None
    assert result.message.activation_id == msg.activation_id


async def test_stop_removes_the_scheduler_leader_and_lease_keys(
    running: Running,
) -> None:
    await create_queue(running)

    await running.scheduler.stop()

    assert await value_of(running.etcd, KEYS.scheduler("0")) is None
    assert await value_of(running.etcd, KEYS.queue_leader(NS, FQN)) is None
    assert await value_of(running.etcd, KEYS.instance_lease("scheduler0")) is None


@pytest.mark.parametrize("graceful_s", [5.0])
async def test_stop_with_nothing_waiting_does_not_wait_for_polling_containers(
    running: Running,
) -> None:
    await create_queue(running)

    async def container() -> None:
        # Polls as a warm container does, until the scheduler goes away.
        for _ in range(100):
            try:
                await fetch(running)
            except grpc.RpcError:
                return

    poller = asyncio.create_task(container())
    await asyncio.sleep(0.1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await running.scheduler.stop()
    elapsed = loop.time() - started
    await asyncio.wait_for(poller, 5)

    assert elapsed < 1.5
    assert await value_of(running.etcd, KEYS.queue_leader(NS, FQN)) is None


async def test_activation_sent_to_a_follower_is_forwarded_to_the_leader(
    running: Running,
) -> None:
    follower = make_scheduler(running.etcd, running.broker, "1")
    await follower.start()
    try:
        await create_queue(running)
        msg = activation(revision=REV)

        await running.broker.publish("scheduler1", encode(msg.to_json()))
        result = await fetch_until_message(running)

        assert result.message is not None
        assert result.message.activation_id == msg.activation_id
        assert follower.queue_manager.queue_count == 0
    finally:
        await follower.stop()


async def test_admin_api_reports_queues_and_disables_the_scheduler() -> None:
    etcd, broker = MemoryEtcd(), MemoryBroker()
    scheduler = make_scheduler(etcd, broker, admin_port=0)
    await scheduler.start()
    base = f"http://127.0.0.1:{scheduler.admin_port}"
    token = base64.b64encode(b"scheduler.user:scheduler.pass").decode()
    try:
        await scheduler.queue_manager.create_queue(
            CreateQueueRequest(NS, ACTION, REV, metadata())
        )
        async with aiohttp.ClientSession(
            headers={"Authorization": f"Basic {token}"}
        ) as session:
            async with session.get(f"{base}/queues/count") as resp:
                count = await resp.text()
            async with session.post(f"{base}/disable") as resp:
                disabled = resp.status
        record: str | None = "unknown"
        for _ in range(100):
            record = await value_of(etcd, KEYS.scheduler("0"))
            if record is None:
                break
            await asyncio.sleep(0.01)

        assert count == "1"
        assert disabled == 200
        assert record is None
    finally:
        await scheduler.stop()
        await etcd.close()
