"""Coordination: one process's lease, watches and writes on etcd, started and stopped
together in the one order that is safe (every role with a lease uses it)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from wisp.config.model import EtcdConfig
from wisp.infra.etcd.client import EtcdClient
from wisp.infra.etcd.data_management import DataManagementService
from wisp.infra.etcd.keys import EtcdKeys
from wisp.infra.etcd.lease import LeaseKeepAliveService
from wisp.infra.etcd.watcher import WatcherService


@dataclass(frozen=True, slots=True)
class Coordination:
    lease: LeaseKeepAliveService
    watcher: WatcherService
    dms: DataManagementService

    @classmethod
    async def start(
        cls, etcd: EtcdClient, config: EtcdConfig, keys: EtcdKeys, instance: str
    ) -> Coordination:
        """Take the lease of `instance` (InstanceInUse when a live process holds it),
        then open the watcher and the writer."""
        lease = LeaseKeepAliveService(
            etcd, keys, instance, config.lease_ttl_s, config.keep_alive_interval_s
        )
        await lease.start()
        watcher = WatcherService(etcd)
        await watcher.start()
        dms = DataManagementService(etcd, lease, watcher, config.retry_interval_s)
        await dms.start()
        return cls(lease, watcher, dms)

    async def stop(self, flush_timeout_s: float) -> None:
        # The last writes (unregistrations) go out first, bounded; then the watches
        # close; the lease goes last, taking whatever is still under it with it.
        with contextlib.suppress(TimeoutError):
            await self.dms.flush(flush_timeout_s)
        await self.dms.stop()
        await self.watcher.stop()
        await self.lease.stop(revoke=True)
