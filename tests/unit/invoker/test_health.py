"""InvokerHealthManager: the status ring and the published health record."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.unit.invoker.fakes import FakeRegistry, eventually
from wisp.config.model import InvokerConfig
from wisp.core.ids import InvokerInstanceId
from wisp.core.messages import InvokerStatus
from wisp.infra.etcd.keys import EtcdKeys
from wisp.invoker.health import InvokerHealthManager, MemoryInfo, status_of

pytestmark = pytest.mark.timeout(10)

CONFIG = InvokerConfig(user_memory_mb=1024, tags=("gpu",), health_buffer_size=10)


@pytest.mark.parametrize(
    ("results", "status"),
    [
        ([], InvokerStatus.HEALTHY),
        ([True] * 10, InvokerStatus.HEALTHY),
        ([False, False, True], InvokerStatus.HEALTHY),
        ([False, False, False], InvokerStatus.UNHEALTHY),
        ([False, True, False, True, False], InvokerStatus.UNHEALTHY),
    ],
)
def test_status_is_unhealthy_from_three_failures_in_the_ring(
    results: list[bool], status: InvokerStatus
) -> None:
    assert status_of(results, tolerance=3) is status


def manager(registry: FakeRegistry, **kwargs: object) -> InvokerHealthManager:
    return InvokerHealthManager(
        invoker=InvokerInstanceId(3, 1024),
        config=CONFIG,
        registry=registry,
        keys=EtcdKeys(),
        **kwargs,  # type: ignore[arg-type]
    )


def record(registry: FakeRegistry) -> dict[str, object]:
    value = json.loads(registry.keys["whisk/invokers/3"])
    assert isinstance(value, dict)
    return value


async def test_enabled_invoker_publishes_up_with_its_memory() -> None:
    registry = FakeRegistry()
    health = manager(registry)
    await health.start()

    health.enable()

    assert record(registry) == {
        "status": "up",
        "freeMemory": 1024,
        "busyMemory": 0,
        "inProgressMemory": 0,
        "tags": ["gpu"],
        "dedicatedNamespaces": [],
    }


async def test_failures_make_the_invoker_unhealthy_and_successes_recover_it() -> None:
    registry = FakeRegistry()
    health = manager(registry)
    health.enable()

    for _ in range(3):
        health.report(False)
    unhealthy = record(registry)["status"]
    for _ in range(8):
        health.report(True)

    assert unhealthy == "unhealthy"
    assert record(registry)["status"] == "up"


async def test_offline_invoker_ignores_results() -> None:
    registry = FakeRegistry()
    health = manager(registry)
    health.enable()

    health.disable()
    for _ in range(5):
        health.report(False)

    assert health.status is InvokerStatus.OFFLINE
    assert record(registry)["status"] == "down"


async def test_memory_changes_are_published_and_repeats_are_not() -> None:
    registry = FakeRegistry()
    health = manager(registry)
    health.enable()
    writes_before = len(registry.published)

    health.update_memory(MemoryInfo(free_mb=512, busy_mb=256, in_progress_mb=256))
    health.update_memory(MemoryInfo(free_mb=512, busy_mb=256, in_progress_mb=256))

    assert len(registry.published) == writes_before + 1
    assert record(registry)["inProgressMemory"] == 256


async def test_unhealthy_invoker_probes_until_healthy() -> None:
    registry = FakeRegistry()
    probes: list[int] = []

    async def probe() -> bool:
        probes.append(1)
        return True

    health = manager(registry, probe=probe, probe_interval_s=0.01)
    health.enable()

    for _ in range(3):
        health.report(False)
    await eventually(lambda: health.status is InvokerStatus.HEALTHY)
    await health.stop()

    assert len(probes) >= 1


async def test_failing_probe_keeps_the_invoker_unhealthy() -> None:
    registry = FakeRegistry()

    async def probe() -> bool:
        raise RuntimeError("no container")

    health = manager(registry, probe=probe, probe_interval_s=0.01)
    health.enable()
    for _ in range(3):
        health.report(False)

    await asyncio.sleep(0.1)
    status = health.status
    await health.stop()

    assert status is InvokerStatus.UNHEALTHY
