"""TaskSet: the background tasks one service owns, named, logged when they fail and
cancelled together on stop (shared plumbing of every role, no I/O of its own)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class TaskSet:
    def __init__(self, owner: str, logger: logging.Logger) -> None:
        self._owner = owner
        self._log = logger
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    @property
    def tasks(self) -> frozenset[asyncio.Task[Any]]:
        return frozenset(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        """Run `coro` in the background as `<owner>:<name>`."""
        task = asyncio.get_running_loop().create_task(
            coro, name=f"{self._owner}:{name}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    async def cancel_all(
        self, timeout_s: float | None = None
    ) -> set[asyncio.Task[Any]]:
        """Cancel every task but the caller's; returns those still running after
        `timeout_s` (None: wait for all)."""
        current = asyncio.current_task()
        tasks = {t for t in self._tasks if t is not current}
        for task in tasks:
            task.cancel()
        if not tasks:
            return set()
        _, pending = await asyncio.wait(tasks, timeout=timeout_s)
        return pending

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._log.error(
                "Task %s failed", task.get_name(), exc_info=task.exception()
            )
