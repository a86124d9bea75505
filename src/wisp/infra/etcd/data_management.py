"""DataManagementService (module 8): this process's writes to etcd.

Writes to one key run one at a time in arrival order (pending puts/deletes of a key
collapse into the latest), each retried with backoff until it succeeds. "register"
writes are bound to the process lease and written again after a new lease; "store"
writes are plain. Failover: a registered key that disappears is written again.
"""

from __future__ import annotations

from wisp.infra.etcd.client import EtcdClient
from wisp.infra.etcd.lease import LeaseKeepAliveService
from wisp.infra.etcd.watcher import WatcherService


class DataManagementService:
    def __init__(
        self,
        etcd: EtcdClient,
        lease: LeaseKeepAliveService,
        watcher: WatcherService,
        retry_interval_s: float = 1.0,
    ) -> None:
        raise NotImplementedError

    async def start(self) -> None: ...

    async def stop(self) -> None:
        """Finish pending writes (bounded), then stop."""

    async def elect_leader(self, key: str, value: str) -> bool:
        """Create-if-absent under the lease; True when this process became leader."""
        raise NotImplementedError

    async def register_initial_data(
        self, key: str, value: str, *, failover: bool = True
    ) -> bool:
        """Create-if-absent under the lease; True if created, False if it existed."""
        raise NotImplementedError

    def register_data(self, key: str, value: str, *, failover: bool = True) -> None:
        """Put (overwrite) under the lease, in the background."""
        raise NotImplementedError

    def store_data(self, key: str, value: str) -> None:
        """Put without a lease, in the background (survives this process)."""
        raise NotImplementedError

    def unregister_data(self, key: str) -> None:
        """Stop failover for `key` and delete it, in the background."""
        raise NotImplementedError

    def update_data_on_change(self, key: str, value: str) -> None:
        """register_data only when `value` differs from the last one sent."""
        raise NotImplementedError

    async def flush(self, timeout_s: float = 5.0) -> None:
        """Wait until every pending write has been performed (tests, shutdown)."""
        raise NotImplementedError
