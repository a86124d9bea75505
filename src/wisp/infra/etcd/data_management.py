"""DataManagementService (module 8): this process's writes to etcd.

Writes to one key run one at a time in arrival order (pending puts/deletes of a key
collapse into the latest), each retried with backoff until it succeeds. "register"
writes are bound to the process lease and written again after a new lease; "store"
writes are plain. Failover: a registered key that disappears is written again.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections import deque
from dataclasses import dataclass, field

from wisp.core.errors import CoordinationError, LeaseNotFound
from wisp.infra.etcd.client import EtcdClient, Lease, WatchEvent
from wisp.infra.etcd.lease import LeaseKeepAliveService
from wisp.infra.etcd.watcher import WatcherService

log = logging.getLogger(__name__)

WATCH_NAME = "data-management-service"
_CALL_TIMEOUT_S = 5.0


class _Kind(enum.Enum):
    ELECT = "elect"
    REGISTER_INITIAL = "register_initial"
    REGISTER = "register"
    STORE = "store"
    UNREGISTER = "unregister"


#: fire-and-forget writes that a later write to the same key makes pointless
_COMPACTABLE = frozenset({_Kind.REGISTER, _Kind.STORE, _Kind.UNREGISTER})


@dataclass(slots=True)
class _Op:
    kind: _Kind
    key: str
    value: str = ""
    failover: bool = False
    result: asyncio.Future[bool] | None = field(default=None)


@dataclass(slots=True)
class _Held:
    """A key this process wrote under its lease and still owns."""

    value: str
    failover: bool
    #: leader keys and initial data are re-taken with create-if-absent
    create_only: bool


class DataManagementService:
    def __init__(
        self,
        etcd: EtcdClient,
        lease: LeaseKeepAliveService,
        watcher: WatcherService,
        retry_interval_s: float = 1.0,
    ) -> None:
        self._etcd = etcd
        self._lease = lease
        self._watcher = watcher
        self._retry_s = retry_interval_s
        self._pending: dict[str, deque[_Op]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._held: dict[str, _Held] = {}
        self._last_sent: dict[str, str] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopped = False
        lease.on_new_lease(self._reregister)

    async def start(self) -> None:
        self._stopped = False

    async def stop(self) -> None:
        """Finish pending writes (bounded), then stop."""
        with contextlib.suppress(TimeoutError):
            await self.flush(timeout_s=2.0)
        self._stopped = True
        for key in list(self._held):
            self._watcher.unwatch(key, prefix=False, name=WATCH_NAME)
        workers = list(self._workers.values())
        for task in workers:
            task.cancel()
        for task in workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers.clear()
        self._pending.clear()

    # --- the API ------------------------------------------------------------------

    async def elect_leader(self, key: str, value: str) -> bool:
        """Create-if-absent under the lease; True when this process became leader."""
        return await self._submit_waiting(_Op(_Kind.ELECT, key, value))

    async def register_initial_data(
        self, key: str, value: str, *, failover: bool = True
    ) -> bool:
        """Create-if-absent under the lease; True if created, False if it existed."""
        return await self._submit_waiting(
            _Op(_Kind.REGISTER_INITIAL, key, value, failover)
        )

    def register_data(self, key: str, value: str, *, failover: bool = True) -> None:
        """Put (overwrite) under the lease, in the background."""
        self._submit(_Op(_Kind.REGISTER, key, value, failover))

    def store_data(self, key: str, value: str) -> None:
        """Put without a lease, in the background (survives this process)."""
        self._submit(_Op(_Kind.STORE, key, value))

    def unregister_data(self, key: str) -> None:
        """Stop failover for `key` and delete it, in the background."""
        self._forget(key)
        self._submit(_Op(_Kind.UNREGISTER, key))

    def update_data_on_change(self, key: str, value: str) -> None:
        """register_data only when `value` differs from the last one sent."""
        if self._last_sent.get(key) == value:
            return
        self._last_sent[key] = value
        self.register_data(key, value)

    async def flush(self, timeout_s: float = 5.0) -> None:
        """Wait until every pending write has been performed (tests, shutdown)."""
        await asyncio.wait_for(self._idle.wait(), timeout_s)

    def held_keys(self) -> dict[str, str]:
        """Keys this process owns under its lease, with their values."""
        return {k: h.value for k, h in self._held.items()}

    # --- queueing -----------------------------------------------------------------

    async def _submit_waiting(self, op: _Op) -> bool:
        op.result = asyncio.get_running_loop().create_future()
        self._submit(op)
        return await op.result

    def _submit(self, op: _Op) -> None:
        if self._stopped:
            log.warning("Write to %s after stop ignored", op.key)
            if op.result is not None and not op.result.done():
                op.result.set_exception(CoordinationError("data management stopped"))
            return
        queue = self._pending.setdefault(op.key, deque())
        if op.kind in _COMPACTABLE:
            kept = [p for p in queue if p.kind not in _COMPACTABLE]
            queue.clear()
            queue.extend(kept)
        queue.append(op)
        self._idle.clear()
        if op.key not in self._workers:
            self._workers[op.key] = asyncio.get_running_loop().create_task(
                self._work(op.key), name=f"dms:{op.key}"
            )

    async def _work(self, key: str) -> None:
        queue = self._pending[key]
        try:
            while queue:
                op = queue.popleft()
                await self._perform_until_done(op)
        finally:
            if not queue:
                self._pending.pop(key, None)
            self._workers.pop(key, None)
            if not self._workers:
                self._idle.set()

    async def _perform_until_done(self, op: _Op) -> None:
        delay = self._retry_s / 4
        while True:
            try:
                outcome = await self._perform(op)
            except (CoordinationError, TimeoutError) as exc:
                log.warning(
                    "etcd %s of %s failed (%s); retrying", op.kind.value, op.key, exc
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_s)
                continue
            if op.result is not None and not op.result.done():
                op.result.set_result(outcome)
            return

    async def _perform(self, op: _Op) -> bool:
        if op.kind is _Kind.UNREGISTER:
            await asyncio.wait_for(self._etcd.delete(op.key), _CALL_TIMEOUT_S)
            return True
        if op.kind is _Kind.STORE:
            await asyncio.wait_for(self._etcd.put(op.key, op.value), _CALL_TIMEOUT_S)
            return True

        lease = await self._lease.get_lease()
        try:
            if op.kind is _Kind.REGISTER:
                await asyncio.wait_for(
                    self._etcd.put(op.key, op.value, lease.id), _CALL_TIMEOUT_S
                )
                created = True
            else:
                created = await asyncio.wait_for(
                    self._etcd.put_txn(op.key, op.value, 0, lease.id), _CALL_TIMEOUT_S
                )
        except LeaseNotFound:
            # The lease service notices too and grants a new one; wait for it.
            await asyncio.sleep(self._retry_s / 4)
            raise
        if not created:
            # Taken already: by this process under this lease counts as ours.
            current = await asyncio.wait_for(self._etcd.get(op.key), _CALL_TIMEOUT_S)
            created = current is not None and current.lease == lease.id
        if created:
            self._hold(op)
        elif op.key in self._held:
            # Someone else owns the key now (e.g. another scheduler took a leader key
            # while our lease was gone): stop claiming it.
            self._forget(op.key)
        return created

    # --- ownership, failover and re-registration ------------------------------------

    def _hold(self, op: _Op) -> None:
        create_only = op.kind is not _Kind.REGISTER
        self._held[op.key] = _Held(op.value, op.failover, create_only)
        if op.failover:
            self._watcher.watch(
                op.key, prefix=False, name=WATCH_NAME, on_delete=self._on_deleted
            )

    def _forget(self, key: str) -> None:
        held = self._held.pop(key, None)
        self._last_sent.pop(key, None)
        if held is not None and held.failover:
            self._watcher.unwatch(key, prefix=False, name=WATCH_NAME)

    def _on_deleted(self, event: WatchEvent) -> None:
        held = self._held.get(event.key)
        if held is None or not held.failover or self._stopped:
            return
        log.info("Registered key %s disappeared; writing it again", event.key)
        self._submit(_Op(_Kind.REGISTER_INITIAL, event.key, held.value, True))

    async def _reregister(self, lease: Lease) -> None:
        log.info("Re-registering %d keys under lease %s", len(self._held), lease.id)
        for key, held in list(self._held.items()):
            kind = _Kind.REGISTER_INITIAL if held.create_only else _Kind.REGISTER
            self._submit(_Op(kind, key, held.value, held.failover))
