"""MemoryQueue states, their legal edges, and the pure rules the queue driver applies
(staleness, retention, action throttling, poll order); no I/O, no event loop.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from typing import Any

from wisp.config.model import QueueConfig

BLACKBOX_KIND = "blackbox"


class QueueState(enum.Enum):
    UNINITIALIZED = "uninitialized"
    RUNNING = "running"
    IDLE = "idle"
    #: OpenWhisk's Removing / GracefulShuttingDown: keeps serving, then Removed
    REMOVING = "removing"
    REMOVED = "removed"
    FLUSHING = "flushing"
    NAMESPACE_THROTTLED = "namespace_throttled"
    ACTION_THROTTLED = "action_throttled"

    @property
    def openwhisk_name(self) -> str:
        """The state name OpenWhisk's StatusData shows (admin API)."""
        return _OPENWHISK_NAMES[self]


_OPENWHISK_NAMES = {
    QueueState.UNINITIALIZED: "Uninitialized",
    QueueState.RUNNING: "Running",
    QueueState.IDLE: "Idle",
    QueueState.REMOVING: "Removing",
    QueueState.REMOVED: "Removed",
    QueueState.FLUSHING: "Flushing",
    QueueState.NAMESPACE_THROTTLED: "NamespaceThrottled",
    QueueState.ACTION_THROTTLED: "ActionThrottled",
}

_S = QueueState

ALLOWED_TRANSITIONS: dict[QueueState, frozenset[QueueState]] = {
    _S.UNINITIALIZED: frozenset({_S.RUNNING, _S.REMOVING, _S.REMOVED}),
    _S.RUNNING: frozenset(
        {
            _S.IDLE,
            _S.NAMESPACE_THROTTLED,
            _S.ACTION_THROTTLED,
            _S.FLUSHING,
            _S.REMOVING,
            _S.REMOVED,
        }
    ),
    _S.IDLE: frozenset({_S.RUNNING, _S.REMOVED}),
    _S.NAMESPACE_THROTTLED: frozenset({_S.RUNNING, _S.REMOVING, _S.REMOVED}),
    _S.ACTION_THROTTLED: frozenset({_S.RUNNING, _S.REMOVING, _S.REMOVED}),
    _S.FLUSHING: frozenset({_S.RUNNING, _S.REMOVED}),
    _S.REMOVING: frozenset({_S.REMOVED}),
    _S.REMOVED: frozenset(),
}

#: states in which the decision loop and the drop loop run (OpenWhisk's monitor and
#: dropper actors exist exactly here)
WORKING_STATES = frozenset(
    {_S.RUNNING, _S.NAMESPACE_THROTTLED, _S.ACTION_THROTTLED, _S.FLUSHING, _S.REMOVING}
)


def can_transition(source: QueueState, target: QueueState) -> bool:
    return target in ALLOWED_TRANSITIONS[source]


# --- waiting activations ------------------------------------------------------------


def count_waited_at_least(
    enqueue_times: Iterable[float], now: float, threshold_s: float
) -> int:
    """How many entries, from the head of a FIFO, have waited `threshold_s` or more.

    The FIFO is in arrival order, so counting stops at the first younger entry.
    """
    count = 0
    for enqueued in enqueue_times:
        if now - enqueued < threshold_s:
            break
        count += 1
    return count


def retention_ms(exec_kind: str, config: QueueConfig) -> int:
    """How long an activation may wait before it is failed; blackbox actions wait longer."""
    if exec_kind == BLACKBOX_KIND:
        return config.max_blackbox_retention_ms
    return config.max_retention_ms


def not_initiated_text(retention: int) -> str:
    """The whisk error for an activation that expired in the queue."""
    return f"Activation processing is not initiated for {retention} ms"


# --- action throttling ----------------------------------------------------------------


def action_throttled(
    queue_length: int, throttled: bool, max_retention_size: int, fraction: float
) -> bool:
    """Whether the action throttle flag should be on, given whether it is on now.

    On at `max_retention_size` waiting activations; off again once the queue is at or
    below `fraction` of it. The gap keeps the flag from flapping.
    """
    if not throttled:
        return queue_length >= max_retention_size
    return queue_length > max_retention_size * fraction


# --- idling ------------------------------------------------------------------------------


def can_idle(queue_length: int, containers: int, creations: int) -> bool:
    """Running may go Idle only with no work, no containers and no creations."""
    return queue_length == 0 and containers == 0 and creations == 0


# --- long polls ---------------------------------------------------------------------


def poll_order_key(container_id: str, warmed: bool) -> str:
    """Larger keys are served first: warmed containers, then the largest id."""
    return ("1" if warmed else "0") + container_id


# --- action metadata -------------------------------------------------------------------


def exec_kind(action_metadata: dict[str, Any]) -> str:
    exec_ = action_metadata.get("exec")
    if isinstance(exec_, dict):
        return str(exec_.get("kind", "unknown"))
    return "unknown"


def action_limits(action_metadata: dict[str, Any]) -> dict[str, Any]:
    limits = action_metadata.get("limits")
    return dict(limits) if isinstance(limits, dict) else {}


def memory_mb(action_metadata: dict[str, Any], default: int = 256) -> int:
    value = action_limits(action_metadata).get("memory", default)
    return int(value) if isinstance(value, int | float) else default


def max_action_concurrency(action_metadata: dict[str, Any]) -> int:
    value = action_limits(action_metadata).get("concurrency", 1)
    return max(1, int(value)) if isinstance(value, int | float) else 1


def action_container_limit(
    action_metadata: dict[str, Any], namespace_limit: int
) -> int:
    """`limits.instances` capped at the namespace limit; the namespace limit if unset."""
    value = action_limits(action_metadata).get("instances")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return min(int(value), namespace_limit)
    return namespace_limit


def mean(values: Iterable[float]) -> float | None:
    items = list(values)
    if not items:
        return None
    return math.fsum(items) / len(items)
