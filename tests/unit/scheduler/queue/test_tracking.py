"""The containers and creations a queue tracks: read at start, followed by watch
events, and the namespace counts that never fall below the queue's own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import pytest

from wisp.infra.etcd.client import EventType, WatchEvent
from wisp.infra.etcd.keys import EtcdKeys
from wisp.infra.etcd.memory import MemoryEtcd
from wisp.infra.etcd.watcher import WatchCallback, WatcherService
from wisp.scheduler.queue.counter import NamespaceContainerCountRegistry
from wisp.scheduler.queue.tracking import ContainerTracker

pytestmark = pytest.mark.timeout(5)

KEYS = EtcdKeys("whisk")
NS = "alice"
FQN = "bob/utils/resize"
REV = "1-aaa"


def existing_key(container_id: str) -> str:
    return KEYS.existing_container(NS, FQN, REV, 0, container_id)


def in_progress_key(creation_id: str) -> str:
    return KEYS.in_progress_container(NS, FQN, REV, "0", creation_id)


class FakeWatcher:
    def __init__(self) -> None:
        self.callbacks: dict[tuple[str, EventType], WatchCallback] = {}

    def watch(
        self,
        key: str,
        *,
        prefix: bool,
        name: str,
        on_put: WatchCallback | None = None,
        on_delete: WatchCallback | None = None,
    ) -> None:
        if on_put is not None:
            self.callbacks[(key, EventType.PUT)] = on_put
        if on_delete is not None:
            self.callbacks[(key, EventType.DELETE)] = on_delete

    def unwatch(self, key: str, *, prefix: bool, name: str) -> None:
        for event_type in EventType:
            self.callbacks.pop((key, event_type), None)

    def emit(self, event_type: EventType, key: str) -> None:
        for (prefix, kind), callback in list(self.callbacks.items()):
            if kind is event_type and key.startswith(prefix):
                callback(WatchEvent(event_type, key, "{}", "", 9))


@dataclass
class FakeCount:
    existing_container_num: int = 0
    in_progress_container_num: int = 0


class FakeCounters:
    def __init__(self) -> None:
        self.count = FakeCount()
        self.holders = 0

    def acquire(self, namespace: str) -> FakeCount:
        self.holders += 1
        return self.count

    def release(self, namespace: str) -> None:
        self.holders -= 1


class Harness:
    def __init__(self) -> None:
        self.etcd = MemoryEtcd()
        self.watcher = FakeWatcher()
        self.counters = FakeCounters()
        self.live = True
        self.touches = 0
        self.gone: list[str] = []
        self.tracker = ContainerTracker(
            name="q",
            invocation_namespace=NS,
            fqn=FQN,
            revision=REV,
            keys=KEYS,
            etcd=self.etcd,
            watcher=cast(WatcherService, self.watcher),
            watch_name="test",
            counters=cast(NamespaceContainerCountRegistry, self.counters),
            is_live=lambda: self.live,
            touch=self.touch,
            container_gone=self.gone.append,
        )

    def touch(self) -> None:
        self.touches += 1


async def test_sync_reads_the_containers_and_creations_that_exist_already() -> None:
    h = Harness()
    await h.etcd.put(existing_key("c-1"), "{}")
    await h.etcd.put(in_progress_key("cid-1"), "{}")
    await h.etcd.put(KEYS.existing_container(NS, FQN, "2-bbb", 0, "c-other"), "{}")

    await h.tracker.sync()

    assert h.tracker.containers == {"c-1"}
    assert h.tracker.creations == {"cid-1"}


async def test_watch_events_add_and_remove_containers_and_creations() -> None:
    h = Harness()
    h.tracker.watch()

    h.watcher.emit(EventType.PUT, existing_key("c-1"))
    h.watcher.emit(EventType.PUT, existing_key("c-2"))
    h.watcher.emit(EventType.PUT, in_progress_key("cid-1"))
    h.watcher.emit(EventType.DELETE, existing_key("c-1"))
    h.watcher.emit(EventType.DELETE, in_progress_key("cid-1"))

    assert h.tracker.containers == {"c-2"}
    assert h.tracker.creations == set()
    assert h.gone == ["c-1"]
    assert h.touches == 5


async def test_events_after_the_queue_is_gone_change_nothing() -> None:
    h = Harness()
    h.tracker.watch()
    h.live = False

    h.watcher.emit(EventType.PUT, existing_key("c-1"))
    h.watcher.emit(EventType.PUT, in_progress_key("cid-1"))

    assert h.tracker.containers == set()
    assert h.tracker.creations == set()
    assert h.touches == 0


@pytest.mark.parametrize(
    ("reported", "expected"),
    [((0, 0), (2, 1)), ((5, 4), (5, 4))],
    ids=["lagging-counts", "ahead-counts"],
)
def test_namespace_counts_never_fall_below_the_queues_own(
    reported: tuple[int, int], expected: tuple[int, int]
) -> None:
    h = Harness()
    h.tracker.watch()
    h.counters.count.existing_container_num = reported[0]
    h.counters.count.in_progress_container_num = reported[1]
    h.tracker.containers.update({"c-1", "c-2"})
    h.tracker.creations.add("cid-1")

    counts = h.tracker.namespace_counts()

    assert counts == expected


def test_release_stops_watching_and_gives_the_namespace_counter_back() -> None:
    h = Harness()
    h.tracker.watch()

    h.tracker.release()
    h.tracker.release()

    assert h.watcher.callbacks == {}
    assert h.counters.holders == 0
