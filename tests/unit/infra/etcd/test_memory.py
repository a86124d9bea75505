"""MemoryEtcd behaviour the conformance suite cannot reach on a real server: its
bounded history and the broken-stream hook used by the watcher tests."""

from __future__ import annotations

import asyncio

import pytest

from wisp.core.errors import (
    CoordinationError,
    CoordinationUnavailable,
    RevisionCompacted,
)
from wisp.infra.etcd import memory as memory_store
from wisp.infra.etcd.client import WatchEvent
from wisp.infra.etcd.memory import MemoryEtcd


async def first_events(etcd: MemoryEtcd, start: int, count: int) -> list[WatchEvent]:
    watch = await etcd.watch("", prefix=True, start_revision=start)
    events: list[WatchEvent] = []
    async with asyncio.timeout(1.0):
        async for event in watch:
            events.append(event)
            if len(events) == count:
                break
    await watch.cancel()
    return events


async def test_history_beyond_its_size_is_compacted(
    memory: MemoryEtcd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(memory_module(), "HISTORY_SIZE", 3)
    revisions = [await memory.put(f"k{i}", "v") for i in range(5)]

    with pytest.raises(RevisionCompacted):
        await memory.watch("", prefix=True, start_revision=revisions[1])
    events = await first_events(memory, revisions[2], 3)

    assert [e.key for e in events] == ["k2", "k3", "k4"]


async def test_history_drops_whole_revisions_only(
    memory: MemoryEtcd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(memory_module(), "HISTORY_SIZE", 3)
    await memory.put("p/a", "1")
    await memory.put("p/b", "2")
    await memory.delete_prefix("p/")  # two events in one revision
    both_deleted = await memory.current_revision()

    await memory.put("q", "3")
    await memory.put("r", "4")  # pushes out one of the two deletes, not the other

    with pytest.raises(RevisionCompacted):
        await memory.watch("", prefix=True, start_revision=both_deleted)


async def test_a_watch_from_a_future_revision_skips_earlier_events(
    memory: MemoryEtcd,
) -> None:
    now = await memory.current_revision()
    watch = await memory.watch("", prefix=True, start_revision=now + 2)

    await memory.put("early", "skipped")
    later = await memory.put("late", "seen")

    async with asyncio.timeout(1.0):
        event = await anext(aiter(watch))
    assert (event.key, event.revision) == ("late", later)


async def test_compacting_a_future_revision_is_refused(memory: MemoryEtcd) -> None:
    with pytest.raises(CoordinationError):
        await memory.compact(await memory.current_revision() + 1)


async def test_break_watches_ends_iterations_with_unavailable(
    memory: MemoryEtcd,
) -> None:
    watch = await memory.watch("k")
    await memory.put("k", "before the break")

    memory.break_watches()

    seen = []
    with pytest.raises(CoordinationUnavailable):
        async for event in watch:
            seen.append(event.value)
    assert seen == ["before the break"]


def memory_module() -> object:
    return memory_store
