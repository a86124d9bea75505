"""Fixtures for the etcd unit tests: the embedded store and fast-timed services."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from wisp.core.errors import CoordinationUnavailable
from wisp.infra.etcd.client import EtcdClient
from wisp.infra.etcd.data_management import DataManagementService
from wisp.infra.etcd.keys import EtcdKeys
from wisp.infra.etcd.lease import LeaseKeepAliveService
from wisp.infra.etcd.memory import MemoryEtcd
from wisp.infra.etcd.watcher import WatcherService

Check = Callable[[], Awaitable[bool] | bool]


@pytest.fixture
async def memory() -> AsyncIterator[MemoryEtcd]:
    etcd = MemoryEtcd()
    yield etcd
    await etcd.close()


async def _eventually(check: Check, timeout_s: float = 2.0) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            outcome = check()
            if outcome if isinstance(outcome, bool) else await outcome:
                return
            await asyncio.sleep(0.01)


@pytest.fixture
def eventually() -> Callable[..., Awaitable[None]]:
    """`await eventually(check)`: poll a (sync or async) check until it is true."""
    return _eventually


class Services:
    """One process's lease, watcher and data management on a given client."""

    def __init__(self, etcd: EtcdClient, instance: str, **options: Any) -> None:
        self.keys = EtcdKeys("whisk")
        self.lease = LeaseKeepAliveService(
            etcd,
            self.keys,
            instance,
            options.get("ttl_s", 10),
            options.get("keep_alive_interval_s", 0.02),
        )
        self.watcher = WatcherService(etcd)
        self.dms = DataManagementService(
            etcd, self.lease, self.watcher, options.get("retry_interval_s", 0.05)
        )

    async def start(self) -> None:
        await asyncio.wait_for(self.lease.start(), 2.0)
        await self.watcher.start()
        await self.dms.start()

    async def stop(self) -> None:
        await self.dms.stop()
        await self.watcher.stop()
        await self.lease.stop()


@pytest.fixture
async def services() -> AsyncIterator[Callable[..., Awaitable[Services]]]:
    """`await services(etcd, "scheduler0", ttl_s=...)`, stopped afterwards."""
    started: list[Services] = []

    async def make(etcd: EtcdClient, instance: str = "scheduler0", **options: Any):
        process = Services(etcd, instance, **options)
        await process.start()
        started.append(process)
        return process

    yield make
    for process in reversed(started):
        await process.stop()


class FlakyEtcd:
    """MemoryEtcd with failures a test switches on: `fail[name]` is the number of
    next calls of that method that raise `errors[name]` (default unavailable);
    `hold[key]` makes puts of that key wait until the event is set;
    `delete_after_put` deletes a key right after it was written."""

    def __init__(self, inner: MemoryEtcd) -> None:
        self.inner = inner
        self.fail: dict[str, int] = {}
        self.errors: dict[str, Exception] = {}
        self.calls: dict[str, int] = {}
        self.hold: dict[str, asyncio.Event] = {}
        #: keys deleted (once) right after their put, as if by another process
        self.delete_after_put: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)
        if not asyncio.iscoroutinefunction(method):
            return method

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            if self.fail.get(name, 0) > 0:
                self.fail[name] -= 1
                raise self.errors.get(name, CoordinationUnavailable("flaky"))
            if name == "put" and args[0] in self.hold:
                await self.hold[args[0]].wait()
            result = await method(*args, **kwargs)
            if name == "put" and args[0] in self.delete_after_put:
                self.delete_after_put.discard(args[0])
                await self.inner.delete(args[0])
            return result

        return call


@pytest.fixture
def flaky(memory: MemoryEtcd) -> FlakyEtcd:
    return FlakyEtcd(memory)
