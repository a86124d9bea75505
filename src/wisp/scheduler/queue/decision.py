"""SchedulingDecisionMaker: how many containers a queue should add, from one snapshot.

Pure: the MemoryQueue builds a `QueueSnapshot` every check interval, calls `decide`,
and performs the returned `Decision`. The throughput model counts activations one
container clears per stale-threshold window, so every waiting activation should start
within one stale threshold.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from wisp.config.model import SchedulingConfig
from wisp.scheduler.queue.state import QueueState


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    """What a queue knows at one tick (OpenWhisk's QueueSnapshot)."""

    #: the queue has acted on ADD_INITIAL_CONTAINER once
    initialized: bool
    #: activations being enqueued right now (the driver enqueues synchronously: 0)
    incoming_msg_count: int
    #: activations waiting in the FIFO
    current_msg_count: int
    #: containers of this action and revision
    existing_container_count: int
    #: creations of this action and revision in flight
    in_progress_container_count: int
    #: FIFO entries, from the head, that waited at least the stale threshold
    stale_activation_num: int
    existing_container_count_in_namespace: int
    in_progress_container_count_in_namespace: int
    #: mean run time in ms, None while unknown
    average_duration_ms: float | None
    #: the namespace's container limit (concurrentInvocations)
    namespace_limit: int
    #: `limits.instances` of the action capped at the namespace limit
    action_limit: int
    #: intra-container concurrency (`limits.concurrency`), at least 1
    max_action_concurrency: int
    state: QueueState


class DecisionKind(enum.Enum):
    SKIP = "skip"
    ADD_INITIAL_CONTAINER = "add_initial_container"
    ADD_CONTAINER = "add_container"
    ENABLE_NAMESPACE_THROTTLING = "enable_namespace_throttling"
    DISABLE_NAMESPACE_THROTTLING = "disable_namespace_throttling"
    PAUSING = "pausing"


@dataclass(frozen=True, slots=True)
class Decision:
    kind: DecisionKind
    #: containers to create
    num: int
    #: with ENABLE_NAMESPACE_THROTTLING: fail the queued activations too
    drop_messages: bool = False


SKIP = Decision(DecisionKind.SKIP, 0)


def decide(s: QueueSnapshot, config: SchedulingConfig) -> Decision:
    """The provisioning decision for one snapshot; the first matching rule wins."""
    total = s.existing_container_count + s.in_progress_container_count
    available = s.current_msg_count + s.incoming_msg_count
    ns_used = (
        s.existing_container_count_in_namespace
        + s.in_progress_container_count_in_namespace
    )
    action_cap = s.action_limit - total
    ns_cap = s.namespace_limit - ns_used
    ratio = config.namespace_over_provision_before_throttle_ratio
    over_provision_cap = math.ceil(s.namespace_limit * ratio) - ns_used
    allow_over_provision = config.allow_over_provision_before_throttle

    # A limit of 0 (or less) can never be served: pause unless already flushing.
    if min(s.namespace_limit, s.action_limit) <= 0:
        if s.state is QueueState.FLUSHING:
            return SKIP
        return Decision(DecisionKind.PAUSING, 0)

    # A brand-new action may get one container beyond the namespace limit, up to the
    # over-provision ceiling, so that one busy action cannot starve the others.
    if allow_over_provision and total == 0:
        capacity = 1 if over_provision_cap > 0 else 0
    else:
        capacity = min(ns_cap, action_cap)

    if capacity <= 0:
        return _without_capacity(s, total, allow_over_provision, over_provision_cap)

    duration = s.average_duration_ms
    if (
        s.state is QueueState.RUNNING
        and duration is None
        and total == 0
        and not s.initialized
    ):
        return Decision(DecisionKind.ADD_INITIAL_CONTAINER, 1)
    if s.state is QueueState.NAMESPACE_THROTTLED:
        # Containers are added on a later tick, once the queue is Running again.
        return Decision(DecisionKind.DISABLE_NAMESPACE_THROTTLING, 0)
    if s.state is QueueState.RUNNING and total == 0 and available > 0:
        return Decision(DecisionKind.ADD_CONTAINER, 1)
    if s.state is QueueState.FLUSHING and total == 0:
        # Keep probing while flushing: a creation that succeeds ends the flush.
        return Decision(DecisionKind.ADD_INITIAL_CONTAINER, 1)

    if s.state is QueueState.RUNNING:
        if duration is None:
            if s.stale_activation_num > 0:
                wanted = _stale_without_duration(s, available)
                return _add_if_possible(wanted, capacity, ns_cap)
            return SKIP
        return _with_duration(s, duration, available, capacity, ns_cap, config)

    if s.state is QueueState.REMOVING and s.stale_activation_num > 0:
        # Draining before shutdown: only stale activations get new containers.
        if duration is None:
            wanted = _stale_without_duration(s, available)
        else:
            throughput = _throughput(duration, s.max_action_concurrency, config)
            wanted = (
                min(
                    math.ceil(s.stale_activation_num / throughput),
                    s.stale_activation_num,
                )
                - s.in_progress_container_count
            )
        return _add_if_possible(wanted, capacity, ns_cap)

    # Idle, Removed, ActionThrottled and Flushing with containers never provision.
    return SKIP


def _without_capacity(
    s: QueueSnapshot, total: int, allow_over_provision: bool, over_provision_cap: int
) -> Decision:
    if s.state is QueueState.RUNNING and (
        not allow_over_provision or over_provision_cap <= 0
    ):
        # With no container at all the queued activations can never run: drop them.
        return Decision(
            DecisionKind.ENABLE_NAMESPACE_THROTTLING, 0, drop_messages=total == 0
        )
    if (
        s.state is QueueState.NAMESPACE_THROTTLED
        and allow_over_provision
        and over_provision_cap > 0
    ):
        return Decision(DecisionKind.DISABLE_NAMESPACE_THROTTLING, 0)
    return SKIP


def _stale_without_duration(s: QueueSnapshot, available: int) -> int:
    """About one container per stale activation (per concurrency slot), minus the
    creations already in flight, never more than the waiting activations."""
    wanted = (
        math.ceil(s.stale_activation_num / s.max_action_concurrency)
        - s.in_progress_container_count
    )
    return min(wanted, available)


def _throughput(duration: float, concurrency: int, config: SchedulingConfig) -> float:
    """Activations one container clears in one stale-threshold window."""
    if duration <= 0:
        return float(concurrency)
    return (config.stale_threshold_ms / duration) * concurrency


def _with_duration(
    s: QueueSnapshot,
    duration: float,
    available: int,
    capacity: int,
    ns_cap: int,
    config: SchedulingConfig,
) -> Decision:
    throughput = _throughput(duration, s.max_action_concurrency, config)
    total = s.existing_container_count + s.in_progress_container_count
    expected = throughput * total
    non_stale = available - s.stale_activation_num

    # Stale activations: enough containers to clear them in one window, at most one
    # per activation, minus the creations in flight (may go negative).
    stale_containers = 0
    if s.stale_activation_num > 0:
        needed = math.ceil(s.stale_activation_num / throughput)
        stale_containers = (
            min(needed, s.stale_activation_num) - s.in_progress_container_count
        )

    # Fresh activations: add containers when the current ones cannot keep up.
    if non_stale >= expected and total < non_stale and duration > 0:
        fresh = math.ceil(non_stale / throughput - total)
        if fresh + total > non_stale:
            fresh = non_stale - total
        return _add_if_possible(fresh + stale_containers, capacity, ns_cap)
    if stale_containers > 0:
        return _add_if_possible(stale_containers, capacity, ns_cap)
    return SKIP


def _add_if_possible(wanted: int, capacity: int, ns_cap: int) -> Decision:
    if wanted > capacity:
        if capacity >= ns_cap:
            # The namespace limit binds: add what fits and throttle the namespace.
            return Decision(DecisionKind.ENABLE_NAMESPACE_THROTTLING, capacity)
        # Only this action's own limit binds; the namespace still has room.
        return Decision(DecisionKind.ADD_CONTAINER, capacity)
    if wanted <= 0:
        return SKIP
    return Decision(DecisionKind.ADD_CONTAINER, wanted)
