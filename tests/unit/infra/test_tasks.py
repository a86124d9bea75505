"""TaskSet: owned background tasks are named, logged on failure, cancelled together."""

from __future__ import annotations

import asyncio
import logging

import pytest

from wisp.infra.tasks import TaskSet


async def test_tasks_are_named_after_their_owner_and_forgotten_when_done() -> None:
    tasks = TaskSet("queue:guest/hello", logging.getLogger("test"))

    task = tasks.spawn(asyncio.sleep(0), "monitor")
    await task

    assert task.get_name() == "queue:guest/hello:monitor"
    assert len(tasks) == 0


async def test_a_failed_task_is_logged_with_its_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tasks = TaskSet("svc", logging.getLogger("test.tasks"))

    async def boom() -> None:
        raise RuntimeError("broken")

    task = tasks.spawn(boom(), "job")
    await asyncio.wait({task})
    await asyncio.sleep(0)

    assert "Task svc:job failed" in caplog.text


async def test_cancel_all_stops_every_task_but_the_callers() -> None:
    tasks = TaskSet("svc", logging.getLogger("test"))
    sleepers = [tasks.spawn(asyncio.sleep(30), f"s{i}") for i in range(3)]

    async def stopper() -> set[asyncio.Task[object]]:
        return await tasks.cancel_all(timeout_s=1.0)

    stuck = await tasks.spawn(stopper(), "stop")

    assert stuck == set()
    assert all(s.cancelled() for s in sleepers)
