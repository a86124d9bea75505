"""LeaseKeepAliveService on the embedded store with injected failures."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from wisp.core.errors import InstanceInUse, LeaseNotFound
from wisp.infra.etcd import lease as lease_module
from wisp.infra.etcd.client import Lease
from wisp.infra.etcd.keys import EtcdKeys
from wisp.infra.etcd.lease import LeaseKeepAliveService
from wisp.infra.etcd.memory import MemoryEtcd

pytestmark = pytest.mark.timeout(10)

KEYS = EtcdKeys("whisk")
MARKER = KEYS.instance_lease("scheduler0")


async def started(etcd: Any, ttl_s: int = 10) -> LeaseKeepAliveService:
    service = LeaseKeepAliveService(etcd, KEYS, "scheduler0", ttl_s, 0.02)
    await asyncio.wait_for(service.start(), 2.0)
    return service


async def test_start_grants_a_lease_and_writes_the_marker_key(
    memory: MemoryEtcd,
) -> None:
    service = await started(memory)

    lease = await service.get_lease()
    marker = await memory.get(MARKER)

    assert marker is not None and (marker.value, marker.lease) == (
        str(lease.id),
        lease.id,
    )
    await service.stop()
    assert await memory.get(MARKER) is None


async def test_keep_alive_failures_within_the_ttl_keep_the_lease(
    memory: MemoryEtcd, flaky: Any
) -> None:
    service = await started(flaky)
    lease = await service.get_lease()

    flaky.fail["keep_alive_once"] = 10  # 0.2 s of failures against a 10 s TTL
    await asyncio.sleep(0.4)

    assert flaky.fail["keep_alive_once"] == 0
    assert service.regrants == 0
    assert service.lease == lease
    await service.stop()


async def test_a_revoked_lease_is_replaced_and_owners_are_told(
    memory: MemoryEtcd, eventually: Any
) -> None:
    service = await started(memory)
    told: list[Lease] = []

    async def reregister(lease: Lease) -> None:
        told.append(lease)

    service.on_new_lease(reregister)
    old = await service.get_lease()

    await memory.revoke(old.id)

    await eventually(lambda: told != [])
    new = await service.get_lease()
    marker = await memory.get(MARKER)
    assert told == [new] and new.id != old.id
    assert marker is not None and marker.lease == new.id
    assert service.regrants == 1
    assert service.is_own(old.id) and service.is_own(new.id)
    assert not service.is_own(0) and not service.is_own(12345)
    await service.stop()


async def test_get_lease_waits_until_a_new_lease_is_granted(
    memory: MemoryEtcd, flaky: Any, eventually: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lease_module, "_GRANT_RETRY_S", 0.1)
    service = await started(flaky)
    old = await service.get_lease()
    flaky.fail["grant"] = 2  # the first two grants fail: 0.2 s of retries

    await memory.revoke(old.id)
    await eventually(lambda: service.lease is None)
    waiting = asyncio.create_task(service.get_lease())
    await asyncio.sleep(0.1)

    assert not waiting.done()
    new = await asyncio.wait_for(waiting, 3.0)
    assert new.id != old.id
    assert flaky.calls["grant"] == 4  # the first lease, two failures, the new one
    await service.stop()


async def test_a_replaced_lease_that_still_exists_is_revoked_before_owners_run(
    memory: MemoryEtcd, flaky: Any, eventually: Any
) -> None:
    # etcd restores leases after a restart: the old one may still hold keys.
    service = await started(flaky)
    old = await service.get_lease()
    await memory.put("whisk/scheduler/0", "state", old.id)
    old_key_when_told: list[object] = []

    async def reregister(lease: Lease) -> None:
        old_key_when_told.append(await memory.get("whisk/scheduler/0"))

    service.on_new_lease(reregister)
    flaky.errors["keep_alive_once"] = LeaseNotFound(old.id)
    flaky.fail["keep_alive_once"] = 1
    flaky.fail["revoke"] = 1  # the first revoke finds etcd unreachable

    await eventually(lambda: old_key_when_told != [])

    assert old_key_when_told == [None]
    assert flaky.calls["revoke"] == 2
    await service.stop()


async def test_start_waits_for_a_crashed_predecessors_lease_to_expire(
    memory: MemoryEtcd,
) -> None:
    dead = await memory.grant(1)
    await memory.put(MARKER, str(dead.id), dead.id)
    await memory.put("whisk/queue/guest/guest/a/leader", "{}", dead.id)
    loop = asyncio.get_running_loop()
    began = loop.time()

    service = LeaseKeepAliveService(memory, KEYS, "scheduler0", 1, 0.02)
    await asyncio.wait_for(service.start(), 5.0)

    assert loop.time() - began >= 0.8
    assert await memory.get("whisk/queue/guest/guest/a/leader") is None
    marker = await memory.get(MARKER)
    assert marker is not None and marker.lease == (await service.get_lease()).id
    await service.stop()


async def test_start_is_refused_while_a_live_process_holds_the_name(
    memory: MemoryEtcd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lease_module, "_PREDECESSOR_GRACE_S", 0.2)
    first = LeaseKeepAliveService(memory, KEYS, "scheduler0", 1, 0.05)
    await first.start()
    second = LeaseKeepAliveService(memory, KEYS, "scheduler0", 1, 0.05)

    with pytest.raises(InstanceInUse) as refused:
        await asyncio.wait_for(second.start(), 5.0)

    assert "scheduler0 is already running" in str(refused.value)
    await first.stop()
