"""Faults on a real etcd server: paused longer than the lease TTL, killed and started
again on the same data directory, the lease revoked from outside. Each test ends with
every key registered again and watchers delivering again, and records how long the
recovery took (see the "etcd fault recovery" summary and bench/results/)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.etcd_server import EtcdServer, free_port
from wisp.config.model import EtcdConfig
from wisp.core.errors import CoordinationError, CoordinationUnavailable
from wisp.infra.etcd.client import EtcdClient, WatchEvent
from wisp.infra.etcd.factory import connect_etcd

pytestmark = [pytest.mark.etcd, pytest.mark.timeout(60)]

TTL_S = 2
REQUEST_TIMEOUT_S = 1.0
RECOVERY_TIMEOUT_S = 20.0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EtcdServer]:
    """An etcd of this test's own: the faults must not touch the shared one."""
    server = EtcdServer(tmp_path / "etcd")
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def etcd(server: EtcdServer) -> AsyncIterator[EtcdClient]:
    client = await connect_etcd(
        EtcdConfig(hosts=server.endpoint, request_timeout_s=REQUEST_TIMEOUT_S)
    )
    yield client
    await client.close()


@dataclass
class Process:
    """A process's services with what it registered, stored and watches."""

    stack: Any
    registered: dict[str, str]
    stored: dict[str, str]
    probe_prefix: str
    probes: list[WatchEvent] = field(default_factory=list)
    probed: asyncio.Event = field(default_factory=asyncio.Event)

    async def registered_again(self, etcd: EtcdClient) -> bool:
        lease = self.stack.lease.lease
        if lease is None:
            return False
        marker = self.stack.keys.instance_lease(self.stack.instance)
        expected = {**self.registered, marker: str(lease.id)}
        try:
            for key, value in expected.items():
                kv = await etcd.get(key)
                if kv is None or (kv.value, kv.lease) != (value, lease.id):
                    return False
            for key, value in self.stored.items():
                kv = await etcd.get(key)
                if kv is None or (kv.value, kv.lease) != (value, 0):
                    return False
        except CoordinationError:
            return False
        return bool(self.stack.dms.held_keys() == self.registered)

    async def watchers_deliver(self, etcd: EtcdClient, name: str) -> None:
        key = self.probe_prefix + name
        self.probed.clear()
        await etcd.put(key, name)
        async with asyncio.timeout(RECOVERY_TIMEOUT_S):
            while not any(e.key == key for e in self.probes):
                await self.probed.wait()
                self.probed.clear()

    def on_probe(self, event: WatchEvent) -> None:
        self.probes.append(event)
        self.probed.set()


async def start_process(stacks: Any, ns: str) -> Process:
    stack = await stacks(
        "scheduler0", ttl_s=TTL_S, keep_alive_interval_s=0.2, retry_interval_s=0.2
    )
    keys = stack.keys
    state = keys.scheduler("0")
    resources = keys.invoker(0, "invoker0")
    leader = keys.queue_leader("guest", "guest/hello")
    stack.dms.register_data(state, '{"queueSize":0}')
    assert await stack.dms.register_initial_data(resources, '{"status":"up"}')
    assert await stack.dms.elect_leader(leader, '{"host":"127.0.0.1"}')
    stack.dms.store_data(ns + "stored", "plain")
    await stack.dms.flush()
    process = Process(
        stack,
        registered={
            state: '{"queueSize":0}',
            resources: '{"status":"up"}',
            leader: '{"host":"127.0.0.1"}',
        },
        stored={ns + "stored": "plain"},
        probe_prefix=ns + "probe/",
    )
    stack.watcher.watch(
        process.probe_prefix, prefix=True, name="probe", on_put=process.on_probe
    )
    await stack.watcher.wait_ready()
    assert await process.registered_again(stack.etcd)
    await process.watchers_deliver(stack.etcd, "before")
    return process


async def recover(process: Process, etcd: EtcdClient, eventually: Any) -> float:
    """Seconds until every key is registered again and a watcher delivers again."""
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def registered() -> bool:
        return await process.registered_again(etcd)

    await eventually(registered, timeout_s=RECOVERY_TIMEOUT_S)
    await process.watchers_deliver(etcd, "after")
    return loop.time() - start


def etcd_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Records that would need a person: none may come from a handled fault."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.name.startswith("wisp.infra.etcd")
    ]


async def test_recovers_from_a_pause_longer_than_the_lease_ttl(
    server: EtcdServer,
    etcd: EtcdClient,
    ns: str,
    stacks: Any,
    eventually: Any,
    record_recovery: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    process = await start_process(stacks, ns)
    paused_s = TTL_S + 1.0
    loop = asyncio.get_running_loop()

    server.pause()
    started = loop.time()
    with pytest.raises(CoordinationUnavailable):
        await etcd.get(ns + "stored")
    await asyncio.sleep(max(0.0, paused_s - (loop.time() - started)))
    server.resume()
    seconds = await recover(process, etcd, eventually)

    record_recovery(
        "pause_longer_than_ttl",
        seconds,
        paused_s=paused_s,
        ttl_s=TTL_S,
        regrants=process.stack.lease.regrants,
    )
    assert etcd_errors(caplog) == []


@pytest.mark.parametrize(
    ("fault", "down_s"),
    [("kill_and_restart", TTL_S + 0.5), ("kill_and_quick_restart", 0.5)],
)
async def test_recovers_from_a_kill_and_restart_on_the_same_data_dir(
    fault: str,
    down_s: float,
    server: EtcdServer,
    etcd: EtcdClient,
    ns: str,
    stacks: Any,
    eventually: Any,
    record_recovery: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    process = await start_process(stacks, ns)

    server.kill()
    with pytest.raises(CoordinationUnavailable):
        await etcd.get(ns + "stored")
    await asyncio.sleep(down_s)
    await asyncio.to_thread(server.start)
    seconds = await recover(process, etcd, eventually)

    record_recovery(
        fault,
        seconds,
        down_s=down_s,
        ttl_s=TTL_S,
        regrants=process.stack.lease.regrants,
    )
    assert etcd_errors(caplog) == []


async def test_recovers_from_the_lease_revoked_from_outside(
    server: EtcdServer,
    etcd: EtcdClient,
    ns: str,
    stacks: Any,
    eventually: Any,
    record_recovery: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    process = await start_process(stacks, ns)
    outsider = await connect_etcd(EtcdConfig(hosts=server.endpoint))
    lease = await process.stack.lease.get_lease()

    try:
        await outsider.revoke(lease.id)
    finally:
        await outsider.close()
    seconds = await recover(process, etcd, eventually)

    record_recovery(
        "lease_revoked_from_outside",
        seconds,
        ttl_s=TTL_S,
        regrants=process.stack.lease.regrants,
    )
    assert process.stack.lease.regrants == 1
    assert etcd_errors(caplog) == []


async def test_the_client_skips_an_unreachable_host(server: EtcdServer) -> None:
    hosts = f"127.0.0.1:{free_port()},{server.endpoint}"

    client = await connect_etcd(EtcdConfig(hosts=hosts, request_timeout_s=1.0))
    try:
        revision = await client.put("skip/k", "v")
        assert await client.current_revision() == revision
    finally:
        await client.close()


async def test_connecting_to_no_server_raises_coordination_unavailable() -> None:
    with pytest.raises(CoordinationUnavailable):
        await connect_etcd(
            EtcdConfig(hosts=f"127.0.0.1:{free_port()}", request_timeout_s=1.0)
        )
