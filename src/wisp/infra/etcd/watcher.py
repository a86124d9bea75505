"""WatcherService (module 9): shared etcd watches fanned out to subscribers.

Subscribers register an exact key or a prefix under a name; `(key, name)` is unique,
so registering again replaces the callbacks. Callbacks are plain functions called in
the watcher's task: they must not block (start a task for slow work).
"""

from __future__ import annotations

from collections.abc import Callable

from wisp.infra.etcd.client import EtcdClient, WatchEvent

WatchCallback = Callable[[WatchEvent], None]


class WatcherService:
    def __init__(self, etcd: EtcdClient) -> None:
        raise NotImplementedError

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def watch(
        self,
        key: str,
        *,
        prefix: bool,
        name: str,
        on_put: WatchCallback | None = None,
        on_delete: WatchCallback | None = None,
    ) -> None:
        """Subscribe `name` to puts and/or deletes of `key` (or every key under it)."""
        raise NotImplementedError

    def unwatch(self, key: str, *, prefix: bool, name: str) -> None:
        raise NotImplementedError
