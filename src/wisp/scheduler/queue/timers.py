"""What drives a MemoryQueue by the clock: the timer of its current state (OpenWhisk's
FSM state timeouts) and, in the working states, the decision and drop loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from wisp.config.model import QueueConfig
from wisp.scheduler.queue.state import QueueState

log = logging.getLogger(__name__)

Spawn = Callable[[Coroutine[Any, Any, None], str], asyncio.Task[None]]


def timer_spec(state: QueueState, config: QueueConfig) -> tuple[float, bool] | None:
    """(seconds, periodic) of the timer `state` runs, None for a state without one.

    A timeout that is not periodic counts from the last activity; a periodic one fires
    every period whatever happens.
    """
    if state is QueueState.RUNNING:
        return (config.idle_grace_s, False)
    if state is QueueState.IDLE:
        return (config.stop_grace_s, False)
    if state is QueueState.FLUSHING:
        return (config.flush_grace_s, True)
    if state is QueueState.REMOVING:
        return (config.graceful_shutdown_timeout_s, False)
    return None


class StateTimer:
    """Runs the timer of the current state; `touch()` records activity, which pushes a
    timeout that is not periodic back."""

    def __init__(
        self,
        *,
        name: str,
        config: QueueConfig,
        current_state: Callable[[], QueueState],
        on_timeout: Callable[[QueueState], None],
        spawn: Spawn,
    ) -> None:
        self._name = name
        self._config = config
        self._current_state = current_state
        self._on_timeout = on_timeout
        self._spawn = spawn
        self._last_activity = 0.0
        self._task: asyncio.Task[None] | None = None

    def touch(self) -> None:
        """Any message re-arms the state timeout (Running, Idle, Removing)."""
        try:
            self._last_activity = asyncio.get_running_loop().time()
        except RuntimeError:
            self._last_activity = 0.0

    def arm(self, state: QueueState) -> None:
        """Replace the running timer by the one of `state` (just entered)."""
        timer = self._task
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()
        self._task = None
        spec = timer_spec(state, self._config)
        if spec is None:
            return
        self._task = self._spawn(self._run(state, *spec), "timer")

    async def _run(self, state: QueueState, timeout_s: float, periodic: bool) -> None:
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        while self._task is me and self._current_state() is state:
            if periodic:
                await asyncio.sleep(timeout_s)
            else:
                remaining = self._last_activity + timeout_s - loop.time()
                if remaining > 0:
                    await asyncio.sleep(remaining)
                    continue
            if self._task is not me or self._current_state() is not state:
                return
            try:
                self._on_timeout(state)
            except Exception:
                log.exception("Queue %s: state timeout of %s failed", self._name, state)
            if not periodic:
                self._last_activity = loop.time()


class WorkingLoops:
    """The decision loop (every check interval) and the drop loop (every drop
    interval); the queue runs them exactly in its working states."""

    def __init__(
        self,
        *,
        name: str,
        check_interval_s: float,
        drop_interval_s: float,
        decide: Callable[[], Awaitable[None]],
        drop: Callable[[], None],
        spawn: Spawn,
    ) -> None:
        self._name = name
        self._check_interval_s = check_interval_s
        self._drop_interval_s = drop_interval_s
        self._decide = decide
        self._drop = drop
        self._spawn = spawn
        self._monitor_task: asyncio.Task[None] | None = None
        self._drop_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def kick(self) -> None:
        """Run the next decision round now rather than at the next tick."""
        self._wake.set()

    def run(self, working: bool) -> None:
        """Start the loops when `working` (unless running), else cancel them."""
        if working:
            if self._monitor_task is None:
                self._monitor_task = self._spawn(self._monitor_loop(), "monitor")
                self._drop_task = self._spawn(self._drop_loop(), "drop")
            return
        for task in (self._monitor_task, self._drop_task):
            if task is not None:
                task.cancel()
        self._monitor_task = self._drop_task = None

    async def _monitor_loop(self) -> None:
        interval = self._check_interval_s
        me = asyncio.current_task()
        # The identity check ends the loop even if a cancellation got lost.
        while self._monitor_task is me:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self._decide()
            except Exception:
                log.exception("Queue %s: decision round failed", self._name)
                await asyncio.sleep(interval)

    async def _drop_loop(self) -> None:
        interval = self._drop_interval_s
        me = asyncio.current_task()
        while self._drop_task is me:
            await asyncio.sleep(interval)
            try:
                self._drop()
            except Exception:
                log.exception(
                    "Queue %s: dropping expired activations failed", self._name
                )
