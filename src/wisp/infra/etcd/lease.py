"""LeaseKeepAliveService (module 10): the process's one etcd lease, kept alive.

When the lease is lost (expired, revoked, etcd restarted) a new one is granted and
every `on_new_lease` callback runs so owners re-register what they held.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from wisp.infra.etcd.client import EtcdClient, Lease
from wisp.infra.etcd.keys import EtcdKeys


class LeaseKeepAliveService:
    def __init__(
        self,
        etcd: EtcdClient,
        keys: EtcdKeys,
        instance: str,
        ttl_s: int = 10,
        keep_alive_interval_s: float = 0.5,
    ) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        """Grant the first lease (retrying until etcd answers) and start keep-alive."""
        raise NotImplementedError

    async def stop(self, revoke: bool = True) -> None: ...

    async def get_lease(self) -> Lease:
        """The current lease; waits while a new one is being granted."""
        raise NotImplementedError

    def on_new_lease(self, callback: Callable[[Lease], Awaitable[None]]) -> None:
        """Called after a lost lease was replaced (not for the first grant)."""
        raise NotImplementedError
