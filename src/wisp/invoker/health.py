"""InvokerHealthManager (module 13): this invoker's status and free memory in etcd.

Status comes from a ring of the latest activation outcomes (Healthy while fewer than
`health_error_tolerance` of the last `health_buffer_size` failed) and is published
with the pool's memory as one InvokerResourceMessage, written only when it changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from wisp.config.model import InvokerConfig
from wisp.core.errors import WispError
from wisp.core.ids import InvokerInstanceId
from wisp.core.messages import InvokerResourceMessage, InvokerStatus
from wisp.infra.etcd.keys import EtcdKeys
from wisp.infra.runtime.container import ContainerFactory, ContainerSpec, RunOutcome

log = logging.getLogger(__name__)

PROBE_INTERVAL_S = 1.0
PROBE_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class MemoryInfo:
    """The pool's memory as published (paused containers count as free)."""

    free_mb: int
    busy_mb: int
    in_progress_mb: int


def status_of(results: Iterable[bool], tolerance: int) -> InvokerStatus:
    """Healthy while fewer than `tolerance` of the remembered results failed."""
    failures = sum(1 for ok in results if not ok)
    return InvokerStatus.HEALTHY if failures < tolerance else InvokerStatus.UNHEALTHY


ALLOWED_TRANSITIONS: dict[InvokerStatus, frozenset[InvokerStatus]] = {
    InvokerStatus.OFFLINE: frozenset({InvokerStatus.HEALTHY}),
    InvokerStatus.HEALTHY: frozenset({InvokerStatus.UNHEALTHY, InvokerStatus.OFFLINE}),
    InvokerStatus.UNHEALTHY: frozenset({InvokerStatus.HEALTHY, InvokerStatus.OFFLINE}),
}


class IllegalHealthTransitionError(WispError):
    pass


class DataRegistry(Protocol):
    """The part of DataManagementService the health manager uses."""

    def update_data_on_change(self, key: str, value: str) -> None: ...


Probe = Callable[[], Awaitable[bool]]


class InvokerHealthManager:
    def __init__(
        self,
        *,
        invoker: InvokerInstanceId,
        config: InvokerConfig,
        registry: DataRegistry,
        keys: EtcdKeys,
        probe: Probe | None = None,
        probe_interval_s: float = PROBE_INTERVAL_S,
    ) -> None:
        self._invoker = invoker
        self._config = config
        self._registry = registry
        self._key = keys.invoker(
            invoker.instance, invoker.unique_name, invoker.display_name
        )
        self._probe = probe
        self._probe_interval_s = probe_interval_s
        self._status = InvokerStatus.OFFLINE
        self._ring: deque[bool] = deque(maxlen=config.health_buffer_size)
        self._memory = MemoryInfo(config.user_memory_mb, 0, 0)
        self._probe_task: asyncio.Task[None] | None = None

    @property
    def status(self) -> InvokerStatus:
        return self._status

    @property
    def key(self) -> str:
        return self._key

    async def start(self) -> None:
        self._publish()

    async def stop(self) -> None:
        await self._stop_probe()

    # --- inputs ---------------------------------------------------------------------

    def enable(self) -> None:
        """Take work again.

        DIVERGENCE(openwhisk): the original enters Unhealthy and runs a test action
        until it succeeds; we start Healthy and probe only after failures.
        """
        if self._status is not InvokerStatus.OFFLINE:
            return
        self._ring.clear()
        self._transition(InvokerStatus.HEALTHY, "enabled")

    def disable(self) -> None:
        """Offline: schedulers place nothing here; results are ignored until enabled."""
        if self._status is InvokerStatus.OFFLINE:
            return
        self._transition(InvokerStatus.OFFLINE, "disabled")

    def report(self, ok: bool) -> None:
        """One activation's outcome (False for whisk errors and broken containers)."""
        if self._status is InvokerStatus.OFFLINE:
            return
        self._ring.append(ok)
        status = status_of(self._ring, self._config.health_error_tolerance)
        if status is not self._status:
            self._transition(status, "activation results")

    def update_memory(self, info: MemoryInfo) -> None:
        self._memory = info
        self._publish()

    # --- the state machine ----------------------------------------------------------

    def _transition(self, to: InvokerStatus, cause: str) -> None:
        if to not in ALLOWED_TRANSITIONS[self._status]:
            raise IllegalHealthTransitionError(f"{self._status.name} -> {to.name}")
        log.info("Invoker %s is %s (%s)", self._invoker, to.value, cause)
        self._status = to
        self._publish()
        if to is InvokerStatus.UNHEALTHY:
            self._start_probe()
        else:
            self._cancel_probe()

    def record(self) -> InvokerResourceMessage:
        return InvokerResourceMessage(
            status=self._status,
            free_memory_mb=self._memory.free_mb,
            busy_memory_mb=self._memory.busy_mb,
            in_progress_memory_mb=self._memory.in_progress_mb,
            tags=tuple(self._config.tags),
            dedicated_namespaces=tuple(self._config.dedicated_namespaces),
        )

    def _publish(self) -> None:
        value = json.dumps(self.record().to_json(), separators=(",", ":"))
        self._registry.update_data_on_change(self._key, value)

    # --- probing while unhealthy (the test action's job) ------------------------------

    def _start_probe(self) -> None:
        if self._probe is None or self._probe_task is not None:
            return
        self._probe_task = asyncio.get_running_loop().create_task(
            self._probe_until_healthy(), name="invoker-health:probe"
        )

    def _cancel_probe(self) -> None:
        task, self._probe_task = self._probe_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _stop_probe(self) -> None:
        task, self._probe_task = self._probe_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _probe_until_healthy(self) -> None:
        assert self._probe is not None
        try:
            while self._status is InvokerStatus.UNHEALTHY:
                await asyncio.sleep(self._probe_interval_s)
                try:
                    ok = await asyncio.wait_for(self._probe(), PROBE_TIMEOUT_S)
                except Exception as exc:
                    log.warning("Health probe failed: %s", exc)
                    ok = False
                if self._status is InvokerStatus.UNHEALTHY:
                    self.report(ok)
        finally:
            if self._probe_task is asyncio.current_task():
                self._probe_task = None


class ContainerProbe:
    """A tiny action on a fresh container: create, /init, /run, destroy.

    DIVERGENCE(openwhisk): the original stores a test action per invoker and runs it
    through a container proxy; this probe talks to the container factory directly.
    """

    KIND = "python:3"
    CODE = "def main(args):\n    return args\n"
    MEMORY_MB = 128

    def __init__(self, factory: ContainerFactory, invoker_id: int) -> None:
        self._factory = factory
        self._invoker_id = invoker_id
        self._count = 0

    async def __call__(self) -> bool:
        self._count += 1
        name = f"wsk{self._invoker_id}_healthprobe_{self._count}"
        container = await self._factory.create_container(
            ContainerSpec(name=name, kind=self.KIND, memory_mb=self.MEMORY_MB)
        )
        try:
            init = await container.initialize(
                {
                    "name": "invokerHealthTestAction",
                    "main": "main",
                    "code": self.CODE,
                    "binary": False,
                    "env": {},
                },
                10.0,
            )
            if init.outcome is not RunOutcome.OK:
                return False
            run = await container.run({"value": {"probe": True}}, 10.0, 4096)
            return run.outcome is RunOutcome.OK
        finally:
            with contextlib.suppress(Exception):
                await container.destroy()
