"""LeaseKeepAliveService (module 10): the process's one etcd lease, kept alive.

When the lease is lost (expired, revoked, etcd restarted) a new one is granted and
every `on_new_lease` callback runs so owners re-register what they held.

DIVERGENCE(openwhisk): the original revokes and regrants on a single failed
keep-alive, which deletes every key of the process on a network blip. Here a failed
keep-alive is retried; only "lease not found" or a TTL that ran out locally replaces
the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from wisp.core.errors import CoordinationError, LeaseNotFound
from wisp.infra.etcd.client import EtcdClient, Lease
from wisp.infra.etcd.keys import EtcdKeys

log = logging.getLogger(__name__)

_GRANT_RETRY_S = 0.5
#: how long one keep-alive call may take before it counts as failed
_CALL_TIMEOUT_S = 2.0


class LeaseKeepAliveService:
    def __init__(
        self,
        etcd: EtcdClient,
        keys: EtcdKeys,
        instance: str,
        ttl_s: int = 10,
        keep_alive_interval_s: float = 0.5,
    ) -> None:
        self._etcd = etcd
        self._keys = keys
        self._instance = instance
        self._ttl_s = ttl_s
        self._interval_s = keep_alive_interval_s
        self._lease: Lease | None = None
        self._valid = asyncio.Event()
        self._callbacks: list[Callable[[Lease], Awaitable[None]]] = []
        self._task: asyncio.Task[None] | None = None
        #: number of leases granted after the first one (lost-lease recoveries)
        self.regrants = 0

    @property
    def lease(self) -> Lease | None:
        return self._lease if self._valid.is_set() else None

    async def start(self) -> None:
        """Grant the first lease (retrying until etcd answers) and start keep-alive."""
        await self._grant()
        self._task = asyncio.get_running_loop().create_task(
            self._keep_alive(), name=f"lease:{self._instance}"
        )

    async def stop(self, revoke: bool = True) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        lease, self._lease = self._lease, None
        self._valid.clear()
        if revoke and lease is not None:
            with contextlib.suppress(CoordinationError, TimeoutError):
                await asyncio.wait_for(self._etcd.revoke(lease.id), _CALL_TIMEOUT_S)

    async def get_lease(self) -> Lease:
        """The current lease; waits while a new one is being granted."""
        await self._valid.wait()
        assert self._lease is not None
        return self._lease

    def on_new_lease(self, callback: Callable[[Lease], Awaitable[None]]) -> None:
        """Called after a lost lease was replaced (not for the first grant)."""
        self._callbacks.append(callback)

    async def _grant(self) -> None:
        while True:
            try:
                lease = await asyncio.wait_for(
                    self._etcd.grant(self._ttl_s), _CALL_TIMEOUT_S
                )
                await asyncio.wait_for(
                    self._etcd.put(
                        self._keys.instance_lease(self._instance),
                        str(lease.id),
                        lease.id,
                    ),
                    _CALL_TIMEOUT_S,
                )
            except (CoordinationError, TimeoutError) as exc:
                log.warning("Granting a lease failed (%s); retrying", exc)
                await asyncio.sleep(_GRANT_RETRY_S)
                continue
            self._lease = lease
            self._valid.set()
            log.info(
                "Lease %s granted to %s (ttl %ss)",
                lease.id,
                self._instance,
                lease.ttl_s,
            )
            return

    async def _keep_alive(self) -> None:
        loop = asyncio.get_running_loop()
        last_ok = loop.time()
        while True:
            await asyncio.sleep(self._interval_s)
            assert self._lease is not None
            try:
                await asyncio.wait_for(
                    self._etcd.keep_alive_once(self._lease.id), _CALL_TIMEOUT_S
                )
                last_ok = loop.time()
                continue
            except LeaseNotFound:
                log.warning("Lease %s of %s lost", self._lease.id, self._instance)
            except (CoordinationError, TimeoutError) as exc:
                if loop.time() - last_ok < self._ttl_s:
                    log.debug("Keep-alive failed (%s); retrying", exc)
                    continue
                log.warning(
                    "Lease %s of %s ran out (%s)", self._lease.id, self._instance, exc
                )
            await self._replace()
            last_ok = loop.time()

    async def _replace(self) -> None:
        # Step 1: stop handing out the dead lease.
        self._valid.clear()
        old = self._lease
        if old is not None:
            with contextlib.suppress(CoordinationError, TimeoutError):
                await asyncio.wait_for(self._etcd.revoke(old.id), _CALL_TIMEOUT_S)

        # Step 2: a new lease, then let every owner re-register its keys.
        await self._grant()
        self.regrants += 1
        assert self._lease is not None
        for callback in list(self._callbacks):
            try:
                await callback(self._lease)
            except Exception:
                log.exception("Re-registration after a new lease failed")
