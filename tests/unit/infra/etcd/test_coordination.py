"""Coordination: a process's lease, watcher and writer start and stop together."""

from __future__ import annotations

from wisp.config.model import EtcdConfig
from wisp.infra.etcd.coordination import Coordination
from wisp.infra.etcd.keys import EtcdKeys
from wisp.infra.etcd.memory import MemoryEtcd

KEYS = EtcdKeys("whisk")


async def test_stop_writes_what_is_pending_then_releases_every_lease_bound_key() -> (
    None
):
    etcd = MemoryEtcd()
    coordination = await Coordination.start(etcd, EtcdConfig(), KEYS, "invoker3")
    coordination.dms.register_data("whisk/invokers/3", '{"status": "up"}')
    coordination.dms.store_data("whisk/kept", "x")

    await coordination.stop(flush_timeout_s=2.0)

    assert await etcd.get(KEYS.instance_lease("invoker3")) is None
    assert await etcd.get("whisk/invokers/3") is None
    kept = await etcd.get("whisk/kept")
    assert kept is not None and kept.lease == 0


async def test_start_takes_the_instance_lease() -> None:
    etcd = MemoryEtcd()

    coordination = await Coordination.start(etcd, EtcdConfig(), KEYS, "scheduler1")

    marker = await etcd.get(KEYS.instance_lease("scheduler1"))
    lease = await coordination.lease.get_lease()
    assert marker is not None and marker.lease == lease.id
    await coordination.stop(flush_timeout_s=1.0)
