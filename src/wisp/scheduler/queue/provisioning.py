"""How a MemoryQueue asks for containers: the snapshot it gives the
SchedulingDecisionMaker every check interval (run times included) and the creations
it sends to the ContainerManager.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from wisp.config.model import SchedulerConfig
from wisp.core.entity import FullyQualifiedEntityName
from wisp.core.ids import SchedulerInstanceId, TransactionId, new_creation_id
from wisp.core.messages import ContainerCreationMessage, SchedulerEndpoints
from wisp.scheduler.ports import ContainerCreator
from wisp.scheduler.queue import state as rules
from wisp.scheduler.queue.decision import Decision, QueueSnapshot, decide
from wisp.scheduler.queue.duration import DurationChecker
from wisp.scheduler.queue.pull import Backlog
from wisp.scheduler.queue.state import QueueState
from wisp.scheduler.queue.tracking import ContainerTracker

log = logging.getLogger(__name__)

CREATION_TRANSACTION = "sid_containerCreation"

_DURATION_TIMEOUT_S = 10.0
#: creations are logged at INFO at most this often per queue, else at DEBUG
_CREATION_REPORT_S = 5.0


class Provisioner:
    """Reads the queue's backlog and tracked containers; adds every creation it sends
    to the tracked creations at once."""

    def __init__(
        self,
        *,
        name: str,
        invocation_namespace: str,
        action: FullyQualifiedEntityName,
        revision: str,
        action_metadata: dict[str, Any],
        config: SchedulerConfig,
        sid: SchedulerInstanceId,
        endpoints: SchedulerEndpoints,
        creator: ContainerCreator,
        duration_checker: DurationChecker,
        backlog: Backlog,
        tracked: ContainerTracker,
        clock: Callable[[], float],
    ) -> None:
        self._name = name
        self._ns = invocation_namespace
        self._action = action
        self._revision = revision
        self._metadata = action_metadata
        self._scheduling_cfg = config.scheduling
        self._sid = sid
        self._endpoints = endpoints
        self._creator = creator
        self._duration_checker = duration_checker
        self._backlog = backlog
        self._tracked = tracked
        self._clock = clock
        self._memory_mb = rules.memory_mb(action_metadata)

        #: the queue has acted on ADD_INITIAL_CONTAINER once
        self._initialized = False
        self._durations: deque[int] = deque(
            maxlen=max(1, config.queue.duration_buffer_size)
        )
        self._average_duration: float | None = None
        self._last_report: float | None = None

    # --- run times ------------------------------------------------------------------

    @property
    def average_duration_ms(self) -> float | None:
        return self._average_duration

    def record_duration(self, duration_ms: int) -> None:
        """A container reported how long its last activation ran."""
        self._durations.append(duration_ms)

    def refresh_average(self) -> None:
        if self._durations:
            self._average_duration = rules.mean(self._durations)

    async def check_duration(self) -> None:
        """A first estimate from the activation store, unless containers reported
        run times meanwhile."""
        try:
            async with asyncio.timeout(_DURATION_TIMEOUT_S):
                result = await self._duration_checker.check_average_duration(
                    self._ns, self._metadata
                )
        except Exception as exc:
            log.warning("Queue %s: duration check failed: %s", self._name, exc)
            return
        if result.hit_count > 0 and not self._durations:
            self._average_duration = result.average_duration_ms

    # --- decisions and creations ------------------------------------------------------

    def decide(self, namespace_limit: int, state: QueueState) -> Decision:
        """What the SchedulingDecisionMaker says for the queue as it is now."""
        return decide(self.snapshot(namespace_limit, state), self._scheduling_cfg)

    def snapshot(self, namespace_limit: int, state: QueueState) -> QueueSnapshot:
        stale = self._backlog.count_waited(
            self._clock(), self._scheduling_cfg.stale_threshold_ms / 1000
        )
        ns_existing, ns_in_progress = self._tracked.namespace_counts()
        return QueueSnapshot(
            initialized=self._initialized,
            incoming_msg_count=0,
            current_msg_count=len(self._backlog),
            existing_container_count=len(self._tracked.containers),
            in_progress_container_count=len(self._tracked.creations),
            stale_activation_num=stale,
            existing_container_count_in_namespace=ns_existing,
            in_progress_container_count_in_namespace=ns_in_progress,
            average_duration_ms=self._average_duration,
            namespace_limit=namespace_limit,
            action_limit=rules.action_container_limit(self._metadata, namespace_limit),
            max_action_concurrency=rules.max_action_concurrency(self._metadata),
            state=state,
        )

    def create(self, count: int, *, initial: bool) -> None:
        """Send `count` creations; `initial` marks the ADD_INITIAL_CONTAINER ones."""
        if initial:
            self._initialized = True
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
        self._tracked.creations.update(ids)
        self._log_creation(count)
        try:
            self._creator.create_containers(msgs, self._memory_mb, self._ns)
        except Exception:
            log.exception("Queue %s: handing creations over failed", self._name)
            self._tracked.creations.difference_update(ids)

    def _log_creation(self, count: int) -> None:
        # A queue that cannot get its containers asks again every check interval;
        # one INFO line says it started, the repeats go to DEBUG.
        now = self._clock()
        if self._last_report is None or now - self._last_report >= _CREATION_REPORT_S:
            self._last_report = now
            log.info("Queue %s: creating %d containers", self._name, count)
        else:
            log.debug("Queue %s: creating %d containers", self._name, count)
