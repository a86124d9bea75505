"""Duration checkers: the first estimate of an action's run time for a new queue."""

from __future__ import annotations

from typing import Any

import pytest

from wisp.core.activation import WhiskActivation
from wisp.core.errors import StoreError
from wisp.scheduler.queue.duration import (
    DurationCheckResult,
    NoopDurationChecker,
    StoreDurationChecker,
)

pytestmark = pytest.mark.timeout(5)

METADATA: dict[str, Any] = {
    "namespace": "bob/utils",
    "name": "resize",
    "exec": {"kind": "python:3"},
    "limits": {"memory": 256},
}


class RecordingStore:
    """The one ActivationStore call the checker makes, answered from a table."""

    def __init__(
        self, answers: dict[tuple[str, str], tuple[float | None, int]] | None = None
    ) -> None:
        self.answers = answers or {}
        self.calls: list[tuple[str, str, int]] = []
        self.error: Exception | None = None

    async def average_duration(
        self, namespace: str, path: str, since_ms: int
    ) -> tuple[float | None, int]:
        self.calls.append((namespace, path, since_ms))
        if self.error is not None:
            raise self.error
        return self.answers.get((namespace, path), (None, 0))

    async def put_activation(self, activation: WhiskActivation) -> None:
        raise NotImplementedError

    async def get_activation(
        self, namespace: str, activation_id: str
    ) -> WhiskActivation | None:
        raise NotImplementedError

    async def list_activations(self, namespace: str, **_: Any) -> list[WhiskActivation]:
        raise NotImplementedError

    async def close(self) -> None:
        return None


async def test_noop_checker_knows_no_duration() -> None:
    checker = NoopDurationChecker()

    result = await checker.check_average_duration("alice", METADATA)

    assert result == DurationCheckResult(None, 0, 0)


async def test_store_checker_averages_the_action_in_the_invocation_namespace() -> None:
    store = RecordingStore({("alice", "bob/utils/resize"): (42.5, 8)})
    checker = StoreDurationChecker(store, window_s=3600, wall_clock=lambda: 10_000.0)

    result = await checker.check_average_duration("alice", METADATA)

    assert (result.average_duration_ms, result.hit_count) == (42.5, 8)
    assert store.calls == [("alice", "bob/utils/resize", (10_000 - 3600) * 1000)]


async def test_store_checker_without_records_knows_no_duration() -> None:
    store = RecordingStore()
    checker = StoreDurationChecker(store)

    result = await checker.check_average_duration("carol", METADATA)

    assert (result.average_duration_ms, result.hit_count) == (None, 0)


async def test_store_checker_survives_a_store_failure() -> None:
    store = RecordingStore({("alice", "bob/utils/resize"): (42.5, 8)})
    store.error = StoreError("database is locked")
    checker = StoreDurationChecker(store)

    result = await checker.check_average_duration("alice", METADATA)

    assert (result.average_duration_ms, result.hit_count) == (None, 0)


async def test_store_checker_default_window_is_one_day() -> None:
    store = RecordingStore()
    checker = StoreDurationChecker(store, wall_clock=lambda: 100_000.0)

    await checker.check_average_duration("alice", METADATA)

    assert store.calls[0][2] == (100_000 - 86_400) * 1000
