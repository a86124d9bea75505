"""Duration checkers (modules 5 and 6): a first estimate of an action's average run
time for a new queue, before any container has reported one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from wisp.core.errors import StoreError
from wisp.infra.store.activations import ActivationStore

log = logging.getLogger(__name__)

DEFAULT_WINDOW_S = 86_400.0
_QUERY_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class DurationCheckResult:
    #: mean duration in ms of the records found, None when there are none
    average_duration_ms: float | None
    #: number of activation records the average is taken over
    hit_count: int
    #: how long the lookup took
    took_ms: int


class DurationChecker(Protocol):
    async def check_average_duration(
        self, invocation_ns: str, action_metadata: dict[str, Any]
    ) -> DurationCheckResult: ...


class NoopDurationChecker:
    """Knows nothing: queues start without a duration."""

    async def check_average_duration(
        self, invocation_ns: str, action_metadata: dict[str, Any]
    ) -> DurationCheckResult:
        return DurationCheckResult(None, 0, 0)


class StoreDurationChecker:
    """The average duration of the action's records in the activation store.

    DIVERGENCE(openwhisk): the original queries Elasticsearch and, for actions reached
    through a package binding, matches the binding annotation; here the store is asked
    for records of the action's own path in the invocation namespace.
    """

    def __init__(
        self,
        activation_store: ActivationStore,
        window_s: float = DEFAULT_WINDOW_S,
        *,
        timeout_s: float = _QUERY_TIMEOUT_S,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = activation_store
        self._window_s = window_s
        self._timeout_s = timeout_s
        self._wall_clock = wall_clock

    async def check_average_duration(
        self, invocation_ns: str, action_metadata: dict[str, Any]
    ) -> DurationCheckResult:
        path = action_path(action_metadata)
        since_ms = int((self._wall_clock() - self._window_s) * 1000)
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._timeout_s):
                average, hits = await self._store.average_duration(
                    invocation_ns, path, since_ms
                )
        except (StoreError, TimeoutError) as exc:
            log.warning("Average duration of %s unavailable: %s", path, exc)
            average, hits = None, 0
        took_ms = int((time.monotonic() - started) * 1000)
        return DurationCheckResult(average if hits > 0 else None, hits, took_ms)


def action_path(action_metadata: dict[str, Any]) -> str:
    """The unversioned `owner[/pkg]/name` of an action from its metadata document."""
    return f"{action_metadata.get('namespace', '')}/{action_metadata.get('name', '')}"
