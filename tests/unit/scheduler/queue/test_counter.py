"""NamespaceContainerCount on the embedded etcd and the real WatcherService."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from wisp.core.errors import CoordinationError
from wisp.infra.etcd.keys import EtcdKeys
from wisp.infra.etcd.memory import MemoryEtcd
from wisp.infra.etcd.watcher import WatcherService
from wisp.scheduler.queue.counter import NamespaceContainerCountRegistry

pytestmark = pytest.mark.timeout(10)

KEYS = EtcdKeys("whisk")
NS = "alice"


async def eventually(check: Callable[[], bool], timeout_s: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


def existing(ns: str, action: str, container: str, rev: str = "1-a") -> str:
    return KEYS.existing_container(ns, f"bob/{action}", rev, 0, container)


def in_progress(ns: str, action: str, creation: str, rev: str = "1-a") -> str:
    return KEYS.in_progress_container(ns, f"bob/{action}", rev, "0", creation)


class FlakyEtcd(MemoryEtcd):
    """Fails the next `failures` counts."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 0
        self.counts = 0

    async def get_count(self, prefix: str) -> int:
        self.counts += 1
        if self.failures > 0:
            self.failures -= 1
            raise CoordinationError("etcd unavailable")
        return await super().get_count(prefix)


@pytest.fixture
async def etcd() -> AsyncIterator[FlakyEtcd]:
    store = FlakyEtcd()
    yield store
    await store.close()


@pytest.fixture
async def watcher(etcd: FlakyEtcd) -> AsyncIterator[WatcherService]:
    service = WatcherService(etcd)
    await service.start()
    yield service
    await service.stop()


@pytest.fixture
def registry(
    etcd: FlakyEtcd, watcher: WatcherService
) -> NamespaceContainerCountRegistry:
    return NamespaceContainerCountRegistry(etcd, KEYS, watcher)


async def test_counter_is_shared_within_a_namespace(
    registry: NamespaceContainerCountRegistry,
) -> None:
    counters = [registry.acquire(NS) for _ in range(100)]

    first = counters[0]

    assert all(c is first for c in counters)
    assert first.references == 100
    assert len(registry) == 1


async def test_counter_stops_counting_only_after_the_last_release(
    registry: NamespaceContainerCountRegistry,
    etcd: FlakyEtcd,
    watcher: WatcherService,
) -> None:
    counter = registry.acquire(NS)
    for _ in range(99):
        registry.acquire(NS)
    await watcher.wait_ready()

    for _ in range(99):
        registry.release(NS)
    await etcd.put(existing(NS, "a", "c1"), "")
    await eventually(lambda: counter.existing_container_num == 1)
    registry.release(NS)
    await etcd.put(existing(NS, "a", "c2"), "")
    await asyncio.sleep(0.05)

    assert counter.existing_container_num == 1
    assert len(registry) == 0
    assert registry.get(NS) is None


async def test_counts_follow_puts_and_deletes_of_the_namespace_only(
    registry: NamespaceContainerCountRegistry,
    etcd: FlakyEtcd,
    watcher: WatcherService,
) -> None:
    counter = registry.acquire(NS)
    await watcher.wait_ready()

    await etcd.put(existing(NS, "a", "c1"), "")
    await etcd.put(existing(NS, "b", "c2"), "")  # another action of the namespace
    await etcd.put(existing("alice2", "a", "c3"), "")  # another namespace
    await etcd.put(in_progress(NS, "a", "k1"), "")
    await eventually(
        lambda: (
            (counter.existing_container_num, counter.in_progress_container_num)
            == (2, 1)
        )
    )
    await etcd.delete(existing(NS, "a", "c1"))
    await etcd.delete(in_progress(NS, "a", "k1"))
    await eventually(
        lambda: (
            (counter.existing_container_num, counter.in_progress_container_num)
            == (1, 0)
        )
    )

    assert counter.existing_container_num == 1
    assert counter.in_progress_container_num == 0


async def test_rapid_inserts_converge_through_coalesced_recounts(
    registry: NamespaceContainerCountRegistry,
    etcd: FlakyEtcd,
    watcher: WatcherService,
) -> None:
    counter = registry.acquire(NS)
    await watcher.wait_ready()
    await counter.recount()
    counts_before = etcd.counts

    for i in range(101):
        await etcd.put(existing(NS, "a", f"c{i}"), "")
    await eventually(lambda: counter.existing_container_num == 101)

    assert counter.existing_container_num == 101
    # Coalescing: far fewer counts than events.
    assert etcd.counts - counts_before < 101


async def test_counter_counts_keys_that_exist_before_it_is_acquired(
    registry: NamespaceContainerCountRegistry, etcd: FlakyEtcd
) -> None:
    await etcd.put(existing(NS, "a", "c1"), "")
    await etcd.put(existing(NS, "a", "c2"), "")
    await etcd.put(in_progress(NS, "a", "k1"), "")

    counter = registry.acquire(NS)
    await counter.recount()

    assert counter.existing_container_num == 2
    assert counter.in_progress_container_num == 1


async def test_failed_count_is_retried_on_the_next_event(
    registry: NamespaceContainerCountRegistry,
    etcd: FlakyEtcd,
    watcher: WatcherService,
) -> None:
    counter = registry.acquire(NS)
    await watcher.wait_ready()
    await counter.recount()
    etcd.failures = 1

    await etcd.put(existing(NS, "a", "c1"), "")
    await asyncio.sleep(0.05)
    missed = counter.existing_container_num
    await etcd.put(existing(NS, "a", "c2"), "")
    await eventually(lambda: counter.existing_container_num == 2)

    assert missed == 0
    assert counter.existing_container_num == 2
