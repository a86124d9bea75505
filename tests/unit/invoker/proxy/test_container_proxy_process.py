"""The container proxy on a real process container (the standalone backend)."""

from __future__ import annotations

import pathlib
from dataclasses import replace

import pytest

from tests.unit.invoker.fakes import (
    FakeAck,
    FakeClientFactory,
    FakeParent,
    FakeRegistry,
    eventually,
    make_action,
    make_creation,
    make_message,
)
from wisp.config.model import ContainerProxyConfig, RuntimeConfig
from wisp.core.activation import ResponseStatus
from wisp.core.entity import Exec, WhiskAction
from wisp.core.ids import InvokerInstanceId
from wisp.infra.etcd.keys import EtcdKeys
from wisp.infra.runtime.process import ProcessContainerFactory
from wisp.invoker.proxy.container_proxy import FunctionPullingContainerProxy

pytestmark = pytest.mark.timeout(30)

CODE = """
import os

def main(args):
    print("hello from", os.environ.get("__OW_ACTIVATION_ID"))
    if args.get("fail"):
        return {"error": "asked to fail"}
    return {"got": args, "namespace": os.environ.get("__OW_NAMESPACE")}
"""


class NoStore:
    async def get_action(self, namespace: str, name: str) -> WhiskAction | None:
        return None


async def test_python_action_runs_cold_then_warm_with_its_logs(
    tmp_path: pathlib.Path,
) -> None:
    factory = ProcessContainerFactory(RuntimeConfig(sandbox="none"), work_dir=tmp_path)
    action = replace(make_action(timeout_ms=5000), exec=Exec("python:3", CODE))
    registry, parent, ack = FakeRegistry(), FakeParent(), FakeAck()
    clients = FakeClientFactory(registry)
    proxy = FunctionPullingContainerProxy(
        creation=make_creation(action),
        action=action,
        invoker=InvokerInstanceId(0, 2048),
        config=ContainerProxyConfig(pause_grace_s=5.0),
        factory=factory,
        client_factory=clients,
        registry=registry,
        keys=EtcdKeys(),
        entity_store=NoStore(),
        ack=ack,
        parent=parent,
    )
    try:
        proxy.start()
        await eventually(lambda: "ready" in parent.names(), 10.0)
        first, second = (
            make_message(action, content={"a": 1}),
            make_message(action, content={"fail": True}),
        )

        clients.clients[0].inbox.put_nowait(first)
        clients.clients[0].inbox.put_nowait(second)
        cold, warm = await ack.wait_for(2, 10.0)
    finally:
        await proxy.stop(5.0)
        await factory.cleanup()

    assert cold.response.status is ResponseStatus.SUCCESS
    assert cold.response.result == {"got": {"a": 1}, "namespace": "alice"}
    assert "initTime" in cold.annotations
    assert len(cold.logs) == 1 and cold.logs[0].endswith(
        f"hello from {first.activation_id}"
    )
    assert warm.response.status is ResponseStatus.APPLICATION_ERROR
    assert "initTime" not in warm.annotations
    assert registry.keys == {}
