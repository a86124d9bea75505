"""MemoryEtcd: an in-process store with etcd's semantics, for standalone Wisp.

Revisions, prefix ranges, version-compare transactions, leases with TTL and prefix
watches (with history replay from a revision) behave as etcd's do; the same
conformance suite runs against this and a real etcd server.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from wisp.core.errors import (
    CoordinationError,
    CoordinationUnavailable,
    LeaseNotFound,
    RevisionCompacted,
)
from wisp.infra.etcd.client import EventType, KeyValue, Lease, WatchEvent

#: events kept for watches that start from an old revision
HISTORY_SIZE = 20_000


@dataclass(slots=True)
class _Lease:
    id: int
    ttl_s: int
    deadline: float
    keys: set[str] = field(default_factory=set)
    timer: asyncio.TimerHandle | None = None


class MemoryWatch:
    """A watch on MemoryEtcd; events arrive in revision order."""

    def __init__(
        self, owner: MemoryEtcd, key: str, prefix: bool, start_revision: int = 0
    ) -> None:
        self._owner = owner
        self.key = key
        self.prefix = prefix
        self.start_revision = start_revision
        self._events: asyncio.Queue[WatchEvent | None] = asyncio.Queue()
        self._cancelled = False
        self._broken = False

    def matches(self, key: str) -> bool:
        return key.startswith(self.key) if self.prefix else key == self.key

    def deliver(self, event: WatchEvent) -> None:
        if not self._cancelled and event.revision >= self.start_revision:
            self._events.put_nowait(event)

    def __aiter__(self) -> AsyncIterator[WatchEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[WatchEvent]:
        while True:
            event = await self._events.get()
            if event is None:
                if self._broken:
                    raise CoordinationUnavailable("watch stream broken")
                if self._owner.closed and not self._cancelled:
                    raise CoordinationError("etcd client closed")
                return
            yield event

    async def cancel(self) -> None:
        if not self._cancelled:
            self._cancelled = True
            self._owner._watches.discard(self)
            self._events.put_nowait(None)

    def _close(self) -> None:
        self._events.put_nowait(None)

    def _break(self) -> None:
        self._broken = True
        self._events.put_nowait(None)


class MemoryEtcd:
    """An EtcdClient whose data lives in this process."""

    def __init__(self) -> None:
        self._data: dict[str, KeyValue] = {}
        self._revision = 1
        self._leases: dict[int, _Lease] = {}
        self._lease_ids = itertools.count(7_000_000_000_000_000_001)
        self._watches: set[MemoryWatch] = set()
        self._history: deque[WatchEvent] = deque()
        #: watches may start at this revision or later (etcd's compact revision)
        self._compact_revision = 0
        self.closed = False

    # --- reads --------------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        self._check_open()
        return self._data.get(key)

    async def get_prefix(self, prefix: str) -> list[KeyValue]:
        self._check_open()
        return [self._data[k] for k in sorted(self._data) if k.startswith(prefix)]

    async def get_count(self, prefix: str) -> int:
        self._check_open()
        return sum(1 for k in self._data if k.startswith(prefix))

    async def current_revision(self) -> int:
        self._check_open()
        return self._revision

    # --- writes -------------------------------------------------------------------

    async def put(self, key: str, value: str, lease: int = 0) -> int:
        self._check_open()
        return self._put(key, value, lease)

    async def delete(self, key: str) -> bool:
        self._check_open()
        return self._delete(key)

    async def delete_prefix(self, prefix: str) -> int:
        self._check_open()
        doomed = [k for k in sorted(self._data) if k.startswith(prefix)]
        if not doomed:
            return 0
        self._revision += 1
        for key in doomed:
            self._remove(key, self._revision)
        return len(doomed)

    async def put_txn(
        self, key: str, value: str, cmp_version: int, lease: int = 0
    ) -> bool:
        self._check_open()
        current = self._data.get(key)
        version = current.version if current else 0
        if version != cmp_version:
            return False
        self._put(key, value, lease)
        return True

    async def compare_and_swap(self, key: str, expected: str, value: str) -> bool:
        self._check_open()
        current = self._data.get(key)
        if current is None or current.value != expected:
            return False
        self._put(key, value, current.lease)
        return True

    # --- leases -------------------------------------------------------------------

    async def grant(self, ttl_s: int) -> Lease:
        self._check_open()
        lease_id = next(self._lease_ids)
        loop = asyncio.get_running_loop()
        lease = _Lease(lease_id, ttl_s, loop.time() + ttl_s)
        self._leases[lease_id] = lease
        self._arm(lease)
        return Lease(lease_id, ttl_s)

    async def revoke(self, lease_id: int) -> None:
        self._check_open()
        if lease_id not in self._leases:
            raise LeaseNotFound(lease_id)
        self._expire(lease_id)

    async def keep_alive_once(self, lease_id: int) -> int:
        self._check_open()
        lease = self._leases.get(lease_id)
        if lease is None:
            raise LeaseNotFound(lease_id)
        lease.deadline = asyncio.get_running_loop().time() + lease.ttl_s
        return lease.ttl_s

    # --- watches ------------------------------------------------------------------

    async def watch(
        self, key: str, *, prefix: bool = False, start_revision: int = 0
    ) -> MemoryWatch:
        self._check_open()
        watch = MemoryWatch(self, key, prefix, start_revision)
        if start_revision > 0:
            if start_revision < self._compact_revision:
                raise RevisionCompacted(start_revision)
            for event in self._history:
                if event.revision >= start_revision and watch.matches(event.key):
                    watch.deliver(event)
        self._watches.add(watch)
        return watch

    async def compact(self, revision: int) -> None:
        """Drop the history before `revision`, as etcd's compaction does."""
        self._check_open()
        if revision > self._revision:
            raise CoordinationError("required revision is a future revision")
        if revision <= self._compact_revision:
            raise RevisionCompacted(revision)
        self._compact_revision = revision
        while self._history and self._history[0].revision < revision:
            self._history.popleft()

    def break_watches(self) -> None:
        """End every open watch with CoordinationUnavailable, as a broken stream
        to a real server would (for tests of the resume logic)."""
        for watch in list(self._watches):
            watch._break()
        self._watches.clear()

    async def close(self) -> None:
        self.closed = True
        for lease in self._leases.values():
            if lease.timer is not None:
                lease.timer.cancel()
        for watch in list(self._watches):
            watch._close()
        self._watches.clear()

    # --- internals ----------------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            raise CoordinationError("etcd client closed")

    def _put(self, key: str, value: str, lease_id: int) -> int:
        if lease_id and lease_id not in self._leases:
            raise LeaseNotFound(lease_id)
        self._revision += 1
        old = self._data.get(key)
        if old is not None and old.lease and old.lease != lease_id:
            old_lease = self._leases.get(old.lease)
            if old_lease is not None:
                old_lease.keys.discard(key)
        if lease_id:
            self._leases[lease_id].keys.add(key)
        self._data[key] = KeyValue(
            key=key,
            value=value,
            create_revision=old.create_revision if old else self._revision,
            mod_revision=self._revision,
            version=old.version + 1 if old else 1,
            lease=lease_id,
        )
        prev = old.value if old else ""
        self._publish(WatchEvent(EventType.PUT, key, value, prev, self._revision))
        return self._revision

    def _delete(self, key: str) -> bool:
        if key not in self._data:
            return False
        self._revision += 1
        self._remove(key, self._revision)
        return True

    def _remove(self, key: str, revision: int) -> None:
        old = self._data.pop(key)
        if old.lease:
            lease = self._leases.get(old.lease)
            if lease is not None:
                lease.keys.discard(key)
        self._publish(WatchEvent(EventType.DELETE, key, old.value, old.value, revision))

    def _publish(self, event: WatchEvent) -> None:
        self._history.append(event)
        if len(self._history) > HISTORY_SIZE:
            # Automatic compaction: a revision is replayable only when complete.
            dropped = self._history.popleft()
            self._compact_revision = max(self._compact_revision, dropped.revision + 1)
        for watch in list(self._watches):
            if watch.matches(event.key):
                watch.deliver(event)

    def _arm(self, lease: _Lease) -> None:
        loop = asyncio.get_running_loop()
        delay = max(0.0, lease.deadline - loop.time())
        lease.timer = loop.call_later(delay, self._check_expiry, lease.id)

    def _check_expiry(self, lease_id: int) -> None:
        lease = self._leases.get(lease_id)
        if lease is None or self.closed:
            return
        if asyncio.get_running_loop().time() >= lease.deadline:
            self._expire(lease_id)
        else:
            self._arm(lease)

    def _expire(self, lease_id: int) -> None:
        lease = self._leases.pop(lease_id)
        if lease.timer is not None:
            lease.timer.cancel()
        if not lease.keys:
            return
        # etcd deletes all keys of a lease in one revision
        self._revision += 1
        for key in sorted(lease.keys):
            if key in self._data and self._data[key].lease == lease_id:
                self._remove(key, self._revision)
