"""ContainerManager: warmed-first placement, creation sending, failures, deletion
(ContainerManagerTests)."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from wisp.config.load import load_config
from wisp.core.errors import CoordinationUnavailable
from wisp.core.messages import (
    ContainerCreationError,
    ContainerCreationMessage,
    InvokerResourceMessage,
    InvokerStatus,
)
from wisp.infra.etcd.keys import EtcdKeys
from wisp.infra.etcd.memory import MemoryEtcd
from wisp.scheduler.container.manager import ContainerManager

from ..fakes import (
    ACTION,
    FQN,
    NS,
    FakeProducer,
    FakeQueue,
    FakeWatcher,
    creation,
    metadata,
    until,
)

pytestmark = pytest.mark.timeout(10)

KEYS = EtcdKeys()
REV = "1-aaa"


class RecordingJobs:
    def __init__(self) -> None:
        self.registered: list[ContainerCreationMessage] = []
        self.errors: list[tuple[str, ContainerCreationError, str]] = []

    def register(self, msg: ContainerCreationMessage) -> None:
        self.registered.append(msg)

    def creation_error(
        self, msg: ContainerCreationMessage, error: ContainerCreationError, reason: str
    ) -> None:
        self.errors.append((msg.creation_id, error, reason))


class BrokenEtcd(MemoryEtcd):
    async def get_prefix(self, prefix: str) -> list[Any]:
        raise CoordinationUnavailable("etcd is down")


@dataclass
class Harness:
    manager: ContainerManager
    etcd: MemoryEtcd
    watcher: FakeWatcher
    producer: FakeProducer
    jobs: RecordingJobs
    queue: FakeQueue
    created: list[tuple[str, str]] = field(default_factory=list)

    async def invoker(
        self,
        iid: int,
        free_mb: int = 1024,
        *,
        status: str = "up",
        tags: tuple[str, ...] = (),
        dedicated: tuple[str, ...] = (),
        cluster: str = "whisk",
    ) -> None:
        resource = InvokerResourceMessage(
            InvokerStatus(status), free_mb, 0, 0, tags, dedicated
        )
        await self.etcd.put(
            EtcdKeys(cluster).invoker(iid, f"invoker{iid}"),
            json.dumps(resource.to_json()),
        )

    async def warmed(self, iid: int, container: str, revision: str = REV) -> str:
        key = KEYS.warmed_container(NS, FQN, revision, iid, container)
        await self.etcd.put(key, "")
        self.watcher.put(key)
        return key

    def sent(self) -> list[tuple[str, str]]:
        """(topic, creation id) of the creation messages sent so far."""
        return [
            (t, m["creationId"]) for t, m in self.producer.sent if "creationId" in m
        ]


async def make(etcd: MemoryEtcd | None = None, seed: int = 1) -> Harness:
    config = load_config().scheduler
    etcd = etcd or MemoryEtcd()
    watcher = FakeWatcher()
    producer = FakeProducer()
    jobs = RecordingJobs()
    queue = FakeQueue(NS, ACTION, REV, metadata())

    def lookup(ns: str, fqn: str, rev: str) -> Any:
        return queue if (ns, fqn, rev) == (NS, FQN, REV) else None

    manager = ContainerManager(
        config=config,
        etcd=etcd,
        keys=KEYS,
        watcher=watcher,  # type: ignore[arg-type]
        producer=producer,
        jobs=jobs,
        lookup=lookup,
        rng=random.Random(seed),
    )
    await manager.start()
    return Harness(manager, etcd, watcher, producer, jobs, queue)


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = await make()
    yield harness
    await harness.manager.stop()


async def test_creations_are_registered_and_sent_to_invoker_topics(h: Harness) -> None:
    await h.invoker(0)
    msgs = [creation("c1"), creation("c2")]

    h.manager.create_containers(msgs, 256, NS)
    await until(lambda: len(h.sent()) == 2)

    assert h.sent() == [("invoker0", "c1"), ("invoker0", "c2")]
    assert [m.creation_id for m in h.jobs.registered] == ["c1", "c2"]


async def test_warmed_containers_are_used_first_then_cold_placement(h: Harness) -> None:
    # Invokers 0 and 1 hold warmed containers and drop out once those are reserved.
    await h.invoker(0, 300)
    await h.invoker(1, 300)
    await h.invoker(2, 1024)
    await h.warmed(0, "w0")
    await h.warmed(1, "w1")

    h.manager.create_containers([creation("a"), creation("b"), creation("c")], 256, NS)
    await until(lambda: len(h.sent()) == 3)

    assert sorted(h.sent()) == [("invoker0", "a"), ("invoker1", "b"), ("invoker2", "c")]


async def test_warmed_containers_of_another_revision_are_not_used(h: Harness) -> None:
    await h.invoker(0)
    await h.invoker(1)
    await h.warmed(1, "w1", revision="2-bbb")
    h.manager._rng = _FirstRng()

    h.manager.create_containers([creation("a")], 256, NS)
    await until(lambda: len(h.sent()) == 1)

    assert h.sent() == [("invoker0", "a")]


async def test_warmed_container_on_an_unusable_invoker_is_not_reserved(
    h: Harness,
) -> None:
    await h.invoker(0)
    await h.invoker(1, status="unhealthy")
    await h.warmed(1, "w1")

    h.manager.create_containers([creation("a")], 256, NS)
    await until(lambda: len(h.sent()) == 1)
    await h.invoker(1)
    h.manager.create_containers([creation("b")], 256, NS)
    await until(lambda: len(h.sent()) == 2)

    assert h.sent() == [("invoker0", "a"), ("invoker1", "b")]


async def test_a_reserved_warmed_container_is_reused_only_after_its_creation_ends(
    h: Harness,
) -> None:
    await h.invoker(0)
    await h.invoker(1)
    await h.warmed(1, "w1")
    h.manager._rng = _FirstRng()

    h.manager.create_containers([creation("a")], 256, NS)
    await until(lambda: len(h.sent()) == 1)
    h.manager.create_containers([creation("b")], 256, NS)
    await until(lambda: len(h.sent()) == 2)
    h.manager.creation_finished("a")
    h.manager.create_containers([creation("c")], 256, NS)
    await until(lambda: len(h.sent()) == 3)

    assert h.sent() == [("invoker1", "a"), ("invoker0", "b"), ("invoker1", "c")]


async def test_warmed_keys_follow_watch_events_and_the_initial_read() -> None:
    etcd = MemoryEtcd()
    existing = KEYS.warmed_container(NS, FQN, REV, 3, "old")
    await etcd.put(existing, "")
    h = await make(etcd)
    added = KEYS.warmed_container(NS, FQN, REV, 4, "new")

    h.watcher.put(added)
    h.watcher.delete(existing)

    assert h.manager.warmed_containers == {added}
    await h.manager.stop()


async def test_rescheduling_sends_the_same_creation_id_with_the_raised_retry_count(
    h: Harness,
) -> None:
    await h.invoker(0)

    h.manager.reschedule(creation("c1", retry_count=2))
    await until(lambda: h.sent())

    topic, raw = h.producer.sent[0]
    assert (topic, raw["creationId"], raw["retryCount"]) == ("invoker0", "c1", 2)
    assert [m.creation_id for m in h.jobs.registered] == ["c1"]


async def test_no_available_invokers_fails_each_creation_at_its_queue(
    h: Harness,
) -> None:
    h.manager.create_containers([creation("a"), creation("b")], 256, NS)
    await until(lambda: len(h.queue.failed) == 2)

    error = ContainerCreationError.NO_AVAILABLE_INVOKERS
    assert h.queue.failed == [("a", error, error.text), ("b", error, error.text)]
    assert h.producer.sent == []
    assert h.jobs.registered == []


async def test_failed_invoker_query_fails_creations_at_their_queue() -> None:
    h = await make(BrokenEtcd())

    h.manager.create_containers([creation("a")], 256, NS)
    await until(lambda: h.queue.failed)

    assert h.queue.failed[0][1] is ContainerCreationError.NO_AVAILABLE_INVOKERS
    await h.manager.stop()


async def test_failed_placement_of_a_retry_goes_back_to_the_job(h: Harness) -> None:
    h.manager.reschedule(creation("c1", retry_count=1))
    await until(lambda: h.jobs.errors)

    assert h.jobs.errors == [
        (
            "c1",
            ContainerCreationError.NO_AVAILABLE_INVOKERS,
            ContainerCreationError.NO_AVAILABLE_INVOKERS.text,
        )
    ]
    assert h.queue.failed == []


async def test_failed_send_is_reported_to_the_job_as_whisk_error(h: Harness) -> None:
    await h.invoker(0)
    h.producer.fail = True

    h.manager.create_containers([creation("a")], 256, NS)
    await until(lambda: h.jobs.errors)

    assert [m.creation_id for m in h.jobs.registered] == ["a"]
    assert h.jobs.errors[0][:2] == ("a", ContainerCreationError.WHISK_ERROR)


async def test_strict_tag_miss_fails_with_no_resource_invokers(h: Harness) -> None:
    await h.invoker(0)
    meta = metadata(annotations={"invoker-resources": ["gpu"]})

    h.manager.create_containers([creation("a", meta=meta)], 256, NS)
    await until(lambda: h.queue.failed)

    assert h.queue.failed[0][1] is ContainerCreationError.NO_AVAILABLE_RESOURCE_INVOKERS


async def test_blackbox_creation_goes_to_the_blackbox_partition(h: Harness) -> None:
    for iid in range(10):
        await h.invoker(iid)

    h.manager.create_containers(
        [creation("a", meta=metadata(kind="blackbox"))], 256, NS
    )
    await until(lambda: h.sent())

    assert h.sent() == [("invoker9", "a")]


async def test_invokers_come_from_own_cluster_and_serve_the_namespace(
    h: Harness,
) -> None:
    await h.invoker(0, cluster="other")
    await h.invoker(1, dedicated=("carol",))
    await h.invoker(2, dedicated=(NS,))
    await h.invoker(3, 100)

    usable = await h.manager.available_invokers(256, NS)

    assert [inv.id for inv in usable] == [2]


async def test_deletion_goes_to_invokers_with_containers_of_old_revisions(
    h: Harness,
) -> None:
    await h.etcd.put(KEYS.existing_container(NS, FQN, "1-aaa", 0, "a"), "")
    await h.etcd.put(KEYS.existing_container(NS, FQN, "2-bbb", 1, "b"), "")
    await h.etcd.put(KEYS.existing_container(NS, FQN, "3-ccc", 2, "c"), "")
    await h.etcd.put(KEYS.warmed_container(NS, FQN, "1-aaa", 3, "d"), "")
    await h.etcd.put(KEYS.existing_container("other", FQN, "1-aaa", 4, "e"), "")

    h.manager.delete_containers(NS, ACTION, "2-bbb", metadata())
    await until(lambda: len(h.producer.sent) == 3)

    topics = [topic for topic, _ in h.producer.sent]
    assert topics == ["invoker0", "invoker1", "invoker3"]
    raw = h.producer.sent[0][1]
    assert "creationId" not in raw
    assert (raw["invocationNamespace"], raw["revision"]) == (NS, "2-bbb")


class _FirstRng(random.Random):
    def randrange(self, *args: object, **kwargs: object) -> int:  # type: ignore[override]
        return 0
