"""WatcherService resuming on the embedded store: broken streams, compacted history
and a server that came back with less history than the watcher saw."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from wisp.infra.etcd.client import WatchEvent
from wisp.infra.etcd.memory import MemoryEtcd
from wisp.infra.etcd.watcher import WatcherService

pytestmark = pytest.mark.timeout(10)


class Seen:
    def __init__(self) -> None:
        self.events: list[WatchEvent] = []

    def __call__(self, event: WatchEvent) -> None:
        self.events.append(event)

    def summary(self) -> list[tuple[str, str, str]]:
        return [(e.type.value, e.key, e.value) for e in self.events]


class SwappableEtcd:
    """Delegates to `inner`, which a test replaces to imitate a server whose data
    was lost."""

    def __init__(self, inner: MemoryEtcd) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
async def watcher(memory: MemoryEtcd) -> AsyncIterator[WatcherService]:
    service = WatcherService(memory)
    await service.start()
    yield service
    await service.stop()


async def test_a_broken_stream_resumes_without_losing_events(
    memory: MemoryEtcd, watcher: WatcherService, eventually: Any
) -> None:
    seen = Seen()
    watcher.watch("ns/", prefix=True, name="queue", on_put=seen, on_delete=seen)
    await watcher.wait_ready()
    await memory.put("ns/a", "1")
    await eventually(lambda: len(seen.events) == 1)

    memory.break_watches()
    await memory.put("ns/b", "2")  # while no stream is open
    await memory.delete("ns/a")

    await eventually(lambda: len(seen.events) == 3)
    assert seen.summary() == [
        ("put", "ns/a", "1"),
        ("put", "ns/b", "2"),
        ("delete", "ns/a", "1"),
    ]


async def test_compacted_history_is_re_read_and_the_difference_delivered(
    memory: MemoryEtcd, watcher: WatcherService, eventually: Any
) -> None:
    await memory.put("ns/gone", "old")
    await memory.put("ns/kept", "same")
    seen = Seen()
    watcher.watch("ns/", prefix=True, name="queue", on_put=seen, on_delete=seen)
    await watcher.wait_ready()

    # None of these awaits yields to the watcher: it reopens after all of them.
    memory.break_watches()
    await memory.delete("ns/gone")
    await memory.put("ns/new", "fresh")
    await memory.put("ns/other", "x")
    await memory.delete("ns/other")
    await memory.compact(await memory.current_revision())

    await eventually(lambda: len(seen.events) == 2)
    assert sorted(seen.summary()) == [
        ("delete", "ns/gone", "old"),
        ("put", "ns/new", "fresh"),
    ]
    await memory.put("ns/after", "live")
    await eventually(lambda: len(seen.events) == 3)


async def test_a_server_with_less_history_is_re_read(eventually: Any) -> None:
    first, second = MemoryEtcd(), MemoryEtcd()
    for i in range(5):
        await first.put(f"ns/{i}", "old")
    await second.put("ns/survivor", "new")
    etcd = SwappableEtcd(first)
    watcher = WatcherService(etcd)  # type: ignore[arg-type]
    seen = Seen()
    watcher.watch("ns/", prefix=True, name="queue", on_put=seen, on_delete=seen)
    await watcher.start()
    await watcher.wait_ready()

    etcd.inner = second  # revision 2 on a server where the watcher saw 6
    first.break_watches()
    await eventually(lambda: len(seen.events) == 6)
    await second.put("ns/later", "live")
    await eventually(lambda: len(seen.events) == 7)
    await watcher.stop()

    assert sorted(seen.summary()[:6]) == [
        ("delete", f"ns/{i}", "old") for i in range(5)
    ] + [("put", "ns/survivor", "new")]
    assert seen.summary()[6] == ("put", "ns/later", "live")


async def test_a_watch_registered_before_start_opens_at_start(
    memory: MemoryEtcd, eventually: Any
) -> None:
    watcher = WatcherService(memory)
    seen = Seen()
    watcher.watch("k", prefix=False, name="early", on_put=seen)

    await watcher.start()
    await watcher.wait_ready()
    await memory.put("k", "v")

    await eventually(lambda: seen.summary() == [("put", "k", "v")])
    await watcher.stop()


async def test_stop_ends_every_delivery(memory: MemoryEtcd) -> None:
    watcher = WatcherService(memory)
    seen = Seen()
    watcher.watch("k", prefix=False, name="queue", on_put=seen)
    await watcher.start()
    await watcher.wait_ready()

    await watcher.stop()
    await memory.put("k", "after stop")

    assert seen.events == []
