"""DataManagementService on the embedded store: ownership across leases, writes that
race an unregister, and failures that are not etcd's."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from wisp.core.errors import CoordinationError, LeaseNotFound
from wisp.infra.etcd.memory import MemoryEtcd

pytestmark = pytest.mark.timeout(10)


async def test_a_key_under_a_former_lease_of_this_process_is_taken_back(
    memory: MemoryEtcd, flaky: Any, services: Any, eventually: Any
) -> None:
    process = await services(flaky)
    key = process.keys.invoker(0, "invoker0")
    assert await process.dms.register_initial_data(key, "resources")
    old = await process.lease.get_lease()

    # The lease is replaced while etcd still holds it (it cannot be revoked), as
    # after an etcd restart that restored the old lease.
    flaky.fail["revoke"] = 10
    flaky.errors["keep_alive_once"] = LeaseNotFound(old.id)
    flaky.fail["keep_alive_once"] = 1
    await eventually(lambda: process.lease.regrants == 1)
    new = await process.lease.get_lease()

    async def rebound() -> bool:
        kv = await memory.get(key)
        return kv is not None and kv.lease == new.id

    await eventually(rebound)
    assert process.dms.held_keys() == {key: "resources"}


async def test_a_key_held_by_another_process_is_not_claimed(
    memory: MemoryEtcd, services: Any
) -> None:
    first = await services(memory, "scheduler0")
    second = await services(memory, "scheduler1")
    key = first.keys.queue_leader("guest", "guest/hello")

    assert await first.dms.elect_leader(key, "scheduler0")
    won = await second.dms.elect_leader(key, "scheduler1")

    assert won is False
    assert key not in second.dms.held_keys()
    kv = await memory.get(key)
    assert kv is not None and kv.value == "scheduler0"


async def test_a_key_deleted_before_its_failover_watch_opened_is_written_again(
    memory: MemoryEtcd, flaky: Any, services: Any, eventually: Any
) -> None:
    process = await services(flaky)
    key = process.keys.invoker(0, "invoker0")
    flaky.delete_after_put.add(key)

    process.dms.register_data(key, "resources")

    async def restored() -> bool:
        return await memory.get(key) is not None

    await eventually(restored)
    assert process.dms.held_keys() == {key: "resources"}


async def test_a_write_in_flight_when_unregistered_is_not_restored(
    memory: MemoryEtcd, flaky: Any, services: Any
) -> None:
    process = await services(flaky)
    key = "whisk/namespace/guest/guest/hello/1-a/invoker0/container/c1"
    flaky.hold[key] = asyncio.Event()
    process.dms.register_data(key, "")
    await asyncio.sleep(0.05)  # the put is now waiting inside etcd

    process.dms.unregister_data(key)
    flaky.hold[key].set()
    await process.dms.flush()
    await asyncio.sleep(0.2)  # a failover rewrite would come within this

    assert await memory.get(key) is None
    assert process.dms.held_keys() == {}


async def test_a_failure_that_is_not_etcd_fails_the_caller_and_the_key_goes_on(
    memory: MemoryEtcd, flaky: Any, services: Any
) -> None:
    process = await services(flaky)
    key = process.keys.queue_leader("guest", "guest/hello")
    flaky.errors["put_txn"] = ValueError("a bug, not a network problem")
    flaky.fail["put_txn"] = 1

    with pytest.raises(CoordinationError):
        await process.dms.elect_leader(key, "me")
    won = await process.dms.elect_leader(key, "me")

    assert won is True


async def test_unavailable_etcd_is_retried_until_the_write_succeeds(
    memory: MemoryEtcd, flaky: Any, services: Any
) -> None:
    process = await services(flaky)
    flaky.fail["put"] = 3

    process.dms.register_data("whisk/scheduler/0", "state")
    await process.dms.flush()

    kv = await memory.get("whisk/scheduler/0")
    assert kv is not None and kv.value == "state"
    assert flaky.calls["put"] >= 4


async def test_writes_after_stop_are_refused(memory: MemoryEtcd, services: Any) -> None:
    process = await services(memory)

    await process.dms.stop()

    with pytest.raises(CoordinationError):
        await process.dms.elect_leader("whisk/queue/guest/guest/hello/leader", "me")
