"""FPCPoolBalancer: routing, queue creation, in-flight bookkeeping, throttle mirror."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from wisp.config.model import WispConfig
from wisp.controller.balancer import (
    NO_SCHEDULER,
    FPCPoolBalancer,
    KeyMirror,
    forced_completion_after_s,
    invoker_statuses,
    least_loaded,
    parse_bool_flag,
    throttle_flag,
)
from wisp.controller.journal import TIMED_OUT_TEXT, ActivationJournal
from wisp.core.activation import ActivationMessage, ActivationResponse
from wisp.core.entity import Exec, Identity, WhiskAction
from wisp.core.errors import MessagingError, ServiceUnavailable, StoreError
from wisp.core.ids import (
    ControllerInstanceId,
    SchedulerInstanceId,
    TransactionId,
    new_activation_id,
)
from wisp.core.messages import CompletionAck, SchedulerEndpoints, SchedulerStates
from wisp.infra.etcd.keys import EtcdKeys
from wisp.infra.etcd.memory import MemoryEtcd
from wisp.infra.etcd.watcher import WatcherService
from wisp.infra.messaging.memory import MemoryBroker
from wisp.infra.store.activations import JournalEntry
from wisp.infra.store.memory import MemoryStore

from .conftest import (
    INSTANCE,
    KEYS,
    FakeQueueService,
    controller_config,
    record_for,
    register_scheduler,
)

pytestmark = pytest.mark.timeout(10)

USER = Identity("guest", "guest", "uuid-guest", "key")
ACTION = WhiskAction(
    "guest", "hello", Exec("python:3", "def main(a): return a"), rev="1-abc"
)


def message(blocking: bool = False, action: WhiskAction = ACTION) -> ActivationMessage:
    return ActivationMessage(
        transid=TransactionId.new(),
        action=action.fqn,
        revision=action.rev,
        user=USER,
        activation_id=new_activation_id(),
        root_controller_index=ControllerInstanceId("0"),
        blocking=blocking,
        content={},
    )


def state(sid: str, queue_size: int, port: int = 1) -> SchedulerStates:
    return SchedulerStates(
        SchedulerInstanceId(sid), queue_size, SchedulerEndpoints("127.0.0.1", port)
    )


async def eventually(condition: Callable[[], bool], timeout_s: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


BalancerFactory = Callable[..., Awaitable[FPCPoolBalancer]]


@pytest.fixture
async def make_balancer(
    etcd: MemoryEtcd, broker: MemoryBroker
) -> AsyncIterator[BalancerFactory]:
    started: list[tuple[FPCPoolBalancer, WatcherService]] = []

    async def make(
        config: WispConfig | None = None,
        producer: Any = None,
        journal: ActivationJournal | None = None,
    ) -> FPCPoolBalancer:
        watcher = WatcherService(etcd)
        await watcher.start()
        balancer = FPCPoolBalancer(
            config or controller_config(),
            etcd=etcd,
            watcher=watcher,
            producer=producer or broker.producer(),
            controller_id=ControllerInstanceId("0"),
            journal=journal,
        )
        await balancer.start()
        started.append((balancer, watcher))
        return balancer

    yield make
    for balancer, watcher in started:
        await balancer.stop()
        await watcher.stop()


# --- pure decisions -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({}, False),
        ({"whisk/throttling/guest": True}, True),
        ({"whisk/throttling/guest": False}, False),
        ({"whisk/throttling/guest/guest/hello": True}, True),
        # an explicit false on the action beats a throttled namespace
        (
            {
                "whisk/throttling/guest": True,
                "whisk/throttling/guest/guest/hello": False,
            },
            False,
        ),
        (
            {
                "whisk/throttling/guest": False,
                "whisk/throttling/guest/guest/hello": True,
            },
            True,
        ),
        # another action's flag does not matter
        ({"whisk/throttling/guest/guest/other": True}, False),
        ({"whisk/throttling/guest2": True}, False),
    ],
)
def test_throttle_flag_precedence(flags: dict[str, bool], expected: bool) -> None:
    assert throttle_flag(flags, KEYS, "guest", "guest/hello") is expected


@pytest.mark.parametrize(
    ("sizes", "exclude", "expected"),
    [
        ({"0": 3, "1": 1, "2": 2}, set(), "1"),
        ({"0": 1, "1": 1}, set(), "0"),
        ({"0": 3, "1": 1, "2": 2}, {"1"}, "2"),
        ({"0": 1}, {"0"}, None),
        ({}, set(), None),
    ],
)
def test_least_loaded_picks_fewest_queues(
    sizes: dict[str, int], exclude: set[str], expected: str | None
) -> None:
    chosen = least_loaded([state(s, n) for s, n in sizes.items()], frozenset(exclude))

    assert (chosen.sid.as_string if chosen else None) == expected


@pytest.mark.parametrize(
    ("timeout_ms", "factor", "addon_s", "expected_s"),
    [
        (1_000, 2.0, 60.0, 180.0),
        (60_000, 2.0, 60.0, 180.0),
        (300_000, 2.0, 60.0, 660.0),
    ],
)
def test_forced_completion_waits_at_least_the_standard_timeout(
    timeout_ms: int, factor: float, addon_s: float, expected_s: float
) -> None:
    assert forced_completion_after_s(timeout_ms, factor, addon_s) == expected_s


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("TRUE", True), ("false", False), ("junk", False)],
)
def test_throttle_values_parse_as_booleans(value: str, expected: bool) -> None:
    assert parse_bool_flag(value) is expected


def test_key_mirror_ignores_writes_older_than_what_it_has_seen() -> None:
    mirror: KeyMirror[bool] = KeyMirror(parse_bool_flag)
    mirror.put("k", "true", 5)

    mirror.put("k", "false", 4)
    mirror.delete("k", 3)
    assert mirror.values == {"k": True}

    mirror.delete("k", 6)
    mirror.put("k", "true", 5)  # a snapshot read older than the delete
    assert mirror.values == {}


def test_invoker_statuses_report_gaps_as_down() -> None:
    records = [
        ("whisk/invokers/0", json.dumps({"status": "up"})),
        ("whisk/invokers/2/host-b", json.dumps({"status": "unhealthy"})),
        ("whisk/invokers/3", "not json"),
    ]

    statuses = invoker_statuses(records, KEYS)

    assert statuses == [
        (0, "invoker0", "up"),
        (1, "invoker1", "down"),
        (2, "invoker2/host-b", "unhealthy"),
        (3, "invoker3", "down"),
    ]


# --- routing ---------------------------------------------------------------------------


async def test_publish_without_scheduler_is_unavailable(
    make_balancer: BalancerFactory,
) -> None:
    balancer = await make_balancer()

    with pytest.raises(ServiceUnavailable, match=NO_SCHEDULER):
        await balancer.publish(ACTION, message())

    assert balancer.total_active_activations == 0


async def test_publish_goes_to_the_scheduler_leading_the_queue(
    make_balancer: BalancerFactory, etcd: MemoryEtcd, broker: MemoryBroker
) -> None:
    other, leader = FakeQueueService(), FakeQueueService()
    await other.start()
    await leader.start()
    try:
        await register_scheduler(etcd, "0", other.endpoints(), queue_size=0)
        await register_scheduler(etcd, "1", leader.endpoints(), queue_size=9)
        leader_key = KEYS.queue_leader("guest", "guest/hello")
        await etcd.put(leader_key, json.dumps(leader.endpoints().to_json()))
        balancer = await make_balancer()

        await balancer.publish(ACTION, message())

        assert broker.depth("scheduler1") == 1
        assert broker.depth("scheduler0") == 0
        assert other.requests == [] and leader.requests == []
    finally:
        await other.stop()
        await leader.stop()


async def test_publish_without_leader_creates_the_queue_on_the_least_loaded(
    make_balancer: BalancerFactory, etcd: MemoryEtcd, broker: MemoryBroker
) -> None:
    busy, idle = FakeQueueService(), FakeQueueService()
    await busy.start()
    await idle.start()
    try:
        await register_scheduler(etcd, "0", busy.endpoints(), queue_size=5)
        await register_scheduler(etcd, "1", idle.endpoints(), queue_size=1)
        balancer = await make_balancer()

        await balancer.publish(ACTION, message())
        await asyncio.wait_for(idle.called.wait(), 2.0)

        assert broker.depth("scheduler1") == 1
        assert busy.requests == []
        [request] = idle.requests
        assert request.invocation_namespace == "guest"
        assert str(request.action) == "guest/hello@0.0.1"
        assert request.revision == "1-abc"
        assert request.action_metadata["exec"]["kind"] == "python:3"
    finally:
        await busy.stop()
        await idle.stop()


async def test_create_queue_moves_to_another_scheduler_when_one_fails(
    make_balancer: BalancerFactory, etcd: MemoryEtcd
) -> None:
    broken, healthy = FakeQueueService(abort=True), FakeQueueService()
    await broken.start()
    await healthy.start()
    try:
        await register_scheduler(etcd, "0", broken.endpoints(), queue_size=0)
        await register_scheduler(etcd, "1", healthy.endpoints(), queue_size=4)
        balancer = await make_balancer()

        await balancer.publish(ACTION, message())
        await asyncio.wait_for(healthy.called.wait(), 2.0)

        assert len(broken.requests) == 1
        assert len(healthy.requests) == 1
    finally:
        await broken.stop()
        await healthy.stop()


async def test_activations_follow_a_queue_under_creation_without_a_second_request(
    make_balancer: BalancerFactory,
    etcd: MemoryEtcd,
    broker: MemoryBroker,
    queue_service: FakeQueueService,
) -> None:
    await register_scheduler(etcd, "0", queue_service.endpoints())
    balancer = await make_balancer()

    await asyncio.gather(*(balancer.publish(ACTION, message()) for _ in range(5)))
    await asyncio.wait_for(queue_service.called.wait(), 2.0)
    # late duplicate requests would arrive over gRPC after the first one
    await asyncio.sleep(0.2)

    assert broker.depth("scheduler0") == 5
    assert len(queue_service.requests) == 1


async def test_scheduler_records_of_another_cluster_are_ignored(
    make_balancer: BalancerFactory, etcd: MemoryEtcd
) -> None:
    await register_scheduler(etcd, "0", SchedulerEndpoints("127.0.0.1", 1))
    other_keys = EtcdKeys("other")
    await etcd.put(other_keys.scheduler("7"), json.dumps(state("7", 0).to_json()))

    balancer = await make_balancer(controller_config(**{"etcd.cluster_name": "other"}))

    assert [s.sid.as_string for s in balancer.schedulers] == ["7"]


async def test_scheduler_joining_and_leaving_is_followed(
    make_balancer: BalancerFactory, etcd: MemoryEtcd
) -> None:
    balancer = await make_balancer()

    await register_scheduler(etcd, "3", SchedulerEndpoints("127.0.0.1", 1))
    await eventually(lambda: len(balancer.schedulers) == 1)
    await etcd.delete(KEYS.scheduler("3"))
    await eventually(lambda: balancer.schedulers == [])

    with pytest.raises(ServiceUnavailable):
        await balancer.publish(ACTION, message())


# --- in-flight bookkeeping --------------------------------------------------------------


async def test_forced_completion_frees_the_slot_and_hands_the_waiter_the_id(
    make_balancer: BalancerFactory, etcd: MemoryEtcd, queue_service: FakeQueueService
) -> None:
    await register_scheduler(etcd, "0", queue_service.endpoints())
    config = controller_config(
        **{"controller.timeout_factor": 0.0005, "controller.timeout_addon_s": 0.0}
    )
    balancer = await make_balancer(config)
    msg = message(blocking=True)

    future = await balancer.publish(ACTION, msg)
    assert future is not None and balancer.total_active_activations == 1
    result = await asyncio.wait_for(future, 2.0)

    assert result == msg.activation_id
    assert balancer.total_active_activations == 0
    assert balancer.active_activations_for(USER.uuid) == 0
    assert balancer.total_active_memory_mb == 0


async def test_combined_ack_wakes_the_waiter_with_the_record_and_frees_the_slot(
    make_balancer: BalancerFactory, etcd: MemoryEtcd, queue_service: FakeQueueService
) -> None:
    await register_scheduler(etcd, "0", queue_service.endpoints())
    balancer = await make_balancer()
    msg = message(blocking=True)
    future = await balancer.publish(ACTION, msg)
    assert future is not None
    record = record_for(msg, ActivationResponse.ok({"x": 1}))

    balancer.process_ack(CompletionAck.combined(msg.transid, record, INSTANCE))

    assert future.result() == record
    assert balancer.total_active_activations == 0


async def test_completion_without_result_hands_the_waiter_the_id(
    make_balancer: BalancerFactory, etcd: MemoryEtcd, queue_service: FakeQueueService
) -> None:
    await register_scheduler(etcd, "0", queue_service.endpoints())
    balancer = await make_balancer()
    msg = message(blocking=True)
    future = await balancer.publish(ACTION, msg)
    assert future is not None

    ack = CompletionAck.completion(msg.transid, msg.activation_id, False, INSTANCE)
    balancer.process_ack(ack)
    balancer.process_ack(ack)  # a duplicate is harmless

    assert future.result() == msg.activation_id
    assert balancer.total_active_activations == 0


async def test_non_blocking_publish_tracks_the_slot_until_completion(
    make_balancer: BalancerFactory, etcd: MemoryEtcd, queue_service: FakeQueueService
) -> None:
    await register_scheduler(etcd, "0", queue_service.endpoints())
    balancer = await make_balancer()
    msg = message(blocking=False)

    future = await balancer.publish(ACTION, msg)
    in_flight = balancer.in_flight()
    memory_mb = balancer.total_active_memory_mb
    balancer.process_ack(
        CompletionAck.completion(msg.transid, msg.activation_id, False, INSTANCE)
    )

    assert future is None
    assert in_flight == [(msg.activation_id, "guest/hello@0.0.1")]
    assert memory_mb == ACTION.limits.memory_mb
    assert balancer.total_active_activations == 0
    assert balancer.total_active_memory_mb == 0


class _BrokenProducer:
    async def send(self, topic: str, payload: bytes) -> None:
        raise MessagingError("broker down")

    async def close(self) -> None:
        return None


async def test_failed_send_leaves_nothing_in_flight(
    make_balancer: BalancerFactory, etcd: MemoryEtcd, queue_service: FakeQueueService
) -> None:
    await register_scheduler(etcd, "0", queue_service.endpoints())
    balancer = await make_balancer(producer=_BrokenProducer())

    with pytest.raises(ServiceUnavailable):
        await balancer.publish(ACTION, message(blocking=True))

    assert balancer.total_active_activations == 0
    assert balancer.active_activations_for(USER.uuid) == 0


async def test_stop_hands_every_waiter_its_id(
    etcd: MemoryEtcd, broker: MemoryBroker, queue_service: FakeQueueService
) -> None:
    await register_scheduler(etcd, "0", queue_service.endpoints())
    watcher = WatcherService(etcd)
    await watcher.start()
    balancer = FPCPoolBalancer(
        controller_config(),
        etcd=etcd,
        watcher=watcher,
        producer=broker.producer(),
        controller_id=ControllerInstanceId("0"),
    )
    await balancer.start()
    msg = message(blocking=True)
    future = await balancer.publish(ACTION, msg)

    await balancer.stop()
    await watcher.stop()

    assert future is not None and future.result() == msg.activation_id
    assert balancer.total_active_activations == 0


async def test_leader_deleted_with_work_in_flight_creates_the_queue_again(
    make_balancer: BalancerFactory, etcd: MemoryEtcd, queue_service: FakeQueueService
) -> None:
    await register_scheduler(etcd, "0", queue_service.endpoints())
    leader_key = KEYS.queue_leader("guest", "guest/hello")
    await etcd.put(leader_key, json.dumps(queue_service.endpoints().to_json()))
    balancer = await make_balancer()
    await balancer.publish(ACTION, message())
    assert queue_service.requests == []

    await etcd.delete(leader_key)
    await asyncio.wait_for(queue_service.called.wait(), 2.0)

    [request] = queue_service.requests
    assert request.revision == "1-abc"


# --- throttle mirror -------------------------------------------------------------------


async def test_throttle_flags_mirror_etcd_with_action_precedence(
    make_balancer: BalancerFactory, etcd: MemoryEtcd
) -> None:
    await etcd.put(KEYS.namespace_throttling("guest"), "true")
    balancer = await make_balancer()
    assert balancer.check_throttle("guest", "guest/hello") is True

    await etcd.put(KEYS.action_throttling("guest", "guest/hello"), "false")
    await eventually(lambda: not balancer.check_throttle("guest", "guest/hello"))
    assert balancer.check_throttle("guest", "guest/new") is True

    await etcd.put(KEYS.action_throttling("guest", "guest/hello"), "true")
    await eventually(lambda: balancer.check_throttle("guest", "guest/hello"))

    await etcd.delete(KEYS.action_throttling("guest", "guest/hello"))
    await etcd.put(KEYS.namespace_throttling("guest"), "false")
    await eventually(lambda: not balancer.check_throttle("guest", "guest/hello"))


async def test_invoker_health_reads_the_invoker_records(
    make_balancer: BalancerFactory, etcd: MemoryEtcd
) -> None:
    await etcd.put(KEYS.invoker(0), json.dumps({"status": "up", "freeMemory": 1024}))
    await etcd.put(KEYS.invoker(1, "host-b"), json.dumps({"status": "down"}))
    balancer = await make_balancer()

    health = await balancer.invoker_health()

    assert health == [(0, "invoker0", "up"), (1, "invoker1/host-b", "down")]


class _RecordingQueueClient:
    def __init__(self) -> None:
        self.forgotten: list[str] = []
        self.closed = False

    async def create_queue(self, endpoint: str, request: Any, timeout_s: float) -> bool:
        return True

    async def forget(self, endpoint: str) -> None:
        self.forgotten.append(endpoint)

    async def close(self) -> None:
        self.closed = True


async def test_scheduler_leaving_drops_its_channel(
    etcd: MemoryEtcd, broker: MemoryBroker
) -> None:
    await register_scheduler(etcd, "0", SchedulerEndpoints("127.0.0.1", 4321))
    watcher = WatcherService(etcd)
    await watcher.start()
    client = _RecordingQueueClient()
    balancer = FPCPoolBalancer(
        controller_config(),
        etcd=etcd,
        watcher=watcher,
        producer=broker.producer(),
        controller_id=ControllerInstanceId("0"),
        queue_client=client,
    )
    await balancer.start()
    try:
        await etcd.delete(KEYS.scheduler("0"))
        await eventually(lambda: client.forgotten == ["127.0.0.1:4321"])
    finally:
        await balancer.stop()
        await watcher.stop()

    assert client.closed


# --- activation journal -------------------------------------------------------------------


@pytest.fixture
async def journal(store: MemoryStore) -> AsyncIterator[ActivationJournal]:
    running = ActivationJournal(store, remove_interval_s=0.01)
    await running.start()
    yield running
    await running.stop()


class _RefusingStore(MemoryStore):
    async def journal_add(self, entries: Any) -> None:
        raise StoreError("disk full")


async def test_publish_journals_the_activation_before_it_is_sent(
    make_balancer: BalancerFactory,
    etcd: MemoryEtcd,
    broker: MemoryBroker,
    store: MemoryStore,
    queue_service: FakeQueueService,
    journal: ActivationJournal,
) -> None:
    await register_scheduler(etcd, "0", queue_service.endpoints())
    balancer = await make_balancer(journal=journal)
    msg = message()

    await balancer.publish(ACTION, msg)

    [entry] = await store.journal_entries("0")
    assert broker.depth("scheduler0") == 1
    assert entry == JournalEntry(
        activation_id=msg.activation_id,
        namespace="guest",
        path="guest/hello",
        version="0.0.1",
        subject="guest",
        controller_id="0",
        start_ms=msg.transid.start_ms,
    )


async def test_completion_ack_removes_the_journal_entry(
    make_balancer: BalancerFactory,
    etcd: MemoryEtcd,
    store: MemoryStore,
    queue_service: FakeQueueService,
    journal: ActivationJournal,
) -> None:
    await register_scheduler(etcd, "0", queue_service.endpoints())
    balancer = await make_balancer(journal=journal)
    msg = message()
    await balancer.publish(ACTION, msg)

    balancer.process_ack(
        CompletionAck.completion(msg.transid, msg.activation_id, False, INSTANCE)
    )

    for _ in range(200):
        if not await store.journal_entries("0"):
            break
        await asyncio.sleep(0.01)
    assert await store.journal_entries("0") == []
    assert await store.get_activation("guest", msg.activation_id) is None


async def test_failed_send_removes_the_journal_entry(
    make_balancer: BalancerFactory,
    etcd: MemoryEtcd,
    store: MemoryStore,
    queue_service: FakeQueueService,
    journal: ActivationJournal,
) -> None:
    await register_scheduler(etcd, "0", queue_service.endpoints())
    balancer = await make_balancer(producer=_BrokenProducer(), journal=journal)

    with pytest.raises(ServiceUnavailable):
        await balancer.publish(ACTION, message())
    await journal.stop()

    assert await store.journal_entries("0") == []


async def test_refused_journal_entry_refuses_the_activation(
    make_balancer: BalancerFactory,
    etcd: MemoryEtcd,
    broker: MemoryBroker,
    queue_service: FakeQueueService,
) -> None:
    await register_scheduler(etcd, "0", queue_service.endpoints())
    journal = ActivationJournal(_RefusingStore())
    await journal.start()
    balancer = await make_balancer(journal=journal)

    try:
        with pytest.raises(ServiceUnavailable, match="could not be recorded"):
            await balancer.publish(ACTION, message(blocking=True))
    finally:
        await journal.stop()

    assert balancer.total_active_activations == 0
    assert broker.depth("scheduler0") == 0


async def test_forced_completion_records_the_activation_as_lost(
    make_balancer: BalancerFactory,
    etcd: MemoryEtcd,
    store: MemoryStore,
    queue_service: FakeQueueService,
    journal: ActivationJournal,
) -> None:
    await register_scheduler(etcd, "0", queue_service.endpoints())
    config = controller_config(
        **{"controller.timeout_factor": 0.0005, "controller.timeout_addon_s": 0.0}
    )
    balancer = await make_balancer(config, journal=journal)
    msg = message()

    await balancer.publish(ACTION, msg)

    for _ in range(200):
        record = await store.get_activation("guest", msg.activation_id)
        if record is not None and not await store.journal_entries("0"):
            break
        await asyncio.sleep(0.01)
    assert record is not None
    assert record.response.result == {"error": TIMED_OUT_TEXT}
    assert int(record.response.status) == 3
    assert await store.journal_entries("0") == []
