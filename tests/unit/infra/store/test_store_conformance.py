"""One behaviour for both store backends: MemoryStore and SqliteStore."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from wisp.core.activation import ActivationResponse, WhiskActivation
from wisp.core.entity import ActionLimits, Exec, Identity, UserLimits, WhiskAction
from wisp.core.errors import ConflictError
from wisp.infra.store.activations import JournalEntry
from wisp.infra.store.memory import MemoryStore
from wisp.infra.store.sqlite import SqliteStore

pytestmark = pytest.mark.timeout(10)

Store = MemoryStore | SqliteStore


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    backend: Store
    if request.param == "memory":
        backend = MemoryStore()
    else:
        backend = await SqliteStore.open(tmp_path / "wisp.db")
    yield backend
    await backend.close()


def _action(name: str = "hello", code: str = "def main(a): return a") -> WhiskAction:
    return WhiskAction(
        namespace="guest",
        name=name,
        exec=Exec("python:3", code),
        parameters={"greeting": "hi"},
        limits=ActionLimits(timeout_ms=3000, memory_mb=128),
        annotations={"web-export": False},
    )


def _activation(
    activation_id: str,
    start_ms: int,
    *,
    name: str = "hello",
    namespace: str = "guest",
    duration_ms: int = 10,
) -> WhiskActivation:
    return WhiskActivation(
        namespace=namespace,
        name=name,
        subject="guest",
        activation_id=activation_id,
        start_ms=start_ms,
        end_ms=start_ms + duration_ms,
        response=ActivationResponse.ok({"n": start_ms}),
        logs=["2024-01-01T00:00:00Z stdout: hi"],
        annotations={"path": f"{namespace}/{name}", "kind": "python:3"},
    )


# --- actions -------------------------------------------------------------------------


async def test_created_action_reads_back_with_first_revision(store: Store) -> None:
    stored = await store.put_action(_action(), overwrite=False)

    read = await store.get_action("guest", "hello")

    assert read == stored
    assert stored.rev.startswith("1-")
    assert stored.version == "0.0.1"
    assert stored.updated_ms > 0
    assert read is not None and read.exec.code == "def main(a): return a"
    assert read.parameters == {"greeting": "hi"}
    assert read.limits.memory_mb == 128


async def test_create_over_existing_action_conflicts(store: Store) -> None:
    await store.put_action(_action(), overwrite=False)

    with pytest.raises(ConflictError, match="resource already exists"):
        await store.put_action(_action(code="def main(a): return {}"), overwrite=False)

    read = await store.get_action("guest", "hello")
    assert read is not None and read.exec.code == "def main(a): return a"


async def test_update_bumps_version_and_revision(store: Store) -> None:
    first = await store.put_action(_action(), overwrite=False)

    second = await store.put_action(
        _action(code="def main(a): return {}"), overwrite=True
    )

    assert second.version == "0.0.2"
    assert second.rev.startswith("2-")
    assert second.rev != first.rev
    assert await store.get_action("guest", "hello") == second


async def test_delete_returns_the_action_once(store: Store) -> None:
    stored = await store.put_action(_action(), overwrite=False)

    deleted = await store.delete_action("guest", "hello")
    again = await store.delete_action("guest", "hello")

    assert deleted == stored
    assert again is None
    assert await store.get_action("guest", "hello") is None


async def test_recreated_action_continues_the_revision_generation(
    store: Store,
) -> None:
    await store.put_action(_action(), overwrite=False)
    updated = await store.put_action(_action(code="v2"), overwrite=True)
    await store.delete_action("guest", "hello")

    recreated = await store.put_action(_action(code="v3"), overwrite=False)

    assert updated.rev.startswith("2-")
    assert recreated.rev.startswith("3-")
    assert recreated.version == "0.0.1"
    assert await store.get_action("guest", "hello") == recreated


async def test_recreated_action_with_the_same_code_gets_a_newer_revision(
    store: Store,
) -> None:
    first = await store.put_action(_action(), overwrite=False)
    await store.delete_action("guest", "hello")

    again = await store.put_action(_action(), overwrite=True)
    await store.delete_action("guest", "hello")
    third = await store.put_action(_action(), overwrite=False)

    assert first.rev.startswith("1-")
    assert again.rev.startswith("2-")
    assert third.rev.startswith("3-")


async def test_tombstone_of_one_action_leaves_others_at_generation_one(
    store: Store,
) -> None:
    await store.put_action(_action("gone"), overwrite=False)
    await store.delete_action("guest", "gone")
    other_ns = WhiskAction(namespace="other", name="gone", exec=Exec("python:3", "x"))

    fresh = await store.put_action(_action("fresh"), overwrite=False)
    elsewhere = await store.put_action(other_ns, overwrite=False)

    assert fresh.rev.startswith("1-")
    assert elsewhere.rev.startswith("1-")


async def test_list_actions_pages_within_the_namespace(store: Store) -> None:
    for name in ("a", "b", "c"):
        await store.put_action(_action(name), overwrite=False)
    other = WhiskAction(namespace="other", name="x", exec=Exec("python:3", "x"))
    await store.put_action(other, overwrite=False)

    everything = await store.list_actions("guest")
    page = await store.list_actions("guest", skip=1, limit=1)

    assert sorted(a.name for a in everything) == ["a", "b", "c"]
    assert len(page) == 1 and page[0] == everything[1]


# --- identities ----------------------------------------------------------------------


async def test_identity_is_found_by_key_and_namespace_only_with_the_right_key(
    store: Store,
) -> None:
    alice = Identity("alice", "alice-ns", "uuid-a", "secret", UserLimits(60, 5))
    await store.put_identity(alice)

    by_key = await store.identity_by_key("uuid-a", "secret")
    wrong_key = await store.identity_by_key("uuid-a", "guess")
    by_namespace = await store.identity_by_namespace("alice-ns")

    assert by_key == alice
    assert wrong_key is None
    assert by_namespace == alice
    assert await store.identity_by_namespace("nobody") is None


async def test_ensure_identity_keeps_an_existing_one(store: Store) -> None:
    original = Identity("guest", "guest", "uuid-g", "key-1")
    await store.put_identity(original)

    kept = await store.ensure_identity(Identity("guest", "guest", "uuid-g", "key-2"))

    assert kept == original
    assert await store.identity_by_key("uuid-g", "key-2") is None


# --- activations -----------------------------------------------------------------------


async def test_activation_reads_back_only_in_its_namespace(store: Store) -> None:
    record = _activation("a" * 32, 1000)
    await store.put_activation(record)

    read = await store.get_activation("guest", "a" * 32)
    elsewhere = await store.get_activation("other", "a" * 32)

    assert read == record
    assert elsewhere is None


async def test_activations_list_newest_first_with_filters(store: Store) -> None:
    for i, start in enumerate((1000, 3000, 2000)):
        await store.put_activation(_activation(f"{i:032x}", start))
    await store.put_activation(_activation("f" * 32, 2500, name="other"))
    await store.put_activation(_activation("e" * 32, 9000, namespace="elsewhere"))

    everything = await store.list_activations("guest")
    named = await store.list_activations("guest", name="hello")
    by_path = await store.list_activations("guest", name="guest/other")
    window = await store.list_activations("guest", since_ms=2000, upto_ms=2500)
    page = await store.list_activations("guest", skip=1, limit=2)

    assert [a.start_ms for a in everything] == [3000, 2500, 2000, 1000]
    assert [a.start_ms for a in named] == [3000, 2000, 1000]
    assert [a.name for a in by_path] == ["other"]
    assert [a.start_ms for a in window] == [2500, 2000]
    assert [a.start_ms for a in page] == [2500, 2000]


async def test_put_activation_replaces_the_record_with_the_same_id(
    store: Store,
) -> None:
    await store.put_activation(_activation("a" * 32, 1000, duration_ms=5))

    await store.put_activation(_activation("a" * 32, 1000, duration_ms=50))

    listed = await store.list_activations("guest")
    assert len(listed) == 1 and listed[0].duration_ms == 50


async def test_average_duration_counts_the_action_since_a_time(store: Store) -> None:
    await store.put_activation(_activation("1" * 32, 1000, duration_ms=10))
    await store.put_activation(_activation("2" * 32, 2000, duration_ms=20))
    await store.put_activation(_activation("3" * 32, 3000, duration_ms=40))
    await store.put_activation(
        _activation("4" * 32, 3000, name="other", duration_ms=99)
    )

    average, count = await store.average_duration("guest", "guest/hello", 2000)
    none, zero = await store.average_duration("guest", "guest/missing", 0)

    assert (average, count) == (30.0, 2)
    assert (none, zero) == (None, 0)


# --- activation journal -----------------------------------------------------------------


def _entry(
    activation_id: str, controller: str = "0", start_ms: int = 1
) -> JournalEntry:
    return JournalEntry(
        activation_id=activation_id,
        namespace="guest",
        path="guest/hello",
        version="0.0.1",
        subject="guest",
        controller_id=controller,
        start_ms=start_ms,
    )


async def test_journal_lists_the_entries_of_one_controller_oldest_first(
    store: Store,
) -> None:
    await store.journal_add([_entry("b" * 32, start_ms=20), _entry("a" * 32, "1")])
    await store.journal_add([_entry("c" * 32, start_ms=10)])

    mine = await store.journal_entries("0")
    theirs = await store.journal_entries("1")
    nobody = await store.journal_entries("7")

    assert mine == [_entry("c" * 32, start_ms=10), _entry("b" * 32, start_ms=20)]
    assert theirs == [_entry("a" * 32, "1")]
    assert nobody == []
    assert mine[0].name == "hello"


async def test_journal_remove_drops_known_ids_and_ignores_unknown_ones(
    store: Store,
) -> None:
    await store.journal_add([_entry("a" * 32), _entry("b" * 32)])

    await store.journal_remove(["a" * 32, "f" * 32])
    await store.journal_remove([])

    assert await store.journal_entries("0") == [_entry("b" * 32)]


async def test_journal_takes_large_batches(store: Store) -> None:
    entries = [_entry(f"{i:032x}", start_ms=i) for i in range(300)]

    await store.journal_add(entries)
    await store.journal_add([_entry(f"{0:032x}", start_ms=0)])
    await store.journal_remove([e.activation_id for e in entries[:250]])

    assert await store.journal_entries("0") == entries[250:]


# --- durability (SQLite only) ------------------------------------------------------------


async def test_sqlite_store_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "wisp.db"
    first = await SqliteStore.open(path)
    stored = await first.put_action(_action(), overwrite=False)
    await first.put_identity(Identity("guest", "guest", "uuid-g", "key"))
    await first.put_activation(_activation("a" * 32, 1000))
    await first.close()

    second = await SqliteStore.open(path)
    try:
        action = await second.get_action("guest", "hello")
        identity = await second.identity_by_key("uuid-g", "key")
        activation = await second.get_activation("guest", "a" * 32)
    finally:
        await second.close()

    assert action == stored
    assert identity is not None and identity.namespace == "guest"
    assert activation is not None and activation.response.result == {"n": 1000}


async def test_sqlite_tombstones_and_journal_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "wisp.db"
    first = await SqliteStore.open(path)
    await first.put_action(_action(), overwrite=False)
    await first.delete_action("guest", "hello")
    await first.journal_add([_entry("a" * 32)])
    await first.close()

    second = await SqliteStore.open(path)
    try:
        recreated = await second.put_action(_action(), overwrite=False)
        journal = await second.journal_entries("0")
    finally:
        await second.close()

    assert recreated.rev.startswith("2-")
    assert journal == [_entry("a" * 32)]
