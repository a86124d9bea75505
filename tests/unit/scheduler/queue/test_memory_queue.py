"""MemoryQueue on the embedded etcd with the real watcher, lease and data management
services; the container manager, the queue manager and the activation store are fakes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from wisp.config.load import load_config
from wisp.core.activation import ActivationMessage, ResponseStatus, WhiskActivation
from wisp.core.entity import Exec, FullyQualifiedEntityName, Identity, WhiskAction
from wisp.core.errors import NotFoundError
from wisp.core.ids import (
    ControllerInstanceId,
    InvokerInstanceId,
    SchedulerInstanceId,
    TransactionId,
    new_activation_id,
)
from wisp.core.messages import (
    NO_ACTIVATION,
    NO_MEMORY_QUEUE,
    CompletionAck,
    ContainerCreationError,
    ContainerCreationMessage,
    SchedulerEndpoints,
    decode,
)
from wisp.infra.etcd.data_management import DataManagementService
from wisp.infra.etcd.keys import EtcdKeys
from wisp.infra.etcd.lease import LeaseKeepAliveService
from wisp.infra.etcd.memory import MemoryEtcd
from wisp.infra.etcd.watcher import WatcherService
from wisp.infra.messaging.acks import ActiveAck
from wisp.infra.messaging.memory import MemoryBroker
from wisp.infra.messaging.topics import completed_topic
from wisp.scheduler.queue.counter import NamespaceContainerCountRegistry
from wisp.scheduler.queue.duration import (
    DurationChecker,
    DurationCheckResult,
    NoopDurationChecker,
)
from wisp.scheduler.queue.memory_queue import (
    NAMESPACE_LIMIT_ZERO,
    QUEUE_STOPPED,
    TOO_MANY_CONCURRENT_REQUESTS,
    MemoryQueue,
)
from wisp.scheduler.queue.state import QueueState

pytestmark = pytest.mark.timeout(15)

KEYS = EtcdKeys("whisk")
NS = "alice"
ACTION = FullyQualifiedEntityName("bob/utils", "resize", "0.0.1")
FQN = ACTION.unversioned()
REV = "1-aaa"
SID = SchedulerInstanceId("0")
ENDPOINTS = SchedulerEndpoints("127.0.0.1", 13001)
LEADER_KEY = KEYS.queue_leader(NS, FQN)
NS_THROTTLE_KEY = KEYS.namespace_throttling(NS)
ACTION_THROTTLE_KEY = KEYS.action_throttling(NS, FQN)

#: fast loops; the lifecycle graces stay long unless a test is about them
FAST: dict[str, Any] = {
    "scheduler.scheduling.check_interval_ms": 10,
    "scheduler.scheduling.drop_interval_s": 0.02,
    "scheduler.queue.long_poll_s": 0.2,
    "scheduler.queue.idle_grace_s": 30.0,
    "scheduler.queue.stop_grace_s": 30.0,
    "scheduler.queue.flush_grace_s": 30.0,
    "scheduler.queue.graceful_shutdown_timeout_s": 0.05,
}

R = QueueState.RUNNING


# --- builders ---------------------------------------------------------------------------


def activation(*, blocking: bool = False) -> ActivationMessage:
    return ActivationMessage(
        transid=TransactionId.new(),
        action=ACTION,
        revision=REV,
        user=Identity("alice-subject", NS, "uuid-alice", "key"),
        activation_id=new_activation_id(),
        root_controller_index=ControllerInstanceId("0"),
        blocking=blocking,
    )


def metadata() -> dict[str, Any]:
    action = WhiskAction(
        "bob/utils", "resize", Exec("python:3", "def main(a): return a"), rev=REV
    )
    return action.metadata_json()


def existing_key(container_id: str, action: str = FQN, rev: str = REV) -> str:
    return KEYS.existing_container(NS, action, rev, 0, container_id)


def in_progress_key(creation_id: str) -> str:
    return KEYS.in_progress_container(NS, FQN, REV, "0", creation_id)


async def eventually(check: Callable[[], bool], timeout_s: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


# --- fakes ------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeCreator:
    """ContainerManager: records creations; can report them successful at once."""

    def __init__(self) -> None:
        self.created: list[ContainerCreationMessage] = []
        self.memory: list[int] = []
        self.deleted: list[tuple[str, FullyQualifiedEntityName, str]] = []
        self.queue: MemoryQueue | None = None
        self.succeed = False

    def create_containers(
        self, msgs: list[ContainerCreationMessage], memory_mb: int, invocation_ns: str
    ) -> None:
        self.created.extend(msgs)
        self.memory.append(memory_mb)
        if self.succeed and self.queue is not None:
            loop = asyncio.get_running_loop()
            for msg in msgs:
                loop.call_soon(self.queue.creation_succeeded, msg.creation_id)

    def delete_containers(
        self,
        invocation_ns: str,
        fqn: FullyQualifiedEntityName,
        revision: str,
        action_metadata: dict[str, Any],
    ) -> None:
        self.deleted.append((invocation_ns, fqn, revision))


class FakeParent:
    """QueueManager: records removals, outdated queues and re-routed activations."""

    def __init__(self) -> None:
        self.removed: list[tuple[MemoryQueue, bool]] = []
        self.outdated: list[MemoryQueue] = []
        self.forwarded: list[ActivationMessage] = []

    def queue_removed(self, queue: MemoryQueue, *, outdated: bool) -> None:
        self.removed.append((queue, outdated))

    def queue_outdated(self, queue: MemoryQueue) -> None:
        self.outdated.append(queue)

    def forward(self, msgs: list[ActivationMessage]) -> None:
        self.forwarded.extend(msgs)


class RecordingStore:
    """ActivationStore keeping the records the queue stores for failed activations."""

    def __init__(self) -> None:
        self.records: dict[str, WhiskActivation] = {}

    async def put_activation(self, activation: WhiskActivation) -> None:
        self.records[activation.activation_id] = activation

    async def get_activation(
        self, namespace: str, activation_id: str
    ) -> WhiskActivation | None:
        return self.records.get(activation_id)

    async def list_activations(self, namespace: str, **_: Any) -> list[WhiskActivation]:
        return list(self.records.values())

    async def average_duration(
        self, namespace: str, path: str, since_ms: int
    ) -> tuple[float | None, int]:
        return None, 0

    async def close(self) -> None:
        return None


class FixedDurationChecker:
    def __init__(self, result: DurationCheckResult) -> None:
        self.result = result

    async def check_average_duration(
        self, invocation_ns: str, action_metadata: dict[str, Any]
    ) -> DurationCheckResult:
        return self.result


class Harness:
    def __init__(self) -> None:
        self.etcd = MemoryEtcd()
        self.watcher = WatcherService(self.etcd)
        self.lease = LeaseKeepAliveService(self.etcd, KEYS, "scheduler0", ttl_s=10)
        self.dms = DataManagementService(
            self.etcd, self.lease, self.watcher, retry_interval_s=0.05
        )
        self.counters = NamespaceContainerCountRegistry(self.etcd, KEYS, self.watcher)
        self.creator = FakeCreator()
        self.parent = FakeParent()
        self.store = RecordingStore()
        self.broker = MemoryBroker()
        self.ack = ActiveAck(
            self.broker.producer(), self.store, InvokerInstanceId(0).to_json()
        )
        self.clock = FakeClock()
        self.limits: dict[str, int | Exception] = {}
        self.queues: list[MemoryQueue] = []

    async def start(self) -> None:
        await self.watcher.start()
        await self.lease.start()
        await self.dms.start()

    async def close(self) -> None:
        for queue in self.queues:
            await queue.stop()
        await self.dms.stop()
        await self.lease.stop()
        await self.watcher.stop()
        await self.etcd.close()

    async def namespace_limit(self, namespace: str) -> int:
        limit = self.limits.get(namespace, 10)
        if isinstance(limit, Exception):
            raise limit
        return limit

    async def make(
        self,
        overrides: dict[str, Any] | None = None,
        *,
        version_updated: bool = False,
        duration_checker: DurationChecker | None = None,
    ) -> MemoryQueue:
        config = load_config(environ={}, overrides={**FAST, **(overrides or {})})
        # The queue manager wins the election before it creates the queue.
        value = json.dumps(ENDPOINTS.to_json(), separators=(",", ":"))
        assert await self.dms.elect_leader(LEADER_KEY, value)
        queue = MemoryQueue(
            invocation_namespace=NS,
            action=ACTION,
            revision=REV,
            action_metadata=metadata(),
            config=config.scheduler,
            sid=SID,
            endpoints=ENDPOINTS,
            etcd=self.etcd,
            keys=KEYS,
            watcher=self.watcher,
            dms=self.dms,
            counters=self.counters,
            duration_checker=duration_checker or NoopDurationChecker(),
            container_creator=self.creator,
            parent=self.parent,
            ack=self.ack,
            namespace_limit=self.namespace_limit,
            clock=self.clock,
        )
        self.creator.queue = queue
        self.queues.append(queue)
        await queue.start(version_updated=version_updated)
        await self.watcher.wait_ready()
        return queue

    async def value(self, key: str) -> str | None:
        await self.dms.flush()
        kv = await self.etcd.get(key)
        return kv.value if kv is not None else None

    async def failures(self, count: int) -> list[WhiskActivation]:
        await eventually(lambda: len(self.store.records) >= count)
        return list(self.store.records.values())


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = Harness()
    await harness.start()
    yield harness
    await harness.close()


async def fetch(queue: MemoryQueue, container_id: str = "c1", **kw: Any) -> Any:
    return await queue.get_activation(
        container_id,
        warmed=kw.get("warmed", False),
        last_duration_ms=kw.get("last_duration_ms"),
        alive=kw.get("alive", True),
    )


def error_of(record: WhiskActivation) -> tuple[ResponseStatus, str]:
    return record.response.status, record.response.result["error"]


# --- start ------------------------------------------------------------------------------


async def test_start_registers_both_throttle_flags_and_runs(h: Harness) -> None:
    queue = await h.make()

    ns_flag = await h.value(NS_THROTTLE_KEY)
    action_flag = await h.value(ACTION_THROTTLE_KEY)

    assert queue.state is R
    assert (ns_flag, action_flag) == ("false", "false")


async def test_version_updated_queue_leaves_the_namespace_flag_alone(
    h: Harness,
) -> None:
    queue = await h.make(version_updated=True)

    ns_flag = await h.value(NS_THROTTLE_KEY)
    action_flag = await h.value(ACTION_THROTTLE_KEY)

    assert queue.state is R
    assert ns_flag is None
    assert action_flag == "false"


async def test_queue_asks_for_one_initial_container(h: Harness) -> None:
    queue = await h.make()

    await eventually(lambda: bool(h.creator.created))
    await asyncio.sleep(0.05)

    [msg] = h.creator.created
    assert msg.transid.id == "sid_containerCreation"
    assert (msg.invocation_namespace, msg.action, msg.revision) == (NS, ACTION, REV)
    assert msg.root_scheduler_index == SID
    assert (msg.scheduler_host, msg.rpc_port) == (ENDPOINTS.host, ENDPOINTS.rpc_port)
    assert msg.creation_id in queue.creation_ids
    assert h.creator.memory == [256]


async def test_queue_starts_with_the_containers_and_creations_in_etcd(
    h: Harness,
) -> None:
    await h.etcd.put(existing_key("c1"), "")
    await h.etcd.put(in_progress_key("k1"), "")

    queue = await h.make()
    await asyncio.sleep(0.05)

    assert queue.container_ids == {"c1"}
    assert queue.creation_ids == {"k1"}
    assert h.creator.created == []


# --- intake and pull --------------------------------------------------------------------


async def test_stored_activation_is_handed_to_the_next_poll(h: Harness) -> None:
    queue = await h.make()
    msg = activation()

    queue.put(msg)
    result = await fetch(queue)

    assert result.message == msg
    assert queue.waiting_count() == 0


async def test_waiting_poll_receives_a_new_activation_at_once(h: Harness) -> None:
    queue = await h.make()
    poll = asyncio.create_task(fetch(queue))
    await asyncio.sleep(0.01)
    msg = activation()

    queue.put(msg)
    result = await asyncio.wait_for(poll, 0.1)

    assert result.message == msg
    assert queue.waiting_count() == 0


async def test_poll_without_work_answers_no_activation_after_the_long_poll(
    h: Harness,
) -> None:
    queue = await h.make()
    loop = asyncio.get_running_loop()
    started = loop.time()

    result = await fetch(queue)

    assert result == NO_ACTIVATION
    assert 0.15 <= loop.time() - started < 1.0


async def test_polls_are_served_by_largest_container_id(h: Harness) -> None:
    queue = await h.make()
    polls = {
        cid: asyncio.create_task(fetch(queue, cid)) for cid in ("1", "2", "3", "4")
    }
    await asyncio.sleep(0.01)
    msgs = [activation() for _ in range(3)]

    for msg in msgs:
        queue.put(msg)
    results = {cid: await task for cid, task in polls.items()}

    assert [results[cid].message for cid in ("4", "3", "2")] == msgs
    assert results["1"] == NO_ACTIVATION


async def test_warmed_container_is_served_first(h: Harness) -> None:
    queue = await h.make()
    polls = {
        cid: asyncio.create_task(fetch(queue, cid, warmed=cid == "1"))
        for cid in ("1", "2", "3", "4")
    }
    await asyncio.sleep(0.01)
    msg = activation()

    queue.put(msg)
    results = {cid: await task for cid, task in polls.items()}

    assert results["1"].message == msg
    assert all(results[cid] == NO_ACTIVATION for cid in ("2", "3", "4"))


async def test_deleted_container_gets_no_activation_and_no_message(h: Harness) -> None:
    queue = await h.make()
    await h.etcd.put(existing_key("c1"), "")
    await eventually(lambda: "c1" in queue.container_ids)
    poll = asyncio.create_task(fetch(queue, "c1"))
    await asyncio.sleep(0.01)

    await h.etcd.delete(existing_key("c1"))
    result = await asyncio.wait_for(poll, 0.15)
    queue.put(activation())

    assert result == NO_ACTIVATION
    assert queue.waiting_count() == 1
    assert "c1" not in queue.container_ids


async def test_container_leaving_with_alive_false_is_forgotten(h: Harness) -> None:
    queue = await h.make()
    poll = asyncio.create_task(fetch(queue, "c1"))
    await asyncio.sleep(0.01)

    leaving = await fetch(queue, "c1", alive=False)
    pending = await asyncio.wait_for(poll, 0.15)
    queue.put(activation())

    assert (leaving, pending) == (NO_ACTIVATION, NO_ACTIVATION)
    assert queue.waiting_count() == 1
    assert "c1" not in queue.container_ids


async def test_activation_handed_to_a_cancelled_poll_goes_back_to_the_head(
    h: Harness,
) -> None:
    queue = await h.make()
    poll = asyncio.create_task(fetch(queue, "c1"))
    await asyncio.sleep(0.01)
    first, second = activation(), activation()

    queue.put(first)
    poll.cancel()
    with pytest.raises(asyncio.CancelledError):
        await poll
    queue.put(second)
    result = await fetch(queue, "c2")

    assert result.message == first
    assert queue.waiting_count() == 1


async def test_queue_follows_containers_and_creations_in_etcd(h: Harness) -> None:
    queue = await h.make()

    await h.etcd.put(existing_key("c1"), "")
    await h.etcd.put(existing_key("c9", rev="2-bbb"), "")  # another revision
    await h.etcd.put(in_progress_key("k1"), "")
    await eventually(
        lambda: queue.container_ids == {"c1"} and "k1" in queue.creation_ids
    )
    await h.etcd.delete(existing_key("c1"))
    await h.etcd.delete(in_progress_key("k1"))
    await eventually(lambda: not queue.container_ids and "k1" not in queue.creation_ids)

    assert queue.container_ids == frozenset()


async def test_status_lists_the_waiting_activations(h: Harness) -> None:
    queue = await h.make()
    msg = activation()

    queue.put(msg)
    status = queue.status()

    assert status == {
        "invocationNamespace": NS,
        "fqn": "bob/utils/resize@0.0.1",
        "waitingActivation": [msg.activation_id],
        "status": "Running",
        "data": "RunningData",
    }


async def test_duration_checker_seeds_the_average_until_containers_report(
    h: Harness,
) -> None:
    checker = FixedDurationChecker(DurationCheckResult(50.0, 3, 1))
    queue = await h.make(duration_checker=checker)
    await eventually(lambda: queue.average_duration_ms == 50.0)

    queue.put(activation())
    await fetch(queue, last_duration_ms=200)
    await eventually(lambda: queue.average_duration_ms == 200.0)

    assert queue.average_duration_ms == 200.0


# --- retention ----------------------------------------------------------------------------


async def test_queue_fails_activations_older_than_the_retention(h: Harness) -> None:
    queue = await h.make({"scheduler.queue.max_retention_ms": 1000})
    old = activation()
    queue.put(old)
    h.clock.advance(0.6)
    young = activation()
    queue.put(young)

    h.clock.advance(0.6)
    records = await h.failures(1)
    await asyncio.sleep(0.05)

    assert [r.activation_id for r in h.store.records.values()] == [old.activation_id]
    assert error_of(records[0]) == (
        ResponseStatus.WHISK_ERROR,
        "Activation processing is not initiated for 1000 ms",
    )
    assert queue.waiting_count() == 1


async def test_failure_ack_reaches_the_controller(h: Harness) -> None:
    consumer = await h.broker.consumer(completed_topic("0"), "controller0", 10)
    queue = await h.make({"scheduler.queue.max_retention_ms": 1000})
    msg = activation(blocking=True)
    queue.put(msg)

    h.clock.advance(2.0)
    [payload] = await consumer.peek(1, timeout_s=2.0)
    ack = CompletionAck.from_json(decode(payload))

    assert ack.activation_id == msg.activation_id
    assert ack.is_system_error
    assert ack.activation is not None and ack.frees_slot


# --- creation failures --------------------------------------------------------------------


async def test_whisk_creation_error_keeps_activations_until_retention(
    h: Harness,
) -> None:
    queue = await h.make({"scheduler.queue.max_retention_ms": 1000})
    await eventually(lambda: bool(h.creator.created))
    first = activation()
    queue.put(first)

    queue.creation_failed(
        h.creator.created[0].creation_id,
        ContainerCreationError.NO_AVAILABLE_INVOKERS,
        "no available invoker is found",
    )
    second = activation()
    queue.put(second)
    await asyncio.sleep(0.05)
    kept = queue.waiting_count()
    h.clock.advance(1.5)
    records = await h.failures(2)

    assert kept == 2
    assert queue.state is QueueState.FLUSHING
    assert {error_of(r) for r in records} == {
        (ResponseStatus.WHISK_ERROR, "no available invoker is found")
    }


async def test_flushing_queue_runs_again_when_a_creation_succeeds(h: Harness) -> None:
    queue = await h.make()
    await eventually(lambda: bool(h.creator.created))
    queue.creation_failed(
        h.creator.created[0].creation_id,
        ContainerCreationError.NO_AVAILABLE_INVOKERS,
        "no available invoker is found",
    )
    # Flushing keeps probing with one container at a time.
    await eventually(lambda: len(h.creator.created) == 2)

    queue.creation_succeeded(h.creator.created[1].creation_id)

    assert queue.state is R


async def test_developer_creation_error_fails_activations_at_once_and_retires(
    h: Harness,
) -> None:
    queue = await h.make({"scheduler.queue.flush_grace_s": 0.1})
    await eventually(lambda: bool(h.creator.created))
    queued = activation()
    queue.put(queued)

    queue.creation_failed(
        h.creator.created[0].creation_id,
        ContainerCreationError.NON_EXECUTABLE_ACTION,
        "no executable found for the action",
    )
    later = activation()
    queue.put(later)
    records = await h.failures(2)
    await eventually(lambda: queue.state is QueueState.REMOVED)

    assert {error_of(r) for r in records} == {
        (ResponseStatus.DEVELOPER_ERROR, "no executable found for the action")
    }
    assert h.parent.removed == [(queue, False)]
    assert await h.value(LEADER_KEY) is None
    assert await h.value(NS_THROTTLE_KEY) is None


async def test_creation_failure_with_a_running_container_keeps_running(
    h: Harness,
) -> None:
    queue = await h.make()
    await h.etcd.put(existing_key("c1"), "")
    await eventually(lambda: "c1" in queue.container_ids)
    queue.put(activation())

    queue.creation_failed(
        "k1", ContainerCreationError.NON_EXECUTABLE_ACTION, "no executable"
    )
    await asyncio.sleep(0.05)

    assert queue.state is R
    assert queue.waiting_count() == 1
    assert h.store.records == {}


async def test_invalid_action_limit_while_flushing_retires_the_queue(
    h: Harness,
) -> None:
    queue = await h.make()
    await eventually(lambda: bool(h.creator.created))
    queue.creation_failed(
        h.creator.created[0].creation_id,
        ContainerCreationError.NO_AVAILABLE_INVOKERS,
        "no available invoker is found",
    )

    queue.creation_failed(
        "k2", ContainerCreationError.INVALID_ACTION_LIMIT, "limit is invalid"
    )

    assert queue.state is QueueState.REMOVED
    assert h.parent.removed == [(queue, False)]


async def test_zero_namespace_limit_fails_fast_and_recovers_when_raised(
    h: Harness,
) -> None:
    h.limits[NS] = 0
    queue = await h.make()
    queue.put(activation())
    await eventually(lambda: queue.state is QueueState.FLUSHING)
    queue.put(activation())
    records = await h.failures(2)

    h.limits[NS] = 4
    await eventually(lambda: bool(h.creator.created))
    queue.creation_succeeded(h.creator.created[-1].creation_id)

    assert {error_of(r) for r in records} == {
        (ResponseStatus.WHISK_ERROR, NAMESPACE_LIMIT_ZERO)
    }
    assert queue.state is R


# --- throttling ----------------------------------------------------------------------------


async def test_namespace_throttling_drops_activations_of_an_action_without_containers(
    h: Harness,
) -> None:
    h.limits[NS] = 2
    await h.etcd.put(existing_key("o1", action="bob/other", rev="1-x"), "")
    await h.etcd.put(existing_key("o2", action="bob/other", rev="1-x"), "")
    queue = await h.make()
    queue.put(activation())

    await eventually(lambda: queue.state is QueueState.NAMESPACE_THROTTLED)
    queue.put(activation())
    records = await h.failures(2)
    throttled_flag = await h.value(NS_THROTTLE_KEY)

    assert {error_of(r) for r in records} == {
        (ResponseStatus.DEVELOPER_ERROR, TOO_MANY_CONCURRENT_REQUESTS)
    }
    assert throttled_flag == "true"
    assert queue.waiting_count() == 0
    assert h.creator.created == []


async def test_namespace_throttling_lifts_when_capacity_returns(h: Harness) -> None:
    h.limits[NS] = 2
    await h.etcd.put(existing_key("o1", action="bob/other", rev="1-x"), "")
    await h.etcd.put(existing_key("o2", action="bob/other", rev="1-x"), "")
    queue = await h.make()
    await eventually(lambda: queue.state is QueueState.NAMESPACE_THROTTLED)

    await h.etcd.delete(existing_key("o1", action="bob/other", rev="1-x"))
    await eventually(lambda: queue.state is R)
    await eventually(lambda: bool(h.creator.created))

    assert await h.value(NS_THROTTLE_KEY) == "false"


async def test_namespace_throttling_keeps_activations_while_containers_serve(
    h: Harness,
) -> None:
    h.limits[NS] = 2
    await h.etcd.put(existing_key("c1"), "")
    await h.etcd.put(existing_key("o1", action="bob/other", rev="1-x"), "")
    queue = await h.make()
    first, second = activation(), activation()
    queue.put(first)
    await eventually(lambda: queue.state is QueueState.NAMESPACE_THROTTLED)
    queue.put(second)

    served = await fetch(queue, "c1")
    await h.etcd.delete(existing_key("o1", action="bob/other", rev="1-x"))
    await eventually(lambda: queue.state is R)
    h.clock.advance(1.0)  # the second activation is stale now: one more container
    await eventually(lambda: bool(h.creator.created))

    assert served.message == first
    assert h.store.records == {}
    assert len(h.creator.created) == 1


async def test_action_throttling_turns_on_at_max_size_and_off_at_the_fraction(
    h: Harness,
) -> None:
    queue = await h.make(
        {
            "scheduler.queue.max_retention_size": 4,
            "scheduler.queue.throttling_fraction": 0.5,
        }
    )
    for _ in range(4):
        queue.put(activation())
    throttled_state = queue.state
    throttled_flag = await h.value(ACTION_THROTTLE_KEY)
    rejected = activation()

    queue.put(rejected)
    [record] = await h.failures(1)
    await fetch(queue, "c1")
    state_after_one = queue.state
    await fetch(queue, "c1")

    assert throttled_state is QueueState.ACTION_THROTTLED
    assert throttled_flag == "true"
    assert record.activation_id == rejected.activation_id
    assert error_of(record) == (
        ResponseStatus.DEVELOPER_ERROR,
        TOO_MANY_CONCURRENT_REQUESTS,
    )
    assert state_after_one is QueueState.ACTION_THROTTLED
    assert queue.state is R
    assert await h.value(ACTION_THROTTLE_KEY) == "false"


async def test_throttled_activations_can_count_as_whisk_errors(h: Harness) -> None:
    queue = await h.make(
        {
            "scheduler.queue.max_retention_size": 1,
            "scheduler.queue.fail_throttle_as_whisk_error": True,
        }
    )
    queue.put(activation())

    queue.put(activation())
    [record] = await h.failures(1)

    assert error_of(record) == (
        ResponseStatus.WHISK_ERROR,
        TOO_MANY_CONCURRENT_REQUESTS,
    )


async def test_action_throttling_lifts_when_the_backlog_expires_without_polls(
    h: Harness,
) -> None:
    queue = await h.make(
        {
            "scheduler.queue.max_retention_size": 2,
            "scheduler.queue.max_retention_ms": 1000,
        }
    )
    queue.put(activation())
    queue.put(activation())
    throttled_state = queue.state

    h.clock.advance(2.0)
    await eventually(lambda: queue.state is R)
    await h.failures(2)

    assert throttled_state is QueueState.ACTION_THROTTLED
    assert await h.value(ACTION_THROTTLE_KEY) == "false"


# --- lifecycle --------------------------------------------------------------------------


async def test_idle_queue_is_removed_with_its_keys_unregistered(h: Harness) -> None:
    h.creator.succeed = True
    queue = await h.make(
        {"scheduler.queue.idle_grace_s": 0.05, "scheduler.queue.stop_grace_s": 0.3}
    )

    await eventually(lambda: queue.state is QueueState.IDLE)
    await eventually(lambda: queue.state is QueueState.REMOVED)
    await asyncio.sleep(0.01)
    names = [t.get_name() for t in asyncio.all_tasks()]

    assert h.parent.removed == [(queue, False)]
    # Removed ends by itself: nothing of the queue keeps running.
    assert not [n for n in names if n.startswith("queue:")]
    assert await h.value(LEADER_KEY) is None
    assert await h.value(NS_THROTTLE_KEY) is None
    assert await h.value(ACTION_THROTTLE_KEY) is None


async def test_queue_with_a_container_does_not_idle(h: Harness) -> None:
    h.creator.succeed = True
    await h.etcd.put(existing_key("c1"), "")
    queue = await h.make({"scheduler.queue.idle_grace_s": 0.05})

    await asyncio.sleep(0.2)

    assert queue.state is R


async def test_idle_queue_runs_again_when_an_activation_arrives(h: Harness) -> None:
    h.creator.succeed = True
    queue = await h.make({"scheduler.queue.idle_grace_s": 0.05})
    await eventually(lambda: queue.state is QueueState.IDLE)
    msg = activation()

    queue.put(msg)
    result = await fetch(queue)

    assert queue.state is R
    assert result.message == msg


async def test_graceful_shutdown_deletes_keys_first_and_drains_before_removal(
    h: Harness,
) -> None:
    queue = await h.make({"scheduler.queue.graceful_shutdown_timeout_s": 0.1})
    await h.etcd.put(existing_key("c1"), "")
    await eventually(lambda: "c1" in queue.container_ids)
    first, second = activation(), activation()
    queue.put(first)
    queue.put(second)

    queue.graceful_shutdown()
    keys = [
        await h.value(k) for k in (LEADER_KEY, NS_THROTTLE_KEY, ACTION_THROTTLE_KEY)
    ]
    state_while_draining = queue.state
    served = [(await fetch(queue, "c1")).message for _ in range(2)]
    await eventually(lambda: queue.state is QueueState.REMOVED)

    assert keys == [None, None, None]
    assert state_while_draining is QueueState.REMOVING
    assert served == [first, second]
    assert h.parent.removed == [(queue, False)]


async def test_graceful_shutdown_with_nothing_waiting_retires_at_once(
    h: Harness,
) -> None:
    queue = await h.make({"scheduler.queue.graceful_shutdown_timeout_s": 30.0})
    await h.etcd.put(existing_key("c1"), "")
    await eventually(lambda: "c1" in queue.container_ids)
    poll = asyncio.create_task(fetch(queue, "c1"))
    await asyncio.sleep(0.01)

    queue.graceful_shutdown()
    answer = await asyncio.wait_for(poll, 0.1)

    assert queue.state is QueueState.REMOVED
    assert answer == NO_MEMORY_QUEUE
    assert h.parent.removed == [(queue, False)]


async def test_removing_queue_retires_as_soon_as_its_last_activation_is_taken(
    h: Harness,
) -> None:
    queue = await h.make({"scheduler.queue.graceful_shutdown_timeout_s": 30.0})
    await h.etcd.put(existing_key("c1"), "")
    await eventually(lambda: "c1" in queue.container_ids)
    msg = activation()
    queue.put(msg)
    queue.graceful_shutdown()
    state_while_draining = queue.state

    served = await fetch(queue, "c1")

    assert state_while_draining is QueueState.REMOVING
    assert served.message == msg
    assert queue.state is QueueState.REMOVED


async def test_removing_queue_routes_its_backlog_again_when_its_creation_fails(
    h: Harness,
) -> None:
    queue = await h.make({"scheduler.queue.graceful_shutdown_timeout_s": 30.0})
    await eventually(lambda: bool(h.creator.created))
    msg = activation()
    queue.put(msg)
    queue.graceful_shutdown()

    queue.creation_failed(
        h.creator.created[0].creation_id,
        ContainerCreationError.NO_AVAILABLE_INVOKERS,
        "no available invoker is found",
    )

    assert queue.state is QueueState.REMOVED
    assert h.parent.forwarded == [msg]


async def test_removing_queue_without_containers_routes_its_backlog_again(
    h: Harness,
) -> None:
    h.creator.succeed = True
    queue = await h.make()
    await eventually(lambda: bool(h.creator.created) and not queue.creation_ids)
    msg = activation()
    queue.put(msg)

    queue.graceful_shutdown()
    await eventually(lambda: queue.state is QueueState.REMOVED)

    assert h.parent.removed == [(queue, False)]
    assert h.parent.forwarded == [msg]


async def test_graceful_shutdown_while_flushing_fails_the_backlog_and_retires(
    h: Harness,
) -> None:
    queue = await h.make()
    await eventually(lambda: bool(h.creator.created))
    queue.put(activation())
    queue.creation_failed(
        h.creator.created[0].creation_id,
        ContainerCreationError.NO_AVAILABLE_INVOKERS,
        "no available invoker is found",
    )

    queue.graceful_shutdown()
    [record] = await h.failures(1)

    assert queue.state is QueueState.REMOVED
    assert error_of(record) == (
        ResponseStatus.WHISK_ERROR,
        "no available invoker is found",
    )
    assert await h.value(LEADER_KEY) is None


async def test_removed_queue_routes_late_activations_and_answers_no_memory_queue(
    h: Harness,
) -> None:
    queue = await h.make()
    queue.graceful_shutdown()
    await eventually(lambda: queue.state is QueueState.REMOVED)
    late = activation()

    queue.put(late)
    result = await fetch(queue)

    assert h.parent.forwarded == [late]
    assert result == NO_MEMORY_QUEUE


async def test_outdated_queue_without_containers_hands_its_backlog_over_at_once(
    h: Harness,
) -> None:
    queue = await h.make()
    backlog = [activation(), activation()]
    for msg in backlog:
        queue.put(msg)

    queue.stop_as_outdated()

    assert queue.state is QueueState.REMOVED
    assert h.parent.outdated == [queue]
    assert h.parent.removed == [(queue, True)]
    assert h.parent.forwarded == backlog
    assert h.creator.deleted == [(NS, ACTION, REV)]
    # The keys are the new revision's now.
    assert await h.value(LEADER_KEY) is not None
    assert await h.value(NS_THROTTLE_KEY) == "false"


async def test_outdated_queue_stays_in_the_pool_until_its_containers_took_the_backlog(
    h: Harness,
) -> None:
    queue = await h.make({"scheduler.queue.graceful_shutdown_timeout_s": 30.0})
    await h.etcd.put(existing_key("c1"), "")
    await eventually(lambda: "c1" in queue.container_ids)
    msg = activation()
    queue.put(msg)

    queue.stop_as_outdated()
    removed_while_draining = list(h.parent.removed)
    served = await fetch(queue, "c1")

    assert removed_while_draining == []
    assert h.parent.outdated == [queue]
    assert served.message == msg
    assert queue.state is QueueState.REMOVED
    assert h.parent.removed == [(queue, True)]
    assert h.parent.forwarded == []
    assert h.creator.deleted == [(NS, ACTION, REV)]


async def test_outdated_queue_hands_stale_activations_over_and_never_provisions(
    h: Harness,
) -> None:
    queue = await h.make({"scheduler.queue.graceful_shutdown_timeout_s": 30.0})
    await h.etcd.put(existing_key("c1"), "")
    await eventually(lambda: "c1" in queue.container_ids)
    msg = activation()
    queue.put(msg)
    created = len(h.creator.created)

    queue.stop_as_outdated()
    await asyncio.sleep(0.05)
    kept = queue.waiting_count()
    h.clock.advance(1.0)
    await eventually(lambda: h.parent.forwarded == [msg])
    await eventually(lambda: queue.state is QueueState.REMOVED)

    assert kept == 1
    assert len(h.creator.created) == created
    assert h.parent.removed == [(queue, True)]


async def test_outdated_queue_hands_its_backlog_over_when_its_last_container_goes(
    h: Harness,
) -> None:
    queue = await h.make({"scheduler.queue.graceful_shutdown_timeout_s": 30.0})
    await h.etcd.put(existing_key("c1"), "")
    await eventually(lambda: "c1" in queue.container_ids)
    msg = activation()
    queue.put(msg)
    queue.stop_as_outdated()

    await h.etcd.delete(existing_key("c1"))
    await eventually(lambda: queue.state is QueueState.REMOVED)

    assert h.parent.forwarded == [msg]
    assert h.store.records == {}


async def test_outdated_flushing_queue_hands_its_backlog_over_instead_of_failing_it(
    h: Harness,
) -> None:
    queue = await h.make()
    await eventually(lambda: bool(h.creator.created))
    msg = activation()
    queue.put(msg)
    queue.creation_failed(
        h.creator.created[0].creation_id,
        ContainerCreationError.NO_AVAILABLE_INVOKERS,
        "no available invoker is found",
    )

    queue.stop_as_outdated()
    await asyncio.sleep(0.05)

    assert queue.state is QueueState.REMOVED
    assert h.parent.forwarded == [msg]
    assert h.store.records == {}
    assert h.parent.removed == [(queue, True)]


async def test_outdated_queue_ignores_a_failed_creation_and_keeps_its_backlog_moving(
    h: Harness,
) -> None:
    queue = await h.make({"scheduler.queue.graceful_shutdown_timeout_s": 30.0})
    await eventually(lambda: bool(h.creator.created))
    await h.etcd.put(existing_key("c1"), "")
    await eventually(lambda: "c1" in queue.container_ids)
    msg = activation()
    queue.put(msg)
    queue.stop_as_outdated()

    queue.creation_failed(
        h.creator.created[0].creation_id,
        ContainerCreationError.DB_FETCH_ERROR,
        "Action version is not compatible and cannot be invoked.",
    )
    served = await fetch(queue, "c1")

    assert served.message == msg
    assert h.store.records == {}
    assert queue.state is QueueState.REMOVED


async def test_queue_stops_as_outdated_when_its_namespace_is_gone(h: Harness) -> None:
    h.limits[NS] = NotFoundError("namespace alice does not exist")

    queue = await h.make()
    await eventually(lambda: queue.state is QueueState.REMOVED)

    assert h.parent.removed == [(queue, True)]


async def test_queue_retires_when_another_scheduler_takes_the_leader_key(
    h: Harness,
) -> None:
    queue = await h.make()
    backlog = [activation(), activation()]
    for msg in backlog:
        queue.put(msg)
    other = await h.etcd.grant(10)
    other_value = json.dumps({"host": "localhost", "rpcPort": 13002, "pekkoPort": 0})

    await h.etcd.delete(LEADER_KEY)
    await h.etcd.put(LEADER_KEY, other_value, lease=other.id)
    await eventually(lambda: queue.state is QueueState.REMOVED)
    leader = await h.etcd.get(LEADER_KEY)

    assert h.parent.removed == [(queue, False)]
    assert h.parent.forwarded == backlog
    assert leader is not None and leader.value == other_value
    assert await h.value(NS_THROTTLE_KEY) == "false"


@pytest.mark.parametrize("version_updated", [False, True])
async def test_queue_restores_its_leader_key_when_it_vanishes(
    h: Harness, version_updated: bool
) -> None:
    queue = await h.make(version_updated=version_updated)

    await h.etcd.delete(LEADER_KEY)
    leader = None
    for _ in range(400):
        leader = await h.etcd.get(LEADER_KEY)
        if leader is not None:
            break
        await asyncio.sleep(0.005)

    assert leader is not None
    assert json.loads(leader.value)["rpcPort"] == ENDPOINTS.rpc_port
    assert queue.state is R


async def test_stop_cancels_every_task_and_fails_what_was_waiting(h: Harness) -> None:
    queue = await h.make()
    msg = activation()
    queue.put(msg)

    await queue.stop()
    names = [t.get_name() for t in asyncio.all_tasks()]

    assert not [n for n in names if n.startswith("queue:")]
    assert queue.state is QueueState.REMOVED
    assert error_of(h.store.records[msg.activation_id]) == (
        ResponseStatus.WHISK_ERROR,
        QUEUE_STOPPED,
    )
