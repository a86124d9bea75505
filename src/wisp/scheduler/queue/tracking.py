"""What a MemoryQueue knows of its action's containers and creations: two sets fed by
etcd (an initial read, then watches), and the namespace-wide counts beside them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from wisp.core.errors import CoordinationError
from wisp.infra.etcd.client import EtcdClient, WatchEvent
from wisp.infra.etcd.keys import EtcdKeys, last_segment
from wisp.infra.etcd.watcher import WatcherService
from wisp.scheduler.queue.counter import (
    NamespaceContainerCount,
    NamespaceContainerCountRegistry,
)

log = logging.getLogger(__name__)

_ETCD_TIMEOUT_S = 5.0


class ContainerTracker:
    """The existing containers and in-progress creations of one queue's revision.

    The queue changes the sets directly too (a container that polls exists; a creation
    it sends is in progress at once); etcd events keep them in line with the invokers.
    """

    def __init__(
        self,
        *,
        name: str,
        invocation_namespace: str,
        fqn: str,
        revision: str,
        keys: EtcdKeys,
        etcd: EtcdClient,
        watcher: WatcherService,
        watch_name: str,
        counters: NamespaceContainerCountRegistry,
        is_live: Callable[[], bool],
        touch: Callable[[], None],
        container_gone: Callable[[str], None],
    ) -> None:
        """`is_live` says whether events still count, `touch` is called for each
        event that does, and `container_gone` for every deleted container (once it
        has left `containers`)."""
        self._name = name
        self._ns = invocation_namespace
        self._etcd = etcd
        self._watcher = watcher
        self._watch_name = watch_name
        self._existing_prefix = keys.existing_prefix(
            invocation_namespace, fqn, revision
        )
        self._in_progress_prefix = keys.in_progress_prefix(
            invocation_namespace, fqn, revision
        )
        self._counters = counters
        self._is_live = is_live
        self._touch = touch
        self._container_gone = container_gone

        self.containers: set[str] = set()
        self.creations: set[str] = set()
        self._counter: NamespaceContainerCount | None = None
        self._watching = False
        self._syncing = False
        self._deleted_while_syncing: set[str] = set()

    def watch(self) -> None:
        """Follow the containers and creations (and the namespace's counts)."""
        self._counter = self._counters.acquire(self._ns)
        self._watcher.watch(
            self._existing_prefix,
            prefix=True,
            name=self._watch_name,
            on_put=self._on_container_put,
            on_delete=self._on_container_delete,
        )
        self._watcher.watch(
            self._in_progress_prefix,
            prefix=True,
            name=self._watch_name,
            on_put=self._on_creation_put,
            on_delete=self._on_creation_delete,
        )
        self._watching = True

    def release(self) -> None:
        if self._watching:
            for prefix in (self._existing_prefix, self._in_progress_prefix):
                self._watcher.unwatch(prefix, prefix=True, name=self._watch_name)
            self._watching = False
        if self._counter is not None:
            self._counters.release(self._ns)
            self._counter = None

    def namespace_counts(self) -> tuple[int, int]:
        """Existing containers and creations in progress in the whole namespace."""
        existing = in_progress = 0
        if self._counter is not None:
            existing = self._counter.existing_container_num
            in_progress = self._counter.in_progress_container_num
        # DIVERGENCE(openwhisk): the namespace counts reach us through etcd and lag
        # behind this queue's own containers and creations; never count fewer.
        return (
            max(existing, len(self.containers)),
            max(in_progress, len(self.creations)),
        )

    async def sync(self) -> None:
        """Read the containers and creations that exist already.

        DIVERGENCE(openwhisk): the original learns them only from later watch events
        or polls, so a new queue could under-count them.
        """
        self._syncing = True
        try:
            for prefix, target in (
                (self._existing_prefix, self.containers),
                (self._in_progress_prefix, self.creations),
            ):
                try:
                    async with asyncio.timeout(_ETCD_TIMEOUT_S):
                        kvs = await self._etcd.get_prefix(prefix)
                except (CoordinationError, TimeoutError) as exc:
                    log.warning(
                        "Queue %s: reading %s failed: %s", self._name, prefix, exc
                    )
                    continue
                for kv in kvs:
                    ident = last_segment(kv.key)
                    if ident not in self._deleted_while_syncing:
                        target.add(ident)
        finally:
            self._syncing = False
            self._deleted_while_syncing.clear()

    def _on_container_put(self, event: WatchEvent) -> None:
        if not self._is_live():
            return
        self._touch()
        self.containers.add(last_segment(event.key))

    def _on_container_delete(self, event: WatchEvent) -> None:
        if not self._is_live():
            return
        self._touch()
        container_id = last_segment(event.key)
        if self._syncing:
            self._deleted_while_syncing.add(container_id)
        self.containers.discard(container_id)
        self._container_gone(container_id)

    def _on_creation_put(self, event: WatchEvent) -> None:
        if not self._is_live():
            return
        self._touch()
        self.creations.add(last_segment(event.key))

    def _on_creation_delete(self, event: WatchEvent) -> None:
        if not self._is_live():
            return
        self._touch()
        creation_id = last_segment(event.key)
        if self._syncing:
            self._deleted_while_syncing.add(creation_id)
        self.creations.discard(creation_id)
