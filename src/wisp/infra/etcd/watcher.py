"""WatcherService (module 9): shared etcd watches fanned out to subscribers.

Subscribers register an exact key or a prefix under a name; `(key, name)` is unique,
so registering again replaces the callbacks. Callbacks are plain functions called in
the watcher's task: they must not block (start a task for slow work).

A new key or prefix gets its stream asynchronously: subscribers see the changes made
after it opened (`wait_watching` tells when).

DIVERGENCE(openwhisk): the original opens one watch over the whole keyspace and loses
the events of a broken stream; here each watched key or prefix has its own stream
that resumes from the last revision seen, and re-reads the range (synthesising the
missed puts and deletes) when that history was compacted or etcd came back with less
history than the stream had seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from wisp.core.errors import CoordinationError, RevisionCompacted
from wisp.infra.etcd.client import EtcdClient, EventType, KeyValue, WatchEvent

log = logging.getLogger(__name__)

#: how long stop() waits for a cancelled task
_STOP_TIMEOUT_S = 5.0

WatchCallback = Callable[[WatchEvent], None]

_BACKOFF_START_S = 0.05
_BACKOFF_MAX_S = 1.0


@dataclass(slots=True)
class _Subscriber:
    on_put: WatchCallback | None
    on_delete: WatchCallback | None


class _Stream:
    """One etcd watch on a key or prefix and the subscribers sharing it."""

    def __init__(self, etcd: EtcdClient, key: str, prefix: bool) -> None:
        self.etcd = etcd
        self.key = key
        self.prefix = prefix
        self.subscribers: dict[str, _Subscriber] = {}
        self.task: asyncio.Task[None] | None = None
        #: last revision delivered; the stream resumes after it
        self.revision = 0
        #: what this stream believes is in etcd, for re-reads after compaction
        self.known: dict[str, str] = {}
        self.ready = asyncio.Event()
        #: the current attempt got the watch open
        self.opened = False
        #: the watch broke and has not been opened again yet
        self.broken = False

    async def run(self) -> None:
        backoff = _BACKOFF_START_S
        while True:
            self.opened = False
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except RevisionCompacted:
                log.warning("Watch history of %s compacted; re-reading", self.key)
                await self._resync()
                continue
            except CoordinationError as exc:
                # One warning per outage; the retries while it lasts are DEBUG.
                level = logging.WARNING if self.opened else logging.DEBUG
                log.log(level, "Watch of %s broken (%s); resuming", self.key, exc)
            except Exception:
                log.exception("Watch of %s failed; resuming", self.key)
            if self.opened:
                # It had been working: the first retry comes quickly.
                backoff = _BACKOFF_START_S
            self.broken = True
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX_S)

    async def _follow(self) -> None:
        """Open the watch after the last revision seen and deliver until it breaks."""
        if self.revision == 0:
            await self._snapshot()
        elif await self.etcd.current_revision() < self.revision:
            # etcd came back with less history than we saw (its data was lost):
            # resuming from our revision would skip everything until it catches up.
            log.warning("etcd revision went back below %s; re-reading", self.revision)
            await self._resync()
        watch = await self.etcd.watch(
            self.key, prefix=self.prefix, start_revision=self.revision + 1
        )
        self.ready.set()
        self.opened = True
        if self.broken:
            self.broken = False
            log.info("Watch of %s resumed after revision %s", self.key, self.revision)
        try:
            async for event in watch:
                self._deliver(event)
        finally:
            with contextlib.suppress(CoordinationError):
                await watch.cancel()
        # The stream ended without an error: the client was closed.
        raise CoordinationError("watch stream ended")

    async def _snapshot(self) -> None:
        # The revision first: changes between the two reads come again as events.
        revision = await self.etcd.current_revision()
        known = {kv.key: kv.value for kv in await self._read()}
        self.revision, self.known = revision, known

    async def _read(self) -> list[KeyValue]:
        if self.prefix:
            return await self.etcd.get_prefix(self.key)
        kv = await self.etcd.get(self.key)
        return [kv] if kv is not None else []

    async def _resync(self) -> None:
        """Re-read the range and deliver the difference to what was known."""
        while True:
            try:
                revision = await self.etcd.current_revision()
                now = {kv.key: kv.value for kv in await self._read()}
                break
            except CoordinationError as exc:
                log.warning("Re-reading %s failed (%s); retrying", self.key, exc)
                await asyncio.sleep(_BACKOFF_MAX_S)
        for key, value in list(self.known.items()):
            if key not in now:
                self._deliver(WatchEvent(EventType.DELETE, key, value, value, revision))
        for key, value in now.items():
            if self.known.get(key) != value:
                prev = self.known.get(key, "")
                self._deliver(WatchEvent(EventType.PUT, key, value, prev, revision))
        self.revision = revision

    def _deliver(self, event: WatchEvent) -> None:
        if event.revision > self.revision:
            self.revision = event.revision
        if event.type is EventType.PUT:
            self.known[event.key] = event.value
        else:
            self.known.pop(event.key, None)
        for name, sub in list(self.subscribers.items()):
            callback = sub.on_put if event.type is EventType.PUT else sub.on_delete
            if callback is None:
                continue
            try:
                callback(event)
            except Exception:
                log.exception("Watch subscriber %s failed on %s", name, event.key)


class WatcherService:
    def __init__(self, etcd: EtcdClient) -> None:
        self._etcd = etcd
        self._streams: dict[tuple[str, bool], _Stream] = {}
        self._running = False

    async def start(self) -> None:
        self._running = True
        for stream in self._streams.values():
            self._launch(stream)

    async def stop(self) -> None:
        self._running = False
        tasks = [s.task for s in self._streams.values() if s.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=_STOP_TIMEOUT_S)
            if pending:
                log.warning("%d watch tasks did not stop", len(pending))
        self._streams.clear()

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
        stream = self._streams.get((key, prefix))
        if stream is None:
            stream = self._streams[(key, prefix)] = _Stream(self._etcd, key, prefix)
            if self._running:
                self._launch(stream)
        stream.subscribers[name] = _Subscriber(on_put, on_delete)

    def unwatch(self, key: str, *, prefix: bool, name: str) -> None:
        stream = self._streams.get((key, prefix))
        if stream is None:
            return
        stream.subscribers.pop(name, None)
        if not stream.subscribers:
            del self._streams[(key, prefix)]
            if stream.task is not None:
                stream.task.cancel()

    async def wait_watching(
        self, key: str, *, prefix: bool, timeout_s: float = 5.0
    ) -> bool:
        """Wait until the stream of `key` is open: every later change reaches its
        subscribers. False when there is no such stream, the service is not
        running, or the stream did not open in time."""
        stream = self._streams.get((key, prefix))
        if stream is None or not self._running:
            return False
        try:
            async with asyncio.timeout(timeout_s):
                await stream.ready.wait()
        except TimeoutError:
            return False
        return True

    async def wait_ready(self, timeout_s: float = 5.0) -> None:
        """Wait until every stream registered so far is open (tests, start-up)."""
        events = [s.ready.wait() for s in self._streams.values()]
        if events:
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*events)

    def _launch(self, stream: _Stream) -> None:
        stream.task = asyncio.get_running_loop().create_task(
            stream.run(), name=f"watch:{stream.key}"
        )
