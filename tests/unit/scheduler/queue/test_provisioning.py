"""What the queue tells the decision maker (snapshot, run times) and how it sends
creations: counted as in progress before they leave, forgotten if they cannot."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, cast

import pytest

from wisp.config.load import load_config
from wisp.core.entity import Exec, FullyQualifiedEntityName, WhiskAction
from wisp.core.ids import SchedulerInstanceId
from wisp.core.messages import ContainerCreationMessage, SchedulerEndpoints
from wisp.scheduler.queue.duration import DurationCheckResult
from wisp.scheduler.queue.provisioning import CREATION_TRANSACTION, Provisioner
from wisp.scheduler.queue.pull import Backlog
from wisp.scheduler.queue.state import QueueState
from wisp.scheduler.queue.tracking import ContainerTracker

pytestmark = pytest.mark.timeout(5)

NS = "alice"
ACTION = FullyQualifiedEntityName("bob/utils", "resize", "0.0.1")
REV = "1-aaa"


class StubTracker:
    def __init__(self) -> None:
        self.containers: set[str] = set()
        self.creations: set[str] = set()

    def namespace_counts(self) -> tuple[int, int]:
        return (len(self.containers), len(self.creations))


class RecordingCreator:
    def __init__(self, tracker: StubTracker, *, fail: bool = False) -> None:
        self.tracker = tracker
        self.fail = fail
        self.sent: list[ContainerCreationMessage] = []
        self.in_progress_when_sent: set[str] = set()

    def create_containers(
        self, msgs: list[ContainerCreationMessage], memory_mb: int, invocation_ns: str
    ) -> None:
        self.in_progress_when_sent = set(self.tracker.creations)
        if self.fail:
            raise RuntimeError("container manager gone")
        self.sent.extend(msgs)

    def delete_containers(
        self,
        invocation_ns: str,
        fqn: FullyQualifiedEntityName,
        revision: str,
        action_metadata: dict[str, Any],
    ) -> None:
        return None


class FixedDurationChecker:
    def __init__(self, average_ms: float | None, hits: int) -> None:
        self.result = DurationCheckResult(average_ms, hits, 1)

    async def check_average_duration(
        self, invocation_ns: str, action_metadata: dict[str, Any]
    ) -> DurationCheckResult:
        return self.result


def provisioner(
    *,
    fail: bool = False,
    checker: FixedDurationChecker | None = None,
    clock: Callable[[], float] = lambda: 1000.0,
) -> tuple[Provisioner, StubTracker, RecordingCreator]:
    tracker = StubTracker()
    creator = RecordingCreator(tracker, fail=fail)
    metadata = WhiskAction(
        "bob/utils", "resize", Exec("python:3", "def main(a): return a"), rev=REV
    ).metadata_json()
    p = Provisioner(
        name="q",
        invocation_namespace=NS,
        action=ACTION,
        revision=REV,
        action_metadata=metadata,
        config=load_config().scheduler,
        sid=SchedulerInstanceId("0"),
        endpoints=SchedulerEndpoints("127.0.0.1", 13001),
        creator=creator,
        duration_checker=checker or FixedDurationChecker(None, 0),
        backlog=Backlog(),
        tracked=cast(ContainerTracker, tracker),
        clock=clock,
    )
    return p, tracker, creator


def test_creations_count_as_in_progress_before_they_are_handed_over() -> None:
    p, tracker, creator = provisioner()

    p.create(2, initial=True)

    ids = {m.creation_id for m in creator.sent}
    assert len(ids) == 2
    assert creator.in_progress_when_sent == ids
    assert tracker.creations == ids
    msg = creator.sent[0]
    assert msg.scheduler_host == "127.0.0.1"
    assert msg.rpc_port == 13001
    assert msg.root_scheduler_index == SchedulerInstanceId("0")
    assert msg.transid.id == CREATION_TRANSACTION


def test_creations_that_could_not_be_handed_over_are_forgotten() -> None:
    p, tracker, _ = provisioner(fail=True)

    p.create(3, initial=False)

    assert tracker.creations == set()


def test_repeated_creations_log_one_info_line_then_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [1000.0]
    p, _, _ = provisioner(clock=lambda: now[0])
    caplog.set_level(logging.DEBUG, logger="wisp.scheduler.queue.provisioning")

    for _ in range(3):
        p.create(12, initial=False)
        now[0] += 0.1
    now[0] += 5.0
    p.create(1, initial=False)

    levels = [r.levelno for r in caplog.records if "creating" in r.getMessage()]
    assert levels == [logging.INFO, logging.DEBUG, logging.DEBUG, logging.INFO]


def test_snapshot_reports_initialized_only_after_the_initial_creation() -> None:
    p, _, _ = provisioner()
    before = p.snapshot(10, QueueState.RUNNING)

    p.create(1, initial=True)
    after = p.snapshot(10, QueueState.RUNNING)

    assert before.initialized is False
    assert after.initialized is True
    assert after.in_progress_container_count == 1
    assert after.in_progress_container_count_in_namespace == 1


def test_reported_run_times_become_the_average_at_the_next_refresh() -> None:
    p, _, _ = provisioner()
    p.record_duration(100)
    p.record_duration(300)
    before = p.average_duration_ms

    p.refresh_average()

    assert before is None
    assert p.average_duration_ms == 200.0


@pytest.mark.parametrize(
    ("reported", "expected"),
    [(None, 50.0), (300, None)],
    ids=["store-estimate", "containers-reported-first"],
)
async def test_the_store_estimate_is_used_only_before_containers_report(
    reported: int | None, expected: float | None
) -> None:
    p, _, _ = provisioner(checker=FixedDurationChecker(50.0, 4))
    if reported is not None:
        p.record_duration(reported)

    await p.check_duration()

    assert p.average_duration_ms == expected
