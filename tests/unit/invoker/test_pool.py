"""FunctionPullingContainerPool: placement, memory budget, acks, deletion, draining."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.unit.invoker.fakes import make_action, make_creation
from wisp.config.model import InvokerConfig
from wisp.core.entity import FullyQualifiedEntityName, WhiskAction
from wisp.core.ids import InvokerInstanceId, TransactionId
from wisp.core.messages import (
    ContainerCreationAckMessage,
    ContainerCreationError,
    ContainerCreationMessage,
    ContainerDeletionMessage,
    decode,
)
from wisp.infra.messaging.memory import MemoryBroker, MemoryConsumer
from wisp.invoker.health import MemoryInfo
from wisp.invoker.pool import FunctionPullingContainerPool

pytestmark = pytest.mark.timeout(10)

INVOKER = InvokerInstanceId(0, 1024)


class FakeProxy:
    """Does what the pool says and nothing else; tests play its events."""

    def __init__(
        self, creation: ContainerCreationMessage, action: WhiskAction, pool: Any
    ) -> None:
        self.creation = creation
        self._action = action
        self.pool = pool
        self.last_used = 0.0
        self.started = False
        self.resumed_with: list[ContainerCreationMessage] = []
        self.removed = False
        self.shut_down = False
        #: warm and pulling with nothing in flight (tests set it)
        self.idle = False

    @property
    def invocation_namespace(self) -> str:
        return self.creation.invocation_namespace

    @property
    def action(self) -> FullyQualifiedEntityName:
        return self.creation.action

    @property
    def revision(self) -> str:
        return self.creation.revision

    @property
    def kind(self) -> str:
        return self._action.exec.kind

    @property
    def memory_mb(self) -> int:
        return self._action.limits.memory_mb

    @property
    def container_id(self) -> str | None:
        return f"c-{id(self)}"

    def start(self) -> None:
        self.started = True

    def resume(self, creation: ContainerCreationMessage) -> None:
        self.resumed_with.append(creation)

    def remove(self) -> None:
        self.removed = True

    def graceful_shutdown(self) -> None:
        self.shut_down = True

    async def stop(self, timeout_s: float = 10.0) -> None:
        self.shut_down = True
        self.pool.proxy_removed(self)


@dataclass
class PoolHarness:
    pool: FunctionPullingContainerPool
    proxies: list[FakeProxy]
    acks_topic: MemoryConsumer
    memory: list[MemoryInfo]

    async def acks(self, count: int) -> list[ContainerCreationAckMessage]:
        got: list[ContainerCreationAckMessage] = []
        deadline = asyncio.get_running_loop().time() + 2.0
        while len(got) < count:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise AssertionError(f"expected {count} acks, got {len(got)}")
            for raw in await self.acks_topic.peek(count - len(got), left):
                got.append(ContainerCreationAckMessage.from_json(decode(raw)))
        return got

    async def no_more_acks(self) -> None:
        assert await self.acks_topic.peek(1, 0.05) == []

    def ready(self, proxy: FakeProxy) -> None:
        self.pool.proxy_ready(proxy)

    def pause(self, proxy: FakeProxy, last_used: float = 0.0) -> None:
        proxy.last_used = last_used
        self.pool.proxy_paused(proxy)


@pytest.fixture
async def harness() -> AsyncIterator[PoolHarness]:
    broker = MemoryBroker()
    proxies: list[FakeProxy] = []
    memory: list[MemoryInfo] = []

    def new_proxy(
        creation: ContainerCreationMessage, action: WhiskAction, pool: Any
    ) -> FakeProxy:
        proxy = FakeProxy(creation, action, pool)
        proxies.append(proxy)
        return proxy

    pool = FunctionPullingContainerPool(
        invoker=INVOKER,
        config=InvokerConfig(user_memory_mb=512, memory_sync_interval_s=60.0),
        producer=broker.producer(),
        proxy_factory=new_proxy,
        on_memory=memory.append,
        batch_deletion_size=2,
    )
    await pool.start()
    acks = await broker.consumer("creationAck0", "test", 100)
    yield PoolHarness(pool, proxies, acks, memory)
    await pool.stop(1.0)


A = make_action("a", memory_mb=256)
B = make_action("b", memory_mb=256)


# --- cold and warm placement --------------------------------------------------------------


async def test_cold_creation_is_acked_only_when_the_client_is_connected(
    harness: PoolHarness,
) -> None:
    creation = make_creation(A)

    harness.pool.create(creation, A)
    await harness.no_more_acks()
    harness.ready(harness.proxies[0])
    [ack] = await harness.acks(1)

    assert harness.proxies[0].started
    assert ack.creation_id == creation.creation_id
    assert ack.error is None
    assert ack.root_invoker_index == INVOKER
    assert (ack.scheduler_host, ack.rpc_port) == (
        creation.scheduler_host,
        creation.rpc_port,
    )


async def test_paused_container_of_the_same_action_is_reused(
    harness: PoolHarness,
) -> None:
    harness.pool.create(make_creation(A), A)
    first = harness.proxies[0]
    harness.ready(first)
    harness.pause(first)
    await harness.acks(1)

    reuse = make_creation(A, rpc_port=13002)
    harness.pool.create(reuse, A)
    harness.pool.proxy_resumed(first)
    [ack] = await harness.acks(1)

    assert len(harness.proxies) == 1
    assert first.resumed_with == [reuse]
    assert ack.creation_id == reuse.creation_id and ack.error is None


@pytest.mark.parametrize(
    "other",
    [
        make_creation(A, invocation_namespace="bob"),
        make_creation(A, revision="2-bbb"),
        make_creation(B),
    ],
    ids=["other-namespace", "other-revision", "other-action"],
)
async def test_paused_container_is_not_reused_for_anything_else(
    harness: PoolHarness, other: ContainerCreationMessage
) -> None:
    harness.pool.create(make_creation(A), A)
    harness.ready(harness.proxies[0])
    harness.pause(harness.proxies[0])

    harness.pool.create(other, B if other.action == B.fqn else A)

    assert harness.proxies[0].resumed_with == []
    assert len(harness.proxies) == 2


async def test_failed_resume_places_the_creation_again(harness: PoolHarness) -> None:
    harness.pool.create(make_creation(A), A)
    first = harness.proxies[0]
    harness.ready(first)
    harness.pause(first)
    await harness.acks(1)
    reuse = make_creation(A)
    harness.pool.create(reuse, A)

    harness.pool.proxy_resume_failed(first, reuse)
    harness.pool.proxy_removed(first)
    harness.ready(harness.proxies[1])
    [ack] = await harness.acks(1)

    assert harness.proxies[1].creation is reuse
    assert ack.creation_id == reuse.creation_id and ack.error is None


# --- memory budget ----------------------------------------------------------------------------


async def test_creation_beyond_the_memory_budget_is_refused(
    harness: PoolHarness,
) -> None:
    harness.pool.create(make_creation(A), A)
    harness.pool.create(make_creation(B), B)
    third = make_creation(A)

    harness.pool.create(third, A)
    [ack] = await harness.acks(1)

    assert len(harness.proxies) == 2
    assert ack.creation_id == third.creation_id
    assert ack.error is ContainerCreationError.RESOURCE_NOT_ENOUGH
    assert harness.memory[-1] == MemoryInfo(free_mb=0, busy_mb=0, in_progress_mb=512)


async def test_least_recently_used_paused_container_is_evicted_for_a_new_one(
    harness: PoolHarness,
) -> None:
    old_a = make_action("old", memory_mb=256)
    harness.pool.create(make_creation(old_a), old_a)
    harness.pool.create(make_creation(B), B)
    older, newer = harness.proxies
    for proxy in (older, newer):
        harness.ready(proxy)
    harness.pause(older, last_used=1.0)
    harness.pause(newer, last_used=2.0)

    harness.pool.create(make_creation(A), A)

    assert older.removed and not newer.removed
    assert harness.proxies[2].started


async def test_idle_running_container_is_evicted_when_nothing_is_paused(
    harness: PoolHarness,
) -> None:
    harness.pool.create(make_creation(A), A)
    harness.pool.create(make_creation(B), B)
    working, idle = harness.proxies
    for proxy in (working, idle):
        harness.ready(proxy)
    idle.idle = True

    harness.pool.create(make_creation(A), A)

    assert idle.removed and not working.removed
    assert harness.proxies[2].started


async def test_idle_container_of_the_same_action_is_not_evicted_for_another(
    harness: PoolHarness,
) -> None:
    harness.pool.create(make_creation(A), A)
    harness.pool.create(make_creation(B), B)
    for proxy in harness.proxies:
        harness.ready(proxy)
        proxy.idle = True
    third = make_creation(A)

    harness.pool.create(third, A)

    same, other = harness.proxies[:2]
    assert other.removed and not same.removed


async def test_running_containers_with_work_in_flight_are_never_evicted(
    harness: PoolHarness,
) -> None:
    harness.pool.create(make_creation(A), A)
    harness.pool.create(make_creation(B), B)
    for proxy in harness.proxies:
        harness.ready(proxy)
    third = make_creation(A)

    harness.pool.create(third, A)
    acks = await harness.acks(3)
    ack = acks[-1]

    assert not any(p.removed for p in harness.proxies)
    assert ack.error is ContainerCreationError.RESOURCE_NOT_ENOUGH


async def test_idle_running_containers_count_as_free_memory(
    harness: PoolHarness,
) -> None:
    harness.pool.create(make_creation(A), A)
    harness.pool.create(make_creation(B), B)
    for proxy in harness.proxies:
        harness.ready(proxy)
    harness.proxies[0].idle = True

    info = harness.pool.memory_info()

    assert info == MemoryInfo(free_mb=256, busy_mb=256, in_progress_mb=0)


async def test_paused_containers_count_as_free_memory_in_the_health_record(
    harness: PoolHarness,
) -> None:
    harness.pool.create(make_creation(A), A)
    harness.pool.create(make_creation(B), B)
    harness.ready(harness.proxies[0])
    harness.ready(harness.proxies[1])
    harness.pause(harness.proxies[1])

    info = harness.pool.memory_info()

    assert info == MemoryInfo(free_mb=256, busy_mb=256, in_progress_mb=0)


# --- error acks ---------------------------------------------------------------------------------


async def test_creation_while_shutting_down_is_refused(harness: PoolHarness) -> None:
    harness.pool.graceful_shutdown()

    harness.pool.create(make_creation(A), A)
    [ack] = await harness.acks(1)

    assert ack.error is ContainerCreationError.SHUTTING_DOWN
    assert harness.proxies == []


async def test_non_executable_action_is_refused(harness: PoolHarness) -> None:
    sequence = make_action("seq", kind="sequence")

    harness.pool.create(make_creation(sequence), sequence)
    [ack] = await harness.acks(1)

    assert ack.error is ContainerCreationError.NON_EXECUTABLE_ACTION


async def test_failed_container_start_is_acked_once_as_whisk_error(
    harness: PoolHarness,
) -> None:
    harness.pool.create(make_creation(A), A)
    proxy = harness.proxies[0]

    harness.pool.proxy_creation_failed(proxy, "no runtime")
    harness.pool.proxy_removed(proxy)
    [ack] = await harness.acks(1)
    await harness.no_more_acks()

    assert ack.error is ContainerCreationError.WHISK_ERROR
    assert ack.reason == "no runtime"
    assert harness.pool.memory_info().in_progress_mb == 0


async def test_proxy_lost_before_connecting_is_acked_unknown_error(
    harness: PoolHarness,
) -> None:
    harness.pool.create(make_creation(A), A)

    harness.pool.proxy_removed(harness.proxies[0])
    [ack] = await harness.acks(1)

    assert ack.error is ContainerCreationError.UNKNOWN_ERROR
    assert ack.reason == "ContainerProxy init failed."


async def test_ack_goes_to_the_scheduler_that_asked(harness: PoolHarness) -> None:
    broker_topic = harness.acks_topic
    creation = make_creation(A, sid="0")

    harness.pool.reject(creation, ContainerCreationError.DB_FETCH_ERROR, "gone")
    [ack] = await harness.acks(1)

    assert broker_topic.topic == "creationAck0"
    assert ack.retry_count == creation.retry_count
    assert ack.reason == "gone"


# --- deletion and draining ------------------------------------------------------------------


def deletion(action: WhiskAction, revision: str) -> ContainerDeletionMessage:
    return ContainerDeletionMessage(
        TransactionId.new(), "alice", action.fqn, revision, action.metadata_json()
    )


async def test_deletion_drains_containers_of_that_revision_and_older(
    harness: PoolHarness,
) -> None:
    newer_a = make_action("a", memory_mb=128, rev="3-ccc")
    old_a = make_action("a", memory_mb=128, rev="1-aaa")
    harness.pool.create(make_creation(old_a), old_a)
    harness.pool.create(make_creation(newer_a), newer_a)
    harness.pool.create(make_creation(B), B)
    old, new, other = harness.proxies
    for proxy in harness.proxies:
        harness.ready(proxy)
    harness.pause(old)

    harness.pool.delete(deletion(old_a, "2-bbb"))

    assert (old.shut_down, new.shut_down, other.shut_down) == (True, False, False)


async def test_graceful_shutdown_drains_in_batches(harness: PoolHarness) -> None:
    small = make_action("s", memory_mb=128)
    for _ in range(3):
        harness.pool.create(make_creation(small), small)
    for proxy in harness.proxies:
        harness.ready(proxy)

    harness.pool.graceful_shutdown()
    first_batch = [p.shut_down for p in harness.proxies]
    harness.pool.proxy_removed(harness.proxies[0])

    assert first_batch == [True, True, False]
    assert harness.proxies[2].shut_down


async def test_state_lists_busy_and_paused_containers(harness: PoolHarness) -> None:
    harness.pool.create(make_creation(A), A)
    harness.pool.create(make_creation(B), B)
    harness.ready(harness.proxies[0])

    state = harness.pool.state()

    assert state["totalContainers"] == 2
    assert state["inProgressCount"] == 1
    assert state["busyPool"]["total"] == 1
    assert state["busyPool"]["containers"][0]["action"] == str(A.fqn)
    assert state["pausedPool"]["total"] == 0


async def test_most_recently_used_of_several_paused_containers_is_reused(
    harness: PoolHarness,
) -> None:
    harness.pool.create(make_creation(A), A)
    harness.pool.create(make_creation(A), A)
    stale, fresh = harness.proxies
    for proxy in (stale, fresh):
        harness.ready(proxy)
    harness.pause(stale, last_used=1.0)
    harness.pause(fresh, last_used=5.0)

    harness.pool.create(make_creation(A), A)

    assert (len(stale.resumed_with), len(fresh.resumed_with)) == (0, 1)
