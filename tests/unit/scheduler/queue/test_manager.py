"""QueueManager: elections, routing, version updates, recovery, shutdown
(QueueManagerTests)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from wisp.config.load import load_config
from wisp.core.activation import ActivationMessage
from wisp.core.entity import FullyQualifiedEntityName, UserLimits
from wisp.core.errors import CoordinationUnavailable
from wisp.core.ids import SchedulerInstanceId
from wisp.core.messages import (
    WARM_UP_ACTION,
    CreateQueueRequest,
    SchedulerEndpoints,
    SchedulerStates,
    encode,
)
from wisp.infra.etcd.client import KeyValue
from wisp.infra.etcd.keys import EtcdKeys
from wisp.infra.etcd.memory import MemoryEtcd
from wisp.infra.messaging.memory import MemoryBroker
from wisp.scheduler.queue.manager import (
    ENDPOINT_LOOKUP_TEXT,
    ENDPOINT_PARSE_TEXT,
    FORWARD_TEXT,
    QUEUE_START_TEXT,
    SHUTTING_DOWN_TEXT,
    TOO_OLD_TEXT,
    QueueManager,
)
from wisp.scheduler.rpc_server import ActivationServiceImpl, QueueServiceImpl, RpcServer

from ..fakes import (
    ACTION,
    FQN,
    NS,
    FakeAck,
    FakeDms,
    FakeEntityStore,
    FakeQueue,
    FakeQueueFactory,
    FakeWatcher,
    activation,
    identity,
    metadata,
    until,
)

pytestmark = pytest.mark.timeout(15)

KEYS = EtcdKeys()
LEADER_KEY = KEYS.queue_leader(NS, FQN)
OWN = SchedulerEndpoints("127.0.0.1", 5000)


class CountingEtcd(MemoryEtcd):
    """MemoryEtcd that counts `get` calls and can fail the first few."""

    def __init__(self) -> None:
        super().__init__()
        self.gets = 0
        self.failures = 0

    async def get(self, key: str) -> KeyValue | None:
        self.gets += 1
        if self.failures > 0:
            self.failures -= 1
            raise CoordinationUnavailable("etcd is not answering")
        return await super().get(key)


@dataclass
class Harness:
    manager: QueueManager
    etcd: CountingEtcd
    dms: FakeDms
    watcher: FakeWatcher
    store: FakeEntityStore
    ack: FakeAck
    factory: FakeQueueFactory

    @property
    def queues(self) -> list[FakeQueue]:
        return self.factory.created

    async def create(self, revision: str = "1-aaa", **meta: Any) -> bool:
        return await self.manager.create_queue(
            CreateQueueRequest(NS, ACTION, revision, metadata(**meta))
        )


async def make(
    overrides: dict[str, Any] | None = None,
    *,
    consumer: Any = None,
    leader: bool = True,
    clock: Any = None,
) -> Harness:
    config = load_config(
        overrides={
            "scheduler.max_retries_to_get_queue": 2,
            "scheduler.state_publish_interval_s": 0.02,
            "scheduler.queue.graceful_shutdown_timeout_s": 0.1,
            **(overrides or {}),
        }
    )
    etcd = CountingEtcd()
    dms = FakeDms(leader=leader)
    watcher = FakeWatcher()
    store = FakeEntityStore()
    ack = FakeAck()
    factory = FakeQueueFactory()
    manager = QueueManager(
        config=config,
        sid=SchedulerInstanceId("0"),
        endpoints=OWN,
        etcd=etcd,
        keys=KEYS,
        watcher=watcher,  # type: ignore[arg-type]
        dms=dms,  # type: ignore[arg-type]
        entity_store=store,  # type: ignore[arg-type]
        ack=ack,  # type: ignore[arg-type]
        consumer=consumer,
        queue_factory=factory,  # type: ignore[arg-type]
        **({"clock": clock} if clock is not None else {}),
    )
    await manager.start()
    return Harness(manager, etcd, dms, watcher, store, ack, factory)


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = await make()
    yield harness
    await harness.manager.stop()


class RecordingPool:
    """The remote scheduler's side of ForwardActivation."""

    def __init__(self) -> None:
        self.forwarded: list[ActivationMessage] = []

    def lookup(self, *args: Any) -> None:
        return None

    def queues_for(self, *args: Any) -> list[Any]:
        return []

    async def create_queue(self, request: CreateQueueRequest) -> bool:
        return True

    def handle_activation(self, msg: ActivationMessage) -> None:
        self.forwarded.append(msg)


@pytest.fixture
async def remote() -> AsyncIterator[tuple[SchedulerEndpoints, RecordingPool]]:
    pool = RecordingPool()
    server = RpcServer("127.0.0.1", 0)
    server.bind()
    await server.start(ActivationServiceImpl(pool), QueueServiceImpl(pool))
    yield SchedulerEndpoints("127.0.0.1", server.port), pool
    await server.stop(0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def endpoints_json(endpoints: SchedulerEndpoints) -> str:
    return json.dumps(endpoints.to_json())


# --- queue creation ---------------------------------------------------------------------


async def test_create_queue_elects_and_starts_a_leader_queue(h: Harness) -> None:
    created = await h.create()

    assert created is True
    assert h.dms.elections == [
        (LEADER_KEY, json.dumps(OWN.to_json(), separators=(",", ":")))
    ]
    assert len(h.queues) == 1
    queue = h.queues[0]
    assert (queue.invocation_namespace, queue.action, queue.revision) == (
        NS,
        ACTION,
        "1-aaa",
    )
    assert queue.started == [False]
    assert h.manager.lookup(NS, FQN, "1-aaa") is queue


async def test_lost_election_still_answers_success_without_a_queue() -> None:
    h = await make(leader=False)

    created = await h.create()

    assert created is True
    assert h.queues == []
    await h.manager.stop()


async def test_existing_queue_answers_success_without_new_election(h: Harness) -> None:
    await h.create()

    created = await h.create()

    assert created is True
    assert len(h.dms.elections) == 1


async def test_concurrent_create_requests_share_one_election(h: Harness) -> None:
    h.dms.election_gate = asyncio.Event()
    requests = [asyncio.create_task(h.create()) for _ in range(4)]
    await asyncio.sleep(0.01)

    h.dms.election_gate.set()
    results = await asyncio.gather(*requests)

    assert results == [True, True, True, True]
    assert len(h.dms.elections) == 1
    assert len(h.queues) == 1


async def test_create_queue_for_a_newer_revision_of_an_own_key_updates_the_queue(
    h: Harness,
) -> None:
    await h.create("1-aaa")

    created = await h.create("2-bbb")

    old, new = h.queues
    assert created is True
    assert old.outdated == 1
    assert (new.revision, new.started) == ("2-bbb", [True])


async def test_create_queue_for_an_older_revision_keeps_the_newer_queue(
    h: Harness,
) -> None:
    await h.create("2-bbb")

    created = await h.create("1-aaa")

    assert created is True
    assert len(h.queues) == 1
    assert h.queues[0].outdated == 0


async def test_failed_election_answers_failure(h: Harness) -> None:
    async def broken(key: str, value: str) -> bool:
        raise CoordinationUnavailable("etcd is not answering")

    h.dms.elect_leader = broken  # type: ignore[method-assign]

    created = await h.create()

    assert created is False
    assert h.queues == []


async def test_forwarded_warm_up_activation_is_dropped(h: Harness) -> None:
    h.manager.handle_activation(activation(action=WARM_UP_ACTION, revision=None))
    await asyncio.sleep(0.02)

    assert h.etcd.gets == 0
    assert h.ack.completed == []


async def test_warm_up_create_queue_succeeds_without_a_queue(h: Harness) -> None:
    created = await h.manager.create_queue(
        CreateQueueRequest("whisk.system", WARM_UP_ACTION, "")
    )

    assert created is True
    assert h.dms.elections == []


async def test_non_executable_action_gets_no_queue(h: Harness) -> None:
    created = await h.create(kind="sequence")

    assert created is False
    assert h.dms.elections == []


async def test_create_queue_without_metadata_reads_the_action(h: Harness) -> None:
    h.store.add_action("1-aaa")

    created = await h.manager.create_queue(CreateQueueRequest(NS, ACTION, "1-aaa"))
    missing = await h.manager.create_queue(
        CreateQueueRequest(NS, FullyQualifiedEntityName("bob", "nothing"), "1-aaa")
    )

    assert created is True
    assert h.queues[0].action_metadata["exec"]["kind"] == "python:3"
    assert missing is False


async def test_queue_created_during_shutdown_is_shut_down_at_once(h: Harness) -> None:
    h.manager.graceful_shutdown()

    await h.create()

    assert h.queues[0].shutdowns == 1


# --- routing ------------------------------------------------------------------------------


async def test_activation_goes_to_the_local_leader_queue(h: Harness) -> None:
    await h.create()
    msg = activation()

    h.manager.handle_activation(msg)

    assert h.queues[0].puts == [msg]


async def test_too_old_activation_is_failed_with_whisk_error(h: Harness) -> None:
    await h.create()
    msg = activation(age_ms=21_000)

    h.manager.handle_activation(msg)
    await until(lambda: h.ack.completed)

    assert h.ack.errors() == [TOO_OLD_TEXT]
    record = h.ack.completed[0][1]
    assert record.response.status == 3
    assert record.annotations["kind"] == "unknown"
    assert h.queues[0].puts == []


async def test_activation_within_the_scheduling_time_is_delivered(h: Harness) -> None:
    await h.create()

    h.manager.handle_activation(activation(age_ms=19_000))

    assert len(h.queues[0].puts) == 1
    assert h.ack.completed == []


async def test_activation_is_forwarded_to_the_remote_leader_and_the_address_cached(
    h: Harness, remote: tuple[SchedulerEndpoints, RecordingPool]
) -> None:
    endpoints, pool = remote
    await h.etcd.put(LEADER_KEY, endpoints_json(endpoints))
    first, second = activation(), activation()

    h.manager.handle_activation(first)
    await until(lambda: len(pool.forwarded) == 1, timeout_s=5)
    h.manager.handle_activation(second)
    await until(lambda: len(pool.forwarded) == 2, timeout_s=5)

    assert [m.activation_id for m in pool.forwarded] == [
        first.activation_id,
        second.activation_id,
    ]
    assert h.etcd.gets == 1


async def test_leader_lookup_retries_when_etcd_does_not_answer(h: Harness) -> None:
    h.etcd.failures = 100

    h.manager.handle_activation(activation())
    await until(lambda: h.ack.completed)

    assert h.etcd.gets == 3
    assert h.ack.errors() == [ENDPOINT_LOOKUP_TEXT]


async def test_leader_lookup_retries_while_the_key_is_absent(h: Harness) -> None:
    h.manager.handle_activation(activation())
    await until(lambda: h.ack.completed)

    assert h.etcd.gets == 3
    assert h.ack.errors() == [ENDPOINT_LOOKUP_TEXT]


async def test_leader_key_written_during_the_lookup_is_found(
    h: Harness, remote: tuple[SchedulerEndpoints, RecordingPool]
) -> None:
    endpoints, pool = remote
    h.etcd.failures = 1

    h.manager.handle_activation(activation())
    await h.etcd.put(LEADER_KEY, endpoints_json(endpoints))
    await until(lambda: pool.forwarded, timeout_s=5)

    assert h.ack.completed == []


async def test_malformed_leader_value_fails_the_activation(h: Harness) -> None:
    await h.etcd.put(LEADER_KEY, "not an endpoint")

    h.manager.handle_activation(activation())
    await until(lambda: h.ack.completed)

    assert h.ack.errors() == [ENDPOINT_PARSE_TEXT]


async def test_unreachable_leader_is_looked_up_again_then_failed(h: Harness) -> None:
    await h.etcd.put(
        LEADER_KEY, endpoints_json(SchedulerEndpoints("127.0.0.1", free_port()))
    )

    h.manager.handle_activation(activation())
    await until(lambda: h.ack.completed, timeout_s=10)

    assert h.ack.errors() == [FORWARD_TEXT]
    assert h.etcd.gets == 2


async def test_leader_endpoints_are_cached_from_the_watch(
    h: Harness, remote: tuple[SchedulerEndpoints, RecordingPool]
) -> None:
    endpoints, pool = remote

    h.watcher.put(LEADER_KEY, endpoints_json(endpoints))
    h.manager.handle_activation(activation())
    await until(lambda: pool.forwarded, timeout_s=5)

    assert h.etcd.gets == 0


async def test_malformed_watch_value_is_ignored_and_delete_evicts(h: Harness) -> None:
    h.watcher.put(LEADER_KEY, endpoints_json(OWN))
    h.watcher.put(KEYS.queue_leader(NS, "bob/other"), "{broken")
    h.watcher.delete(LEADER_KEY)

    h.manager.handle_activation(activation())
    await until(lambda: h.ack.completed)

    # The evicted leader had to be looked up (and was not found).
    assert h.etcd.gets == 3
    assert h.ack.errors() == [ENDPOINT_LOOKUP_TEXT]


# --- versions and recovery -------------------------------------------------------------------


async def test_newer_revision_retires_the_old_queue_and_starts_an_updated_one(
    h: Harness,
) -> None:
    await h.create("1-aaa")
    h.store.add_action("2-bbb", version="0.0.2")
    msg = activation(revision="2-bbb", action=ACTION.with_version("0.0.2"))

    h.manager.handle_activation(msg)
    await until(lambda: len(h.queues) == 2)
    await until(lambda: h.queues[1].puts)

    old, new = h.queues
    assert old.outdated == 1
    assert (new.revision, new.started) == ("2-bbb", [True])
    assert new.puts == [msg]
    assert h.manager.lookup(NS, FQN, "1-aaa") is old


async def test_update_uses_the_stored_revision_when_the_action_changed_again(
    h: Harness,
) -> None:
    await h.create("1-aaa")
    h.store.add_action("3-ccc", version="0.0.3")

    h.manager.handle_activation(activation(revision="2-bbb"))
    await until(lambda: len(h.queues) == 2 and h.queues[1].puts)
    h.manager.handle_activation(activation(revision="3-ccc"))

    new = h.queues[1]
    assert new.revision == "3-ccc"
    assert [m.revision for m in new.puts] == ["3-ccc", "3-ccc"]
    assert new.puts[0].action.version == "0.0.3"
    assert len(h.queues) == 2


async def test_concurrent_newer_activations_start_one_updated_queue(h: Harness) -> None:
    await h.create("1-aaa")
    h.store.add_action("2-bbb")

    for _ in range(3):
        h.manager.handle_activation(activation(revision="2-bbb"))
    await until(lambda: len(h.queues) == 2 and len(h.queues[1].puts) == 3)

    assert len(h.queues) == 2
    assert h.queues[0].outdated == 1


async def test_outdated_queue_hands_its_backlog_to_the_new_queue_already_in_place(
    h: Harness,
) -> None:
    h.factory.hands_back = True
    await h.create("1-aaa")
    waiting = activation(revision="1-aaa")
    h.manager.handle_activation(waiting)
    h.store.add_action("2-bbb", version="0.0.2")
    newer = activation(revision="2-bbb", action=ACTION.with_version("0.0.2"))

    h.manager.handle_activation(newer)
    await until(lambda: len(h.queues) == 2 and len(h.queues[1].puts) == 2)

    old, new = h.queues
    assert [m.activation_id for m in new.puts] == [
        newer.activation_id,
        waiting.activation_id,
    ]
    assert {(m.revision, m.action.version) for m in new.puts} == {("2-bbb", "0.0.2")}
    assert h.ack.completed == []
    assert h.etcd.gets == 0
    # Its old containers can still pull from the outdated queue.
    assert h.manager.lookup(NS, FQN, "1-aaa") is old


async def test_queue_that_went_outdated_by_itself_takes_no_new_activations(
    h: Harness,
) -> None:
    await h.create("1-aaa")
    queue = h.queues[0]

    h.manager.queue_outdated(queue)  # type: ignore[arg-type]
    h.manager.handle_activation(activation(revision="1-aaa"))
    await until(lambda: h.ack.completed)

    assert queue.puts == []
    assert h.manager.lookup(NS, FQN, "1-aaa") is queue
    assert h.manager.leader_count == 0


async def test_failed_action_read_during_update_fails_the_activation(
    h: Harness,
) -> None:
    await h.create("1-aaa")
    h.store.fail = True

    h.manager.handle_activation(activation(revision="2-bbb"))
    await until(lambda: h.ack.completed)

    assert "database is down" in h.ack.errors()[0]
    assert len(h.queues) == 1


async def test_older_revision_runs_on_the_current_queue(h: Harness) -> None:
    await h.create("1-aaa")
    h.store.add_action("2-bbb")
    h.manager.handle_activation(activation(revision="2-bbb"))
    await until(lambda: len(h.queues) == 2 and h.queues[1].puts)
    h.watcher.put(LEADER_KEY, endpoints_json(OWN))

    h.manager.handle_activation(activation(revision="1-aaa"))

    assert [m.revision for m in h.queues[1].puts] == ["2-bbb", "2-bbb"]


async def test_lost_local_queue_is_recovered_once_for_self_routed_activations(
    h: Harness,
) -> None:
    # The leader key says this scheduler, but its queue is gone from the pool.
    await h.etcd.put(LEADER_KEY, endpoints_json(OWN))
    h.store.add_action("1-aaa")
    first, second = activation(), activation()

    h.manager.handle_activation(first)
    h.manager.handle_activation(second)
    await until(lambda: h.queues and len(h.queues[0].puts) == 2)

    assert len(h.queues) == 1
    assert h.queues[0].started == [False]
    assert [m.activation_id for m in h.queues[0].puts] == [
        first.activation_id,
        second.activation_id,
    ]


async def test_recovered_queue_takes_the_stored_revision_never_an_outdated_one(
    h: Harness,
) -> None:
    h.watcher.put(LEADER_KEY, endpoints_json(OWN))
    h.store.add_action("3-ccc", version="0.0.3")
    msg = activation(revision="1-aaa")

    h.manager.handle_activation(msg)
    await until(lambda: bool(h.queues) and bool(h.queues[0].puts))

    [queue] = h.queues
    assert (queue.revision, queue.action.version, queue.started) == (
        "3-ccc",
        "0.0.3",
        [False],
    )
    [put] = queue.puts
    assert (put.activation_id, put.revision, put.action.version) == (
        msg.activation_id,
        "3-ccc",
        "0.0.3",
    )
    assert h.manager.lookup(NS, FQN, "1-aaa") is None


async def test_create_queue_for_a_replaced_revision_starts_the_stored_one(
    h: Harness,
) -> None:
    h.store.add_action("3-ccc", version="0.0.3")

    created = await h.create("1-aaa")

    [queue] = h.queues
    assert created is True
    assert (queue.revision, queue.action.version) == ("3-ccc", "0.0.3")
    assert h.manager.lookup(NS, FQN, "1-aaa") is None


async def test_create_queue_next_to_a_draining_outdated_queue_starts_a_leader(
    h: Harness,
) -> None:
    await h.create("1-aaa")
    h.store.add_action("2-bbb")
    h.manager.handle_activation(activation(revision="2-bbb"))
    await until(lambda: len(h.queues) == 2 and bool(h.queues[1].puts))
    old, new = h.queues
    # The current queue idled out while the outdated one still drains.
    h.manager.queue_removed(new, outdated=False)  # type: ignore[arg-type]

    created = await h.create("1-aaa")

    assert created is True
    assert len(h.queues) == 3
    assert h.queues[2].revision == "2-bbb"
    assert h.manager.leader_count == 1
    assert old.outdated == 1


async def test_queue_that_fails_to_start_fails_the_activation(h: Harness) -> None:
    h.watcher.put(LEADER_KEY, endpoints_json(OWN))
    h.store.add_action("1-aaa")
    h.factory.start_error = CoordinationUnavailable("etcd is not answering")

    h.manager.handle_activation(activation())
    await until(lambda: h.ack.completed)

    assert h.ack.errors() == [QUEUE_START_TEXT]
    assert h.manager.queue_count == 0


async def test_recovery_of_a_deleted_action_fails_the_activation(h: Harness) -> None:
    h.watcher.put(LEADER_KEY, endpoints_json(OWN))

    h.manager.handle_activation(activation())
    await until(lambda: h.ack.completed)

    assert "not found" in h.ack.errors()[0]
    assert h.queues == []


async def test_removed_queue_leaves_the_pool(h: Harness) -> None:
    await h.create()
    queue = h.queues[0]

    h.manager.queue_removed(queue, outdated=False)  # type: ignore[arg-type]

    assert h.manager.queue_count == 0
    assert h.manager.lookup(NS, FQN, "1-aaa") is None


async def test_removal_of_a_replaced_queue_keeps_the_current_one(h: Harness) -> None:
    await h.create()
    stale = FakeQueue(NS, ACTION, "1-aaa", metadata())

    h.manager.queue_removed(stale, outdated=False)  # type: ignore[arg-type]

    assert h.manager.lookup(NS, FQN, "1-aaa") is h.queues[0]


async def test_forwarded_backlog_of_a_retired_queue_is_routed_again(h: Harness) -> None:
    await h.create()
    queue = h.queues[0]
    msgs = [activation(), activation()]
    h.manager.queue_removed(queue, outdated=False)  # type: ignore[arg-type]
    h.store.add_action("1-aaa")
    h.watcher.put(LEADER_KEY, endpoints_json(OWN))

    h.manager.forward(msgs)
    await until(lambda: len(h.queues) == 2 and len(h.queues[1].puts) == 2)

    assert h.queues[1].revision == "1-aaa"


# --- state, status, shutdown ------------------------------------------------------------------


async def test_scheduler_state_is_published_with_the_leader_queue_count(
    h: Harness,
) -> None:
    await h.create()
    await until(lambda: '"queueSize":1' in h.dms.updates[-1][1])

    key, value = h.dms.updates[-1]
    states = SchedulerStates.from_json(json.loads(value))
    assert key == KEYS.scheduler("0")
    assert (states.queue_size, states.endpoints) == (1, OWN)
    assert SchedulerStates.from_json(json.loads(h.dms.updates[0][1])).queue_size == 0


async def test_status_lists_every_queue_and_counts_waiting_activations(
    h: Harness,
) -> None:
    await h.create()
    h.manager.handle_activation(activation())

    status = h.manager.status()

    assert h.manager.queue_count == 1
    assert status[0]["fqn"] == str(ACTION)
    assert h.manager.waiting_count() == 1


async def test_graceful_shutdown_unregisters_and_retires_every_queue(
    h: Harness,
) -> None:
    await h.create()

    h.manager.graceful_shutdown()
    published = len(h.dms.updates)
    await asyncio.sleep(0.1)

    assert h.dms.unregistered == [KEYS.scheduler("0")]
    assert [q.shutdowns for q in h.queues] == [1]
    assert len(h.dms.updates) == published


async def test_shutting_down_scheduler_fails_what_would_need_a_new_queue(
    h: Harness,
) -> None:
    await h.create("1-aaa")
    h.store.add_action("2-bbb")
    h.manager.graceful_shutdown()
    older, newer = activation(revision="1-aaa"), activation(revision="2-bbb")

    h.manager.handle_activation(older)
    h.manager.handle_activation(newer)
    await until(lambda: h.ack.completed)

    assert h.queues[0].puts == [older]
    assert [m.activation_id for m, _ in h.ack.completed] == [newer.activation_id]
    assert h.ack.errors() == [SHUTTING_DOWN_TEXT]
    assert len(h.queues) == 1


async def test_shutting_down_scheduler_fails_what_it_would_have_to_look_up(
    h: Harness,
) -> None:
    h.manager.graceful_shutdown()

    h.manager.handle_activation(activation())
    await until(lambda: h.ack.completed)

    assert h.ack.errors() == [SHUTTING_DOWN_TEXT]
    assert h.etcd.gets == 0


async def test_drain_waits_until_the_pool_is_empty(h: Harness) -> None:
    await h.create()
    queue = h.queues[0]
    asyncio.get_running_loop().call_later(
        0.05,
        lambda: h.manager.queue_removed(queue, outdated=False),  # type: ignore[arg-type]
    )

    drained = await h.manager.drain(1.0)

    assert drained is True


async def test_drain_gives_up_after_its_bound(h: Harness) -> None:
    await h.create()

    drained = await h.manager.drain(0.05)

    assert drained is False


async def test_stop_stops_every_queue(h: Harness) -> None:
    await h.create()

    await h.manager.stop()

    assert h.queues[0].stopped is True
    assert h.manager.queue_count == 0


# --- the activation topic ----------------------------------------------------------------------


async def test_consumer_routes_activations_and_skips_bad_and_warm_up_messages() -> None:
    broker = MemoryBroker()
    h = await make(consumer=await broker.consumer("scheduler0", "scheduler0", 128))
    await h.create()
    warm_up = activation(action=WARM_UP_ACTION)
    good = activation()

    await broker.publish("scheduler0", b"garbage")
    await broker.publish("scheduler0", encode(warm_up.to_json()))
    await broker.publish("scheduler0", encode(good.to_json()))
    await until(lambda: h.queues[0].puts)

    assert [m.activation_id for m in h.queues[0].puts] == [good.activation_id]
    assert h.ack.completed == []
    await h.manager.stop()


async def test_intake_stops_a_bound_after_graceful_shutdown() -> None:
    broker = MemoryBroker()
    h = await make(consumer=await broker.consumer("scheduler0", "scheduler0", 128))
    await h.create()

    h.manager.graceful_shutdown()
    await asyncio.sleep(0.3)
    await broker.publish("scheduler0", encode(activation().to_json()))
    await asyncio.sleep(0.1)

    assert h.queues[0].puts == []
    assert broker.depth("scheduler0") == 1
    await h.manager.stop()


# --- namespace limit ---------------------------------------------------------------------------


async def test_namespace_limit_comes_from_the_identity_else_the_default(
    h: Harness,
) -> None:
    h.store.identities[NS] = identity()
    h.store.identities["carol"] = identity("carol").__class__(
        "carol", "carol", "u", "k", UserLimits(concurrent_invocations=3)
    )

    own = await h.manager.namespace_limit(NS)
    limited = await h.manager.namespace_limit("carol")
    unknown = await h.manager.namespace_limit("nobody")

    assert (own, limited, unknown) == (30, 3, 30)


async def test_namespace_limit_is_cached_briefly_and_survives_store_errors() -> None:
    now = [100.0]
    h = await make(clock=lambda: now[0])
    h.store.identities[NS] = identity().__class__(
        "s", NS, "u", "k", UserLimits(concurrent_invocations=5)
    )
    await h.manager.namespace_limit(NS)

    cached = await h.manager.namespace_limit(NS)
    reads = h.store.identity_reads
    now[0] += 2
    h.store.fail = True
    fallback = await h.manager.namespace_limit(NS)

    assert (cached, reads) == (5, 1)
    assert (fallback, h.store.identity_reads) == (5, 2)
    await h.manager.stop()
