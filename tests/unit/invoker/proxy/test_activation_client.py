"""ActivationClientProxy against fake ActivationService servers on 127.0.0.1."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from tests.unit.invoker.fakes import make_action, make_message
from wisp.core.activation import ActivationMessage
from wisp.core.messages import (
    ACTION_MISMATCH,
    NO_ACTIVATION,
    NO_MEMORY_QUEUE,
    FetchResult,
    SchedulerEndpoints,
)
from wisp.infra.etcd.keys import EtcdKeys
from wisp.infra.etcd.memory import MemoryEtcd
from wisp.infra.rpc import activation_pb2, activation_pb2_grpc
from wisp.invoker.proxy.activation_client import (
    ActionMismatchError,
    ActivationClientProxy,
    ClientCreationError,
    QueueGoneError,
)

pytestmark = pytest.mark.timeout(15)

KEYS = EtcdKeys()
ACTION = make_action()


class FakeScheduler(activation_pb2_grpc.ActivationServiceServicer):
    """Answers fetches from a script (then NoActivationMessage) and records them."""

    def __init__(self, *answers: FetchResult | str) -> None:
        self.answers = list(answers)
        self.requests: list[Any] = []
        self.reschedules: list[Any] = []
        self.reschedule_answer = True
        self.port = 0

    async def FetchActivation(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.requests.append(request)
        answer = (
            self.answers.pop(0) if self.answers and request.alive else NO_ACTIVATION
        )
        text = answer if isinstance(answer, str) else json.dumps(answer.to_json())
        return activation_pb2.FetchResponse(activationMessage=text)

    async def RescheduleActivation(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.reschedules.append(request)
        return activation_pb2.RescheduleResponse(isRescheduled=self.reschedule_answer)


Serve = Callable[[FakeScheduler], Awaitable[FakeScheduler]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[Any] = []

    async def start(scheduler: FakeScheduler) -> FakeScheduler:
        server = grpc.aio.server()
        activation_pb2_grpc.add_ActivationServiceServicer_to_server(scheduler, server)  # type: ignore[no-untyped-call]
        scheduler.port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        return scheduler

    yield start
    for server in servers:
        await server.stop(0)


@pytest.fixture
def etcd() -> MemoryEtcd:
    return MemoryEtcd()


def client_for(port: int, etcd: MemoryEtcd, **kwargs: Any) -> ActivationClientProxy:
    return ActivationClientProxy(
        invocation_namespace="alice",
        action=ACTION.fqn,
        revision=ACTION.rev,
        container_id="c1",
        scheduler_host="127.0.0.1",
        rpc_port=port,
        etcd=etcd,
        keys=KEYS,
        **kwargs,
    )


def fetched(msg: ActivationMessage) -> FetchResult:
    return FetchResult(message=msg)


async def test_fetch_returns_the_activation_the_scheduler_hands_out(
    serve: Serve, etcd: MemoryEtcd
) -> None:
    msg = make_message(ACTION)
    scheduler = await serve(FakeScheduler(fetched(msg)))
    client = client_for(scheduler.port, etcd)
    await client.connect()

    got = await client.fetch(last_duration_ms=17)
    await client.close()

    assert got == msg
    request = scheduler.requests[0]
    assert request.invocationNamespace == "alice"
    assert json.loads(request.fqn) == ACTION.fqn.to_json()
    assert json.loads(request.rev) == ACTION.rev
    assert request.containerId == "c1"
    assert request.alive is True
    assert request.HasField("lastDuration") and request.lastDuration.value == 17


async def test_first_fetch_carries_no_last_duration(
    serve: Serve, etcd: MemoryEtcd
) -> None:
    scheduler = await serve(FakeScheduler())
    client = client_for(scheduler.port, etcd)
    await client.connect()

    await client.fetch()
    await client.close()

    assert not scheduler.requests[0].HasField("lastDuration")


async def test_no_activation_answer_returns_none(
    serve: Serve, etcd: MemoryEtcd
) -> None:
    scheduler = await serve(FakeScheduler(NO_ACTIVATION))
    client = client_for(scheduler.port, etcd)
    await client.connect()

    got = await client.fetch()
    await client.close()

    assert got is None


async def test_unreadable_answer_returns_none(serve: Serve, etcd: MemoryEtcd) -> None:
    scheduler = await serve(FakeScheduler("{not json"))
    client = client_for(scheduler.port, etcd)
    await client.connect()

    got = await client.fetch()
    await client.close()

    assert got is None


async def test_warmed_flag_travels_after_init(serve: Serve, etcd: MemoryEtcd) -> None:
    scheduler = await serve(FakeScheduler())
    client = client_for(scheduler.port, etcd)
    await client.connect()

    await client.fetch()
    client.mark_warmed()
    await client.fetch()
    await client.close()

    assert [r.warmed for r in scheduler.requests[:2]] == [False, True]


async def test_missing_queue_follows_the_leader_key_to_another_scheduler(
    serve: Serve, etcd: MemoryEtcd
) -> None:
    msg = make_message(ACTION)
    old = await serve(FakeScheduler(NO_MEMORY_QUEUE))
    new = await serve(FakeScheduler(fetched(msg)))
    leader = SchedulerEndpoints("127.0.0.1", new.port)
    await etcd.put(
        KEYS.queue_leader("alice", "alice/hello"), json.dumps(leader.to_json())
    )
    client = client_for(old.port, etcd)
    await client.connect()

    got = await client.fetch()
    await client.close()

    assert got == msg
    assert client.endpoint == ("127.0.0.1", new.port)
    assert len(old.requests) == 1


async def test_missing_queue_without_a_leader_retires_the_client(
    serve: Serve, etcd: MemoryEtcd
) -> None:
    scheduler = await serve(FakeScheduler(NO_MEMORY_QUEUE))
    client = client_for(scheduler.port, etcd)
    await client.connect()

    with pytest.raises(QueueGoneError):
        await client.fetch()
    await client.close()


async def test_action_mismatch_raises_to_retire_the_container(
    serve: Serve, etcd: MemoryEtcd
) -> None:
    scheduler = await serve(FakeScheduler(ACTION_MISMATCH))
    client = client_for(scheduler.port, etcd)
    await client.connect()

    with pytest.raises(ActionMismatchError):
        await client.fetch()
    await client.close()


async def test_close_sends_a_goodbye_fetch_with_alive_false(
    serve: Serve, etcd: MemoryEtcd
) -> None:
    scheduler = await serve(FakeScheduler())
    client = client_for(scheduler.port, etcd)
    await client.connect()

    await client.close()
    await client.close()

    assert [r.alive for r in scheduler.requests] == [False]
    assert scheduler.requests[0].containerId == "c1"


async def test_reschedule_returns_the_schedulers_answer(
    serve: Serve, etcd: MemoryEtcd
) -> None:
    msg = make_message(ACTION)
    scheduler = await serve(FakeScheduler())
    scheduler.reschedule_answer = False
    client = client_for(scheduler.port, etcd)
    await client.connect()

    refused = await client.reschedule(msg)
    scheduler.reschedule_answer = True
    accepted = await client.reschedule(msg)
    await client.close()

    assert (refused, accepted) == (False, True)
    request = scheduler.reschedules[0]
    assert json.loads(request.activationMessage)["activationId"] == msg.activation_id
    assert json.loads(request.rev) == ACTION.rev


async def test_retarget_moves_the_pull_to_the_new_scheduler(
    serve: Serve, etcd: MemoryEtcd
) -> None:
    first = await serve(FakeScheduler())
    second = await serve(FakeScheduler())
    client = client_for(first.port, etcd)
    await client.connect()

    await client.retarget("127.0.0.1", second.port)
    await client.fetch()
    await client.close()

    assert first.requests == []
    assert len(second.requests) == 2  # the fetch and the goodbye


async def test_connect_to_a_closed_port_fails(etcd: MemoryEtcd) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = client_for(port, etcd, connect_timeout_s=0.3)

    with pytest.raises(ClientCreationError):
        await client.connect()


async def test_lost_scheduler_is_replaced_by_the_queue_leader(
    serve: Serve, etcd: MemoryEtcd
) -> None:
    msg = make_message(ACTION)
    server = grpc.aio.server()
    old = FakeScheduler()
    activation_pb2_grpc.add_ActivationServiceServicer_to_server(old, server)  # type: ignore[no-untyped-call]
    old_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    new = await serve(FakeScheduler(fetched(msg)))
    leader = SchedulerEndpoints("127.0.0.1", new.port)
    await etcd.put(
        KEYS.queue_leader("alice", "alice/hello"), json.dumps(leader.to_json())
    )
    client = client_for(old_port, etcd)
    await client.connect()

    await server.stop(0)
    got = await client.fetch()
    await client.close()

    assert got == msg
    assert client.endpoint == ("127.0.0.1", new.port)
