"""The queue's state table and the pure rules its driver applies."""

from __future__ import annotations

import itertools

import pytest

from wisp.config.model import QueueConfig
from wisp.scheduler.queue import state as rules
from wisp.scheduler.queue.state import ALLOWED_TRANSITIONS, QueueState

S = QueueState

#: the edges as the design reads (§5.9.5), restated independently of the module
EXPECTED_EDGES = {
    (S.UNINITIALIZED, S.RUNNING),  # Start / VersionUpdated
    (S.UNINITIALIZED, S.REMOVING),  # shut down before it started
    (S.UNINITIALIZED, S.REMOVED),  # leader lost, stopped
    (S.RUNNING, S.IDLE),  # idle grace with no work and no containers
    (S.RUNNING, S.NAMESPACE_THROTTLED),
    (S.RUNNING, S.ACTION_THROTTLED),
    (S.RUNNING, S.FLUSHING),  # creation failed with no container running
    (S.RUNNING, S.REMOVING),  # graceful shutdown, outdated
    (S.RUNNING, S.REMOVED),  # leader lost, stopped
    (S.IDLE, S.RUNNING),  # an activation arrived
    (S.IDLE, S.REMOVED),  # stop grace, shutdown, outdated
    (S.NAMESPACE_THROTTLED, S.RUNNING),
    (S.NAMESPACE_THROTTLED, S.REMOVING),
    (S.NAMESPACE_THROTTLED, S.REMOVED),
    (S.ACTION_THROTTLED, S.RUNNING),
    (S.ACTION_THROTTLED, S.REMOVING),
    (S.ACTION_THROTTLED, S.REMOVED),
    (S.FLUSHING, S.RUNNING),  # a creation succeeded
    (S.FLUSHING, S.REMOVED),  # flushed, shutdown, outdated, invalid limit
    (S.REMOVING, S.REMOVED),  # drained
}


@pytest.mark.parametrize(
    ("source", "target"),
    list(itertools.product(QueueState, QueueState)),
    ids=lambda s: s.value,
)
def test_transition_table_allows_exactly_the_designed_edges(
    source: QueueState, target: QueueState
) -> None:
    expected = (source, target) in EXPECTED_EDGES

    allowed = rules.can_transition(source, target)

    assert allowed == expected


def test_every_state_has_a_row_and_removed_is_final() -> None:
    rows = set(ALLOWED_TRANSITIONS)

    assert rows == set(QueueState)
    assert ALLOWED_TRANSITIONS[S.REMOVED] == frozenset()


def test_every_state_can_reach_removed() -> None:
    reachable = {S.REMOVED}

    changed = True
    while changed:
        before = len(reachable)
        reachable |= {
            s for s, targets in ALLOWED_TRANSITIONS.items() if targets & reachable
        }
        changed = len(reachable) != before

    assert reachable == set(QueueState)


def test_state_values_are_lowercase_and_openwhisk_names_are_kept() -> None:
    values = [s.value for s in QueueState]

    assert all(v == v.lower() for v in values)
    assert S.NAMESPACE_THROTTLED.openwhisk_name == "NamespaceThrottled"
    assert S.REMOVING.openwhisk_name == "Removing"


@pytest.mark.parametrize(
    ("ages_s", "threshold_s", "expected"),
    [
        ([], 0.5, 0),
        ([0.25], 0.5, 0),
        ([0.5], 0.5, 1),
        ([1.5, 1.0, 0.25], 0.5, 2),
        # counting stops at the first younger entry (the FIFO is in arrival order)
        ([1.5, 0.25, 1.0], 0.5, 1),
        ([5.0, 4.0, 3.0], 0.5, 3),
    ],
)
def test_waiting_entries_are_counted_from_the_head(
    ages_s: list[float], threshold_s: float, expected: int
) -> None:
    now = 100.0
    enqueue_times = [now - age for age in ages_s]

    count = rules.count_waited_at_least(enqueue_times, now, threshold_s)

    assert count == expected


@pytest.mark.parametrize(
    ("length", "throttled", "expected"),
    [
        (9, False, False),
        (10, False, True),  # on at max_retention_size
        (11, False, True),
        (10, True, True),
        (9, True, True),  # 9 > 10 * 0.8: still on
        (8, True, False),  # off at the fraction
        (0, True, False),
        (0, False, False),
    ],
)
def test_action_throttle_has_hysteresis(
    length: int, throttled: bool, expected: bool
) -> None:
    result = rules.action_throttled(length, throttled, 10, 0.8)

    assert result == expected


@pytest.mark.parametrize(
    ("queue_length", "containers", "creations", "expected"),
    [
        (0, 0, 0, True),
        (1, 0, 0, False),
        (0, 1, 0, False),
        (0, 0, 1, False),
    ],
)
def test_queue_idles_only_without_work_containers_and_creations(
    queue_length: int, containers: int, creations: int, expected: bool
) -> None:
    result = rules.can_idle(queue_length, containers, creations)

    assert result == expected


def test_blackbox_actions_are_retained_longer() -> None:
    config = QueueConfig(max_retention_ms=60_000, max_blackbox_retention_ms=300_000)

    managed = rules.retention_ms("python:3", config)
    blackbox = rules.retention_ms("blackbox", config)

    assert (managed, blackbox) == (60_000, 300_000)


def test_expired_text_names_the_retention() -> None:
    text = rules.not_initiated_text(60_000)

    assert text == "Activation processing is not initiated for 60000 ms"


def test_polls_are_ordered_warm_first_then_largest_container_id() -> None:
    polls = [("1", False), ("4", False), ("2", False), ("3", False), ("0", True)]

    order = sorted(polls, key=lambda p: rules.poll_order_key(*p), reverse=True)

    assert [cid for cid, _ in order] == ["0", "4", "3", "2", "1"]


@pytest.mark.parametrize(
    ("limits", "namespace_limit", "expected"),
    [
        ({}, 30, 30),
        ({"instances": 5}, 30, 5),
        ({"instances": 50}, 30, 30),  # capped at the namespace limit
        ({"instances": True}, 30, 30),  # not a number
    ],
)
def test_action_container_limit(
    limits: dict[str, object], namespace_limit: int, expected: int
) -> None:
    metadata = {"limits": limits}

    limit = rules.action_container_limit(metadata, namespace_limit)

    assert limit == expected


def test_metadata_helpers_fall_back_to_defaults() -> None:
    metadata: dict[str, object] = {
        "exec": {"kind": "nodejs:20"},
        "limits": {"memory": 512},
    }

    assert rules.exec_kind(metadata) == "nodejs:20"
    assert rules.exec_kind({}) == "unknown"
    assert rules.memory_mb(metadata) == 512
    assert rules.memory_mb({}) == 256
    assert rules.max_action_concurrency(metadata) == 1
    assert rules.max_action_concurrency({"limits": {"concurrency": 3}}) == 3


def test_mean_of_nothing_is_unknown() -> None:
    assert rules.mean([]) is None
    assert rules.mean([10, 20, 60]) == 30.0
