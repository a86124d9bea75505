"""The EtcdClient conformance suite: every test runs on the embedded MemoryEtcd and on
a real etcd server, and both must behave the same."""

from __future__ import annotations

import asyncio

import pytest

from wisp.core.errors import CoordinationError, LeaseNotFound, RevisionCompacted
from wisp.infra.etcd.client import EtcdClient, EventType, WatchEvent

pytestmark = [pytest.mark.etcd, pytest.mark.timeout(30)]


def put(key: str, value: str, prev: str, revision: int) -> WatchEvent:
    return WatchEvent(EventType.PUT, key, value, prev, revision)


def deleted(key: str, prev: str, revision: int) -> WatchEvent:
    return WatchEvent(EventType.DELETE, key, prev, prev, revision)


# --- keys and values ------------------------------------------------------------------


async def test_get_of_a_missing_key_returns_none(etcd: EtcdClient, ns: str) -> None:
    assert await etcd.get(ns + "missing") is None


async def test_put_then_get_returns_value_revisions_and_version(
    etcd: EtcdClient, ns: str
) -> None:
    first = await etcd.put(ns + "k", "v1")
    second = await etcd.put(ns + "k", "v2")

    kv = await etcd.get(ns + "k")

    assert second > first
    assert kv is not None
    assert (kv.key, kv.value, kv.version, kv.lease) == (ns + "k", "v2", 2, 0)
    assert (kv.create_revision, kv.mod_revision) == (first, second)


async def test_current_revision_is_the_revision_of_the_last_write(
    etcd: EtcdClient, ns: str
) -> None:
    revision = await etcd.put(ns + "k", "v")

    assert await etcd.current_revision() == revision


async def test_delete_reports_whether_the_key_existed(
    etcd: EtcdClient, ns: str
) -> None:
    await etcd.put(ns + "k", "v")

    existed = await etcd.delete(ns + "k")
    again = await etcd.delete(ns + "k")

    assert (existed, again) == (True, False)
    assert await etcd.get(ns + "k") is None


async def test_a_recreated_key_starts_again_at_version_one(
    etcd: EtcdClient, ns: str
) -> None:
    await etcd.put(ns + "k", "old")
    await etcd.put(ns + "k", "older")
    await etcd.delete(ns + "k")

    revision = await etcd.put(ns + "k", "new")
    kv = await etcd.get(ns + "k")

    assert kv is not None
    assert (kv.version, kv.create_revision, kv.value) == (1, revision, "new")


async def test_text_outside_ascii_round_trips(etcd: EtcdClient, ns: str) -> None:
    await etcd.put(ns + "clé/日本", "wert ü ✓")

    kv = await etcd.get(ns + "clé/日本")

    assert kv is not None
    assert kv.value == "wert ü ✓"
    assert [k.key for k in await etcd.get_prefix(ns + "clé/")] == [ns + "clé/日本"]


# --- prefixes -------------------------------------------------------------------------


async def test_get_prefix_returns_keys_in_order_and_ns1_excludes_ns10(
    etcd: EtcdClient, ns: str
) -> None:
    for key in ("ns1/b", "ns10/a", "ns1/a", "ns1", "ns2/a"):
        await etcd.put(ns + key, key)

    kvs = await etcd.get_prefix(ns + "ns1/")

    assert [kv.key for kv in kvs] == [ns + "ns1/a", ns + "ns1/b"]
    assert [kv.value for kv in kvs] == ["ns1/a", "ns1/b"]


async def test_get_count_counts_only_keys_under_the_prefix(
    etcd: EtcdClient, ns: str
) -> None:
    for key in ("ns1/a", "ns1/b", "ns1/c/d", "ns10/a", "ns1"):
        await etcd.put(ns + key, "")

    assert await etcd.get_count(ns + "ns1/") == 3
    assert await etcd.get_count(ns + "ns10/") == 1
    assert await etcd.get_count(ns + "nothing/") == 0


async def test_delete_prefix_removes_only_keys_under_the_prefix(
    etcd: EtcdClient, ns: str
) -> None:
    for key in ("ns1/a", "ns1/b", "ns10/a"):
        await etcd.put(ns + key, "")

    removed = await etcd.delete_prefix(ns + "ns1/")

    assert removed == 2
    assert [kv.key for kv in await etcd.get_prefix(ns)] == [ns + "ns10/a"]
    assert await etcd.delete_prefix(ns + "ns1/") == 0


# --- transactions ---------------------------------------------------------------------


async def test_put_txn_with_version_zero_creates_only_when_absent(
    etcd: EtcdClient, ns: str
) -> None:
    first = await etcd.put_txn(ns + "leader", "scheduler0", 0)
    second = await etcd.put_txn(ns + "leader", "scheduler1", 0)

    kv = await etcd.get(ns + "leader")

    assert (first, second) == (True, False)
    assert kv is not None and kv.value == "scheduler0"


async def test_put_txn_compares_the_current_version(etcd: EtcdClient, ns: str) -> None:
    await etcd.put(ns + "k", "a")
    await etcd.put(ns + "k", "b")

    stale = await etcd.put_txn(ns + "k", "from-v1", 1)
    current = await etcd.put_txn(ns + "k", "from-v2", 2)

    kv = await etcd.get(ns + "k")
    assert (stale, current) == (False, True)
    assert kv is not None and (kv.value, kv.version) == ("from-v2", 3)


async def test_put_txn_binds_the_key_to_the_lease(etcd: EtcdClient, ns: str) -> None:
    lease = await etcd.grant(30)

    await etcd.put_txn(ns + "leader", "me", 0, lease.id)
    await etcd.revoke(lease.id)

    assert await etcd.get(ns + "leader") is None


async def test_compare_and_swap_replaces_only_the_expected_value(
    etcd: EtcdClient, ns: str
) -> None:
    await etcd.put(ns + "k", "false")

    wrong = await etcd.compare_and_swap(ns + "k", "true", "x")
    right = await etcd.compare_and_swap(ns + "k", "false", "true")

    kv = await etcd.get(ns + "k")
    assert (wrong, right) == (False, True)
    assert kv is not None and kv.value == "true"


async def test_compare_and_swap_of_a_missing_key_fails(
    etcd: EtcdClient, ns: str
) -> None:
    swapped = await etcd.compare_and_swap(ns + "missing", "", "x")

    assert swapped is False
    assert await etcd.get(ns + "missing") is None


async def test_compare_and_swap_keeps_the_lease_of_the_key(
    etcd: EtcdClient, ns: str
) -> None:
    lease = await etcd.grant(30)
    await etcd.put(ns + "k", "a", lease.id)

    await etcd.compare_and_swap(ns + "k", "a", "b")
    kv = await etcd.get(ns + "k")
    await etcd.revoke(lease.id)

    assert kv is not None and (kv.value, kv.lease) == ("b", lease.id)
    assert await etcd.get(ns + "k") is None


# --- leases ---------------------------------------------------------------------------


async def test_grant_returns_a_lease_with_the_ttl(etcd: EtcdClient) -> None:
    lease = await etcd.grant(7)

    assert lease.id > 0 and lease.ttl_s == 7
    assert await etcd.keep_alive_once(lease.id) == 7
    await etcd.revoke(lease.id)


async def test_leased_keys_vanish_after_the_ttl(
    etcd: EtcdClient, ns: str, eventually
) -> None:
    lease = await etcd.grant(1)
    await etcd.put(ns + "a", "1", lease.id)
    await etcd.put(ns + "b", "2", lease.id)
    await etcd.put(ns + "plain", "3")

    async def only_plain_left() -> bool:
        return await etcd.get_count(ns) == 1

    await eventually(only_plain_left, timeout_s=4.0)

    assert [kv.key for kv in await etcd.get_prefix(ns)] == [ns + "plain"]
    with pytest.raises(LeaseNotFound):
        await etcd.keep_alive_once(lease.id)


async def test_keep_alive_keeps_keys_past_the_ttl(etcd: EtcdClient, ns: str) -> None:
    lease = await etcd.grant(1)
    await etcd.put(ns + "k", "v", lease.id)

    for _ in range(8):  # 2 s, twice the TTL
        await asyncio.sleep(0.25)
        await etcd.keep_alive_once(lease.id)

    kv = await etcd.get(ns + "k")
    assert kv is not None and kv.lease == lease.id
    await etcd.revoke(lease.id)


async def test_revoke_deletes_every_key_of_the_lease(etcd: EtcdClient, ns: str) -> None:
    lease = await etcd.grant(30)
    other = await etcd.grant(30)
    await etcd.put(ns + "a", "1", lease.id)
    await etcd.put(ns + "b", "2", lease.id)
    await etcd.put(ns + "c", "3", other.id)

    await etcd.revoke(lease.id)

    assert [kv.key for kv in await etcd.get_prefix(ns)] == [ns + "c"]
    await etcd.revoke(other.id)


async def test_a_plain_put_detaches_the_key_from_its_lease(
    etcd: EtcdClient, ns: str
) -> None:
    lease = await etcd.grant(30)
    await etcd.put(ns + "k", "leased", lease.id)

    await etcd.put(ns + "k", "plain")
    await etcd.revoke(lease.id)

    kv = await etcd.get(ns + "k")
    assert kv is not None and (kv.value, kv.lease) == ("plain", 0)


async def test_put_with_an_unknown_lease_raises_lease_not_found(
    etcd: EtcdClient, ns: str
) -> None:
    lease = await etcd.grant(30)
    await etcd.revoke(lease.id)

    with pytest.raises(LeaseNotFound) as raised:
        await etcd.put(ns + "k", "v", lease.id)

    assert raised.value.lease_id == lease.id
    assert await etcd.get(ns + "k") is None


async def test_put_txn_with_an_unknown_lease_raises_lease_not_found(
    etcd: EtcdClient, ns: str
) -> None:
    lease = await etcd.grant(30)
    await etcd.revoke(lease.id)

    with pytest.raises(LeaseNotFound):
        await etcd.put_txn(ns + "leader", "me", 0, lease.id)


async def test_keep_alive_and_revoke_of_a_revoked_lease_raise_lease_not_found(
    etcd: EtcdClient,
) -> None:
    lease = await etcd.grant(30)
    await etcd.revoke(lease.id)

    with pytest.raises(LeaseNotFound):
        await etcd.keep_alive_once(lease.id)
    with pytest.raises(LeaseNotFound):
        await etcd.revoke(lease.id)


# --- watches --------------------------------------------------------------------------


async def test_exact_watch_sees_puts_and_deletes_with_previous_values(
    etcd: EtcdClient, ns: str, collect
) -> None:
    events = collect(await etcd.watch(ns + "k"))

    r1 = await etcd.put(ns + "k", "a")
    await etcd.put(ns + "kk", "not this one")
    r2 = await etcd.put(ns + "k", "b")
    await etcd.put(ns + "k/child", "nor this one")
    await etcd.delete(ns + "k")
    r4 = await etcd.current_revision()

    assert await events.take(3) == [
        put(ns + "k", "a", "", r1),
        put(ns + "k", "b", "a", r2),
        deleted(ns + "k", "b", r4),
    ]


async def test_prefix_watch_sees_only_keys_under_the_prefix(
    etcd: EtcdClient, ns: str, collect
) -> None:
    events = collect(await etcd.watch(ns + "ns1/", prefix=True))

    await etcd.put(ns + "ns10/a", "other namespace")
    await etcd.put(ns + "ns1", "the prefix without its slash")
    r1 = await etcd.put(ns + "ns1/a", "x")
    r2 = await etcd.put(ns + "ns1/b/c", "y")

    assert await events.take(2) == [
        put(ns + "ns1/a", "x", "", r1),
        put(ns + "ns1/b/c", "y", "", r2),
    ]


async def test_watch_without_start_revision_sees_only_later_events(
    etcd: EtcdClient, ns: str, collect
) -> None:
    await etcd.put(ns + "before", "1")
    events = collect(await etcd.watch(ns, prefix=True))

    revision = await etcd.put(ns + "after", "2")

    assert await events.take(1) == [put(ns + "after", "2", "", revision)]


async def test_watch_replays_history_from_the_start_revision(
    etcd: EtcdClient, ns: str, collect
) -> None:
    r1 = await etcd.put(ns + "a", "1")
    r2 = await etcd.put(ns + "a", "2")
    await etcd.delete(ns + "a")
    r3 = await etcd.current_revision()

    events = collect(await etcd.watch(ns, prefix=True, start_revision=r2))
    r4 = await etcd.put(ns + "b", "live")

    assert r1 < r2
    assert await events.take(3) == [
        put(ns + "a", "2", "1", r2),
        deleted(ns + "a", "2", r3),
        put(ns + "b", "live", "", r4),
    ]


async def test_watch_sees_lease_revocation_as_deletes_in_one_revision(
    etcd: EtcdClient, ns: str, collect
) -> None:
    lease = await etcd.grant(30)
    await etcd.put(ns + "a", "1", lease.id)
    await etcd.put(ns + "b", "2", lease.id)
    events = collect(await etcd.watch(ns, prefix=True))

    await etcd.revoke(lease.id)

    got = await events.take(2)
    assert sorted((e.type, e.key, e.value) for e in got) == [
        (EventType.DELETE, ns + "a", "1"),
        (EventType.DELETE, ns + "b", "2"),
    ]
    assert got[0].revision == got[1].revision


async def test_delete_prefix_is_watched_as_deletes_in_one_revision(
    etcd: EtcdClient, ns: str, collect
) -> None:
    await etcd.put(ns + "a", "1")
    await etcd.put(ns + "b", "2")
    events = collect(await etcd.watch(ns, prefix=True))

    await etcd.delete_prefix(ns)

    got = await events.take(2)
    assert [(e.type, e.key, e.prev_value) for e in got] == [
        (EventType.DELETE, ns + "a", "1"),
        (EventType.DELETE, ns + "b", "2"),
    ]
    assert got[0].revision == got[1].revision == await etcd.current_revision()


async def test_a_cancelled_watch_ends_its_iteration(etcd: EtcdClient, ns: str) -> None:
    watch = await etcd.watch(ns, prefix=True)
    seen: list[WatchEvent] = []

    async def drain() -> None:
        async for event in watch:
            seen.append(event)

    task = asyncio.create_task(drain())
    await asyncio.sleep(0.05)
    await watch.cancel()
    await asyncio.wait_for(task, 3.0)
    await etcd.put(ns + "k", "after cancel")

    assert seen == []
    assert task.done() and task.exception() is None


async def test_two_watches_on_one_prefix_both_see_every_event(
    etcd: EtcdClient, ns: str, collect
) -> None:
    first = collect(await etcd.watch(ns, prefix=True))
    second = collect(await etcd.watch(ns, prefix=True))

    revision = await etcd.put(ns + "k", "v")

    expected = [put(ns + "k", "v", "", revision)]
    assert await first.take(1) == expected
    assert await second.take(1) == expected


async def test_watch_from_a_compacted_revision_raises_revision_compacted(
    etcd: EtcdClient, ns: str
) -> None:
    old = await etcd.put(ns + "k", "1")
    await etcd.put(ns + "k", "2")
    now = await etcd.put(ns + "k", "3")

    await etcd.compact(now)  # type: ignore[attr-defined]

    with pytest.raises(RevisionCompacted):
        await etcd.watch(ns, prefix=True, start_revision=old)
    with pytest.raises(RevisionCompacted):
        await etcd.compact(now)  # type: ignore[attr-defined]
    kv = await etcd.get(ns + "k")
    assert kv is not None and kv.value == "3"


async def test_watch_from_the_compaction_revision_still_replays(
    etcd: EtcdClient, ns: str, collect
) -> None:
    await etcd.put(ns + "k", "1")
    now = await etcd.put(ns + "k", "2")
    await etcd.compact(now)  # type: ignore[attr-defined]

    events = collect(await etcd.watch(ns, prefix=True, start_revision=now))

    # etcd drops the previous value when its revision was compacted away
    [event] = await events.take(1)
    assert (event.type, event.key, event.value, event.revision) == (
        EventType.PUT,
        ns + "k",
        "2",
        now,
    )


# --- errors ---------------------------------------------------------------------------


async def test_a_closed_client_raises_coordination_error(
    etcd: EtcdClient, ns: str
) -> None:
    await etcd.close()

    with pytest.raises(CoordinationError):
        await etcd.get(ns + "k")
    with pytest.raises(CoordinationError):
        await etcd.put(ns + "k", "v")
    with pytest.raises(CoordinationError):
        await etcd.watch(ns, prefix=True)


async def test_closing_the_client_breaks_open_watches_with_coordination_error(
    etcd: EtcdClient, ns: str, collect
) -> None:
    events = collect(await etcd.watch(ns, prefix=True))

    await etcd.close()

    with pytest.raises(CoordinationError):
        await events.take(1)
