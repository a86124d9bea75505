"""FunctionPullingContainerProxy against a fake container, client, registry and pool."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from tests.unit.invoker.fakes import (
    FakeAck,
    FakeActivationClient,
    FakeClientFactory,
    FakeContainer,
    FakeContainerFactory,
    FakeParent,
    FakeRegistry,
    eventually,
    failing_startup,
    make_action,
    make_creation,
    make_message,
    outcome,
    unreachable,
)
from wisp.config.model import ContainerProxyConfig
from wisp.core.activation import ResponseStatus
from wisp.core.entity import WhiskAction
from wisp.core.ids import InvokerInstanceId, now_ms
from wisp.core.messages import ContainerCreationMessage
from wisp.infra.etcd.keys import EtcdKeys
from wisp.infra.runtime.container import RunOutcome, RunResult
from wisp.invoker.proxy.activation_client import ActionMismatchError
from wisp.invoker.proxy.container_proxy import FunctionPullingContainerProxy
from wisp.invoker.proxy.state import (
    ABNORMAL_RUN,
    ACTION_NOT_FOUND,
    LOG_COLLECTION_FAILED,
    ProxyState,
)

pytestmark = pytest.mark.timeout(10)

KEYS = EtcdKeys()
INVOKER = InvokerInstanceId(0, 2048)


class DictStore:
    """The EntityStore calls a proxy makes."""

    def __init__(self) -> None:
        self.actions: dict[tuple[str, str], WhiskAction] = {}

    async def get_action(self, namespace: str, name: str) -> WhiskAction | None:
        return self.actions.get((namespace, name))


@dataclass
class Harness:
    proxy: FunctionPullingContainerProxy
    action: WhiskAction
    creation: ContainerCreationMessage
    factory: FakeContainerFactory
    clients: FakeClientFactory
    registry: FakeRegistry
    ack: FakeAck
    parent: FakeParent
    health: list[bool]

    @property
    def container(self) -> FakeContainer:
        return self.factory.containers[0]

    @property
    def client(self) -> FakeActivationClient:
        return self.clients.clients[0]

    def existing_key(self) -> str:
        return KEYS.existing_container(
            "alice", "alice/hello", self.action.rev, 0, self.container.container_id
        )

    def warmed_key(self) -> str:
        return KEYS.warmed_container(
            "alice", "alice/hello", self.action.rev, 0, self.container.container_id
        )

    async def started(self) -> None:
        self.proxy.start()
        await eventually(lambda: "ready" in self.parent.names())

    def send(self, **kwargs: object) -> None:
        self.client.inbox.put_nowait(make_message(self.action, **kwargs))  # type: ignore[arg-type]

    async def removed(self) -> None:
        assert await self.proxy.wait_removed(3.0)


HarnessFactory = Callable[..., Harness]


@pytest.fixture
async def make_harness() -> AsyncIterator[HarnessFactory]:
    made: list[Harness] = []

    def build(
        action: WhiskAction | None = None,
        *,
        pause_grace_s: float = 0.15,
        idle_container_s: float = 5.0,
        setup: Callable[[FakeContainer], None] | None = None,
    ) -> Harness:
        action = action or make_action()
        registry = FakeRegistry()
        factory = FakeContainerFactory()
        factory.setup = setup
        clients = FakeClientFactory(registry)
        parent = FakeParent()
        ack = FakeAck()
        health: list[bool] = []
        creation = make_creation(action)
        proxy = FunctionPullingContainerProxy(
            creation=creation,
            action=action,
            invoker=INVOKER,
            config=ContainerProxyConfig(
                pause_grace_s=pause_grace_s,
                idle_container_s=idle_container_s,
                rescheduling_timeout_s=1.0,
            ),
            factory=factory,
            client_factory=clients,
            registry=registry,
            keys=KEYS,
            entity_store=DictStore(),
            ack=ack,
            parent=parent,
            on_health=health.append,
        )
        harness = Harness(
            proxy, action, creation, factory, clients, registry, ack, parent, health
        )
        made.append(harness)
        return harness

    yield build
    for harness in made:
        await harness.proxy.stop(2.0)


# --- cold and warm runs -----------------------------------------------------------------


async def test_cold_start_initializes_once_and_records_init_time(
    make_harness: HarnessFactory,
) -> None:
    def slow_init(container: FakeContainer) -> None:
        now = now_ms()
        container.init_results.append(RunResult(RunOutcome.OK, {}, now, now + 30))

    h = make_harness(setup=slow_init)
    await h.started()

    h.send(content={"name": "x"})
    [record] = await h.ack.wait_for(1)

    assert record.response.status is ResponseStatus.SUCCESS
    assert record.response.result == {"name": "x"}
    assert record.annotations["initTime"] == 30
    assert len(h.container.init_payloads) == 1
    assert h.client.warmed
    assert h.proxy.state is ProxyState.RUNNING
    assert h.health == [True]


async def test_warm_run_has_no_init_time(make_harness: HarnessFactory) -> None:
    h = make_harness()
    await h.started()

    h.send()
    h.send()
    first, second = await h.ack.wait_for(2)

    assert "initTime" in first.annotations
    assert "initTime" not in second.annotations
    assert len(h.container.init_payloads) == 1
    assert len(h.container.run_bodies) == 2


async def test_next_fetch_reports_the_last_run_duration(
    make_harness: HarnessFactory,
) -> None:
    h = make_harness(
        setup=lambda c: c.run_results.append(outcome(RunOutcome.OK, {}, 42))
    )
    await h.started()

    h.send()
    await h.ack.wait_for(1)
    await eventually(lambda: 42 in h.client.last_durations)

    assert h.client.last_durations[0] is None


async def test_connected_container_registers_its_existing_key(
    make_harness: HarnessFactory,
) -> None:
    h = make_harness()

    await h.started()

    assert h.registry.keys == {h.existing_key(): ""}
    assert h.factory.specs[0].memory_mb == 256
    assert h.factory.specs[0].kind == "python:3"


async def test_concurrent_action_keeps_that_many_runs_in_flight(
    make_harness: HarnessFactory,
) -> None:
    gate = asyncio.Event()
    h = make_harness(make_action(concurrency=3))
    await h.started()
    h.send()
    await h.ack.wait_for(1)
    h.container.run_gate = gate

    for _ in range(3):
        h.send()
    await eventually(lambda: h.container.running == 3)
    gate.set()
    await h.ack.wait_for(4)

    assert h.container.max_running == 3


# --- outcomes and the container's fate ------------------------------------------------------


async def test_application_error_keeps_the_container(
    make_harness: HarnessFactory,
) -> None:
    h = make_harness(
        setup=lambda c: c.run_results.append(
            outcome(RunOutcome.APPLICATION_ERROR, {"error": "bad input"})
        )
    )
    await h.started()

    h.send()
    h.send()
    first, second = await h.ack.wait_for(2)

    assert first.response.status is ResponseStatus.APPLICATION_ERROR
    assert second.response.status is ResponseStatus.SUCCESS
    assert not h.container.destroyed
    assert len(h.factory.containers) == 1


async def test_developer_error_destroys_the_container(
    make_harness: HarnessFactory,
) -> None:
    h = make_harness(
        setup=lambda c: c.run_results.append(
            outcome(RunOutcome.DEVELOPER_ERROR, {"error": "not json"})
        )
    )
    await h.started()

    h.send()
    [record] = await h.ack.wait_for(1)
    await h.removed()

    assert record.response.status is ResponseStatus.DEVELOPER_ERROR
    assert record.response.result == {"error": "not json"}
    assert h.container.destroyed
    assert h.registry.keys == {}
    assert h.client.closed
    assert h.parent.names()[-1] == "removed"


async def test_timeout_destroys_the_container(make_harness: HarnessFactory) -> None:
    h = make_harness(
        make_action(timeout_ms=500),
        setup=lambda c: c.run_results.append(outcome(RunOutcome.TIMEOUT, None, 500)),
    )
    await h.started()

    h.send()
    [record] = await h.ack.wait_for(1)
    await h.removed()

    assert record.response.result == {
        "error": "The action exceeded its time limits of 500 milliseconds."
    }
    assert record.annotations["timeout"] is True
    assert h.container.destroyed


async def test_failed_init_fails_the_activation_and_destroys(
    make_harness: HarnessFactory,
) -> None:
    h = make_harness(
        setup=lambda c: c.init_results.append(
            outcome(RunOutcome.DEVELOPER_ERROR, {"error": "SyntaxError"})
        )
    )
    await h.started()

    h.send()
    [record] = await h.ack.wait_for(1)
    await h.removed()

    assert record.response.status is ResponseStatus.DEVELOPER_ERROR
    assert record.response.result == {"error": "SyntaxError"}
    assert h.container.run_bodies == []
    assert h.container.destroyed


async def test_unavailable_runtime_reschedules_the_activation(
    make_harness: HarnessFactory,
) -> None:
    h = make_harness(
        setup=lambda c: c.run_results.append(outcome(RunOutcome.UNAVAILABLE))
    )
    await h.started()

    h.send()
    await h.removed()

    assert [m.activation_id for m in h.client.rescheduled] == [
        h.container.run_bodies[0]["activation_id"]
    ]
    assert h.ack.records == []
    assert h.container.destroyed


async def test_refused_reschedule_fails_the_activation_as_whisk_error(
    make_harness: HarnessFactory,
) -> None:
    h = make_harness(
        setup=lambda c: c.init_results.append(outcome(RunOutcome.UNAVAILABLE))
    )
    await h.started()
    h.client.reschedule_answer = False

    h.send()
    [record] = await h.ack.wait_for(1)
    await h.removed()

    assert record.response.status is ResponseStatus.WHISK_ERROR
    assert record.response.result == {"error": ABNORMAL_RUN}
    assert len(h.client.rescheduled) == 1


async def test_failed_log_collection_destroys_the_container(
    make_harness: HarnessFactory,
) -> None:
    h = make_harness(
        setup=lambda c: setattr(c, "logs_error", TimeoutError("no sentinel"))
    )
    await h.started()

    h.send()
    [record] = await h.ack.wait_for(1)
    await h.removed()

    assert record.response.status is ResponseStatus.SUCCESS
    assert record.logs == [LOG_COLLECTION_FAILED]
    assert h.container.destroyed


async def test_logs_are_not_collected_when_the_log_limit_is_zero(
    make_harness: HarnessFactory,
) -> None:
    h = make_harness(make_action(logs_mb=0))
    await h.started()

    h.send()
    [record] = await h.ack.wait_for(1)

    assert record.logs == []
    assert h.container.logs_calls == []


async def test_activation_of_a_deleted_action_fails_and_retires_the_container(
    make_harness: HarnessFactory,
) -> None:
    h = make_harness()
    await h.started()

    h.send(revision="2-bbb")
    [record] = await h.ack.wait_for(1)
    await h.removed()

    assert record.response.status is ResponseStatus.APPLICATION_ERROR
    assert record.response.result == {"error": ACTION_NOT_FOUND}
    assert h.container.init_payloads == []


async def test_action_mismatch_retires_the_container(
    make_harness: HarnessFactory,
) -> None:
    h = make_harness()
    await h.started()

    h.client.inbox.put_nowait(ActionMismatchError())
    await h.removed()

    assert h.container.destroyed
    assert h.registry.keys == {}


# --- creation failures ---------------------------------------------------------------------


async def test_failed_container_start_is_reported_to_the_pool(
    make_harness: HarnessFactory,
) -> None:
    h = make_harness()
    h.factory.fail_with = failing_startup()

    h.proxy.start()
    await h.removed()

    assert h.parent.names() == ["creation_failed", "removed"]
    assert h.parent.events[0][1] == "runtime did not open its port"
    assert h.clients.clients == []
    assert h.health == [False]


async def test_unreachable_scheduler_destroys_the_new_container(
    make_harness: HarnessFactory,
) -> None:
    h = make_harness()
    h.clients.connect_error = unreachable()

    h.proxy.start()
    await h.removed()

    assert h.parent.names() == ["removed"]
    assert h.container.destroyed
    assert h.registry.keys == {}
    assert h.health == [False]


# --- idle, pause, resume and removal -----------------------------------------------------


async def test_unused_container_is_removed_not_paused(
    make_harness: HarnessFactory,
) -> None:
    h = make_harness(pause_grace_s=0.05)
    await h.started()

    await h.removed()

    assert h.container.suspended == 0
    assert h.container.destroyed
    assert h.registry.keys == {}


async def test_idle_container_pauses_and_swaps_existing_for_warmed_key(
    make_harness: HarnessFactory,
) -> None:
    h = make_harness(pause_grace_s=0.1)
    await h.started()
    h.send()
    await h.ack.wait_for(1)

    await eventually(lambda: h.proxy.state is ProxyState.PAUSED)

    assert h.container.suspended == 1
    assert h.registry.keys == {h.warmed_key(): ""}
    assert h.parent.names()[-1] == "paused"


async def test_running_longer_than_pause_grace_does_not_pause(
    make_harness: HarnessFactory,
) -> None:
    gate = asyncio.Event()
    h = make_harness(pause_grace_s=0.05)
    await h.started()
    h.container.run_gate = gate

    h.send()
    await asyncio.sleep(0.2)
    state_during_run = h.proxy.state
    gate.set()
    await h.ack.wait_for(1)

    assert state_during_run is ProxyState.RUNNING
    assert h.container.suspended == 0


async def test_resumed_container_swaps_keys_back_and_follows_the_new_scheduler(
    make_harness: HarnessFactory,
) -> None:
    h = make_harness(pause_grace_s=0.1)
    await h.started()
    h.send()
    await h.ack.wait_for(1)
    await eventually(lambda: h.proxy.state is ProxyState.PAUSED)

    reuse = make_creation(h.action, rpc_port=13002)
    h.proxy.resume(reuse)
    await eventually(lambda: "resumed" in h.parent.names())
    h.send()
    _, second = await h.ack.wait_for(2)

    assert h.container.resumed == 1
    assert h.registry.keys == {h.existing_key(): ""}
    assert h.client.retargets == [("127.0.0.1", 13002)]
    assert "initTime" not in second.annotations
    assert len(h.container.init_payloads) == 1


async def test_failed_resume_hands_the_creation_back_to_the_pool(
    make_harness: HarnessFactory,
) -> None:
    h = make_harness(pause_grace_s=0.1)
    await h.started()
    h.send()
    await h.ack.wait_for(1)
    await eventually(lambda: h.proxy.state is ProxyState.PAUSED)
    h.container.resume_error = RuntimeError("cannot thaw")

    reuse = make_creation(h.action)
    h.proxy.resume(reuse)
    await h.removed()

    assert ("resume_failed", reuse) in h.parent.events
    assert h.registry.keys == {}
    assert h.container.destroyed


async def test_paused_container_is_removed_after_idle_timeout_with_its_keys(
    make_harness: HarnessFactory,
) -> None:
    h = make_harness(pause_grace_s=0.1, idle_container_s=0.2)
    await h.started()
    h.send()
    await h.ack.wait_for(1)
    await eventually(lambda: h.proxy.state is ProxyState.PAUSED)

    await h.removed()

    assert h.registry.keys == {}
    assert ("unregister", h.warmed_key()) in h.registry.ops
    assert h.container.destroyed
    assert h.client.closed
    assert h.proxy.state is ProxyState.REMOVED


async def test_evicted_paused_container_is_destroyed(
    make_harness: HarnessFactory,
) -> None:
    h = make_harness(pause_grace_s=0.1)
    await h.started()
    h.send()
    await h.ack.wait_for(1)
    await eventually(lambda: h.proxy.state is ProxyState.PAUSED)

    h.proxy.remove()
    await h.removed()

    assert h.container.resumed == 1  # thawed before it is destroyed
    assert h.container.destroyed
    assert h.registry.keys == {}


async def test_graceful_shutdown_deletes_the_existing_key_before_the_goodbye(
    make_harness: HarnessFactory,
) -> None:
    h = make_harness()
    await h.started()
    h.send()
    await h.ack.wait_for(1)

    h.proxy.graceful_shutdown()
    keys_right_after = dict(h.registry.keys)
    await h.removed()

    assert keys_right_after == {}
    assert h.client.keys_at_close == set()
    assert h.container.destroyed


async def test_shutdown_before_the_client_connects_is_not_announced_as_ready(
    make_harness: HarnessFactory,
) -> None:
    h = make_harness()
    # the shutdown arrives while the container is being started
    h.factory.setup = lambda container: h.proxy.graceful_shutdown()

    h.proxy.start()
    await h.removed()

    assert h.parent.names() == ["removed"]
    assert h.client.connected
    assert h.container.destroyed
    assert h.registry.keys == {}
