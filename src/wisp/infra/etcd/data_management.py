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
#: how long stop() waits for cancelled writers
_STOP_TIMEOUT_S = 5.0
#: bound of one etcd call (asyncio.timeout: wait_for can lose a cancellation on 3.11)
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
        #: the op each worker is performing now
        self._in_flight: dict[str, _Op] = {}
        #: checks of keys whose failover watch is opening
        self._checks: set[asyncio.Task[None]] = set()
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
        workers = [*self._workers.values(), *self._checks]
        for task in workers:
            task.cancel()
        if workers:
            _, pending = await asyncio.wait(workers, timeout=_STOP_TIMEOUT_S)
            if pending:
                log.warning("%d etcd writers did not stop", len(pending))
        self._workers.clear()
        self._checks.clear()

        # Callers still waiting for an election or initial data get an answer.
        for ops in self._pending.values():
            for op in ops:
                if op.result is not None and not op.result.done():
                    op.result.set_exception(
                        CoordinationError("data management stopped")
                    )
        for op in self._in_flight.values():
            if op.result is not None and not op.result.done():
                op.result.set_exception(CoordinationError("data management stopped"))
        self._pending.clear()
        self._in_flight.clear()

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
        async with asyncio.timeout(timeout_s):
            await self._idle.wait()

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
                self._in_flight[key] = op
                await self._perform_until_done(op)
                del self._in_flight[key]
        finally:
            if not queue:
                self._pending.pop(key, None)
            self._workers.pop(key, None)
            if not self._workers:
                self._idle.set()

    async def _perform_until_done(self, op: _Op) -> None:
        delay = self._retry_s / 4
        attempts = 0
        while True:
            attempts += 1
            try:
                outcome = await self._perform(op)
            except (CoordinationError, TimeoutError) as exc:
                log.log(
                    logging.WARNING if attempts == 1 else logging.DEBUG,
                    "etcd %s of %s failed (%r); retrying",
                    op.kind.value,
                    op.key,
                    exc,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_s)
                continue
            except Exception as exc:
                # Not an etcd failure: retrying would fail the same way.
                log.exception("etcd %s of %s failed", op.kind.value, op.key)
                if op.result is not None and not op.result.done():
                    op.result.set_exception(
                        CoordinationError(f"{op.kind.value} of {op.key}: {exc}")
                    )
                return
            if op.result is not None and not op.result.done():
                op.result.set_result(outcome)
            return

    async def _perform(self, op: _Op) -> bool:
        if op.kind is _Kind.UNREGISTER:
            async with asyncio.timeout(_CALL_TIMEOUT_S):
                await self._etcd.delete(op.key)
            return True
        if op.kind is _Kind.STORE:
            async with asyncio.timeout(_CALL_TIMEOUT_S):
                await self._etcd.put(op.key, op.value)
            return True

        lease = await self._lease.get_lease()
        try:
            async with asyncio.timeout(_CALL_TIMEOUT_S):
                if op.kind is _Kind.REGISTER:
                    await self._etcd.put(op.key, op.value, lease.id)
                    created = True
                else:
                    created = await self._etcd.put_txn(op.key, op.value, 0, lease.id)
        except LeaseNotFound:
            # The lease service notices too and grants a new one; wait for it.
            await asyncio.sleep(self._retry_s / 4)
            raise
        if not created:
            created = await self._already_ours(op, lease)
        if created and self._superseded(op.key):
            # An unregister arrived while this write was in flight: it is not held.
            return created
        if created:
            if self._hold(op):
                self._spawn_check(op.key)
        elif op.key in self._held:
            # Someone else owns the key now (e.g. another scheduler took a leader key
            # while our lease was gone): stop claiming it.
            self._forget(op.key)
        return created

    async def _already_ours(self, op: _Op, lease: Lease) -> bool:
        """A create-if-absent found the key taken: ours if this process wrote it,
        under this lease or a former one (etcd restores leases after a restart)."""
        async with asyncio.timeout(_CALL_TIMEOUT_S):
            current = await self._etcd.get(op.key)
        if current is None or not self._lease.is_own(current.lease):
            return False
        if current.lease != lease.id:
            async with asyncio.timeout(_CALL_TIMEOUT_S):
                await self._etcd.put(op.key, op.value, lease.id)
        return True

    def _superseded(self, key: str) -> bool:
        return any(p.kind is _Kind.UNREGISTER for p in self._pending.get(key, ()))

    # --- ownership, failover and re-registration ------------------------------------

    def _hold(self, op: _Op) -> bool:
        """Own `op.key`; True when its failover watch is new."""
        create_only = op.kind is not _Kind.REGISTER
        previous = self._held.get(op.key)
        if previous is not None and op.kind is _Kind.REGISTER_INITIAL:
            # A failover rewrite keeps the key's original register semantics.
            create_only = previous.create_only
        self._held[op.key] = _Held(op.value, op.failover, create_only)
        watched = previous is not None and previous.failover
        if op.failover:
            self._watcher.watch(
                op.key, prefix=False, name=WATCH_NAME, on_delete=self._on_deleted
            )
        elif watched:
            self._watcher.unwatch(op.key, prefix=False, name=WATCH_NAME)
        return op.failover and not watched

    def _spawn_check(self, key: str) -> None:
        task = asyncio.get_running_loop().create_task(
            self._check_after_watch(key), name=f"dms-check:{key}"
        )
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    async def _check_after_watch(self, key: str) -> None:
        """A delete between the write and the opening of the new failover watch
        reaches no subscriber: once the watch is open, look at the key itself."""
        try:
            if not await self._watcher.wait_watching(
                key, prefix=False, timeout_s=_CALL_TIMEOUT_S
            ):
                return
            async with asyncio.timeout(_CALL_TIMEOUT_S):
                current = await self._etcd.get(key)
        except (CoordinationError, TimeoutError) as exc:
            log.debug("Checking %s after watching it failed (%s)", key, exc)
            return
        held = self._held.get(key)
        if current is None and held is not None and held.failover:
            log.info("Registered key %s disappeared; writing it again", key)
            self._submit(_Op(_Kind.REGISTER_INITIAL, key, held.value, True))

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
