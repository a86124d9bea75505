"""WatcherService, DataManagementService and LeaseKeepAliveService on both backends
(embedded MemoryEtcd and a real etcd server)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from wisp.infra.etcd.client import EtcdClient, EventType, WatchEvent
from wisp.infra.etcd.watcher import WatcherService

pytestmark = [pytest.mark.etcd, pytest.mark.timeout(30)]


class Recorder:
    """Callbacks that remember the events they saw."""

    def __init__(self) -> None:
        self.events: list[WatchEvent] = []
        self.changed = asyncio.Event()

    def __call__(self, event: WatchEvent) -> None:
        self.events.append(event)
        self.changed.set()

    def seen(self) -> list[tuple[EventType, str, str]]:
        return [(e.type, e.key, e.value) for e in self.events]

    async def wait_for(self, count: int, timeout_s: float = 5.0) -> None:
        async with asyncio.timeout(timeout_s):
            while len(self.events) < count:
                self.changed.clear()
                await self.changed.wait()


class RecordingEtcd:
    """An EtcdClient that records the puts passing through it and can hold the
    puts of one key until released."""

    def __init__(self, inner: EtcdClient) -> None:
        self._inner = inner
        self.puts: list[tuple[str, str]] = []
        self.held_key: str | None = None
        self.release = asyncio.Event()
        self.holding = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def put(self, key: str, value: str, lease: int = 0) -> int:
        if key == self.held_key:
            self.holding.set()
            await self.release.wait()
        self.puts.append((key, value))
        return await self._inner.put(key, value, lease)


@pytest.fixture
async def watcher(etcd: EtcdClient) -> Any:
    service = WatcherService(etcd)
    await service.start()
    yield service
    await service.stop()


# --- WatcherService -------------------------------------------------------------------


async def test_watcher_fans_each_event_out_to_every_subscriber(
    etcd: EtcdClient, watcher: WatcherService, ns: str
) -> None:
    queue_a, queue_b, exact = Recorder(), Recorder(), Recorder()
    watcher.watch(ns + "ns1/", prefix=True, name="queue-a", on_put=queue_a)
    watcher.watch(ns + "ns1/", prefix=True, name="queue-b", on_put=queue_b)
    watcher.watch(ns + "ns1/x", prefix=False, name="exact", on_put=exact)
    await watcher.wait_ready()

    await etcd.put(ns + "ns10/x", "sibling namespace")
    await etcd.put(ns + "ns1/x", "1")
    await etcd.put(ns + "ns1/y", "2")
    await queue_a.wait_for(2)
    await queue_b.wait_for(2)
    await exact.wait_for(1)

    expected = [(EventType.PUT, ns + "ns1/x", "1"), (EventType.PUT, ns + "ns1/y", "2")]
    assert queue_a.seen() == expected
    assert queue_b.seen() == expected
    assert exact.seen() == [(EventType.PUT, ns + "ns1/x", "1")]


async def test_unwatch_stops_only_that_subscriber(
    etcd: EtcdClient, watcher: WatcherService, ns: str
) -> None:
    stays, leaves = Recorder(), Recorder()
    watcher.watch(ns, prefix=True, name="stays", on_put=stays)
    watcher.watch(ns, prefix=True, name="leaves", on_put=leaves)
    await watcher.wait_ready()
    await etcd.put(ns + "a", "1")
    await leaves.wait_for(1)

    watcher.unwatch(ns, prefix=True, name="leaves")
    await etcd.put(ns + "b", "2")
    await stays.wait_for(2)

    assert leaves.seen() == [(EventType.PUT, ns + "a", "1")]
    assert [key for _, key, _ in stays.seen()] == [ns + "a", ns + "b"]


async def test_watching_again_under_the_same_name_replaces_the_callbacks(
    etcd: EtcdClient, watcher: WatcherService, ns: str
) -> None:
    old, new = Recorder(), Recorder()
    watcher.watch(ns, prefix=True, name="queue", on_put=old)
    watcher.watch(ns, prefix=True, name="queue", on_put=new)
    await watcher.wait_ready()

    await etcd.put(ns + "a", "1")
    await etcd.put(ns + "b", "2")
    await new.wait_for(2)

    assert old.events == []
    assert len(new.events) == 2


async def test_subscribers_get_only_the_event_types_they_asked_for(
    etcd: EtcdClient, watcher: WatcherService, ns: str
) -> None:
    puts, deletes = Recorder(), Recorder()
    watcher.watch(ns + "k", prefix=False, name="puts", on_put=puts)
    watcher.watch(ns + "k", prefix=False, name="deletes", on_delete=deletes)
    await watcher.wait_ready()

    await etcd.put(ns + "k", "v")
    await etcd.delete(ns + "k")
    await deletes.wait_for(1)

    assert puts.seen() == [(EventType.PUT, ns + "k", "v")]
    assert deletes.seen() == [(EventType.DELETE, ns + "k", "v")]


async def test_a_failing_subscriber_does_not_stop_the_others(
    etcd: EtcdClient, watcher: WatcherService, ns: str
) -> None:
    def broken(event: WatchEvent) -> None:
        raise RuntimeError("subscriber bug")

    healthy = Recorder()
    watcher.watch(ns, prefix=True, name="broken", on_put=broken)
    watcher.watch(ns, prefix=True, name="healthy", on_put=healthy)
    await watcher.wait_ready()

    await etcd.put(ns + "a", "1")
    await etcd.put(ns + "b", "2")
    await healthy.wait_for(2)

    assert len(healthy.events) == 2


# --- DataManagementService ------------------------------------------------------------


async def test_writes_to_one_key_run_in_order_and_collapse_to_the_latest(
    etcd: EtcdClient, ns: str, stacks: Any
) -> None:
    spy = RecordingEtcd(etcd)
    spy.held_key = ns + "state"
    stack = await stacks()
    stack.dms._etcd = spy  # the lease and watcher keep the plain client

    stack.dms.register_data(ns + "state", "1")
    await asyncio.wait_for(spy.holding.wait(), 5.0)
    for value in ("2", "3", "4"):
        stack.dms.register_data(ns + "state", value)
    spy.release.set()
    await stack.dms.flush()

    assert spy.puts == [(ns + "state", "1"), (ns + "state", "4")]
    kv = await etcd.get(ns + "state")
    assert kv is not None and kv.value == "4"


async def test_a_slow_key_does_not_delay_writes_to_other_keys(
    etcd: EtcdClient, ns: str, stacks: Any, eventually: Any
) -> None:
    spy = RecordingEtcd(etcd)
    spy.held_key = ns + "slow"
    stack = await stacks()
    stack.dms._etcd = spy

    stack.dms.register_data(ns + "slow", "s")
    await asyncio.wait_for(spy.holding.wait(), 5.0)
    stack.dms.register_data(ns + "fast", "f")

    async def fast_written() -> bool:
        return await etcd.get(ns + "fast") is not None

    await eventually(fast_written)
    assert await etcd.get(ns + "slow") is None
    spy.release.set()
    await stack.dms.flush()
    assert await etcd.get(ns + "slow") is not None


async def test_a_registered_key_deleted_from_outside_is_written_again(
    etcd: EtcdClient, ns: str, stacks: Any, eventually: Any
) -> None:
    stack = await stacks()
    stack.dms.register_data(ns + "invokers/0", "healthy")
    await stack.dms.flush()

    await etcd.delete(ns + "invokers/0")

    async def restored() -> bool:
        kv = await etcd.get(ns + "invokers/0")
        return kv is not None and kv.value == "healthy"

    await eventually(restored)
    kv = await etcd.get(ns + "invokers/0")
    lease = await stack.lease.get_lease()
    assert kv is not None and kv.lease == lease.id


async def test_an_unregistered_key_is_deleted_and_stays_deleted(
    etcd: EtcdClient, ns: str, stacks: Any
) -> None:
    stack = await stacks()
    stack.dms.register_data(ns + "container", "")
    await stack.dms.flush()

    stack.dms.unregister_data(ns + "container")
    await stack.dms.flush()
    await asyncio.sleep(0.3)  # a failover rewrite would come within this

    assert await etcd.get(ns + "container") is None
    assert ns + "container" not in stack.dms.held_keys()


async def test_update_data_on_change_writes_only_values_that_changed(
    etcd: EtcdClient, ns: str, stacks: Any
) -> None:
    spy = RecordingEtcd(etcd)
    stack = await stacks()
    stack.dms._etcd = spy

    for value in ("a", "a", "b", "b", "a"):
        stack.dms.update_data_on_change(ns + "scheduler/0", value)
        await stack.dms.flush()

    assert [v for _, v in spy.puts] == ["a", "b", "a"]
    kv = await etcd.get(ns + "scheduler/0")
    assert kv is not None and kv.value == "a"


async def test_register_initial_data_keeps_an_existing_value(
    etcd: EtcdClient, ns: str, stacks: Any
) -> None:
    stack = await stacks()
    await etcd.put(ns + "throttling/guest", "true")

    created = await stack.dms.register_initial_data(ns + "throttling/guest", "false")
    fresh = await stack.dms.register_initial_data(ns + "throttling/other", "false")

    kv = await etcd.get(ns + "throttling/guest")
    assert (created, fresh) == (False, True)
    assert kv is not None and kv.value == "true"


async def test_elect_leader_has_exactly_one_winner(
    etcd: EtcdClient, ns: str, stacks: Any
) -> None:
    first = await stacks("scheduler0")
    second = await stacks("scheduler1")
    key = first.keys.queue_leader("guest", "guest/hello")

    results = await asyncio.gather(
        first.dms.elect_leader(key, "scheduler0"),
        second.dms.elect_leader(key, "scheduler1"),
    )

    assert sorted(results) == [False, True]
    winner = first if results[0] else second
    kv = await etcd.get(key)
    lease = await winner.lease.get_lease()
    assert kv is not None and kv.value == winner.instance and kv.lease == lease.id


async def test_stored_data_outlives_the_lease_and_registered_data_does_not(
    etcd: EtcdClient, ns: str, stacks: Any
) -> None:
    stack = await stacks()
    stack.dms.store_data(ns + "stored", "plain")
    stack.dms.register_data(ns + "registered", "leased")
    await stack.dms.flush()

    await stack.stop()

    assert await etcd.get(ns + "registered") is None
    kv = await etcd.get(ns + "stored")
    assert kv is not None and (kv.value, kv.lease) == ("plain", 0)


# --- LeaseKeepAliveService ------------------------------------------------------------


async def test_the_lease_marker_key_holds_the_lease_id(
    etcd: EtcdClient, stacks: Any
) -> None:
    stack = await stacks("scheduler0")

    lease = await stack.lease.get_lease()
    kv = await etcd.get(stack.keys.instance_lease("scheduler0"))

    assert kv is not None and (kv.value, kv.lease) == (str(lease.id), lease.id)


async def test_a_lease_revoked_from_outside_is_replaced_and_every_key_returns(
    etcd: EtcdClient, ns: str, stacks: Any, eventually: Any
) -> None:
    stack = await stacks("scheduler0")
    probe = Recorder()
    stack.watcher.watch(ns + "probe/", prefix=True, name="probe", on_put=probe)
    stack.dms.register_data(ns + "scheduler/0", "state")
    await stack.dms.register_initial_data(ns + "invokers/0", "resources")
    leader = stack.keys.queue_leader("guest", "guest/hello")
    assert await stack.dms.elect_leader(leader, "endpoints")
    await stack.dms.flush()
    await stack.watcher.wait_ready()
    old = await stack.lease.get_lease()

    await etcd.revoke(old.id)

    async def all_back() -> bool:
        lease = stack.lease.lease
        if lease is None or lease.id == old.id:
            return False
        for key in (ns + "scheduler/0", ns + "invokers/0", leader):
            kv = await etcd.get(key)
            if kv is None or kv.lease != lease.id:
                return False
        return True

    await eventually(all_back)
    await etcd.put(ns + "probe/after", "1")
    await probe.wait_for(1)
    assert stack.lease.regrants == 1
    assert stack.dms.held_keys() == {
        ns + "scheduler/0": "state",
        ns + "invokers/0": "resources",
        leader: "endpoints",
    }


async def test_writes_racing_a_lost_lease_end_under_the_new_lease(
    etcd: EtcdClient, ns: str, stacks: Any, eventually: Any
) -> None:
    # OpenWhisk #5485: re-registration kept failing with "requested lease not found".
    stack = await stacks("scheduler0")
    old = await stack.lease.get_lease()

    await etcd.revoke(old.id)
    stack.dms.register_data(ns + "scheduler/0", "state")
    created = await stack.dms.register_initial_data(ns + "throttling/guest", "false")

    async def under_the_new_lease() -> bool:
        lease = stack.lease.lease
        if lease is None or lease.id == old.id:
            return False
        for key in (ns + "scheduler/0", ns + "throttling/guest"):
            kv = await etcd.get(key)
            if kv is None or kv.lease != lease.id:
                return False
        return True

    await eventually(under_the_new_lease)
    assert created is True
