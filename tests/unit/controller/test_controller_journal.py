"""ActivationJournal and recovery: every accepted activation ends with a record."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from pathlib import Path

import pytest

from wisp.controller.journal import (
    LOST_TEXT,
    TIMED_OUT_TEXT,
    ActivationJournal,
    recover_lost_activations,
)
from wisp.core.activation import ActivationResponse, ResponseStatus, WhiskActivation
from wisp.core.errors import StoreError
from wisp.infra.store.activations import JournalEntry
from wisp.infra.store.memory import MemoryStore
from wisp.infra.store.sqlite import SqliteStore

pytestmark = pytest.mark.timeout(10)


def entry(n: int, controller: str = "0") -> JournalEntry:
    return JournalEntry(
        activation_id=f"{n:032x}",
        namespace="guest",
        path="guest/pkg/slow",
        version="0.0.3",
        subject="guest-subject",
        controller_id=controller,
        start_ms=1_000 + n,
    )


def finished(n: int) -> WhiskActivation:
    return WhiskActivation(
        namespace="guest",
        name="slow",
        subject="guest-subject",
        activation_id=f"{n:032x}",
        start_ms=5,
        end_ms=9,
        response=ActivationResponse.ok({"done": n}),
    )


class CountingStore(MemoryStore):
    """Counts journal writes; can be told to refuse them."""

    def __init__(self) -> None:
        super().__init__()
        self.adds: list[int] = []
        self.removes: list[int] = []
        self.refuse = False

    async def journal_add(self, entries: Sequence[JournalEntry]) -> None:
        if self.refuse:
            raise StoreError("disk full")
        self.adds.append(len(entries))
        await asyncio.sleep(0.005)  # a write takes a while: others queue behind it
        await super().journal_add(entries)

    async def journal_remove(self, activation_ids: Collection[str]) -> None:
        self.removes.append(len(activation_ids))
        await super().journal_remove(activation_ids)


async def journal_ids(store: MemoryStore, controller: str = "0") -> set[str]:
    return {e.activation_id for e in await store.journal_entries(controller)}


async def eventually_empty(store: MemoryStore) -> None:
    for _ in range(200):
        if not await store.journal_entries("0"):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the journal was never emptied")


# --- recovery -------------------------------------------------------------------------


async def test_recovery_records_lost_activations_and_empties_the_journal() -> None:
    store = MemoryStore()
    await store.journal_add([entry(1), entry(2), entry(3, controller="1")])
    await store.put_activation(finished(2))

    lost = await recover_lost_activations(store, "0")

    record = await store.get_activation("guest", entry(1).activation_id)
    kept = await store.get_activation("guest", entry(2).activation_id)
    assert lost == 1
    assert record is not None
    assert record.response.status is ResponseStatus.WHISK_ERROR
    assert record.response.result == {"error": LOST_TEXT}
    assert (record.name, record.version, record.subject) == (
        "slow",
        "0.0.3",
        "guest-subject",
    )
    assert record.annotations == {"path": "guest/pkg/slow", "kind": "unknown"}
    assert record.start_ms == record.end_ms > 0
    assert kept == finished(2)
    assert await store.journal_entries("0") == []
    assert await journal_ids(store, "1") == {entry(3).activation_id}


async def test_recovery_with_an_empty_journal_records_nothing() -> None:
    store = MemoryStore()

    lost = await recover_lost_activations(store, "0")

    assert lost == 0
    assert await store.list_activations("guest") == []


async def test_recovery_finds_the_journal_of_a_reopened_sqlite_store(
    tmp_path: Path,
) -> None:
    first = await SqliteStore.open(tmp_path / "wisp.db")
    await first.journal_add([entry(1)])
    await first.close()
    second = await SqliteStore.open(tmp_path / "wisp.db")

    try:
        lost = await recover_lost_activations(second, "0")
        record = await second.get_activation("guest", entry(1).activation_id)
        left = await second.journal_entries("0")
    finally:
        await second.close()

    assert lost == 1
    assert record is not None and record.response.result == {"error": LOST_TEXT}
    assert left == []


# --- the running journal ----------------------------------------------------------------


async def test_added_entry_is_in_the_store_when_add_returns() -> None:
    store = CountingStore()
    journal = ActivationJournal(store)
    await journal.start()

    try:
        await journal.add(entry(1))
        stored = await journal_ids(store)
    finally:
        await journal.stop()

    assert stored == {entry(1).activation_id}


async def test_concurrent_adds_share_few_writes() -> None:
    store = CountingStore()
    journal = ActivationJournal(store)
    await journal.start()

    try:
        await asyncio.gather(*(journal.add(entry(n)) for n in range(50)))
    finally:
        await journal.stop()

    assert sum(store.adds) == 50
    assert len(store.adds) <= 3
    assert len(await journal_ids(store)) == 50


async def test_removals_are_batched_and_written_after_the_interval() -> None:
    store = CountingStore()
    journal = ActivationJournal(store, remove_interval_s=0.05)
    await journal.start()
    await asyncio.gather(*(journal.add(entry(n)) for n in range(10)))

    try:
        for n in range(10):
            journal.remove(entry(n).activation_id)
        right_after = len(await journal_ids(store))
        await eventually_empty(store)
    finally:
        await journal.stop()

    assert right_after == 10
    assert store.removes == [10]


async def test_a_full_batch_of_removals_is_written_at_once() -> None:
    store = CountingStore()
    journal = ActivationJournal(store, remove_interval_s=60, remove_batch=4)
    await journal.start()
    await asyncio.gather(*(journal.add(entry(n)) for n in range(4)))

    try:
        for n in range(4):
            journal.remove(entry(n).activation_id)
        await eventually_empty(store)
    finally:
        await journal.stop()

    assert store.removes == [4]


async def test_stop_writes_pending_removals_and_keeps_activations_in_flight() -> None:
    store = CountingStore()
    journal = ActivationJournal(store, remove_interval_s=60)
    await journal.start()
    await journal.add(entry(1))
    await journal.add(entry(2))
    journal.remove(entry(1).activation_id)

    await journal.stop()

    assert await journal_ids(store) == {entry(2).activation_id}


async def test_timed_out_activation_gets_a_record_unless_it_has_one() -> None:
    store = CountingStore()
    journal = ActivationJournal(store, remove_interval_s=0.01)
    await journal.start()
    await journal.add(entry(1))
    await journal.add(entry(2))
    await store.put_activation(finished(2))

    try:
        journal.timed_out(entry(1))
        journal.timed_out(entry(2))
        await eventually_empty(store)
    finally:
        await journal.stop()

    lost = await store.get_activation("guest", entry(1).activation_id)
    kept = await store.get_activation("guest", entry(2).activation_id)
    assert lost is not None and lost.response.result == {"error": TIMED_OUT_TEXT}
    assert kept == finished(2)


async def test_refused_entry_fails_the_add_and_the_journal_goes_on() -> None:
    store = CountingStore()
    journal = ActivationJournal(store)
    await journal.start()

    try:
        store.refuse = True
        with pytest.raises(StoreError, match="disk full"):
            await journal.add(entry(1))
        store.refuse = False
        await asyncio.wait_for(journal.add(entry(2)), 5.0)
    finally:
        await journal.stop()

    assert await journal_ids(store) == {entry(2).activation_id}


async def test_add_after_stop_is_refused() -> None:
    journal = ActivationJournal(MemoryStore())
    await journal.start()
    await journal.stop()

    with pytest.raises(StoreError):
        await journal.add(entry(1))
