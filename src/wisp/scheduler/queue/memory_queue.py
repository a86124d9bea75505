"""MemoryQueue (module 19): the in-memory queue of one (invocation namespace, action,
revision): it buffers activations, hands them to pulling containers, asks for new
containers every check interval, publishes throttle flags and retires itself.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from wisp.config.model import SchedulerConfig
from wisp.core.activation import ActivationMessage, ActivationResponse
from wisp.core.entity import FullyQualifiedEntityName
from wisp.core.errors import NotFoundError
from wisp.core.ids import SchedulerInstanceId
from wisp.core.messages import (
    NO_ACTIVATION,
    NO_MEMORY_QUEUE,
    ContainerCreationError,
    FetchResult,
    SchedulerEndpoints,
)
from wisp.infra.etcd.client import EtcdClient
from wisp.infra.etcd.data_management import DataManagementService
from wisp.infra.etcd.keys import EtcdKeys
from wisp.infra.etcd.watcher import WatcherService
from wisp.infra.messaging.acks import ActiveAck
from wisp.infra.tasks import TaskSet
from wisp.scheduler.ports import ContainerCreator, QueueParent
from wisp.scheduler.queue import state as rules
from wisp.scheduler.queue.counter import NamespaceContainerCountRegistry
from wisp.scheduler.queue.decision import Decision, DecisionKind
from wisp.scheduler.queue.duration import DurationChecker
from wisp.scheduler.queue.failing import (
    TOO_MANY_CONCURRENT_REQUESTS,
    ActivationFailer,
    FlushCause,
    expired_response,
    fails_fast,
    flush_response,
    throttle_response,
)
from wisp.scheduler.queue.leadership import LeaderKeys
from wisp.scheduler.queue.provisioning import CREATION_TRANSACTION, Provisioner
from wisp.scheduler.queue.pull import Backlog, Entry, Poll, PollRegistry
from wisp.scheduler.queue.state import WORKING_STATES, QueueState
from wisp.scheduler.queue.timers import StateTimer, WorkingLoops
from wisp.scheduler.queue.tracking import ContainerTracker

__all__ = [
    "CREATION_TRANSACTION",
    "NAMESPACE_LIMIT_ZERO",
    "QUEUE_STOPPED",
    "TOO_MANY_CONCURRENT_REQUESTS",
    "VOID_CREATION_ID",
    "MemoryQueue",
    "QueueKey",
]

log = logging.getLogger(__name__)

NAMESPACE_LIMIT_ZERO = "The namespace limit is less than or equal to 0."
#: for an activation handed to a queue after stop() (the pool should not do that)
QUEUE_STOPPED = "The activation has not been processed: the queue is stopped."
#: creation id of the synthetic failure a zero namespace limit produces
VOID_CREATION_ID = "cid_void"

_LIMIT_TIMEOUT_S = 5.0
_ACK_DRAIN_S = 2.0
_STOP_WAIT_S = 2.0

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


@dataclass(frozen=True, slots=True)
class QueueKey:
    invocation_namespace: str
    #: unversioned, "owner/pkg/name"
    fqn: str
    revision: str


class MemoryQueue:
    """The queue's state machine: every event and timeout lands here and decides the
    next state. Its parts sit beside it: pull (backlog, long polls), tracking
    (containers, creations), leadership (owned etcd keys), provisioning (decisions,
    creations), failing (failed activations) and timers (state timer, loops)."""

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
        self._creator = container_creator
        self._parent = parent
        self._namespace_limit = namespace_limit
        self._clock = clock

        fqn = action.unversioned()
        self._key = QueueKey(invocation_namespace, fqn, revision)
        self._name = name = f"{invocation_namespace}/{fqn}@{revision}"
        self._task_prefix = f"queue:{invocation_namespace}/{fqn}"
        watch_name = f"memory-queue-{name}#{next(_serial)}"
        self._retention_ms = rules.retention_ms(
            rules.exec_kind(action_metadata), config.queue
        )

        self._state = QueueState.UNINITIALIZED
        self._flush: FlushCause | None = None
        self._outdated = False
        self._parent_notified = False
        self._tasks = TaskSet(self._task_prefix, log)

        # The parts, each with its own state; callbacks lead back into this queue.
        self._backlog = Backlog()
        self._polls = PollRegistry()
        self._timer = StateTimer(
            name=name,
            config=config.queue,
            current_state=lambda: self._state,
            on_timeout=self._on_state_timeout,
            spawn=self._spawn,
        )
        self._loops = WorkingLoops(
            name=name,
            check_interval_s=config.scheduling.check_interval_ms / 1000,
            drop_interval_s=config.scheduling.drop_interval_s,
            decide=self._tick,
            drop=self._drop_expired,
            spawn=self._spawn,
        )
        self._tracked = ContainerTracker(
            name=name,
            invocation_namespace=invocation_namespace,
            fqn=fqn,
            revision=revision,
            keys=keys,
            etcd=etcd,
            watcher=watcher,
            watch_name=watch_name,
            counters=counters,
            is_live=lambda: self._state is not QueueState.REMOVED,
            touch=self._timer.touch,
            container_gone=self._container_gone,
        )
        self._keys = LeaderKeys(
            name=name,
            invocation_namespace=invocation_namespace,
            fqn=fqn,
            keys=keys,
            endpoints=endpoints,
            dms=dms,
            watcher=watcher,
            watch_name=watch_name,
            may_lead=self._may_lead,
            spawn=self._spawn,
            on_lost=self._leadership_lost,
        )
        self._provisioning = Provisioner(
            name=name,
            invocation_namespace=invocation_namespace,
            action=action,
            revision=revision,
            action_metadata=action_metadata,
            config=config,
            sid=sid,
            endpoints=endpoints,
            creator=container_creator,
            duration_checker=duration_checker,
            backlog=self._backlog,
            tracked=self._tracked,
            clock=clock,
        )
        self._failer = ActivationFailer(
            name=name,
            task_prefix=self._task_prefix,
            ack=ack,
            action_metadata=action_metadata,
        )

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
        return frozenset(self._tracked.containers)

    @property
    def creation_ids(self) -> frozenset[str]:
        return frozenset(self._tracked.creations)

    @property
    def average_duration_ms(self) -> float | None:
        return self._provisioning.average_duration_ms

    def waiting_count(self) -> int:
        return len(self._backlog)

    def status(self) -> dict[str, Any]:
        """OpenWhisk's StatusData."""
        return {
            "invocationNamespace": self._ns,
            "fqn": str(self._action),
            "waitingActivation": self._backlog.activation_ids(),
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
        self._timer.touch()

        # Follow this action's containers and creations (and the namespace's counts).
        self._tracked.watch()
        self._spawn(self._provisioning.check_duration(), "duration")

        # Throttle flags. A version update shares the keys of the previous revision.
        self._keys.owns = True
        if not version_updated:
            await self._keys.register_namespace_flag()
            if self._state is not QueueState.UNINITIALIZED:
                return
        # DIVERGENCE(openwhisk): a version-updated queue writes nothing there; the
        # action flag is reset here so a flag left by the outdated queue cannot stick.
        self._keys.reset_action_flag()

        # DIVERGENCE(openwhisk): a version-updated queue watches its leader key too,
        # so it can restore the key like any other leader queue.
        self._keys.watch_leader()

        await self._tracked.sync()
        if self._state is not QueueState.UNINITIALIZED:
            return
        cause = "version updated" if version_updated else "started"
        self._transition(QueueState.RUNNING, cause)
        self._update_action_throttle()

    def graceful_shutdown(self) -> None:
        """Give the action up to another scheduler and drain what is queued here."""
        self._timer.touch()
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
            self._failer.fail(self._backlog.take_all(), self._flush_response())
            self._retire("graceful shutdown while flushing", unregister_keys=True)
            return
        # Delete the keys first so that controllers and schedulers move on, then keep
        # serving the containers that still pull from here (nothing waiting: done).
        self._keys.unregister()
        self._keys.unwatch_leader()
        self._transition(QueueState.REMOVING, "graceful shutdown")
        self._check_removing()

    def stop_as_outdated(self) -> None:
        """A newer revision took over: stop provisioning, let the old containers take
        what they can, hand the rest to the parent, then retire."""
        self._timer.touch()
        state = self._state
        if state is QueueState.REMOVED:
            return
        first = not self._outdated
        self._outdated = True
        # DIVERGENCE(openwhisk): the leader and throttle keys now belong to the new
        # revision's queue; the original could delete them when outdated in Flushing.
        self._keys.owns = False
        self._keys.unwatch_leader()
        if first:
            # DIVERGENCE(openwhisk): the queue leaves the pool only once Removed (the
            # original dropped it here), so that its old containers can still pull
            # its backlog instead of being told the action version does not match.
            self._parent.queue_outdated(self)
        if state is QueueState.IDLE:
            self._retire("outdated", unregister_keys=False, delete_containers=True)
            return
        if state is QueueState.FLUSHING:
            # DIVERGENCE(openwhisk): the backlog was failed there; the newer revision
            # may well get containers, so it is routed there (see _retire).
            self._retire("outdated while flushing", unregister_keys=False)
            return
        if state is not QueueState.REMOVING:
            self._transition(QueueState.REMOVING, "outdated")
        self._check_removing()

    async def stop(self) -> None:
        """Cancel every task (scheduler shutdown, tests). Keys stay as they are and the
        parent is not told: the caller owns the pool."""
        # Stop intake and the loops.
        if self._state is not QueueState.REMOVED:
            self._transition(QueueState.REMOVED, "stopped")
        self._release_watches()
        self._polls.end_all(NO_MEMORY_QUEUE)
        if self._backlog:
            log.warning(
                "Queue %s stopped with %d waiting activations",
                self._name,
                len(self._backlog),
            )
            self._failer.fail(
                self._backlog.take_all(), ActivationResponse.whisk_error(QUEUE_STOPPED)
            )

        # Let failure acks finish (bounded), then cancel whatever is left.
        await self._failer.drain(_ACK_DRAIN_S)
        acks = {t for t in self._failer.tasks if t is not asyncio.current_task()}
        for task in acks:
            task.cancel()
        stuck = await self._tasks.cancel_all(_STOP_WAIT_S)
        if acks:
            stuck |= (await asyncio.wait(acks, timeout=_STOP_WAIT_S))[1]
        for task in stuck:
            log.warning("Queue %s: task %s did not stop", self._name, task.get_name())

    # --- intake (OpenWhisk's handleActivationMessage) ------------------------------------

    def put(self, msg: ActivationMessage) -> None:
        """Take one activation; never blocks."""
        self._timer.touch()
        state = self._state
        if state is QueueState.REMOVED:
            self._route_again([msg])
            return
        if state is QueueState.IDLE:
            self._transition(QueueState.RUNNING, "activation arrived")
        elif state is QueueState.ACTION_THROTTLED:
            self._failer.fail([msg], self._throttle_response())
            return
        elif state is QueueState.NAMESPACE_THROTTLED and not (
            self._tracked.containers or self._tracked.creations
        ):
            self._failer.fail([msg], self._throttle_response())
            return
        elif state is QueueState.FLUSHING and self._flush is not None:
            self._flush.active = True
            if fails_fast(self._flush.error):
                self._failer.fail([msg], self._flush_response())
                return
        entry = Entry(msg, self._clock())
        if self._polls.offer(entry):
            return
        self._backlog.append(entry)
        self._update_action_throttle()
        if state is QueueState.REMOVING:
            self._check_removing()
            return
        if not (self._tracked.containers or self._tracked.creations):
            # DIVERGENCE(openwhisk): a queue with nothing to serve its first
            # activation decides at once instead of at the next 100 ms tick.
            self._loops.kick()

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
            self._timer.touch()
        if self._state is QueueState.REMOVED:
            # The container will look the new queue up.
            self._forward_backlog()
            return NO_MEMORY_QUEUE
        if not alive:
            self._polls.end(container_id, NO_ACTIVATION)
            self._tracked.containers.discard(container_id)
            self._check_removing()
            return NO_ACTIVATION

        if not idle:
            self._tracked.containers.add(container_id)
        if last_duration_ms is not None:
            self._provisioning.record_duration(last_duration_ms)

        if self._backlog:
            entry = self._backlog.pop()
            self._update_action_throttle()
            self._check_removing()
            return FetchResult(message=entry.msg)
        return await self._long_poll(container_id, warmed)

    async def _long_poll(self, container_id: str, warmed: bool) -> FetchResult:
        poll = self._polls.open(container_id, warmed)
        try:
            await asyncio.wait({poll.future}, timeout=self._queue_cfg.long_poll_s)
        except asyncio.CancelledError:
            self._abandon(poll)
            raise
        if self._state is not QueueState.IDLE:
            self._timer.touch()
        if poll.future.done():
            return poll.future.result()
        self._abandon(poll)
        return NO_ACTIVATION

    def _abandon(self, poll: Poll) -> None:
        """Close a poll nobody waits for; an activation already handed to it goes back
        to the head of the queue."""
        entry = self._polls.abandon(poll)
        if entry is None:
            return
        if self._state is QueueState.REMOVED:
            self._route_again([entry.msg])
        else:
            self._backlog.put_back(entry)
            self._update_action_throttle()

    # --- creation outcomes (from ContainerManager / CreationJobManager) -------------------

    def creation_succeeded(self, creation_id: str) -> None:
        self._timer.touch()
        self._tracked.creations.discard(creation_id)
        if self._state is QueueState.FLUSHING:
            self._flush = None
            self._transition(QueueState.RUNNING, f"creation {creation_id} succeeded")

    def creation_failed(
        self, creation_id: str, error: ContainerCreationError, reason: str
    ) -> None:
        self._timer.touch()
        self._tracked.creations.discard(creation_id)
        state = self._state
        if state is QueueState.REMOVING:
            self._check_removing(give_up=True)
            return
        if state is QueueState.RUNNING:
            if self._tracked.containers:
                # Running containers still serve the queue.
                return
            self._flush = FlushCause(error, reason)
            if fails_fast(error):
                self._failer.fail(self._backlog.take_all(), self._flush_response())
            self._transition(QueueState.FLUSHING, f"{error.value}: {reason}")
        elif state is QueueState.FLUSHING and self._flush is not None:
            if error is ContainerCreationError.INVALID_ACTION_LIMIT:
                self._failer.fail(self._backlog.take_all(), self._flush_response())
                self._retire(f"{error.value}: {reason}", unregister_keys=True)
                return
            self._flush = FlushCause(error, reason, self._flush.active)
            if fails_fast(error):
                self._failer.fail(self._backlog.take_all(), self._flush_response())

    # --- the decision loop ---------------------------------------------------------------

    async def _tick(self) -> None:
        if self._outdated:
            self._hand_back_stale()
            return
        self._provisioning.refresh_average()
        # Re-evaluated every tick so that a throttle flag never outlives its cause.
        self._update_action_throttle()
        try:
            async with asyncio.timeout(_LIMIT_TIMEOUT_S):
                limit = await self._namespace_limit(self._ns)
        except NotFoundError:
            log.info("Queue %s: namespace %s no longer exists", self._name, self._ns)
            self.stop_as_outdated()
            return
        if self._state not in WORKING_STATES:
            return
        decision = self._provisioning.decide(limit, self._state)
        if decision.kind is not DecisionKind.SKIP:
            log.debug("Queue %s: decision %s", self._name, decision)
        self._apply(decision)

    def _apply(self, decision: Decision) -> None:
        kind = decision.kind
        if kind is DecisionKind.SKIP:
            return
        self._timer.touch()
        if kind is DecisionKind.PAUSING:
            self.creation_failed(
                VOID_CREATION_ID,
                ContainerCreationError.ZERO_NAMESPACE_LIMIT,
                NAMESPACE_LIMIT_ZERO,
            )
            return
        if decision.num > 0:
            initial = kind is DecisionKind.ADD_INITIAL_CONTAINER
            self._provisioning.create(decision.num, initial=initial)
        if kind is DecisionKind.ENABLE_NAMESPACE_THROTTLING:
            self._enable_namespace_throttling(decision.drop_messages)
        elif kind is DecisionKind.DISABLE_NAMESPACE_THROTTLING:
            self._disable_namespace_throttling()

    # --- throttling ---------------------------------------------------------------------

    def _enable_namespace_throttling(self, drop_messages: bool) -> None:
        if self._state is not QueueState.RUNNING:
            return
        self._keys.set_namespace_flag(True)
        self._transition(QueueState.NAMESPACE_THROTTLED, "namespace limit reached")
        if drop_messages:
            self._failer.fail(self._backlog.take_all(), self._throttle_response())
            self._update_action_throttle()

    def _disable_namespace_throttling(self) -> None:
        if self._state is not QueueState.NAMESPACE_THROTTLED:
            return
        self._keys.set_namespace_flag(False)
        self._transition(QueueState.RUNNING, "namespace capacity available")

    def _update_action_throttle(self) -> None:
        """Switch the action flag on at max_retention_size waiting activations and off
        at the throttling fraction, whatever made the queue grow or shrink."""
        if not self._keys.owns:
            return
        throttled = rules.action_throttled(
            len(self._backlog),
            self._keys.action_throttled,
            self._queue_cfg.max_retention_size,
            self._queue_cfg.throttling_fraction,
        )
        self._keys.set_action_flag(throttled)
        if throttled and self._state is QueueState.RUNNING:
            self._transition(
                QueueState.ACTION_THROTTLED, "too many waiting activations"
            )
        elif not throttled and self._state is QueueState.ACTION_THROTTLED:
            self._transition(QueueState.RUNNING, "waiting activations went down")

    def _throttle_response(self) -> ActivationResponse:
        return throttle_response(self._queue_cfg.fail_throttle_as_whisk_error)

    # --- expiry and flushing -----------------------------------------------------------

    def _drop_expired(self) -> None:
        retention_s = self._retention_ms / 1000
        if self._backlog.count_waited(self._clock(), retention_s) == 0:
            return
        if self._state is QueueState.FLUSHING:
            self._check_flushing()
            return
        expired = self._backlog.take_waited(self._clock(), retention_s)
        self._failer.fail(expired, expired_response(self._retention_ms))
        self._update_action_throttle()
        self._check_removing()

    def _check_flushing(self) -> None:
        """Flushing gives up on expired activations, and retires once a whole flush
        period passed with nothing queued and nothing arriving."""
        if self._state is not QueueState.FLUSHING or self._flush is None:
            return
        expired = self._backlog.take_waited(self._clock(), self._retention_ms / 1000)
        self._failer.fail(expired, self._flush_response())
        self._update_action_throttle()
        if self._flush.active or self._backlog:
            self._flush.active = False
            return
        self._retire(f"flushed ({self._flush.reason})", unregister_keys=True)

    def _flush_response(self) -> ActivationResponse:
        return flush_response(self._flush, self._retention_ms)

    # --- routing activations again --------------------------------------------------------

    def _forward_backlog(self) -> None:
        backlog = self._backlog.take_all()
        if backlog:
            self._route_again(backlog)

    def _hand_back_stale(self) -> None:
        """An outdated queue never asks for containers (an invoker would run the
        current code anyway): what its old containers did not take within the stale
        threshold goes to the current revision's queue, which can provision."""
        stale = self._backlog.take_waited(
            self._clock(), self._scheduling_cfg.stale_threshold_ms / 1000
        )
        if stale:
            log.info(
                "Queue %s: %d activations handed to the current revision",
                self._name,
                len(stale),
            )
            self._parent.forward(stale)
        self._check_removing()

    def _route_again(self, msgs: list[ActivationMessage]) -> None:
        """Hand activations back to the parent once it has dropped this queue; before
        that (a queue stopped by its owner) they would come straight back here."""
        if self._parent_notified:
            self._parent.forward(msgs)
        else:
            self._failer.fail(msgs, ActivationResponse.whisk_error(QUEUE_STOPPED))

    # --- state timeouts -----------------------------------------------------------------

    def _on_state_timeout(self, state: QueueState) -> None:
        if state is QueueState.RUNNING:
            if rules.can_idle(
                len(self._backlog),
                len(self._tracked.containers),
                len(self._tracked.creations),
            ):
                self._transition(QueueState.IDLE, "idle grace passed")
        elif state is QueueState.IDLE:
            self._retire("stop grace passed", unregister_keys=True)
        elif state is QueueState.FLUSHING:
            self._check_flushing()
        elif state is QueueState.REMOVING:
            self._check_removing(give_up=True)

    def _check_removing(self, *, give_up: bool = False) -> None:
        """Removing ends as soon as nothing waits here. With a backlog left, an
        outdated queue retires once no old container can take it, any other once
        `give_up` (state timeout, failed creation) finds nothing left to serve it;
        the backlog is routed again in both cases."""
        if self._state is not QueueState.REMOVING:
            return
        if not self._backlog:
            self._retire(
                "drained", unregister_keys=False, delete_containers=self._outdated
            )
            return
        if self._tracked.containers:
            return
        if self._outdated or (give_up and not self._tracked.creations):
            # DIVERGENCE(openwhisk): the original keeps waiting for containers that are
            # gone; the backlog is routed again instead (to the new leader).
            self._retire(
                "nothing left to drain the backlog",
                unregister_keys=False,
                delete_containers=self._outdated,
            )

    def _container_gone(self, container_id: str) -> None:
        """A container of this revision disappeared from etcd."""
        self._polls.end(container_id, NO_ACTIVATION)
        if self._state is QueueState.REMOVING:
            # Not from inside the watch callback: retiring releases that watch.
            asyncio.get_running_loop().call_soon(self._check_removing)

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
        self._timer.touch()
        # The decision and drop loops run exactly in the working states.
        self._loops.run(target in WORKING_STATES)
        self._timer.arm(target)
        return True

    def _retire(
        self, cause: str, *, unregister_keys: bool, delete_containers: bool = False
    ) -> None:
        """Go Removed: stop the loops and watches, delete the keys this queue owns (if
        asked), tell the parent, and route whatever is left again."""
        if not self._transition(QueueState.REMOVED, cause):
            return
        self._release_watches()
        if unregister_keys:
            self._keys.unregister()
        self._keys.owns = False
        if delete_containers:
            self._creator.delete_containers(
                self._ns, self._action, self._revision, self._metadata
            )
        # DIVERGENCE(openwhisk): the parent is told on every way into Removed (the
        # graceful-shutdown path did not), so late activations are routed elsewhere.
        self._notify_parent()
        self._forward_backlog()
        self._polls.end_all(NO_MEMORY_QUEUE)

    def _notify_parent(self) -> None:
        if self._parent_notified:
            return
        self._parent_notified = True
        try:
            self._parent.queue_removed(self, outdated=self._outdated)
        except Exception:
            log.exception("Queue %s: telling the queue manager failed", self._name)

    def _may_lead(self) -> bool:
        return not self._outdated and self._state not in (
            QueueState.REMOVING,
            QueueState.REMOVED,
        )

    def _leadership_lost(self) -> None:
        self._retire("leadership lost", unregister_keys=False)

    def _release_watches(self) -> None:
        self._keys.unwatch_leader()
        self._tracked.release()

    # --- owned tasks --------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None], role: str) -> asyncio.Task[None]:
        """Start a task this queue owns; stop() cancels whatever is still running."""
        return self._tasks.spawn(coro, role)
