"""The state timer (which timer each state runs, when it fires) and the working loops."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from wisp.config.load import load_config
from wisp.config.model import QueueConfig
from wisp.scheduler.queue.state import QueueState
from wisp.scheduler.queue.timers import StateTimer, WorkingLoops, timer_spec

pytestmark = pytest.mark.timeout(5)

S = QueueState


def queue_config(**overrides: float) -> QueueConfig:
    return load_config(
        overrides={f"scheduler.queue.{k}": v for k, v in overrides.items()}
    ).scheduler.queue


CONFIG = queue_config(
    idle_grace_s=1.0,
    stop_grace_s=2.0,
    flush_grace_s=3.0,
    graceful_shutdown_timeout_s=4.0,
)


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (S.UNINITIALIZED, None),
        (S.RUNNING, (1.0, False)),
        (S.IDLE, (2.0, False)),
        (S.FLUSHING, (3.0, True)),
        (S.REMOVING, (4.0, False)),
        (S.NAMESPACE_THROTTLED, None),
        (S.ACTION_THROTTLED, None),
        (S.REMOVED, None),
    ],
    ids=lambda v: getattr(v, "value", str(v)),
)
def test_each_state_runs_its_own_timer(
    state: QueueState, expected: tuple[float, bool] | None
) -> None:
    spec = timer_spec(state, CONFIG)

    assert spec == expected


class Harness:
    """Owns the tasks the parts spawn, like the queue does."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[None]] = []

    def spawn(self, coro: Coroutine[Any, Any, None], role: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=role)
        self.tasks.append(task)
        return task

    async def cancel(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def wait_until(check: Callable[[], bool], timeout_s: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


@pytest.fixture
async def harness() -> Any:
    h = Harness()
    yield h
    await h.cancel()


async def test_timeout_fires_once_activity_stopped_for_the_grace(
    harness: Harness,
) -> None:
    fired: list[QueueState] = []
    state = S.RUNNING
    timer = StateTimer(
        name="q",
        config=queue_config(idle_grace_s=0.3),
        current_state=lambda: state,
        on_timeout=fired.append,
        spawn=harness.spawn,
    )
    timer.touch()

    timer.arm(S.RUNNING)
    await asyncio.sleep(0.15)
    timer.touch()
    await asyncio.sleep(0.2)
    fired_before_grace = list(fired)
    await wait_until(lambda: bool(fired))

    assert fired_before_grace == []
    assert fired[0] is S.RUNNING


async def test_a_timer_of_a_state_left_behind_never_fires(harness: Harness) -> None:
    fired: list[QueueState] = []
    state = S.RUNNING
    timer = StateTimer(
        name="q",
        config=queue_config(idle_grace_s=0.02),
        current_state=lambda: state,
        on_timeout=fired.append,
        spawn=harness.spawn,
    )
    timer.touch()
    timer.arm(S.RUNNING)

    state = S.NAMESPACE_THROTTLED
    timer.arm(S.NAMESPACE_THROTTLED)
    await asyncio.sleep(0.06)

    assert fired == []


async def test_periodic_timer_keeps_firing_and_survives_a_failed_round(
    harness: Harness,
) -> None:
    fired: list[QueueState] = []

    def on_timeout(state: QueueState) -> None:
        fired.append(state)
        if len(fired) == 1:
            raise RuntimeError("first round fails")

    timer = StateTimer(
        name="q",
        config=queue_config(flush_grace_s=0.01),
        current_state=lambda: S.FLUSHING,
        on_timeout=on_timeout,
        spawn=harness.spawn,
    )

    timer.arm(S.FLUSHING)
    await wait_until(lambda: len(fired) >= 3)

    assert set(fired) == {S.FLUSHING}


async def test_working_loops_run_until_told_to_stop(harness: Harness) -> None:
    rounds: list[str] = []

    async def decide() -> None:
        rounds.append("decide")
        if rounds.count("decide") == 1:
            raise RuntimeError("first decision fails")

    loops = WorkingLoops(
        name="q",
        check_interval_s=0.005,
        drop_interval_s=0.005,
        decide=decide,
        drop=lambda: rounds.append("drop"),
        spawn=harness.spawn,
    )

    loops.run(True)
    await wait_until(lambda: rounds.count("decide") >= 2 and "drop" in rounds)
    loops.run(False)
    await asyncio.sleep(0)
    stopped_at = len(rounds)
    await asyncio.sleep(0.03)

    assert len(rounds) == stopped_at


async def test_kick_runs_a_decision_round_before_the_next_tick(
    harness: Harness,
) -> None:
    rounds: list[float] = []

    async def decide() -> None:
        rounds.append(asyncio.get_running_loop().time())

    loops = WorkingLoops(
        name="q",
        check_interval_s=30.0,
        drop_interval_s=30.0,
        decide=decide,
        drop=lambda: None,
        spawn=harness.spawn,
    )
    loops.run(True)
    await asyncio.sleep(0)

    loops.kick()
    await wait_until(lambda: len(rounds) == 1)
    loops.run(False)

    assert len(rounds) == 1
