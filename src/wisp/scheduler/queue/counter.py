"""NamespaceContainerCount (OpenWhisk's ContainerCounter, module 4): per invocation
namespace, how many containers run and how many creations are in flight, counted from
etcd and shared by every queue of that namespace on this scheduler.
"""

from __future__ import annotations

import asyncio
import logging

from wisp.core.errors import CoordinationError
from wisp.infra.etcd.client import EtcdClient, WatchEvent
from wisp.infra.etcd.keys import EtcdKeys
from wisp.infra.etcd.watcher import WatcherService

log = logging.getLogger(__name__)

_DEFAULT_TIMEOUT_S = 5.0


class _PrefixCount:
    """The number of keys under one prefix, recounted after changes.

    Events are coalesced: while a count runs, further events only mark it dirty, and
    one more count follows when it returns.
    """

    def __init__(
        self, etcd: EtcdClient, prefix: str, task_name: str, timeout_s: float
    ) -> None:
        self._etcd = etcd
        self.prefix = prefix
        self._task_name = task_name
        self._timeout_s = timeout_s
        self.value = 0
        self._dirty = False
        self._task: asyncio.Task[None] | None = None

    def changed(self, _event: WatchEvent | None = None) -> None:
        if self._task is not None and not self._task.done():
            self._dirty = True
            return
        self._task = asyncio.get_running_loop().create_task(
            self._recount(), name=self._task_name
        )

    async def wait(self) -> None:
        """Wait for the running recount and its follow-up, if any."""
        if self._task is not None and not self._task.done():
            await asyncio.wait({self._task})

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _recount(self) -> None:
        while True:
            self._dirty = False
            try:
                async with asyncio.timeout(self._timeout_s):
                    self.value = await self._etcd.get_count(self.prefix)
            except (CoordinationError, TimeoutError) as exc:
                # A failed count counts as done; the next event (or dirty flag) retries.
                log.warning("Counting %s failed: %s", self.prefix, exc)
            if not self._dirty:
                return


class NamespaceContainerCount:
    """Running containers and in-flight creations of one invocation namespace."""

    def __init__(
        self,
        namespace: str,
        etcd: EtcdClient,
        keys: EtcdKeys,
        watcher: WatcherService,
        *,
        timeout_s: float = _DEFAULT_TIMEOUT_S,
    ) -> None:
        self.namespace = namespace
        self._watcher = watcher
        self.watch_name = f"container-counter-{namespace}"
        self._existing = _PrefixCount(
            etcd,
            keys.existing_prefix_by_namespace(namespace),
            f"counter:{namespace}:existing",
            timeout_s,
        )
        self._in_progress = _PrefixCount(
            etcd,
            keys.in_progress_prefix_by_namespace(namespace),
            f"counter:{namespace}:in-progress",
            timeout_s,
        )
        self.references = 0

    @property
    def existing_container_num(self) -> int:
        return self._existing.value

    @property
    def in_progress_container_num(self) -> int:
        return self._in_progress.value

    def open(self) -> None:
        for count in (self._existing, self._in_progress):
            self._watcher.watch(
                count.prefix,
                prefix=True,
                name=self.watch_name,
                on_put=count.changed,
                on_delete=count.changed,
            )
            # DIVERGENCE(openwhisk): the original starts at 0 and waits for the first
            # watch event; a new queue in a busy namespace would see free capacity.
            count.changed()

    def close(self) -> None:
        for count in (self._existing, self._in_progress):
            self._watcher.unwatch(count.prefix, prefix=True, name=self.watch_name)
            count.cancel()

    async def recount(self) -> None:
        """Count both prefixes now and wait for the result (tests, start-up)."""
        for count in (self._existing, self._in_progress):
            await count.wait()
            count.changed()
        for count in (self._existing, self._in_progress):
            await count.wait()


class NamespaceContainerCountRegistry:
    """One shared, reference-counted NamespaceContainerCount per namespace."""

    def __init__(
        self,
        etcd: EtcdClient,
        keys: EtcdKeys,
        watcher: WatcherService,
        *,
        timeout_s: float = _DEFAULT_TIMEOUT_S,
    ) -> None:
        self._etcd = etcd
        self._keys = keys
        self._watcher = watcher
        self._timeout_s = timeout_s
        self._counts: dict[str, NamespaceContainerCount] = {}

    def acquire(self, namespace: str) -> NamespaceContainerCount:
        """The shared counter of `namespace`; the first acquisition starts watching."""
        count = self._counts.get(namespace)
        if count is None:
            count = NamespaceContainerCount(
                namespace,
                self._etcd,
                self._keys,
                self._watcher,
                timeout_s=self._timeout_s,
            )
            self._counts[namespace] = count
            count.open()
        count.references += 1
        return count

    def release(self, namespace: str) -> None:
        """Drop one reference; the last one stops watching."""
        count = self._counts.get(namespace)
        if count is None:
            return
        count.references -= 1
        if count.references <= 0:
            del self._counts[namespace]
            count.close()

    def get(self, namespace: str) -> NamespaceContainerCount | None:
        return self._counts.get(namespace)

    def __len__(self) -> int:
        return len(self._counts)
