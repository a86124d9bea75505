"""SchedulingDecisionMaker as a table: OpenWhisk's decision tests and the worked
examples of the design reference, one snapshot in, one decision out."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from wisp.config.model import SchedulingConfig
from wisp.scheduler.queue.decision import Decision, DecisionKind, QueueSnapshot, decide
from wisp.scheduler.queue.state import QueueState

RUNNING = QueueState.RUNNING
IDLE = QueueState.IDLE
FLUSHING = QueueState.FLUSHING
REMOVING = QueueState.REMOVING
REMOVED = QueueState.REMOVED
NS_THROTTLED = QueueState.NAMESPACE_THROTTLED
ACTION_THROTTLED = QueueState.ACTION_THROTTLED

SKIP = Decision(DecisionKind.SKIP, 0)
PAUSING = Decision(DecisionKind.PAUSING, 0)
DISABLE = Decision(DecisionKind.DISABLE_NAMESPACE_THROTTLING, 0)


def add(n: int) -> Decision:
    return Decision(DecisionKind.ADD_CONTAINER, n)


def add_initial() -> Decision:
    return Decision(DecisionKind.ADD_INITIAL_CONTAINER, 1)


def throttle(n: int = 0, *, drop: bool = False) -> Decision:
    return Decision(DecisionKind.ENABLE_NAMESPACE_THROTTLING, n, drop_messages=drop)


BASE = SchedulingConfig(
    stale_threshold_ms=100,
    check_interval_ms=100,
    drop_interval_s=10.0,
    allow_over_provision_before_throttle=False,
    namespace_over_provision_before_throttle_ratio=1.5,
)


def over_provision(ratio: float) -> SchedulingConfig:
    return replace(
        BASE,
        allow_over_provision_before_throttle=True,
        namespace_over_provision_before_throttle_ratio=ratio,
    )


@dataclass(frozen=True)
class Case:
    """One row: snapshot fields that differ from a quiet Running queue."""

    id: str
    expected: Decision
    state: QueueState = RUNNING
    initialized: bool = True
    incoming: int = 0
    current: int = 0
    existing: int = 0
    in_progress: int = 0
    stale: int = 0
    ns_existing: int = 0
    ns_in_progress: int = 0
    duration: float | None = None
    limit: int = 10
    #: None = the namespace limit, as when the action sets no `limits.instances`
    action_limit: int | None = None
    concurrency: int = 1
    config: SchedulingConfig = field(default=BASE)

    def snapshot(self) -> QueueSnapshot:
        return QueueSnapshot(
            initialized=self.initialized,
            incoming_msg_count=self.incoming,
            current_msg_count=self.current,
            existing_container_count=self.existing,
            in_progress_container_count=self.in_progress,
            stale_activation_num=self.stale,
            existing_container_count_in_namespace=self.ns_existing,
            in_progress_container_count_in_namespace=self.ns_in_progress,
            average_duration_ms=self.duration,
            namespace_limit=self.limit,
            action_limit=self.limit if self.action_limit is None else self.action_limit,
            max_action_concurrency=self.concurrency,
            state=self.state,
        )


def _quiet_cases(tag: str, **fields: Any) -> list[Case]:
    """The same quiet snapshot in every state that can have no message."""
    states = (RUNNING, IDLE, FLUSHING, REMOVING, REMOVED)
    return [
        Case(f"skip_without_messages_{state.value}_{tag}", SKIP, state=state, **fields)
        for state in states
    ]


# Ported from OpenWhisk's SchedulingDecisionMakerTests (same inputs, same answers).
OPENWHISK_CASES = [
    Case("pausing_when_limit_is_zero", PAUSING, initialized=False, limit=0),
    Case(
        "skip_when_already_flushing_and_limit_is_zero",
        SKIP,
        state=FLUSHING,
        initialized=False,
        limit=0,
    ),
    *_quiet_cases(
        tag="no_duration",
        initialized=False,
        existing=1,
        in_progress=2,
        ns_existing=1,
        ns_in_progress=2,
        limit=10,
    ),
    *_quiet_cases(
        tag="with_duration",
        initialized=False,
        existing=3,
        in_progress=5,
        ns_existing=5,
        ns_in_progress=8,
        duration=1.0,
        limit=20,
    ),
    Case(
        "throttle_namespace_dropping_when_no_capacity_and_no_container",
        throttle(drop=True),
        ns_existing=1,
        ns_in_progress=1,
        limit=2,
    ),
    Case(
        "throttle_namespace_keeping_messages_when_some_containers_exist",
        throttle(),
        existing=1,
        in_progress=1,
        ns_existing=2,
        ns_in_progress=2,
        limit=4,
    ),
    Case(
        "over_provision_gives_a_new_action_one_container",
        add_initial(),
        initialized=False,
        ns_existing=1,
        ns_in_progress=1,
        limit=2,
        config=over_provision(1.5),
    ),
    Case(
        "throttle_namespace_dropping_when_over_provision_has_no_room",
        throttle(drop=True),
        ns_existing=1,
        ns_in_progress=1,
        limit=2,
        config=over_provision(1.0),
    ),
    Case(
        "disable_namespace_throttling_when_over_provision_has_room_again",
        DISABLE,
        state=NS_THROTTLED,
        existing=1,
        ns_existing=1,
        ns_in_progress=1,
        limit=2,
        config=over_provision(1.1),
    ),
    Case(
        "throttle_namespace_keeping_messages_when_over_provision_has_no_more_room",
        throttle(),
        existing=1,
        ns_existing=1,
        ns_in_progress=1,
        limit=2,
        config=over_provision(1.0),
    ),
    Case(
        "no_throttling_while_over_provision_has_room_for_an_action_with_containers",
        SKIP,
        existing=1,
        in_progress=1,
        ns_existing=2,
        ns_in_progress=2,
        limit=4,
        config=over_provision(1.5),
    ),
    Case(
        "add_initial_container_when_there_is_none",
        add_initial(),
        initialized=False,
        ns_existing=1,
        ns_in_progress=1,
        limit=4,
    ),
    Case(
        "disable_namespace_throttling_without_adding_when_no_container",
        DISABLE,
        state=NS_THROTTLED,
        initialized=False,
        current=1,
        ns_existing=1,
        ns_in_progress=1,
        limit=4,
    ),
    Case(
        "disable_namespace_throttling_when_some_containers_exist",
        DISABLE,
        state=NS_THROTTLED,
        initialized=False,
        existing=1,
        in_progress=1,
        ns_existing=1,
        ns_in_progress=1,
        limit=4,
    ),
    Case(
        "add_container_when_running_initialized_queue_has_none_and_a_message",
        add(1),
        incoming=1,
        ns_existing=1,
        ns_in_progress=1,
        limit=4,
    ),
    Case(
        "no_container_without_messages_even_when_running",
        SKIP,
        ns_existing=1,
        ns_in_progress=1,
        limit=4,
    ),
    Case(
        "flushing_queue_without_container_probes_with_one",
        add_initial(),
        state=FLUSHING,
        ns_existing=1,
        ns_in_progress=1,
        limit=4,
    ),
    Case(
        "one_container_per_stale_message",
        add(2),
        current=2,
        existing=1,
        stale=2,
        ns_existing=1,
        ns_in_progress=1,
        limit=4,
    ),
    Case(
        "stale_messages_count_creations_in_progress",
        add(1),
        current=2,
        existing=1,
        in_progress=1,
        stale=2,
        ns_existing=1,
        ns_in_progress=1,
        limit=4,
    ),
    Case(
        "stale_messages_without_duration_are_capped_by_the_limit",
        throttle(2),
        current=6,
        existing=1,
        in_progress=1,
        stale=6,
        ns_existing=1,
        ns_in_progress=1,
        limit=4,
    ),
    Case(
        "no_container_for_stale_messages_when_enough_are_in_progress",
        SKIP,
        current=2,
        existing=1,
        in_progress=6,
        stale=2,
        ns_existing=1,
        ns_in_progress=6,
        limit=10,
    ),
    Case(
        "stale_messages_with_duration_use_the_throughput",
        add(3),
        current=6,
        existing=1,
        stale=6,
        ns_existing=1,
        duration=50,
    ),
    Case(
        "stale_messages_with_duration_add_at_most_one_per_message",
        add(2),
        current=2,
        existing=1,
        stale=2,
        ns_existing=1,
        duration=1000,
    ),
    Case(
        "stale_messages_with_duration_stay_within_the_limit",
        throttle(3),
        current=10,
        existing=1,
        stale=10,
        ns_existing=1,
        duration=1000,
        limit=4,
    ),
    Case(
        "fresh_messages_with_duration_add_up_to_one_per_message",
        add(5),
        incoming=4,
        current=2,
        existing=1,
        ns_existing=1,
        duration=1000,
    ),
    Case(
        "fresh_messages_with_duration_stay_within_the_capacity",
        throttle(3),
        incoming=4,
        current=2,
        existing=1,
        ns_existing=1,
        duration=1000,
        limit=4,
    ),
    Case(
        "no_container_when_containers_outnumber_messages",
        SKIP,
        current=4,
        existing=5,
        ns_existing=5,
        duration=1000,
    ),
    Case(
        "one_container_when_none_runs_and_messages_wait",
        add(1),
        current=4,
    ),
    Case(
        "removing_queue_adds_containers_for_stale_messages_with_duration",
        add(3),
        state=REMOVING,
        current=4,
        existing=1,
        in_progress=1,
        stale=4,
        ns_existing=1,
        ns_in_progress=1,
        duration=1000,
    ),
    Case(
        "removing_queue_adds_containers_for_stale_messages_without_duration",
        add(2),
        state=REMOVING,
        current=4,
        existing=1,
        in_progress=2,
        stale=4,
        ns_existing=1,
        ns_in_progress=2,
    ),
    Case(
        "stale_and_fresh_messages_both_need_containers",
        add(3),
        current=5,
        existing=2,
        stale=2,
        ns_existing=2,
        duration=1000,
    ),
    Case(
        "only_stale_messages_need_containers_when_fresh_ones_are_covered",
        add(1),
        current=5,
        existing=2,
        stale=2,
        ns_existing=2,
        duration=50,
    ),
    Case(
        "removing_queue_throttles_the_namespace_at_the_limit",
        throttle(1),
        state=REMOVING,
        current=4,
        existing=1,
        in_progress=2,
        stale=4,
        ns_existing=1,
        ns_in_progress=2,
        limit=4,
    ),
    Case(
        "concurrency_counts_when_demand_is_met",
        SKIP,
        current=4,
        existing=2,
        ns_existing=2,
        duration=100.0,
        limit=4,
        concurrency=2,
    ),
    Case(
        "concurrency_counts_when_demand_is_not_met",
        add(2),
        current=20,
        existing=2,
        ns_existing=2,
        duration=50.0,
        concurrency=3,
    ),
    Case(
        "concurrency_counts_for_stale_and_fresh_messages",
        add(4),
        current=30,
        existing=2,
        stale=10,
        ns_existing=2,
        duration=50.0,
        concurrency=3,
    ),
    Case(
        "concurrency_divides_stale_messages_without_duration",
        add(4),
        current=10,
        existing=1,
        stale=10,
        ns_existing=2,
        concurrency=3,
    ),
    Case(
        "action_limit_caps_without_throttling_the_namespace",
        add(4),
        current=100,
        existing=1,
        ns_existing=2,
        duration=100.0,
        limit=10,
        action_limit=5,
        concurrency=3,
    ),
    Case(
        "namespace_limit_binds_before_the_action_limit",
        throttle(3),
        current=100,
        existing=1,
        ns_existing=7,
        duration=100.0,
        limit=10,
        action_limit=5,
        concurrency=3,
    ),
]

# The worked examples of the design reference (§5.8), T = 100 ms.
WORKED_EXAMPLES = [
    Case(
        "example_1_cold_start",
        add_initial(),
        initialized=False,
        ns_existing=1,
        ns_in_progress=1,
        limit=4,
    ),
    Case(
        "example_2_first_burst_before_any_duration",
        throttle(2),
        current=6,
        existing=1,
        in_progress=1,
        stale=6,
        ns_existing=1,
        ns_in_progress=1,
        limit=4,
    ),
    Case(
        "example_3_duration_known_demand_not_met",
        add(2),
        current=20,
        existing=2,
        ns_existing=2,
        duration=50,
        concurrency=3,
    ),
    Case(
        "example_4_stale_and_fresh_together",
        add(4),
        current=30,
        existing=2,
        stale=10,
        ns_existing=2,
        duration=50,
        concurrency=3,
    ),
    Case(
        "example_5_slow_action_few_messages",
        add(3),
        current=5,
        existing=2,
        stale=2,
        ns_existing=2,
        duration=1000,
    ),
    Case(
        "example_6_demand_already_met",
        SKIP,
        current=4,
        existing=5,
        ns_existing=5,
        duration=1000,
    ),
    Case(
        "example_7_action_limit_binds",
        add(4),
        current=100,
        existing=1,
        ns_existing=2,
        duration=100,
        limit=10,
        action_limit=5,
        concurrency=3,
    ),
    Case(
        "example_8_namespace_binds",
        throttle(3),
        current=100,
        existing=1,
        ns_existing=7,
        duration=100,
        limit=10,
        action_limit=5,
        concurrency=3,
    ),
    Case(
        "example_9_no_room_for_a_new_action",
        throttle(drop=True),
        current=1,
        ns_existing=1,
        ns_in_progress=1,
        limit=2,
    ),
    Case(
        "example_9_over_provision_ratio_1_5_makes_room",
        add_initial(),
        initialized=False,
        current=1,
        ns_existing=1,
        ns_in_progress=1,
        limit=2,
        config=over_provision(1.5),
    ),
    Case(
        "example_9_over_provision_ratio_1_0_has_no_room",
        throttle(drop=True),
        initialized=False,
        current=1,
        ns_existing=1,
        ns_in_progress=1,
        limit=2,
        config=over_provision(1.0),
    ),
    Case(
        "example_10_shutting_down_with_a_backlog",
        add(3),
        state=REMOVING,
        current=4,
        existing=1,
        in_progress=1,
        stale=4,
        ns_existing=1,
        ns_in_progress=1,
        duration=1000,
    ),
    Case(
        "example_10_shutting_down_with_a_backlog_without_duration",
        add(2),
        state=REMOVING,
        current=4,
        existing=1,
        in_progress=2,
        stale=4,
        ns_existing=1,
        ns_in_progress=2,
    ),
]

# Rules the port relies on beyond the original tests.
EXTRA_CASES = [
    Case(
        "action_throttled_queue_never_provisions",
        SKIP,
        state=ACTION_THROTTLED,
        current=50,
        existing=1,
        stale=50,
        ns_existing=1,
    ),
    Case(
        "namespace_throttled_queue_with_room_only_disables_throttling",
        DISABLE,
        state=NS_THROTTLED,
        current=20,
        existing=1,
        stale=20,
        ns_existing=1,
    ),
    Case(
        "negative_limit_pauses_like_zero",
        PAUSING,
        limit=-1,
    ),
    Case(
        "zero_action_limit_pauses",
        PAUSING,
        limit=10,
        action_limit=0,
    ),
    Case(
        "flushing_queue_with_a_container_waits",
        SKIP,
        state=FLUSHING,
        current=3,
        existing=1,
        stale=3,
        ns_existing=1,
    ),
    Case(
        "zero_duration_counts_stale_messages_per_concurrency_slot",
        add(3),
        current=4,
        existing=1,
        stale=3,
        ns_existing=1,
        duration=0.0,
        concurrency=1,
    ),
]


@pytest.mark.parametrize("case", OPENWHISK_CASES, ids=lambda c: c.id)
def test_decision_matches_openwhisk(case: Case) -> None:
    snapshot = case.snapshot()

    decision = decide(snapshot, case.config)

    assert decision == case.expected


@pytest.mark.parametrize("case", WORKED_EXAMPLES, ids=lambda c: c.id)
def test_decision_matches_worked_example(case: Case) -> None:
    snapshot = case.snapshot()

    decision = decide(snapshot, case.config)

    assert decision == case.expected


@pytest.mark.parametrize("case", EXTRA_CASES, ids=lambda c: c.id)
def test_decision_rule(case: Case) -> None:
    snapshot = case.snapshot()

    decision = decide(snapshot, case.config)

    assert decision == case.expected


def test_case_ids_are_unique() -> None:
    ids = [c.id for c in OPENWHISK_CASES + WORKED_EXAMPLES + EXTRA_CASES]

    duplicates = {i for i in ids if ids.count(i) > 1}

    assert not duplicates
