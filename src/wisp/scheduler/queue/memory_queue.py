"""MemoryQueue (module 19): the in-memory queue of one (invocation namespace, action,
revision): it buffers activations, hands them to pulling containers, asks for new
containers every check interval, publishes throttle flags and retires itself.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from wisp.config.model import SchedulerConfig
from wisp.core.activation import (
    ActivationMessage,
    ActivationResponse,
    WhiskActivation,
    failed_activation,
)
from wisp.core.entity import FullyQualifiedEntityName
from wisp.core.errors import CoordinationError, NotFoundError
from wisp.core.ids import SchedulerInstanceId, TransactionId, new_creation_id
from wisp.core.messages import (
    NO_ACTIVATION,
    NO_MEMORY_QUEUE,
    ContainerCreationError,
    ContainerCreationMessage,
    FetchResult,
    SchedulerEndpoints,
)
from wisp.infra.etcd.client import EtcdClient, WatchEvent
from wisp.infra.etcd.data_management import DataManagementService
from wisp.infra.etcd.keys import EtcdKeys, last_segment
from wisp.infra.etcd.watcher import WatcherService
from wisp.infra.messaging.acks import ActiveAck
from wisp.scheduler.ports import ContainerCreator, QueueParent
from wisp.scheduler.queue import state as rules
from wisp.scheduler.queue.counter import (
    NamespaceContainerCount,
    NamespaceContainerCountRegistry,
)
from wisp.scheduler.queue.decision import Decision, DecisionKind, QueueSnapshot, decide
from wisp.scheduler.queue.duration import DurationChecker
from wisp.scheduler.queue.state import WORKING_STATES, QueueState

log = logging.getLogger(__name__)

#: the text of activations failed by namespace or action throttling (OpenWhisk's
#: MemoryQueue text; the controller's per-minute 429 text is a different one)
TOO_MANY_CONCURRENT_REQUESTS = "Too many concurrent requests in flight."
NAMESPACE_LIMIT_ZERO = "The namespace limit is less than or equal to 0."
#: for an activation handed to a queue after stop() (the pool should not do that)
QUEUE_STOPPED = "The activation has not been processed: the queue is stopped."
CREATION_TRANSACTION = "sid_containerCreation"
#: creation id of the synthetic failure a zero namespace limit produces
VOID_CREATION_ID = "cid_void"

_ETCD_TIMEOUT_S = 5.0
_LIMIT_TIMEOUT_S = 5.0
_DURATION_TIMEOUT_S = 10.0
_ACK_TIMEOUT_S = 10.0
_ACK_DRAIN_S = 2.0
_STOP_WAIT_S = 2.0
_RETAKE_BACKOFF_S = 0.5

_DATA_NAMES = {
    QueueState.UNINITIALIZED: "NoData",
    QueueState.RUNNING: "RunningData",
    QueueState.IDLE: "NoActors",
    QueueState.NAMESPACE_THROTTLED: "ThrottledData",
    QueueState.ACTION_THROTTLED: "ThrottledData",
    QueueState.FLUSHING: "FlushingData",
    QueueState.REMOVING: "RemovingData",
    QueueState.REMOVED: "NoData",
}

_serial = itertools.count(1)

_T = TypeVar("_T")


async def _within(awaitable: Awaitable[_T], timeout_s: float) -> _T:
    """Await with a deadline (TimeoutError). Unlike wait_for on Python 3.11, this
    never swallows a cancellation that races with the result."""
    async with asyncio.timeout(timeout_s):
        return await awaitable


@dataclass(frozen=True, slots=True)
class QueueKey:
    invocation_namespace: str
    #: unversioned, "owner/pkg/name"
    fqn: str
    revision: str


@dataclass(slots=True)
class _Entry:
    msg: ActivationMessage
    #: clock() when the activation entered the queue
    enqueued: float


@dataclass(slots=True)
class _Poll:
    """An open long-poll of one container."""

    container_id: str
    order: str
    future: asyncio.Future[FetchResult]
    #: the entry handed to this poll, to put back if the caller went away
    handed: _Entry | None = None


@dataclass(slots=True)
class _Flush:
    """Why the queue is Flushing: the last creation failure."""

    error: ContainerCreationError
    reason: str
    #: an activation arrived since the last flush check
    active: bool = False


def _fails_fast(error: ContainerCreationError) -> bool:
    # DIVERGENCE(openwhisk): a zero namespace limit is a whisk error there, so queued
    # activations wait for the retention time; nothing can run them, so they fail now.
    return (
        not error.is_whisk_error or error is ContainerCreationError.ZERO_NAMESPACE_LIMIT
    )


class MemoryQueue:
    def __init__(
        self,
        *,
        invocation_namespace: str,
        action: FullyQualifiedEntityName,
        revision: str,
        action_metadata: dict[str, Any],
        config: SchedulerConfig,
        sid: SchedulerInstanceId,
        endpoints: SchedulerEndpoints,
        etcd: EtcdClient,
        keys: EtcdKeys,
        watcher: WatcherService,
        dms: DataManagementService,
        counters: NamespaceContainerCountRegistry,
        duration_checker: DurationChecker,
        container_creator: ContainerCreator,
        parent: QueueParent,
        ack: ActiveAck,
        namespace_limit: Callable[[str], Awaitable[int]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ns = invocation_namespace
        self._action = action
        self._revision = revision
        self._metadata = action_metadata
        self._queue_cfg = config.queue
        self._scheduling_cfg = config.scheduling
        self._sid = sid
        self._endpoints = endpoints
        self._etcd = etcd
        self._watcher = watcher
        self._dms = dms
        self._counters = counters
        self._duration_checker = duration_checker
        self._creator = container_creator
        self._parent = parent
        self._ack = ack
        self._namespace_limit = namespace_limit
        self._clock = clock

        fqn = action.unversioned()
        self._key = QueueKey(invocation_namespace, fqn, revision)
        self._name = f"{invocation_namespace}/{fqn}@{revision}"
        self._task_prefix = f"queue:{invocation_namespace}/{fqn}"
        self._watch_name = f"memory-queue-{self._name}#{next(_serial)}"
        self._leader_key = keys.queue_leader(invocation_namespace, fqn)
        self._ns_throttle_key = keys.namespace_throttling(invocation_namespace)
        self._action_throttle_key = keys.action_throttling(invocation_namespace, fqn)
        self._existing_prefix = keys.existing_prefix(
            invocation_namespace, fqn, revision
        )
        self._in_progress_prefix = keys.in_progress_prefix(
            invocation_namespace, fqn, revision
        )
        self._kind = rules.exec_kind(action_metadata)
        self._limits = rules.action_limits(action_metadata)
        self._memory_mb = rules.memory_mb(action_metadata)
        self._retention_ms = rules.retention_ms(self._kind, config.queue)

        self._state = QueueState.UNINITIALIZED
        self._fifo: deque[_Entry] = deque()
        self._polls: dict[str, _Poll] = {}
        self._containers: set[str] = set()
        self._creation_ids: set[str] = set()
        self._durations: deque[int] = deque(
            maxlen=max(1, config.queue.duration_buffer_size)
        )
        self._average_duration: float | None = None
        self._initialized = False
        self._flush: _Flush | None = None
        self._outdated = False
        #: this queue may write (and must delete) the leader and throttle keys
        self._owns_keys = False
        self._action_throttle_flag = False
        self._parent_notified = False
        self._counter: NamespaceContainerCount | None = None
        self._watching = False
        self._watching_leader = False
        self._syncing = False
        self._deleted_while_syncing: set[str] = set()
        self._last_activity = 0.0

        self._monitor_task: asyncio.Task[None] | None = None
        self._drop_task: asyncio.Task[None] | None = None
        self._timer_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._ack_tasks: set[asyncio.Task[None]] = set()

    # --- identity and inspection --------------------------------------------------------

    @property
    def key(self) -> QueueKey:
        return self._key

    @property
    def state(self) -> QueueState:
        return self._state

    @property
    def action(self) -> FullyQualifiedEntityName:
        return self._action

    @property
    def revision(self) -> str:
        return self._revision

    @property
    def invocation_namespace(self) -> str:
        return self._ns

    @property
    def action_metadata(self) -> dict[str, Any]:
        return self._metadata

    @property
    def container_ids(self) -> frozenset[str]:
        return frozenset(self._containers)

    @property
    def creation_ids(self) -> frozenset[str]:
        return frozenset(self._creation_ids)

    @property
    def average_duration_ms(self) -> float | None:
        return self._average_duration

    def waiting_count(self) -> int:
        return len(self._fifo)

    def status(self) -> dict[str, Any]:
        """OpenWhisk's StatusData."""
        return {
            "invocationNamespace": self._ns,
            "fqn": str(self._action),
            "waitingActivation": [e.msg.activation_id for e in self._fifo],
            "status": self._state.openwhisk_name,
            "data": _DATA_NAMES[self._state],
        }

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self, *, version_updated: bool = False) -> None:
        """Register the throttle keys (a new version reuses them), watch containers and
        the leader key, then start the decision and drop loops."""
        if self._state is not QueueState.UNINITIALIZED:
            log.warning("Queue %s started twice", self._name)
            return
        self._touch()

        # Follow this action's containers and creations (and the namespace's counts).
        self._counter = self._counters.acquire(self._ns)
        self._watch_containers()
        self._spawn(self._check_duration(), "duration")

        # Throttle flags. A version update shares the keys of the previous revision.
        self._owns_keys = True
        if not version_updated:
            await self._register_initial(self._ns_throttle_key, "false")
            if self._state is not QueueState.UNINITIALIZED:
                return
        # DIVERGENCE(openwhisk): a version-updated queue writes nothing there; the
        # action flag is reset here so a flag left by the outdated queue cannot stick.
        self._dms.register_data(self._action_throttle_key, "false", failover=False)

        # DIVERGENCE(openwhisk): a version-updated queue watches its leader key too,
        # so it can restore the key like any other leader queue.
        self._watch_leader()

        await self._sync_containers()
        if self._state is not QueueState.UNINITIALIZED:
            return
        cause = "version updated" if version_updated else "started"
        self._transition(QueueState.RUNNING, cause)
        self._update_action_throttle()

    def graceful_shutdown(self) -> None:
        """Give the action up to another scheduler and drain what is queued here."""
        self._touch()
        state = self._state
        if state is QueueState.REMOVED:
            return
        if state is QueueState.REMOVING:
            self._check_removing()
            return
        if state is QueueState.IDLE:
            self._retire("graceful shutdown", unregister_keys=True)
            return
        if state is QueueState.FLUSHING:
            self._fail(self._take_all(), self._flush_response())
            self._retire("graceful shutdown while flushing", unregister_keys=True)
            return
        # Delete the keys first so that controllers and schedulers move on, then keep
        # serving the containers that still pull from here.
        self._unregister_keys()
        self._unwatch_leader()
        self._transition(QueueState.REMOVING, "graceful shutdown")

    def stop_as_outdated(self) -> None:
        """A newer revision took over: stop provisioning, drain, then retire."""
        self._touch()
        state = self._state
        if state is QueueState.REMOVED:
            return
        self._outdated = True
        # DIVERGENCE(openwhisk): the leader and throttle keys now belong to the new
        # revision's queue; the original could delete them when outdated in Flushing.
        self._owns_keys = False
        self._unwatch_leader()
        if state is QueueState.IDLE:
            self._retire("outdated", unregister_keys=False, delete_containers=True)
            return
        if state is QueueState.FLUSHING:
            self._fail(self._take_all(), self._flush_response())
            self._retire("outdated while flushing", unregister_keys=False)
            return
        self._notify_parent()
        if self._fifo and not self._containers:
            # No old container will drain these; route them to the new revision.
            self._parent.forward(self._take_all())
        if state is QueueState.REMOVING:
            self._check_removing()
            return
        self._transition(QueueState.REMOVING, "outdated")

    async def stop(self) -> None:
        """Cancel every task (scheduler shutdown, tests). Keys stay as they are and the
        parent is not told: the caller owns the pool."""
        # Stop intake and the loops.
        if self._state is not QueueState.REMOVED:
            self._transition(QueueState.REMOVED, "stopped")
        self._release_watches()
        self._end_all_polls(NO_MEMORY_QUEUE)
        if self._fifo:
            log.warning(
                "Queue %s stopped with %d waiting activations",
                self._name,
                len(self._fifo),
            )
            self._fail(self._take_all(), ActivationResponse.whisk_error(QUEUE_STOPPED))

        # Let failure acks finish (bounded), then cancel whatever is left.
        if self._ack_tasks:
            await asyncio.wait(set(self._ack_tasks), timeout=_ACK_DRAIN_S)
        current = asyncio.current_task()
        tasks = [t for t in self._tasks | self._ack_tasks if t is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            _, stuck = await asyncio.wait(tasks, timeout=_STOP_WAIT_S)
            for task in stuck:
                log.warning(
                    "Queue %s: task %s did not stop", self._name, task.get_name()
                )

    # --- intake (OpenWhisk's handleActivationMessage) ------------------------------------

    def put(self, msg: ActivationMessage) -> None:
        """Take one activation; never blocks."""
        self._touch()
        state = self._state
        if state is QueueState.REMOVED:
            self._route_again([msg])
            return
        if state is QueueState.IDLE:
            self._transition(QueueState.RUNNING, "activation arrived")
        elif state is QueueState.ACTION_THROTTLED:
            self._fail([msg], self._throttle_response())
            return
        elif state is QueueState.NAMESPACE_THROTTLED and not (
            self._containers or self._creation_ids
        ):
            self._fail([msg], self._throttle_response())
            return
        elif state is QueueState.FLUSHING and self._flush is not None:
            self._flush.active = True
            if _fails_fast(self._flush.error):
                self._fail([msg], self._flush_response())
                return
        self._enqueue(_Entry(msg, self._clock()))

    def _enqueue(self, entry: _Entry) -> None:
        poll = self._best_poll()
        if poll is not None:
            self._hand_off(poll, entry)
            return
        self._fifo.append(entry)
        self._update_action_throttle()

    def _best_poll(self) -> _Poll | None:
        live = [p for p in self._polls.values() if not p.future.done()]
        if not live:
            return None
        return max(live, key=lambda p: p.order)

    def _hand_off(self, poll: _Poll, entry: _Entry) -> None:
        del self._polls[poll.container_id]
        poll.handed = entry
        poll.future.set_result(FetchResult(message=entry.msg))

    # --- pull (OpenWhisk's GetActivation) -----------------------------------------------

    async def get_activation(
        self,
        container_id: str,
        *,
        warmed: bool,
        last_duration_ms: int | None,
        alive: bool,
    ) -> FetchResult:
        """The next activation for this container, long-polling when none waits."""
        # DIVERGENCE(openwhisk): Idle answers a poll at once there, which makes the
        # container spin, and every poll re-arms the stop grace. Here an Idle poll
        # waits, neither counts as a container nor keeps the queue alive.
        idle = self._state is QueueState.IDLE
        if not idle:
            self._touch()
        if self._state is QueueState.REMOVED:
            # The container will look the new queue up.
            self._forward_backlog()
            return NO_MEMORY_QUEUE
        if not alive:
            self._end_poll(container_id, NO_ACTIVATION)
            self._containers.discard(container_id)
            return NO_ACTIVATION

        if not idle:
            self._containers.add(container_id)
        if last_duration_ms is not None:
            self._durations.append(last_duration_ms)

        if self._fifo:
            entry = self._fifo.popleft()
            self._update_action_throttle()
            return FetchResult(message=entry.msg)
        return await self._long_poll(container_id, warmed)

    async def _long_poll(self, container_id: str, warmed: bool) -> FetchResult:
        self._end_poll(container_id, NO_ACTIVATION)
        future: asyncio.Future[FetchResult] = asyncio.get_running_loop().create_future()
        poll = _Poll(container_id, rules.poll_order_key(container_id, warmed), future)
        self._polls[container_id] = poll
        try:
            await asyncio.wait({future}, timeout=self._queue_cfg.long_poll_s)
        except asyncio.CancelledError:
            self._abandon(poll)
            raise
        if self._state is not QueueState.IDLE:
            self._touch()
        if future.done():
            return future.result()
        self._abandon(poll)
        return NO_ACTIVATION

    def _abandon(self, poll: _Poll) -> None:
        """Close a poll nobody waits for; an activation already handed to it goes back
        to the head of the queue."""
        if self._polls.get(poll.container_id) is poll:
            del self._polls[poll.container_id]
        if not poll.future.done():
            poll.future.cancel()
            return
        if poll.handed is None:
            return
        if self._state is QueueState.REMOVED:
            self._route_again([poll.handed.msg])
        else:
            self._fifo.appendleft(poll.handed)
            self._update_action_throttle()

    def _end_poll(self, container_id: str, result: FetchResult) -> None:
        poll = self._polls.pop(container_id, None)
        if poll is not None and not poll.future.done():
            poll.future.set_result(result)

    def _end_all_polls(self, result: FetchResult) -> None:
        for container_id in list(self._polls):
            self._end_poll(container_id, result)

    # --- creation outcomes (from ContainerManager / CreationJobManager) -------------------

    def creation_succeeded(self, creation_id: str) -> None:
        self._touch()
        self._creation_ids.discard(creation_id)
        if self._state is QueueState.FLUSHING:
            self._flush = None
            self._transition(QueueState.RUNNING, f"creation {creation_id} succeeded")

    def creation_failed(
        self, creation_id: str, error: ContainerCreationError, reason: str
    ) -> None:
        self._touch()
        self._creation_ids.discard(creation_id)
        state = self._state
        if state is QueueState.RUNNING:
            if self._containers:
                # Running containers still serve the queue.
                return
            self._flush = _Flush(error, reason)
            if _fails_fast(error):
                self._fail(self._take_all(), self._flush_response())
            self._transition(QueueState.FLUSHING, f"{error.value}: {reason}")
        elif state is QueueState.FLUSHING and self._flush is not None:
            if error is ContainerCreationError.INVALID_ACTION_LIMIT:
                self._fail(self._take_all(), self._flush_response())
                self._retire(f"{error.value}: {reason}", unregister_keys=True)
                return
            self._flush = _Flush(error, reason, self._flush.active)
            if _fails_fast(error):
                self._fail(self._take_all(), self._flush_response())

    # --- the decision loop ---------------------------------------------------------------

    async def _monitor_loop(self) -> None:
        interval = self._scheduling_cfg.check_interval_ms / 1000
        me = asyncio.current_task()
        # The identity check ends the loop even if a cancellation got lost.
        while self._monitor_task is me:
            await asyncio.sleep(interval)
            try:
                await self._tick()
            except Exception:
                log.exception("Queue %s: decision round failed", self._name)
                await asyncio.sleep(interval)

    async def _tick(self) -> None:
        if self._durations:
            self._average_duration = rules.mean(self._durations)
        # Re-evaluated every tick so that a throttle flag never outlives its cause.
        self._update_action_throttle()
        try:
            limit = await _within(self._namespace_limit(self._ns), _LIMIT_TIMEOUT_S)
        except NotFoundError:
            log.info("Queue %s: namespace %s no longer exists", self._name, self._ns)
            self.stop_as_outdated()
            return
        if self._state not in WORKING_STATES:
            return
        decision = decide(self._snapshot(limit), self._scheduling_cfg)
        if decision.kind is not DecisionKind.SKIP:
            log.debug("Queue %s: decision %s", self._name, decision)
        self._apply(decision)

    def _snapshot(self, namespace_limit: int) -> QueueSnapshot:
        stale = rules.count_waited_at_least(
            (e.enqueued for e in self._fifo),
            self._clock(),
            self._scheduling_cfg.stale_threshold_ms / 1000,
        )
        ns_existing = ns_in_progress = 0
        if self._counter is not None:
            ns_existing = self._counter.existing_container_num
            ns_in_progress = self._counter.in_progress_container_num
        # DIVERGENCE(openwhisk): the namespace counts reach us through etcd and lag
        # behind this queue's own containers and creations; never count fewer.
        ns_existing = max(ns_existing, len(self._containers))
        ns_in_progress = max(ns_in_progress, len(self._creation_ids))
        return QueueSnapshot(
            initialized=self._initialized,
            incoming_msg_count=0,
            current_msg_count=len(self._fifo),
            existing_container_count=len(self._containers),
            in_progress_container_count=len(self._creation_ids),
            stale_activation_num=stale,
            existing_container_count_in_namespace=ns_existing,
            in_progress_container_count_in_namespace=ns_in_progress,
            average_duration_ms=self._average_duration,
            namespace_limit=namespace_limit,
            action_limit=rules.action_container_limit(self._metadata, namespace_limit),
            max_action_concurrency=rules.max_action_concurrency(self._metadata),
            state=self._state,
        )

    def _apply(self, decision: Decision) -> None:
        kind = decision.kind
        if kind is DecisionKind.SKIP:
            return
        self._touch()
        if kind is DecisionKind.PAUSING:
            self.creation_failed(
                VOID_CREATION_ID,
                ContainerCreationError.ZERO_NAMESPACE_LIMIT,
                NAMESPACE_LIMIT_ZERO,
            )
            return
        if decision.num > 0:
            if kind is DecisionKind.ADD_INITIAL_CONTAINER:
                self._initialized = True
            self._create_containers(decision.num)
        if kind is DecisionKind.ENABLE_NAMESPACE_THROTTLING:
            self._enable_namespace_throttling(decision.drop_messages)
        elif kind is DecisionKind.DISABLE_NAMESPACE_THROTTLING:
            self._disable_namespace_throttling()

    def _create_containers(self, count: int) -> None:
        msgs = [
            ContainerCreationMessage(
                transid=TransactionId.system(CREATION_TRANSACTION),
                invocation_namespace=self._ns,
                action=self._action,
                revision=self._revision,
                action_metadata=self._metadata,
                root_scheduler_index=self._sid,
                scheduler_host=self._endpoints.host,
                rpc_port=self._endpoints.rpc_port,
                creation_id=new_creation_id(),
            )
            for _ in range(count)
        ]
        # Added before sending, so the next snapshot counts them as in progress.
        ids = [m.creation_id for m in msgs]
        self._creation_ids.update(ids)
        log.info("Queue %s: creating %d containers", self._name, count)
        try:
            self._creator.create_containers(msgs, self._memory_mb, self._ns)
        except Exception:
            log.exception("Queue %s: handing creations over failed", self._name)
            self._creation_ids.difference_update(ids)

    # --- throttling ---------------------------------------------------------------------

    def _enable_namespace_throttling(self, drop_messages: bool) -> None:
        if self._state is not QueueState.RUNNING:
            return
        self._write_key(self._ns_throttle_key, "true")
        self._transition(QueueState.NAMESPACE_THROTTLED, "namespace limit reached")
        if drop_messages:
            self._fail(self._take_all(), self._throttle_response())
            self._update_action_throttle()

    def _disable_namespace_throttling(self) -> None:
        if self._state is not QueueState.NAMESPACE_THROTTLED:
            return
        self._write_key(self._ns_throttle_key, "false")
        self._transition(QueueState.RUNNING, "namespace capacity available")

    def _update_action_throttle(self) -> None:
        """Switch the action flag on at max_retention_size waiting activations and off
        at the throttling fraction, whatever made the queue grow or shrink."""
        if not self._owns_keys:
            return
        throttled = rules.action_throttled(
            len(self._fifo),
            self._action_throttle_flag,
            self._queue_cfg.max_retention_size,
            self._queue_cfg.throttling_fraction,
        )
        if throttled != self._action_throttle_flag:
            self._action_throttle_flag = throttled
            self._write_key(self._action_throttle_key, "true" if throttled else "false")
        if throttled and self._state is QueueState.RUNNING:
            self._transition(
                QueueState.ACTION_THROTTLED, "too many waiting activations"
            )
        elif not throttled and self._state is QueueState.ACTION_THROTTLED:
            self._transition(QueueState.RUNNING, "waiting activations went down")

    def _throttle_response(self) -> ActivationResponse:
        if self._queue_cfg.fail_throttle_as_whisk_error:
            return ActivationResponse.whisk_error(TOO_MANY_CONCURRENT_REQUESTS)
        return ActivationResponse.developer_error(TOO_MANY_CONCURRENT_REQUESTS)

    # --- expiry and flushing -----------------------------------------------------------

    async def _drop_loop(self) -> None:
        interval = self._scheduling_cfg.drop_interval_s
        me = asyncio.current_task()
        while self._drop_task is me:
            await asyncio.sleep(interval)
            try:
                self._drop_expired()
            except Exception:
                log.exception(
                    "Queue %s: dropping expired activations failed", self._name
                )

    def _drop_expired(self) -> None:
        expired = rules.count_waited_at_least(
            (e.enqueued for e in self._fifo), self._clock(), self._retention_ms / 1000
        )
        if expired == 0:
            return
        if self._state is QueueState.FLUSHING:
            self._check_flushing()
            return
        self._fail(self._take_expired(), self._expired_response())
        self._update_action_throttle()

    def _check_flushing(self) -> None:
        """Flushing gives up on expired activations, and retires once a whole flush
        period passed with nothing queued and nothing arriving."""
        if self._state is not QueueState.FLUSHING or self._flush is None:
            return
        self._fail(self._take_expired(), self._flush_response())
        self._update_action_throttle()
        if self._flush.active or self._fifo:
            self._flush.active = False
            return
        self._retire(f"flushed ({self._flush.reason})", unregister_keys=True)

    def _take_expired(self) -> list[ActivationMessage]:
        count = rules.count_waited_at_least(
            (e.enqueued for e in self._fifo), self._clock(), self._retention_ms / 1000
        )
        return [self._fifo.popleft().msg for _ in range(count)]

    def _expired_response(self) -> ActivationResponse:
        return ActivationResponse.whisk_error(
            rules.not_initiated_text(self._retention_ms)
        )

    def _flush_response(self) -> ActivationResponse:
        if self._flush is None:
            return self._expired_response()
        if self._flush.error.is_whisk_error:
            return ActivationResponse.whisk_error(self._flush.reason)
        return ActivationResponse.developer_error(self._flush.reason)

    # --- failing activations ------------------------------------------------------------

    def _take_all(self) -> list[ActivationMessage]:
        msgs = [e.msg for e in self._fifo]
        self._fifo.clear()
        return msgs

    def _fail(
        self, msgs: list[ActivationMessage], response: ActivationResponse
    ) -> None:
        if not msgs:
            return
        log.info(
            "Queue %s: failing %d activations: %s",
            self._name,
            len(msgs),
            response.result,
        )
        records = [
            (m, failed_activation(m, response, kind=self._kind, limits=self._limits))
            for m in msgs
        ]
        task = asyncio.get_running_loop().create_task(
            self._complete(records), name=f"{self._task_prefix}:ack"
        )
        self._ack_tasks.add(task)
        task.add_done_callback(self._ack_tasks.discard)

    async def _complete(
        self, records: list[tuple[ActivationMessage, WhiskActivation]]
    ) -> None:
        for msg, record in records:
            try:
                await _within(self._ack.complete(msg, record), _ACK_TIMEOUT_S)
            except Exception:
                log.exception(
                    "Queue %s: acking %s failed", self._name, msg.activation_id
                )

    def _forward_backlog(self) -> None:
        backlog = self._take_all()
        if backlog:
            self._route_again(backlog)

    def _route_again(self, msgs: list[ActivationMessage]) -> None:
        """Hand activations back to the parent once it has dropped this queue; before
        that (a queue stopped by its owner) they would come straight back here."""
        if self._parent_notified:
            self._parent.forward(msgs)
        else:
            self._fail(msgs, ActivationResponse.whisk_error(QUEUE_STOPPED))

    # --- state timers -------------------------------------------------------------------

    def _touch(self) -> None:
        """Any message re-arms the state timeout (Running, Idle, Removing)."""
        try:
            self._last_activity = asyncio.get_running_loop().time()
        except RuntimeError:
            self._last_activity = 0.0

    def _arm_timer(self) -> None:
        timer = self._timer_task
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()
        self._timer_task = None
        cfg = self._queue_cfg
        state = self._state
        if state is QueueState.RUNNING:
            spec = (cfg.idle_grace_s, False)
        elif state is QueueState.IDLE:
            spec = (cfg.stop_grace_s, False)
        elif state is QueueState.FLUSHING:
            spec = (cfg.flush_grace_s, True)
        elif state is QueueState.REMOVING:
            spec = (cfg.graceful_shutdown_timeout_s, False)
        else:
            return
        self._timer_task = self._spawn(self._run_timer(state, *spec), "timer")

    async def _run_timer(
        self, state: QueueState, timeout_s: float, periodic: bool
    ) -> None:
        """A state timeout (re-armed by activity) or a periodic timer of one state."""
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        while self._timer_task is me and self._state is state:
            if periodic:
                await asyncio.sleep(timeout_s)
            else:
                remaining = self._last_activity + timeout_s - loop.time()
                if remaining > 0:
                    await asyncio.sleep(remaining)
                    continue
            if self._timer_task is not me or self._state is not state:
                return
            try:
                self._on_state_timeout(state)
            except Exception:
                log.exception("Queue %s: state timeout of %s failed", self._name, state)
            if not periodic:
                self._last_activity = loop.time()

    def _on_state_timeout(self, state: QueueState) -> None:
        if state is QueueState.RUNNING:
            if rules.can_idle(
                len(self._fifo), len(self._containers), len(self._creation_ids)
            ):
                self._transition(QueueState.IDLE, "idle grace passed")
        elif state is QueueState.IDLE:
            self._retire("stop grace passed", unregister_keys=True)
        elif state is QueueState.FLUSHING:
            self._check_flushing()
        elif state is QueueState.REMOVING:
            self._check_removing()

    def _check_removing(self) -> None:
        if self._state is not QueueState.REMOVING:
            return
        if not self._fifo:
            self._retire(
                "drained", unregister_keys=False, delete_containers=self._outdated
            )
            return
        if not self._containers and not self._creation_ids:
            # DIVERGENCE(openwhisk): the original keeps waiting for containers that are
            # gone; the backlog is routed again instead (to the new leader).
            self._retire(
                "nothing left to drain the backlog",
                unregister_keys=False,
                delete_containers=self._outdated,
            )

    # --- state changes ------------------------------------------------------------------

    def _transition(self, target: QueueState, cause: str) -> bool:
        source = self._state
        if target is source:
            return False
        if not rules.can_transition(source, target):
            log.error(
                "Queue %s: illegal transition %s -> %s (%s)",
                self._name,
                source.value,
                target.value,
                cause,
            )
            return False
        self._state = target
        log.info(
            "Queue %s: %s -> %s (%s)", self._name, source.value, target.value, cause
        )
        self._touch()
        self._sync_workers()
        self._arm_timer()
        return True

    def _sync_workers(self) -> None:
        """The decision and drop loops run exactly in the working states."""
        if self._state in WORKING_STATES:
            if self._monitor_task is None:
                self._monitor_task = self._spawn(self._monitor_loop(), "monitor")
                self._drop_task = self._spawn(self._drop_loop(), "drop")
            return
        for task in (self._monitor_task, self._drop_task):
            if task is not None:
                task.cancel()
        self._monitor_task = self._drop_task = None

    def _retire(
        self, cause: str, *, unregister_keys: bool, delete_containers: bool = False
    ) -> None:
        """Go Removed: stop the loops and watches, delete the keys this queue owns (if
        asked), tell the parent, and route whatever is left again."""
        if not self._transition(QueueState.REMOVED, cause):
            return
        self._release_watches()
        if unregister_keys:
            self._unregister_keys()
        self._owns_keys = False
        if delete_containers:
            self._creator.delete_containers(
                self._ns, self._action, self._revision, self._metadata
            )
        # DIVERGENCE(openwhisk): the parent is told on every way into Removed (the
        # graceful-shutdown path did not), so late activations are routed elsewhere.
        self._notify_parent()
        self._forward_backlog()
        self._end_all_polls(NO_MEMORY_QUEUE)

    def _notify_parent(self) -> None:
        if self._parent_notified:
            return
        self._parent_notified = True
        try:
            self._parent.queue_removed(self, outdated=self._outdated)
        except Exception:
            log.exception("Queue %s: telling the queue manager failed", self._name)

    # --- etcd: keys ----------------------------------------------------------------------

    def _write_key(self, key: str, value: str) -> None:
        if self._owns_keys:
            self._dms.register_data(key, value, failover=False)

    def _unregister_keys(self) -> None:
        if not self._owns_keys:
            return
        self._owns_keys = False
        for key in (self._leader_key, self._ns_throttle_key, self._action_throttle_key):
            self._dms.unregister_data(key)

    async def _register_initial(self, key: str, value: str) -> None:
        try:
            await _within(
                self._dms.register_initial_data(key, value, failover=False),
                _ETCD_TIMEOUT_S,
            )
        except (CoordinationError, TimeoutError) as exc:
            log.warning("Queue %s: registering %s failed: %s", self._name, key, exc)

    # --- etcd: watches -------------------------------------------------------------------

    def _watch_containers(self) -> None:
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

    def _watch_leader(self) -> None:
        self._watcher.watch(
            self._leader_key,
            prefix=False,
            name=self._watch_name,
            on_delete=self._on_leader_deleted,
        )
        self._watching_leader = True

    def _unwatch_leader(self) -> None:
        if self._watching_leader:
            self._watcher.unwatch(self._leader_key, prefix=False, name=self._watch_name)
            self._watching_leader = False

    def _release_watches(self) -> None:
        self._unwatch_leader()
        if self._watching:
            for prefix in (self._existing_prefix, self._in_progress_prefix):
                self._watcher.unwatch(prefix, prefix=True, name=self._watch_name)
            self._watching = False
        if self._counter is not None:
            self._counters.release(self._ns)
            self._counter = None

    async def _sync_containers(self) -> None:
        """Read the containers and creations that exist already.

        DIVERGENCE(openwhisk): the original learns them only from later watch events
        or polls, so a new queue could under-count them.
        """
        self._syncing = True
        try:
            for prefix, target in (
                (self._existing_prefix, self._containers),
                (self._in_progress_prefix, self._creation_ids),
            ):
                try:
                    kvs = await _within(self._etcd.get_prefix(prefix), _ETCD_TIMEOUT_S)
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
        if self._state is QueueState.REMOVED:
            return
        self._touch()
        self._containers.add(last_segment(event.key))

    def _on_container_delete(self, event: WatchEvent) -> None:
        if self._state is QueueState.REMOVED:
            return
        self._touch()
        container_id = last_segment(event.key)
        if self._syncing:
            self._deleted_while_syncing.add(container_id)
        self._end_poll(container_id, NO_ACTIVATION)
        self._containers.discard(container_id)

    def _on_creation_put(self, event: WatchEvent) -> None:
        if self._state is QueueState.REMOVED:
            return
        self._touch()
        self._creation_ids.add(last_segment(event.key))

    def _on_creation_delete(self, event: WatchEvent) -> None:
        if self._state is QueueState.REMOVED:
            return
        self._touch()
        creation_id = last_segment(event.key)
        if self._syncing:
            self._deleted_while_syncing.add(creation_id)
        self._creation_ids.discard(creation_id)

    def _on_leader_deleted(self, _event: WatchEvent) -> None:
        if not self._leads():
            return
        self._spawn(self._retake_leadership(), "leader")

    def _leads(self) -> bool:
        return (
            self._owns_keys
            and not self._outdated
            and self._state
            not in (
                QueueState.REMOVING,
                QueueState.REMOVED,
            )
        )

    async def _retake_leadership(self) -> None:
        """The leader key vanished (lease lost, etcd blip): take it again, or retire
        if another scheduler took it meanwhile."""
        value = json.dumps(self._endpoints.to_json(), separators=(",", ":"))
        while self._leads():
            try:
                restored = await _within(
                    self._dms.register_initial_data(
                        self._leader_key, value, failover=False
                    ),
                    _ETCD_TIMEOUT_S,
                )
            except (CoordinationError, TimeoutError) as exc:
                log.warning(
                    "Queue %s: re-taking the leader key failed: %s", self._name, exc
                )
                await asyncio.sleep(_RETAKE_BACKOFF_S)
                continue
            if not self._leads():
                return
            if restored:
                log.info("Queue %s: leader key restored", self._name)
                return
            log.warning("Queue %s: another scheduler leads this action now", self._name)
            # The keys belong to the new leader: leave them as they are.
            self._owns_keys = False
            self._retire("leadership lost", unregister_keys=False)
            return

    # --- background work ---------------------------------------------------------------

    async def _check_duration(self) -> None:
        try:
            result = await _within(
                self._duration_checker.check_average_duration(self._ns, self._metadata),
                _DURATION_TIMEOUT_S,
            )
        except Exception as exc:
            log.warning("Queue %s: duration check failed: %s", self._name, exc)
            return
        if result.hit_count > 0 and not self._durations:
            self._average_duration = result.average_duration_ms

    def _spawn(self, coro: Coroutine[Any, Any, None], role: str) -> asyncio.Task[None]:
        """Start a task this queue owns; stop() cancels whatever is still running."""
        task = asyncio.get_running_loop().create_task(
            coro, name=f"{self._task_prefix}:{role}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "Queue %s: task %s failed",
                self._name,
                task.get_name(),
                exc_info=task.exception(),
            )
