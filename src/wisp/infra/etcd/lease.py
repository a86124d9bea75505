"""LeaseKeepAliveService (module 10): the process's one etcd lease, kept alive.

When the lease is lost (expired, revoked, etcd restarted) a new one is granted and
every `on_new_lease` callback runs so owners re-register what they held.

DIVERGENCE(openwhisk): the original revokes and regrants on a single failed
keep-alive, which deletes every key of the process on a network blip. Here a failed
keep-alive is retried; only "lease not found" or a TTL that ran out locally replaces
the lease. The original also watches its marker key and regrants when it vanishes;
here the keep-alive answer ("lease not found") is the only signal, so deleting the
marker alone does not wipe the process's keys.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from wisp.core.errors import CoordinationError, InstanceInUse, LeaseNotFound
from wisp.infra.etcd.client import EtcdClient, Lease
from wisp.infra.etcd.keys import EtcdKeys

log = logging.getLogger(__name__)

#: beyond one TTL, how long a predecessor's marker may linger before it counts as live
_PREDECESSOR_GRACE_S = 2.0
_PREDECESSOR_POLL_S = 0.2
_GRANT_RETRY_S = 0.5
#: the longest one keep-alive, grant or revoke call may take before it counts as
#: failed (shorter for short TTLs, so that a hung call does not use the TTL up).
#: Calls are bounded with asyncio.timeout, not wait_for: on Python 3.11 wait_for can
#: swallow a cancellation when the call ends at the same moment, and stop() would
#: then wait for the keep-alive task forever.
_CALL_TIMEOUT_S = 2.0
#: attempts to revoke a replaced lease once etcd answers again
_REVOKE_ATTEMPTS = 3
#: how long stop() waits for the cancelled keep-alive task
_STOP_TIMEOUT_S = 5.0


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
        self._call_timeout_s = min(
            _CALL_TIMEOUT_S, max(ttl_s / 2, keep_alive_interval_s)
        )
        self._lease: Lease | None = None
        self._valid = asyncio.Event()
        self._callbacks: list[Callable[[Lease], Awaitable[None]]] = []
        self._task: asyncio.Task[None] | None = None
        #: leases this process held before the current one
        self._former: set[int] = set()
        #: number of leases granted after the first one (lost-lease recoveries)
        self.regrants = 0

    @property
    def lease(self) -> Lease | None:
        return self._lease if self._valid.is_set() else None

    async def start(self) -> None:
        """Grant the first lease (retrying until etcd answers) and start keep-alive.

        Raises InstanceInUse when a live process holds this instance name.
        """
        await self._wait_for_predecessor()
        self._lease = await self._grant()
        self._valid.set()
        self._task = asyncio.get_running_loop().create_task(
            self._keep_alive(), name=f"lease:{self._instance}"
        )

    async def stop(self, revoke: bool = True) -> None:
        if self._task is not None:
            self._task.cancel()
            _, pending = await asyncio.wait({self._task}, timeout=_STOP_TIMEOUT_S)
            if pending:
                log.warning("Keep-alive task of %s did not stop", self._instance)
            self._task = None
        lease, self._lease = self._lease, None
        self._valid.clear()
        if revoke and lease is not None:
            await self._revoke(lease.id)

    async def get_lease(self) -> Lease:
        """The current lease; waits while a new one is being granted."""
        await self._valid.wait()
        assert self._lease is not None
        return self._lease

    def is_own(self, lease_id: int) -> bool:
        """True for the current lease and for every lease this process held before
        (a key under a former lease is still this process's key)."""
        current = self._lease.id if self._lease is not None else 0
        return lease_id != 0 and (lease_id == current or lease_id in self._former)

    def on_new_lease(self, callback: Callable[[Lease], Awaitable[None]]) -> None:
        """Called after a lost lease was replaced (not for the first grant)."""
        self._callbacks.append(callback)

    async def _wait_for_predecessor(self) -> None:
        """Wait until no other process holds this instance's marker key.

        A crashed predecessor's keys (its marker, queue leaders, throttle flags) vanish
        with its lease within one TTL; starting before that would route work to the
        dead process. A marker that outlives the TTL belongs to a live process, and
        two processes must never share an instance name.
        """
        loop = asyncio.get_running_loop()
        marker = self._keys.instance_lease(self._instance)
        deadline = loop.time() + self._ttl_s + _PREDECESSOR_GRACE_S
        announced = False
        while True:
            try:
                async with asyncio.timeout(self._call_timeout_s):
                    held = await self._etcd.get(marker)
            except (CoordinationError, TimeoutError):
                return  # etcd is not answering: granting below retries until it does
            if held is None:
                return
            if loop.time() >= deadline:
                raise InstanceInUse(self._instance, marker)
            if not announced:
                announced = True
                log.info(
                    "%s is still registered (lease %s); waiting up to %ss for it to "
                    "expire",
                    self._instance,
                    held.value,
                    self._ttl_s,
                )
            await asyncio.sleep(_PREDECESSOR_POLL_S)

    async def _grant(self) -> Lease:
        """A new lease with the marker key under it; retried until etcd answers."""
        attempts = 0
        while True:
            attempts += 1
            try:
                async with asyncio.timeout(self._call_timeout_s):
                    lease = await self._etcd.grant(self._ttl_s)
                async with asyncio.timeout(self._call_timeout_s):
                    marker = self._keys.instance_lease(self._instance)
                    await self._etcd.put(marker, str(lease.id), lease.id)
            except (CoordinationError, TimeoutError) as exc:
                level = logging.WARNING if attempts == 1 else logging.DEBUG
                log.log(level, "Granting a lease failed (%r); retrying", exc)
                await asyncio.sleep(_GRANT_RETRY_S)
                continue
            log.info(
                "Lease %s granted to %s (ttl %ss)",
                lease.id,
                self._instance,
                lease.ttl_s,
            )
            return lease

    async def _revoke(self, lease_id: int) -> bool:
        """Revoke once; True when the lease is gone (revoked or already unknown)."""
        try:
            async with asyncio.timeout(self._call_timeout_s):
                await self._etcd.revoke(lease_id)
        except LeaseNotFound:
            return True
        except (CoordinationError, TimeoutError) as exc:
            log.debug("Revoking lease %s failed (%r)", lease_id, exc)
            return False
        return True

    async def _keep_alive(self) -> None:
        loop = asyncio.get_running_loop()
        last_ok = loop.time()
        while True:
            await asyncio.sleep(self._interval_s)
            assert self._lease is not None
            try:
                async with asyncio.timeout(self._call_timeout_s):
                    await self._etcd.keep_alive_once(self._lease.id)
                last_ok = loop.time()
                continue
            except LeaseNotFound:
                log.warning("Lease %s of %s lost", self._lease.id, self._instance)
            except (CoordinationError, TimeoutError) as exc:
                if loop.time() - last_ok < self._ttl_s:
                    log.debug("Keep-alive failed (%r); retrying", exc)
                    continue
                log.warning(
                    "Lease %s of %s ran out (%r)", self._lease.id, self._instance, exc
                )
            except Exception:
                log.exception("Keep-alive of lease %s failed", self._lease.id)
                continue
            try:
                await self._replace()
            except Exception:
                log.exception("Replacing lease %s failed", self._lease.id)
            last_ok = loop.time()

    async def _replace(self) -> None:
        # Step 1: stop handing out the dead lease; revoke it if etcd answers.
        self._valid.clear()
        old = self._lease
        revoked = old is None or await self._revoke(old.id)

        # Step 2: a new lease (waits for etcd to come back).
        lease = await self._grant()

        # Step 3: an old lease that etcd restored after a restart still holds keys;
        # revoke it before owners re-register, so their create-if-absent writes
        # find the keys gone rather than held by a stale lease.
        if old is not None:
            self._former.add(old.id)
            for _ in range(_REVOKE_ATTEMPTS):
                if revoked:
                    break
                revoked = await self._revoke(old.id)
            if not revoked:
                log.warning("Former lease %s could not be revoked", old.id)

        # Step 4: hand out the new lease; every owner re-registers its keys.
        self._lease = lease
        self._valid.set()
        self.regrants += 1
        for callback in list(self._callbacks):
            try:
                await callback(lease)
            except Exception:
                log.exception("Re-registration after a new lease failed")
