"""FunctionPullingContainerPool (module 16): this invoker's containers and memory.

Places each container creation on a paused container of the same action (warm), or a
new one (cold, evicting the least recently used paused containers when memory is
short), or refuses it; answers every creation with exactly one creation ack; drains
containers on deletion messages and on disable; reports memory to the health manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from wisp.config.model import InvokerConfig
from wisp.core.entity import (
    SUPPORTED_KINDS,
    FullyQualifiedEntityName,
    WhiskAction,
    revision_generation,
)
from wisp.core.errors import MessagingError
from wisp.core.ids import InvokerInstanceId
from wisp.core.messages import (
    ContainerCreationAckMessage,
    ContainerCreationError,
    ContainerCreationMessage,
    ContainerDeletionMessage,
    encode,
)
from wisp.infra.messaging.broker import MessageProducer
from wisp.infra.messaging.topics import creation_ack_topic
from wisp.invoker.health import MemoryInfo

log = logging.getLogger(__name__)

# DIVERGENCE(openwhisk): no stem cells (prewarmed containers) yet; every creation is
# either a paused container's reuse or a cold start.

#: containers drained at once on disable (OpenWhisk's batch-deletion-size)
BATCH_DELETION_SIZE = 10
ACK_SEND_TIMEOUT_S = 5.0
ACK_SEND_TRIES = 3
STOP_TIMEOUT_S = 15.0

PROXY_INIT_FAILED = "ContainerProxy init failed."

_EXECUTABLE_KINDS = frozenset(SUPPORTED_KINDS) | frozenset(SUPPORTED_KINDS.values())


class PooledProxy(Protocol):
    """What the pool needs from a container proxy (FunctionPullingContainerProxy)."""

    last_used: float

    @property
    def idle(self) -> bool:
        """Warm and pulling with no activation in flight."""
        ...

    @property
    def invocation_namespace(self) -> str: ...

    @property
    def action(self) -> FullyQualifiedEntityName: ...

    @property
    def revision(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def memory_mb(self) -> int: ...

    @property
    def container_id(self) -> str | None: ...

    def start(self) -> None: ...

    def resume(self, creation: ContainerCreationMessage) -> None: ...

    def remove(self) -> None: ...

    def graceful_shutdown(self) -> None: ...

    async def stop(self, timeout_s: float = 10.0) -> None: ...


ProxyFactory = Callable[
    [ContainerCreationMessage, WhiskAction, "FunctionPullingContainerPool"], PooledProxy
]
"""(creation, action with code, pool) → a proxy that is not started yet."""


class _Status(enum.Enum):
    #: creating or resuming for a creation that waits for its ack
    IN_PROGRESS = "in_progress"
    #: connected and pulling
    BUSY = "busy"
    #: suspended, reusable by the same action and revision
    PAUSED = "paused"
    #: draining (deletion message or disable); still holds its memory
    DISABLING = "disabling"
    #: evicted or failed: memory already given back, waiting for the proxy to end
    LEAVING = "leaving"


_COUNTED = frozenset(
    {_Status.IN_PROGRESS, _Status.BUSY, _Status.PAUSED, _Status.DISABLING}
)


@dataclass(slots=True)
class _Entry:
    proxy: PooledProxy
    action: WhiskAction
    status: _Status
    #: the creation whose ack is still owed
    pending: ContainerCreationMessage | None = None


class FunctionPullingContainerPool:
    def __init__(
        self,
        *,
        invoker: InvokerInstanceId,
        config: InvokerConfig,
        producer: MessageProducer,
        proxy_factory: ProxyFactory,
        on_memory: Callable[[MemoryInfo], None] | None = None,
        batch_deletion_size: int = BATCH_DELETION_SIZE,
    ) -> None:
        self._invoker = invoker
        self._config = config
        self._producer = producer
        self._new_proxy = proxy_factory
        self._on_memory = on_memory
        self._batch_size = batch_deletion_size
        self._entries: dict[PooledProxy, _Entry] = {}
        self._shutting_down = False
        #: (topic, ack) pairs for the sender task, in order
        self._outbox: asyncio.Queue[tuple[str, ContainerCreationAckMessage]] = (
            asyncio.Queue()
        )
        self._tasks: list[asyncio.Task[None]] = []

    # --- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._send_acks(), name="invoker-pool:creation-acks"),
            loop.create_task(self._sync_memory(), name="invoker-pool:memory-sync"),
        ]

    async def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop every container (bounded), send the acks still owed, stop the tasks."""
        self._shutting_down = True

        # 1. every proxy drains and removes its container, all at once
        proxies = list(self._entries)
        if proxies:
            await asyncio.gather(
                *(p.stop(timeout_s) for p in proxies), return_exceptions=True
            )

        # 2. acks still queued go out (bounded)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._outbox.join(), ACK_SEND_TIMEOUT_S)

        # 3. the background tasks
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    # --- creation and deletion --------------------------------------------------------

    def create(self, creation: ContainerCreationMessage, action: WhiskAction) -> None:
        """Find or make a container for `creation`; every outcome is acked once."""
        if self._shutting_down:
            self.reject(
                creation,
                ContainerCreationError.SHUTTING_DOWN,
                f"{self._invoker} is shutting down, reschedule {creation.action}",
            )
            return
        if action.exec.kind not in _EXECUTABLE_KINDS:
            self.reject(
                creation,
                ContainerCreationError.NON_EXECUTABLE_ACTION,
                f"non-executable action reached the container pool {creation.action}",
            )
            return
        self._place(creation, action)

    def delete(self, msg: ContainerDeletionMessage) -> None:
        """Drain containers of this action at `msg.revision` or older."""
        fqn = msg.action.unversioned()
        limit = revision_generation(msg.revision)
        for entry in list(self._entries.values()):
            proxy = entry.proxy
            if entry.status not in (_Status.BUSY, _Status.PAUSED):
                continue
            if proxy.invocation_namespace != msg.invocation_namespace:
                continue
            if proxy.action.unversioned() != fqn:
                continue
            if revision_generation(proxy.revision) > limit:
                continue
            log.info(
                "Draining %s (%s) after a deletion message",
                proxy.action,
                proxy.revision,
            )
            entry.status = _Status.DISABLING
            proxy.graceful_shutdown()

    def reject(
        self,
        creation: ContainerCreationMessage,
        error: ContainerCreationError,
        reason: str,
    ) -> None:
        """Answer `creation` with an error ack."""
        log.info(
            "Creation %s refused: %s (%s)", creation.creation_id, error.value, reason
        )
        self._ack(creation, error, reason)

    def _place(self, creation: ContainerCreationMessage, action: WhiskAction) -> None:
        # a. a paused container of the same namespace, action and revision
        warm = self._find_warm(creation)
        if warm is not None:
            log.debug("Reusing paused container for %s", creation.action)
            warm.status = _Status.IN_PROGRESS
            warm.pending = creation
            warm.proxy.resume(creation)
            return

        # b. a new container, evicting idle ones when memory is short
        required = action.limits.memory_mb
        free = self._free_mb()
        evictable = self._evictable(creation)
        if required > free + sum(e.proxy.memory_mb for e in evictable):
            self._report_memory()
            self.reject(
                creation,
                ContainerCreationError.RESOURCE_NOT_ENOUGH,
                f"{self._invoker} doesn't have enough resource for container: "
                f"{creation.action}",
            )
            return
        if required > free:
            self._evict(evictable, required - free)
        proxy = self._new_proxy(creation, action, self)
        self._entries[proxy] = _Entry(proxy, action, _Status.IN_PROGRESS, creation)
        log.debug("Cold start for %s (%s MB)", creation.action, required)
        proxy.start()

    def _find_warm(self, creation: ContainerCreationMessage) -> _Entry | None:
        """The most recently used paused container of this namespace, action and
        revision (OpenWhisk takes the first match; the freshest one is the one LRU
        eviction would keep longest anyway)."""
        fqn = creation.action.unversioned()
        matches = [
            entry
            for entry in self._entries.values()
            if entry.status is _Status.PAUSED
            and entry.proxy.invocation_namespace == creation.invocation_namespace
            and entry.proxy.action.unversioned() == fqn
            and entry.proxy.revision == creation.revision
        ]
        return max(matches, key=lambda e: e.proxy.last_used, default=None)

    def _evictable(
        self, creation: ContainerCreationMessage | None = None
    ) -> list[_Entry]:
        """Containers that may make room, least recently used first: paused ones,
        then running ones with nothing in flight.

        DIVERGENCE(openwhisk): the original evicts only paused containers, so a new
        action waits for the pause grace (10 s) of idle containers of other actions
        when the invoker's memory is taken; here idle running ones make room too.
        """
        paused = [e for e in self._entries.values() if e.status is _Status.PAUSED]
        idle = [
            e
            for e in self._entries.values()
            if e.status is _Status.BUSY
            and e.proxy.idle
            and (creation is None or not _serves(e.proxy, creation))
        ]
        by_age = lambda e: e.proxy.last_used  # noqa: E731
        return sorted(paused, key=by_age) + sorted(idle, key=by_age)

    def _evict(self, candidates: list[_Entry], needed_mb: int) -> None:
        """Remove `candidates` in order until `needed_mb` is freed."""
        freed = 0
        for entry in candidates:
            if freed >= needed_mb:
                break
            log.info("Evicting idle container of %s", entry.proxy.action)
            entry.status = _Status.LEAVING
            freed += entry.proxy.memory_mb
            entry.proxy.remove()

    # --- events from proxies (ProxyParent) ------------------------------------------------

    def proxy_ready(self, proxy: PooledProxy) -> None:
        entry = self._entries.get(proxy)
        if entry is None:
            return
        if entry.status is _Status.IN_PROGRESS:
            entry.status = _Status.BUSY
        self._ack_success(entry)
        if self._shutting_down:
            self._drain_more()

    def proxy_resumed(self, proxy: PooledProxy) -> None:
        self.proxy_ready(proxy)

    def proxy_creation_failed(self, proxy: PooledProxy, reason: str) -> None:
        entry = self._entries.get(proxy)
        if entry is None:
            return
        entry.status = _Status.LEAVING
        if entry.pending is not None:
            creation, entry.pending = entry.pending, None
            self.reject(creation, ContainerCreationError.WHISK_ERROR, reason)

    def proxy_paused(self, proxy: PooledProxy) -> None:
        entry = self._entries.get(proxy)
        if entry is not None and entry.status is _Status.BUSY:
            entry.status = _Status.PAUSED

    def proxy_resume_failed(
        self, proxy: PooledProxy, creation: ContainerCreationMessage
    ) -> None:
        entry = self._entries.get(proxy)
        if entry is None:
            return
        entry.status = _Status.LEAVING
        if entry.pending is creation:
            entry.pending = None
        log.info("Resume failed; choosing again for %s", creation.action)
        if self._shutting_down:
            self.create(creation, entry.action)
        else:
            self._place(creation, entry.action)

    def proxy_removed(self, proxy: PooledProxy) -> None:
        entry = self._entries.pop(proxy, None)
        if entry is None:
            return
        if entry.pending is not None:
            self.reject(
                entry.pending, ContainerCreationError.UNKNOWN_ERROR, PROXY_INIT_FAILED
            )
        if self._shutting_down:
            self._drain_more()

    # --- disable / enable ---------------------------------------------------------------

    def graceful_shutdown(self) -> None:
        """Refuse new creations and drain containers, busy first, in batches."""
        if not self._shutting_down:
            log.info("Container pool shutting down gracefully")
        self._shutting_down = True
        self._drain_more()

    def enable(self) -> None:
        self._shutting_down = False

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def _drain_more(self) -> None:
        draining = sum(
            1 for e in self._entries.values() if e.status is _Status.DISABLING
        )
        for status in (_Status.BUSY, _Status.PAUSED):
            for entry in list(self._entries.values()):
                if draining >= self._batch_size:
                    return
                if entry.status is status:
                    entry.status = _Status.DISABLING
                    entry.proxy.graceful_shutdown()
                    draining += 1

    # --- memory -----------------------------------------------------------------------------

    def _memory_of(self, *statuses: _Status) -> int:
        return sum(
            e.proxy.memory_mb for e in self._entries.values() if e.status in statuses
        )

    def _free_mb(self) -> int:
        return self._config.user_memory_mb - self._memory_of(*_COUNTED)

    def memory_info(self) -> MemoryInfo:
        """For the health record: paused and idle running containers count as free
        memory, since a creation may evict them."""
        busy = self._memory_of(_Status.BUSY, _Status.DISABLING) - sum(
            e.proxy.memory_mb
            for e in self._entries.values()
            if e.status is _Status.BUSY and e.proxy.idle
        )
        in_progress = self._memory_of(_Status.IN_PROGRESS)
        return MemoryInfo(
            free_mb=self._config.user_memory_mb - busy - in_progress,
            busy_mb=busy,
            in_progress_mb=in_progress,
        )

    def _report_memory(self) -> None:
        if self._on_memory is not None:
            self._on_memory(self.memory_info())

    async def _sync_memory(self) -> None:
        while True:
            await asyncio.sleep(self._config.memory_sync_interval_s)
            try:
                self._report_memory()
            except Exception:
                log.exception("Memory report failed")

    # --- state for the admin API ------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """OpenWhisk's TotalContainerPoolState."""
        busy = [
            e.proxy
            for e in self._entries.values()
            if e.status in (_Status.BUSY, _Status.DISABLING)
        ]
        paused = [e.proxy for e in self._entries.values() if e.status is _Status.PAUSED]
        in_progress = sum(
            1 for e in self._entries.values() if e.status is _Status.IN_PROGRESS
        )
        return {
            "totalContainers": len(busy) + len(paused) + in_progress,
            "inProgressCount": in_progress,
            "prewarmedPool": {"total": 0, "countsByKind": {}},
            "busyPool": {
                "total": len(busy),
                "containers": [_describe(p) for p in busy],
            },
            "pausedPool": {
                "total": len(paused),
                "containers": [_describe(p) for p in paused],
            },
        }

    def count(self) -> int:
        """Busy + paused + in progress (GET /pool/count)."""
        return int(self.state()["totalContainers"])

    # --- creation acks ---------------------------------------------------------------------

    def _ack_success(self, entry: _Entry) -> None:
        if entry.pending is not None:
            creation, entry.pending = entry.pending, None
            self._ack(creation, None, None)

    def _ack(
        self,
        creation: ContainerCreationMessage,
        error: ContainerCreationError | None,
        reason: str | None,
    ) -> None:
        # the ack goes back to the scheduler that asked for the container
        topic = creation_ack_topic(creation.root_scheduler_index.as_string)
        ack = ContainerCreationAckMessage(
            transid=creation.transid,
            creation_id=creation.creation_id,
            invocation_namespace=creation.invocation_namespace,
            action=creation.action,
            revision=creation.revision,
            action_metadata=creation.action_metadata,
            root_invoker_index=self._invoker,
            scheduler_host=creation.scheduler_host,
            rpc_port=creation.rpc_port,
            retry_count=creation.retry_count,
            error=error,
            reason=reason,
        )
        self._outbox.put_nowait((topic, ack))

    async def _send_acks(self) -> None:
        while True:
            topic, ack = await self._outbox.get()
            try:
                await self._send_ack(topic, ack)
            finally:
                self._outbox.task_done()

    async def _send_ack(self, topic: str, ack: ContainerCreationAckMessage) -> None:
        payload = encode(ack.to_json())
        for attempt in range(1, ACK_SEND_TRIES + 1):
            try:
                await asyncio.wait_for(
                    self._producer.send(topic, payload), ACK_SEND_TIMEOUT_S
                )
                return
            except (MessagingError, TimeoutError) as exc:
                log.warning(
                    "Creation ack %s not sent (try %d): %s",
                    ack.creation_id,
                    attempt,
                    exc,
                )
                await asyncio.sleep(0.1 * attempt)
        log.error("Creation ack %s lost", ack.creation_id)


def _serves(proxy: PooledProxy, creation: ContainerCreationMessage) -> bool:
    """Whether `proxy` runs the action and revision `creation` asks for: evicting an
    idle container of the same action to start another one gains nothing."""
    return (
        proxy.invocation_namespace == creation.invocation_namespace
        and proxy.action.unversioned() == creation.action.unversioned()
        and proxy.revision == creation.revision
    )


def _describe(proxy: PooledProxy) -> dict[str, Any]:
    return {
        "containerId": proxy.container_id or "",
        "namespace": proxy.invocation_namespace,
        "action": str(proxy.action),
        "kind": proxy.kind,
    }
