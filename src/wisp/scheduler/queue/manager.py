"""QueueManager (module 14): this scheduler's pool of MemoryQueues and the router of
every activation it receives, to a local queue or to the scheduler that leads it.

Also runs leader elections for CreateQueue, publishes the scheduler record to etcd and
orchestrates the graceful shutdown of the queues.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from wisp.config.model import WispConfig
from wisp.core.activation import (
    ActivationMessage,
    ActivationResponse,
    failed_activation,
)
from wisp.core.entity import FullyQualifiedEntityName, WhiskAction, revision_generation
from wisp.core.errors import CoordinationError, StoreError
from wisp.core.ids import SchedulerInstanceId, now_ms
from wisp.core.messages import (
    CreateQueueRequest,
    SchedulerEndpoints,
    SchedulerStates,
    decode,
    is_warm_up,
)
from wisp.infra.etcd.client import EtcdClient, WatchEvent
from wisp.infra.etcd.data_management import DataManagementService
from wisp.infra.etcd.keys import EtcdKeys
from wisp.infra.etcd.watcher import WatcherService
from wisp.infra.messaging.acks import ActiveAck
from wisp.infra.messaging.broker import MessageConsumer
from wisp.infra.rpc import activation_pb2_grpc
from wisp.infra.rpc.queue_client import QueueServiceClient
from wisp.infra.store.entities import EntityStore
from wisp.infra.tasks import TaskSet
from wisp.scheduler.ports import QueueParent

if TYPE_CHECKING:
    from wisp.scheduler.queue.memory_queue import MemoryQueue

log = logging.getLogger(__name__)

T = TypeVar("T")

#: the generated module is untyped; use it through Any
_generated: Any = activation_pb2_grpc

TOO_OLD_TEXT = "The activation has not been processed: too old activation is arrived."
ENDPOINT_PARSE_TEXT = (
    "The activation has not been processed: failed to parse the scheduler endpoint."
)
ENDPOINT_LOOKUP_TEXT = (
    "The activation has not been processed: failed to get the queue endpoint."
)
FORWARD_TEXT = (
    "The activation has not been processed: failed to reach the queue leader."
)
SHUTTING_DOWN_TEXT = (
    "The activation has not been processed: the scheduler is shutting down."
)
QUEUE_START_TEXT = "The activation has not been processed: the queue did not start."

_WATCH_NAME = "queue-manager"
_PEEK_TIMEOUT_S = 1.0
_CONSUMER_BACKOFF_S = 0.5
_ELECTION_TIMEOUT_S = 8.0
_FORWARD_TIMEOUT_S = 5.0
_LIMIT_CACHE_S = 1.0
_DRAIN_POLL_S = 0.05


class QueueFactory(Protocol):
    """Builds a MemoryQueue; the composition root binds the shared collaborators."""

    def __call__(
        self,
        *,
        invocation_namespace: str,
        action: FullyQualifiedEntityName,
        revision: str,
        action_metadata: dict[str, Any],
        parent: QueueParent,
        namespace_limit: Callable[[str], Awaitable[int]],
    ) -> MemoryQueue: ...


@dataclass(slots=True)
class _Entry:
    queue: MemoryQueue
    #: the action with its version, as the queue serves it
    action: FullyQualifiedEntityName
    leader: bool


class _EndpointParseError(ValueError):
    pass


class QueueManager:
    """Implements the QueueParent port of MemoryQueue."""

    def __init__(
        self,
        *,
        config: WispConfig,
        sid: SchedulerInstanceId,
        endpoints: SchedulerEndpoints,
        etcd: EtcdClient,
        keys: EtcdKeys,
        watcher: WatcherService,
        dms: DataManagementService,
        entity_store: EntityStore,
        ack: ActiveAck,
        consumer: MessageConsumer | None,
        queue_factory: QueueFactory,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._sconfig = config.scheduler
        self._sid = sid
        self._endpoints = endpoints
        self._etcd = etcd
        self._keys = keys
        self._watcher = watcher
        self._dms = dms
        self._store = entity_store
        self._ack = ack
        self._consumer = consumer
        self._factory = queue_factory
        self._clock = clock
        #: (invocation namespace, unversioned fqn) → revision → entry
        self._pool: dict[tuple[str, str], dict[str, _Entry]] = {}
        #: leader key → revision of the queue this scheduler leads for it
        self._init_revisions: dict[str, str] = {}
        #: leader key → endpoints of the leading scheduler (watch-fed cache)
        self._leaders: dict[str, SchedulerEndpoints] = {}
        self._elections: dict[str, asyncio.Task[bool]] = {}
        self._lookups: dict[str, asyncio.Task[str | None]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._limits: dict[str, tuple[int, float]] = {}
        self._client = QueueServiceClient()
        self._tasks = TaskSet(f"queue-manager:{sid}", log)
        self._consumer_task: asyncio.Task[None] | None = None
        self._publisher_task: asyncio.Task[None] | None = None
        self._shutting_down = False

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        self._watcher.watch(
            self._keys.queue_prefix(),
            prefix=True,
            name=_WATCH_NAME,
            on_put=self._on_leader_put,
            on_delete=self._on_leader_delete,
        )
        self._publish_state()
        self._publisher_task = asyncio.create_task(
            self._publish_loop(), name=f"scheduler-state-{self._sid.as_string}"
        )
        if self._consumer is not None:
            self._consumer_task = asyncio.create_task(
                self._consume(), name=f"activation-feed-{self._sid.as_string}"
            )

    def graceful_shutdown(self) -> None:
        """Leave the cluster: unregister, retire every queue, stop intake after a bound."""
        if self._shutting_down:
            return
        self._shutting_down = True

        # Controllers stop choosing this scheduler once its record is gone.
        _cancel(self._publisher_task)
        self._dms.unregister_data(self._keys.scheduler(self._sid.as_string))

        # Queues drop their leader keys and keep serving until empty.
        for queue in self.queues():
            queue.graceful_shutdown()

        # Activations already on their way are still routed for a while.
        self._spawn(
            self._stop_intake_after(self._sconfig.queue.graceful_shutdown_timeout_s),
            "stop-activation-intake",
        )

    async def drain(self, timeout_s: float) -> bool:
        """Wait until every queue has left the pool; False when time ran out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._pool:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(_DRAIN_POLL_S)
        return True

    async def stop(self) -> None:
        """Cancel every task and stop every queue (no etcd cleanup)."""
        self._watcher.unwatch(self._keys.queue_prefix(), prefix=True, name=_WATCH_NAME)
        tasks = [self._consumer_task, self._publisher_task]
        for task in tasks:
            _cancel(task)
        await asyncio.gather(
            *(t for t in tasks if t is not None), return_exceptions=True
        )
        await self._tasks.cancel_all()
        self._consumer_task = self._publisher_task = None
        queues = self.queues()
        self._pool.clear()
        results = await asyncio.gather(
            *(q.stop() for q in queues), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                log.error("Stopping a queue failed", exc_info=result)
        await self._client.close()

    # --- the pool -------------------------------------------------------------------------

    def lookup(
        self, invocation_ns: str, fqn: str, revision: str | None
    ) -> MemoryQueue | None:
        """The queue of exactly this revision, leader or not (old queues still drain)."""
        entry = self._entry(invocation_ns, fqn, revision or "")
        return entry.queue if entry is not None else None

    def queues_for(self, invocation_ns: str, fqn: str) -> list[MemoryQueue]:
        """Queues of every revision of this action."""
        return [e.queue for e in self._pool.get((invocation_ns, fqn), {}).values()]

    def queues(self) -> list[MemoryQueue]:
        return [e.queue for bucket in self._pool.values() for e in bucket.values()]

    @property
    def queue_count(self) -> int:
        return sum(len(bucket) for bucket in self._pool.values())

    @property
    def leader_count(self) -> int:
        return sum(e.leader for bucket in self._pool.values() for e in bucket.values())

    def status(self) -> list[dict[str, Any]]:
        return [queue.status() for queue in self.queues()]

    def waiting_count(self) -> int:
        return sum(queue.waiting_count() for queue in self.queues())

    def _entry(self, invocation_ns: str, fqn: str, revision: str) -> _Entry | None:
        return self._pool.get((invocation_ns, fqn), {}).get(revision)

    # --- queue creation (CreateQueue) -----------------------------------------------------

    async def create_queue(self, request: CreateQueueRequest) -> bool:
        """Make sure some scheduler leads a queue for this action; True when one does."""
        if is_warm_up(request.action):
            return True
        ns = request.invocation_namespace
        fqn = request.action.unversioned()
        newest = self._newest_leader(ns, fqn)
        if newest is not None and revision_generation(
            request.revision
        ) <= revision_generation(newest[0]):
            return True
        metadata = request.action_metadata
        if not isinstance(metadata.get("exec"), dict):
            action = await self._load_action(request.action)
            if action is None:
                log.warning("CreateQueue for unknown action %s", fqn)
                return False
            metadata = action.metadata_json()
        if not _is_executable(metadata):
            log.warning("CreateQueue for non-executable action %s", fqn)
            return False

        # One election per leader key; concurrent requests share its outcome.
        key = self._keys.queue_leader(ns, fqn)
        election = self._elections.get(key)
        if election is None:
            election = self._spawn(
                self._elect(key, request, metadata), f"election-{key}"
            )
            self._elections[key] = election
            election.add_done_callback(lambda _: self._elections.pop(key, None))
        try:
            return await asyncio.shield(election)
        except Exception as exc:
            log.warning("Queue creation for %s failed: %r", fqn, exc)
            return False

    async def _elect(
        self, key: str, request: CreateQueueRequest, metadata: dict[str, Any]
    ) -> bool:
        value = json.dumps(self._endpoints.to_json(), separators=(",", ":"))
        leader = await asyncio.wait_for(
            self._dms.elect_leader(key, value), _ELECTION_TIMEOUT_S
        )
        if not leader:
            # Another scheduler leads; the controller only needs a queue to exist.
            log.info("Follower for %s", key)
            return True
        ns = request.invocation_namespace
        fqn = request.action.unversioned()
        async with self._lock(key):
            action, revision, metadata = await self._newest_known(request, metadata)
            # The key may be ours already (a queue of another revision holds it).
            current = self._newest_leader(ns, fqn)
            if current is not None and revision_generation(
                revision
            ) <= revision_generation(current[0]):
                return True
            older = self._leader_entries(ns, fqn)
            queue = await self._start_queue(
                ns, action, revision, metadata, version_updated=bool(older)
            )
            self._outdate(older)
            if self._shutting_down:
                queue.graceful_shutdown()
        return True

    async def _newest_known(
        self, request: CreateQueueRequest, metadata: dict[str, Any]
    ) -> tuple[FullyQualifiedEntityName, str, dict[str, Any]]:
        """The requested action, or the stored one when it is newer.

        DIVERGENCE(openwhisk): a CreateQueue for a revision the store has already
        replaced (a controller recreating the queue of activations it read before an
        update) gets a queue of the current revision, never one of an outdated one.
        """
        stored = await self._load_action(request.action)
        if (
            stored is None
            or revision_generation(stored.rev) <= revision_generation(request.revision)
            or not _is_executable(stored.metadata_json())
        ):
            return request.action, request.revision, metadata
        log.info(
            "CreateQueue for %s@%s: the store has %s",
            request.action.unversioned(),
            request.revision,
            stored.rev,
        )
        return stored.fqn, stored.rev, stored.metadata_json()

    async def _start_queue(
        self,
        invocation_ns: str,
        action: FullyQualifiedEntityName,
        revision: str,
        metadata: dict[str, Any],
        *,
        version_updated: bool,
    ) -> MemoryQueue:
        """Create, register as leader and start a queue; the caller shuts it down if
        the scheduler is shutting down (after giving it what it came for)."""
        fqn = action.unversioned()
        queue = self._factory(
            invocation_namespace=invocation_ns,
            action=action,
            revision=revision,
            action_metadata=metadata,
            parent=self,
            namespace_limit=self.namespace_limit,
        )
        # In the pool before start, so activations arriving meanwhile are kept.
        self._pool.setdefault((invocation_ns, fqn), {})[revision] = _Entry(
            queue, action, leader=True
        )
        try:
            await queue.start(version_updated=version_updated)
        except BaseException:
            self._remove_entry(invocation_ns, fqn, revision, queue)
            raise
        self._init_revisions[self._keys.queue_leader(invocation_ns, fqn)] = revision
        log.info("Queue for %s %s@%s started", invocation_ns, fqn, revision)
        return queue

    def _leader_entries(self, invocation_ns: str, fqn: str) -> list[_Entry]:
        return [
            e for e in self._pool.get((invocation_ns, fqn), {}).values() if e.leader
        ]

    def _outdate(self, entries: list[_Entry]) -> None:
        """Retire queues a newer revision's queue replaces. Called once that queue is
        in place, so the backlogs they hand back find it."""
        for entry in entries:
            entry.leader = False
            entry.queue.stop_as_outdated()

    # --- QueueParent port -------------------------------------------------------------------

    def queue_removed(self, queue: MemoryQueue, *, outdated: bool) -> None:
        key = queue.key
        fqn = key.fqn
        if not self._remove_entry(key.invocation_namespace, fqn, key.revision, queue):
            return
        leader_key = self._keys.queue_leader(key.invocation_namespace, fqn)
        # An outdated queue's key now belongs to the newer revision's queue.
        if not outdated and self._init_revisions.get(leader_key) == key.revision:
            del self._init_revisions[leader_key]
        log.info(
            "Queue for %s %s@%s removed", key.invocation_namespace, fqn, key.revision
        )

    def queue_outdated(self, queue: MemoryQueue) -> None:
        key = queue.key
        entry = self._entry(key.invocation_namespace, key.fqn, key.revision)
        if entry is not None and entry.queue is queue:
            entry.leader = False

    def forward(self, msgs: list[ActivationMessage]) -> None:
        for msg in msgs:
            self.handle_activation(msg)

    def _remove_entry(
        self, invocation_ns: str, fqn: str, revision: str, queue: MemoryQueue
    ) -> bool:
        bucket = self._pool.get((invocation_ns, fqn))
        if bucket is None:
            return False
        entry = bucket.get(revision)
        if entry is None or entry.queue is not queue:
            return False
        del bucket[revision]
        if not bucket:
            del self._pool[(invocation_ns, fqn)]
        return True

    # --- routing ----------------------------------------------------------------------------

    def handle_activation(self, msg: ActivationMessage) -> None:
        """Route one activation (never blocks; slow paths continue in tasks)."""
        if is_warm_up(msg.action):
            return
        age_ms = now_ms() - msg.transid.start_ms
        if age_ms > self._sconfig.max_scheduling_time_s * 1000:
            log.warning("Activation %s is %d ms old; failed", msg.activation_id, age_ms)
            self._fail(msg, TOO_OLD_TEXT)
            return

        # A local leader queue of this revision takes it directly.
        ns = msg.invocation_namespace
        fqn = msg.action.unversioned()
        entry = self._entry(ns, fqn, msg.revision or "")
        if entry is not None and entry.leader:
            entry.queue.put(msg)
            return

        # This scheduler leads the action at another revision: an older activation
        # runs the current code, a newer one moves the queue to its revision.
        key = self._keys.queue_leader(ns, fqn)
        if self._newest_leader(ns, fqn) is not None:
            if not self._deliver_local(msg):
                self._spawn(self._serve_latest(key, msg), f"update-queue-{key}")
            return

        # Compare with the revision this scheduler led the action at.
        known = self._init_revisions.get(key)
        if known is not None:
            generation = revision_generation(msg.revision)
            known_generation = revision_generation(known)
            if generation > known_generation:
                self._spawn(self._serve_latest(key, msg), f"update-queue-{key}")
                return
            if generation < known_generation:
                # An activation of an old revision runs the current code.
                log.info(
                    "Activation %s moved from revision %s to %s",
                    msg.activation_id,
                    msg.revision,
                    known,
                )
                msg = msg.with_revision(known)
        self._send_by_leader_key(key, msg)

    def _send_by_leader_key(self, key: str, msg: ActivationMessage) -> None:
        endpoints = self._leaders.get(key)
        if endpoints is not None and self._is_self(endpoints):
            self._handle_cycle(msg)
            return
        if endpoints is None and self._shutting_down:
            # A lookup would outlive the drain and end cancelled, without a record.
            self._fail(msg, SHUTTING_DOWN_TEXT)
            return
        self._spawn(self._route_remote(key, msg), f"route-{msg.activation_id}")

    async def _route_remote(self, key: str, msg: ActivationMessage) -> None:
        for _attempt in range(2):
            endpoints = self._leaders.get(key)
            if endpoints is None:
                try:
                    endpoints = await self._leader_of(key)
                except _EndpointParseError:
                    self._fail(msg, ENDPOINT_PARSE_TEXT)
                    return
                if endpoints is None:
                    self._fail(msg, ENDPOINT_LOOKUP_TEXT)
                    return
            if self._is_self(endpoints):
                self._handle_cycle(msg)
                return
            if await self._client.forward(
                endpoints.rpc_endpoint, msg, _FORWARD_TIMEOUT_S
            ):
                return
            # The cached leader did not answer: forget it and look again once.
            log.warning(
                "Forwarding %s to %s failed", msg.activation_id, endpoints.rpc_endpoint
            )
            if self._leaders.get(key) == endpoints:
                del self._leaders[key]
        # DIVERGENCE(openwhisk): remoting was fire-and-forget there; an activation
        # that cannot reach its leader ends with an error record here.
        self._fail(msg, FORWARD_TEXT)

    async def _leader_of(self, key: str) -> SchedulerEndpoints | None:
        """The leader's endpoints from etcd (one lookup per key at a time)."""
        lookup = self._lookups.get(key)
        if lookup is None:
            lookup = self._spawn(self._get_with_retries(key), f"lookup-{key}")
            self._lookups[key] = lookup
            lookup.add_done_callback(lambda _: self._lookups.pop(key, None))
        value = await asyncio.shield(lookup)
        if value is None:
            return None
        try:
            endpoints = SchedulerEndpoints.from_json(decode(value))
        except (ValueError, KeyError, TypeError) as exc:
            raise _EndpointParseError(value) from exc
        self._leaders[key] = endpoints
        return endpoints

    async def _get_with_retries(self, key: str) -> str | None:
        # Bounded doubling backoff (1, 2, 4 ... ms); with 13 retries about 8 s, the
        # time a controller waits for CreateQueue, so a running election can finish.
        retries = self._sconfig.max_retries_to_get_queue
        for attempt in range(retries + 1):
            try:
                kv = await asyncio.wait_for(
                    self._etcd.get(key), self._config.etcd.request_timeout_s
                )
                if kv is not None:
                    return kv.value
            except (CoordinationError, TimeoutError):
                log.info("Leader lookup of %s failed (attempt %d)", key, attempt + 1)
            if attempt < retries:
                await asyncio.sleep(0.001 * 2**attempt)
        return None

    def _handle_cycle(self, msg: ActivationMessage) -> None:
        """This scheduler leads the action: deliver locally or recover the queue."""
        if self._deliver_local(msg):
            return
        key = self._keys.queue_leader(
            msg.invocation_namespace, msg.action.unversioned()
        )
        self._spawn(self._serve_latest(key, msg), f"recover-queue-{key}")

    def _deliver_local(self, msg: ActivationMessage) -> bool:
        """Put into the newest local leader queue not older than the activation."""
        newest = self._newest_leader(msg.invocation_namespace, msg.action.unversioned())
        if newest is None:
            return False
        revision, entry = newest
        if revision_generation(revision) < revision_generation(msg.revision):
            return False
        entry.queue.put(_retarget(msg, revision, entry.action.version))
        return True

    def _newest_leader(self, invocation_ns: str, fqn: str) -> tuple[str, _Entry] | None:
        """(revision, entry) of the newest local leader queue of the action."""
        best: tuple[str, _Entry] | None = None
        for revision, entry in self._pool.get((invocation_ns, fqn), {}).items():
            if not entry.leader:
                continue
            if best is None or revision_generation(revision) > revision_generation(
                best[0]
            ):
                best = (revision, entry)
        return best

    async def _serve_latest(self, key: str, msg: ActivationMessage) -> None:
        """OpenWhisk's UpdateMemoryQueue and RecoverQueue in one: the activation goes to
        a local leader queue of the action's stored (latest) revision, started here if
        there is none; older leader queues then retire and hand their backlogs over.
        Never starts a queue for a revision the store has replaced."""
        async with self._lock(key):
            if self._deliver_local(msg):
                return
            if self._shutting_down:
                # DIVERGENCE(openwhisk): a queue started now would be shut down at
                # once and hand the activation back here; fail it instead.
                self._fail(msg, SHUTTING_DOWN_TEXT)
                return
            action = await self._executable_action(msg)
            if action is None:
                return
            msg = _retarget(msg, action.rev, action.version)
            if self._deliver_local(msg):
                return
            ns = msg.invocation_namespace
            older = self._leader_entries(ns, msg.action.unversioned())
            if older:
                log.info("Queue of %s moves to revision %s", key, action.rev)
            else:
                log.info("Recovering the queue of %s at revision %s", key, action.rev)
            try:
                queue = await self._start_queue(
                    ns,
                    action.fqn,
                    action.rev,
                    action.metadata_json(),
                    version_updated=bool(older),
                )
            except Exception:
                log.exception("Starting the queue of %s failed", key)
                self._fail(msg, QUEUE_START_TEXT)
                return
            queue.put(msg)
            self._outdate(older)
            if self._shutting_down:
                queue.graceful_shutdown()

    async def _executable_action(self, msg: ActivationMessage) -> WhiskAction | None:
        """The latest stored action, or None after failing `msg` with the reason."""
        try:
            action = await self._load_action(msg.action, raise_errors=True)
        except StoreError as exc:
            self._fail(msg, str(exc))
            return None
        if action is None:
            self._fail(
                msg,
                f"The activation has not been processed: action {msg.action} not found.",
            )
            return None
        if not _is_executable(action.metadata_json()):
            self._fail(msg, f"non-executable action: {msg.action} reached queueManager")
            return None
        return action

    async def _load_action(
        self, action: FullyQualifiedEntityName, *, raise_errors: bool = False
    ) -> WhiskAction | None:
        try:
            return await asyncio.wait_for(
                self._store.get_action(action.path, action.name),
                self._config.etcd.request_timeout_s,
            )
        except (StoreError, TimeoutError) as exc:
            log.warning("Loading action %s failed: %s", action, exc)
            if raise_errors:
                raise StoreError(f"failed to load action {action}: {exc}") from exc
            return None

    def _lock(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    def _is_self(self, endpoints: SchedulerEndpoints) -> bool:
        own = self._endpoints
        return endpoints.host == own.host and endpoints.rpc_port == own.rpc_port

    def _fail(self, msg: ActivationMessage, text: str) -> None:
        record = failed_activation(msg, ActivationResponse.whisk_error(text))
        self._spawn(self._ack.complete(msg, record), f"fail-{msg.activation_id}")

    # --- namespace limit --------------------------------------------------------------------

    async def namespace_limit(self, invocation_ns: str) -> int:
        """Containers allowed for the namespace (identity limit, else the default)."""
        now = self._clock()
        cached = self._limits.get(invocation_ns)
        if cached is not None and cached[1] > now:
            return cached[0]
        limit = self._config.limits.concurrent_invocations
        try:
            identity = await asyncio.wait_for(
                self._store.identity_by_namespace(invocation_ns),
                self._config.etcd.request_timeout_s,
            )
        except (StoreError, TimeoutError):
            log.warning("Limit of %s unavailable; using the last known", invocation_ns)
            return cached[0] if cached is not None else limit
        if identity is not None and identity.limits.concurrent_invocations is not None:
            limit = identity.limits.concurrent_invocations
        self._limits[invocation_ns] = (limit, now + _LIMIT_CACHE_S)
        return limit

    # --- background work ----------------------------------------------------------------------

    def _publish_state(self) -> None:
        states = SchedulerStates(self._sid, self.leader_count, self._endpoints)
        self._dms.update_data_on_change(
            self._keys.scheduler(self._sid.as_string),
            json.dumps(states.to_json(), separators=(",", ":")),
        )

    async def _publish_loop(self) -> None:
        while True:
            await asyncio.sleep(self._sconfig.state_publish_interval_s)
            try:
                self._publish_state()
            except Exception:
                log.exception("Publishing the scheduler state failed")

    async def _consume(self) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        while True:
            try:
                batch = await asyncio.wait_for(
                    consumer.peek(self._sconfig.max_peek, _PEEK_TIMEOUT_S),
                    _PEEK_TIMEOUT_S + 5,
                )
                for raw in batch:
                    self._on_raw(raw)
                if batch:
                    await asyncio.wait_for(consumer.commit(), 5)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("Activation consumer failed; retrying")
                await asyncio.sleep(_CONSUMER_BACKOFF_S)

    def _on_raw(self, raw: bytes) -> None:
        try:
            msg = ActivationMessage.from_json(decode(raw))
        except (ValueError, KeyError, TypeError):
            log.error("Unparsable activation dropped: %.200r", raw)
            return
        try:
            self.handle_activation(msg)
        except Exception:
            log.exception("Routing activation %s failed", msg.activation_id)

    async def _stop_intake_after(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        _cancel(self._consumer_task)

    def _on_leader_put(self, event: WatchEvent) -> None:
        if not event.key.endswith("/leader"):
            return
        try:
            self._leaders[event.key] = SchedulerEndpoints.from_json(decode(event.value))
        except (ValueError, KeyError, TypeError):
            log.warning("Malformed leader value at %s ignored", event.key)

    def _on_leader_delete(self, event: WatchEvent) -> None:
        if event.key.endswith("/leader"):
            self._leaders.pop(event.key, None)

    def _spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        return self._tasks.spawn(coro, name)


def _is_executable(metadata: dict[str, Any]) -> bool:
    exec_ = metadata.get("exec")
    return isinstance(exec_, dict) and exec_.get("kind") not in (None, "sequence")


def _retarget(
    msg: ActivationMessage, revision: str, version: str | None
) -> ActivationMessage:
    """The activation pointed at another revision (and version) of its action."""
    if msg.revision == revision and (version is None or msg.action.version == version):
        return msg
    action = msg.action.with_version(version) if version else msg.action
    return replace(msg, revision=revision, action=action)


def _cancel(task: asyncio.Task[Any] | None) -> None:
    if task is not None and not task.done():
        task.cancel()
