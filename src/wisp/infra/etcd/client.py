"""EtcdClient: the coordination interface every role uses (seed module 1).

Two backends implement it: `memory.MemoryEtcd` (standalone, in-process, etcd's
semantics) and `aetcd_client.AetcdClient` (a real etcd server). Keys and values are
text; callers never see an exception that is not a `CoordinationError`.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: str
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Lease:
    id: int
    ttl_s: int


class EventType(enum.Enum):
    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: EventType
    key: str
    #: the new value for PUT; the previous value (prev_kv) for DELETE
    value: str
    #: the value before this event, "" when the key did not exist
    prev_value: str
    #: the revision at which this event happened
    revision: int


class Watch(Protocol):
    """A running watch. Iterate for events; `cancel()` ends the iteration.

    The iteration raises `CoordinationError` when the stream breaks; the caller (the
    WatcherService) reopens it from `last_revision + 1`.
    """

    def __aiter__(self) -> AsyncIterator[WatchEvent]: ...

    async def cancel(self) -> None: ...


class EtcdClient(Protocol):
    async def get(self, key: str) -> KeyValue | None: ...

    async def get_prefix(self, prefix: str) -> list[KeyValue]:
        """Every key starting with `prefix`, in key order."""
        ...

    async def get_count(self, prefix: str) -> int: ...

    async def put(self, key: str, value: str, lease: int = 0) -> int:
        """Write `key`; returns the revision of the write."""
        ...

    async def delete(self, key: str) -> bool:
        """Delete `key`; True when it existed."""
        ...

    async def delete_prefix(self, prefix: str) -> int: ...

    async def put_txn(
        self, key: str, value: str, cmp_version: int, lease: int = 0
    ) -> bool:
        """IF version(key) == cmp_version THEN put. cmp_version 0 = create-if-absent."""
        ...

    async def compare_and_swap(self, key: str, expected: str, value: str) -> bool:
        """IF value(key) == expected THEN put(key, value) (no lease change)."""
        ...

    async def grant(self, ttl_s: int) -> Lease: ...

    async def revoke(self, lease_id: int) -> None: ...

    async def keep_alive_once(self, lease_id: int) -> int:
        """Refresh the lease; returns the remaining TTL. Raises LeaseNotFound."""
        ...

    async def current_revision(self) -> int: ...

    async def watch(
        self, key: str, *, prefix: bool = False, start_revision: int = 0
    ) -> Watch:
        """Watch one key or a prefix; start_revision > 0 replays history from it."""
        ...

    async def close(self) -> None: ...
