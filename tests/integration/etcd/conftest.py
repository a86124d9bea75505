"""Fixtures for the etcd suites: a real etcd server for the session, and the two
backends (embedded MemoryEtcd, AetcdClient on that server) as one parameter."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.etcd_server import EtcdServer
from wisp.config.model import EtcdConfig
from wisp.core.errors import CoordinationError
from wisp.infra.etcd.client import EtcdClient, Watch, WatchEvent
from wisp.infra.etcd.data_management import DataManagementService
from wisp.infra.etcd.factory import connect_etcd
from wisp.infra.etcd.keys import EtcdKeys
from wisp.infra.etcd.lease import LeaseKeepAliveService
from wisp.infra.etcd.watcher import WatcherService

BACKENDS = ["memory", "etcd"]
REQUEST_TIMEOUT_S = 2.0
RESULTS = Path(__file__).resolve().parents[3] / "bench" / "results" / "etcd_faults.json"


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdServer]:
    server = EtcdServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """EtcdConfig.hosts of the backend under test."""
    if request.param == "memory":
        return "memory"
    server: EtcdServer = request.getfixturevalue("etcd_server")
    return server.endpoint


@pytest.fixture
async def etcd(backend: str) -> AsyncIterator[EtcdClient]:
    client = await connect_etcd(
        EtcdConfig(hosts=backend, request_timeout_s=REQUEST_TIMEOUT_S)
    )
    yield client
    await client.close()


@pytest.fixture
def ns() -> str:
    """A key prefix of this test's own, so tests on the shared server never meet."""
    return f"test-{uuid.uuid4().hex[:10]}/"


class Collector:
    """Drains a watch into a queue so a test can take events with a timeout."""

    def __init__(self, watch: Watch) -> None:
        self.watch = watch
        self.queue: asyncio.Queue[WatchEvent | Exception] = asyncio.Queue()
        self.ended = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        try:
            async for event in self.watch:
                self.queue.put_nowait(event)
        except CoordinationError as exc:
            self.queue.put_nowait(exc)
        except Exception as exc:  # a foreign error: the test reports it
            self.queue.put_nowait(exc)
        finally:
            self.ended.set()

    async def take(self, count: int, timeout_s: float = 5.0) -> list[WatchEvent]:
        events: list[WatchEvent] = []
        async with asyncio.timeout(timeout_s):
            while len(events) < count:
                item = await self.queue.get()
                if isinstance(item, Exception):
                    raise item
                events.append(item)
        return events

    async def close(self) -> None:
        await self.watch.cancel()
        try:
            await asyncio.wait_for(self.task, 5.0)
        except TimeoutError:
            self.task.cancel()


@pytest.fixture
async def collect() -> AsyncIterator[Callable[[Watch], Collector]]:
    collectors: list[Collector] = []

    def make(watch: Watch) -> Collector:
        collector = Collector(watch)
        collectors.append(collector)
        return collector

    yield make
    for collector in collectors:
        await collector.close()


Check = Callable[[], Awaitable[bool]]


async def _eventually(
    check: Check, timeout_s: float = 5.0, step_s: float = 0.05
) -> float:
    """Poll `check` until it is true; returns the seconds it took."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while True:
        if await check():
            return loop.time() - start
        if loop.time() - start > timeout_s:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(step_s)


@pytest.fixture
def eventually() -> Callable[..., Awaitable[float]]:
    """`await eventually(check, timeout_s)`: poll an async check until it is true."""
    return _eventually


# --- recovery times of the fault tests ---------------------------------------------

_recoveries: dict[str, dict[str, Any]] = {}


@pytest.fixture
def record_recovery() -> Callable[..., None]:
    def record(fault: str, seconds: float, **details: Any) -> None:
        _recoveries[fault] = {"recovery_s": round(seconds, 3), **details}

    return record


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _recoveries:
        return
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(_recoveries, indent=2, sort_keys=True) + "\n")
    terminalreporter.section("etcd fault recovery")
    for fault, record in sorted(_recoveries.items()):
        extra = ", ".join(f"{k}={v}" for k, v in record.items() if k != "recovery_s")
        terminalreporter.write_line(
            f"{fault}: recovered in {record['recovery_s']:.3f} s ({extra})"
        )
    terminalreporter.write_line(f"written to {RESULTS}")


# --- the coordination services of one process ----------------------------------------


@dataclass
class Stack:
    """LeaseKeepAliveService, WatcherService and DataManagementService of one process,
    as a scheduler or invoker wires them."""

    etcd: EtcdClient
    keys: EtcdKeys
    instance: str
    lease: LeaseKeepAliveService
    watcher: WatcherService
    dms: DataManagementService

    async def stop(self) -> None:
        await self.dms.stop()
        await self.watcher.stop()
        await self.lease.stop()


async def start_stack(
    etcd: EtcdClient,
    cluster: str,
    instance: str = "scheduler0",
    *,
    ttl_s: int = 10,
    keep_alive_interval_s: float = 0.1,
    retry_interval_s: float = 0.2,
) -> Stack:
    keys = EtcdKeys(cluster)
    lease = LeaseKeepAliveService(etcd, keys, instance, ttl_s, keep_alive_interval_s)
    await asyncio.wait_for(lease.start(), 10.0)
    watcher = WatcherService(etcd)
    await watcher.start()
    dms = DataManagementService(etcd, lease, watcher, retry_interval_s)
    await dms.start()
    return Stack(etcd, keys, instance, lease, watcher, dms)


@pytest.fixture
async def stacks(
    etcd: EtcdClient, ns: str
) -> AsyncIterator[Callable[..., Awaitable[Stack]]]:
    """`await stacks("scheduler0", ttl_s=...)`: a process's services on the backend
    under test, with this test's prefix as the cluster name; stopped afterwards."""
    started: list[Stack] = []

    async def make(instance: str = "scheduler0", **options: Any) -> Stack:
        stack = await start_stack(etcd, ns.rstrip("/"), instance, **options)
        started.append(stack)
        return stack

    yield make
    for stack in reversed(started):
        await stack.stop()
