"""ActivationService and QueueService over a real grpc.aio server on 127.0.0.1
(ActivationServiceImplTests plus the queue RPCs)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf.wrappers_pb2 import Int64Value

from wisp.core.activation import ActivationMessage
from wisp.core.messages import (
    WARM_UP_ACTION,
    CreateQueueRequest,
    FetchError,
    FetchResult,
)
from wisp.infra.rpc import activation_pb2, activation_pb2_grpc
from wisp.scheduler.rpc_server import ActivationServiceImpl, QueueServiceImpl, RpcServer

from .fakes import ACTION, FQN, NS, FakeQueue, activation, metadata

pytestmark = pytest.mark.timeout(15)

REV = "1-aaa"


class FakePool:
    def __init__(self) -> None:
        self.queues: dict[tuple[str, str, str], FakeQueue] = {}
        self.create_requests: list[CreateQueueRequest] = []
        self.handled: list[ActivationMessage] = []
        self.broken = False

    def add(self, revision: str = REV) -> FakeQueue:
        queue = FakeQueue(NS, ACTION, revision, metadata())
        self.queues[(NS, FQN, revision)] = queue
        return queue

    def lookup(self, ns: str, fqn: str, revision: str | None) -> FakeQueue | None:
        if self.broken:
            raise RuntimeError("pool is broken")
        return self.queues.get((ns, fqn, revision or ""))

    def queues_for(self, ns: str, fqn: str) -> list[FakeQueue]:
        return [q for (n, f, _), q in self.queues.items() if (n, f) == (ns, fqn)]

    async def create_queue(self, request: CreateQueueRequest) -> bool:
        if self.broken:
            raise RuntimeError("pool is broken")
        self.create_requests.append(request)
        return True

    def handle_activation(self, msg: ActivationMessage) -> None:
        self.handled.append(msg)


@dataclass
class Client:
    activations: Any
    queues: Any

    async def fetch(self, **fields: Any) -> FetchResult:
        request = fetch_request(**fields)
        response = await self.activations.FetchActivation(request, timeout=5)
        return FetchResult.from_json(json.loads(response.activationMessage))


def fetch_request(
    *,
    fqn: str | None = None,
    rev: str | None = None,
    container_id: str = "ctr1",
    warmed: bool = False,
    last_duration: int | None = None,
    alive: bool = True,
) -> Any:
    request = activation_pb2.FetchRequest(
        transactionId=json.dumps(["tid", 1]),
        invocationNamespace=NS,
        fqn=fqn if fqn is not None else json.dumps(ACTION.to_json()),
        rev=rev if rev is not None else json.dumps(REV),
        containerId=container_id,
        warmed=warmed,
        alive=alive,
    )
    if last_duration is not None:
        request.lastDuration.CopyFrom(Int64Value(value=last_duration))
    return request


@dataclass
class Setup:
    pool: FakePool
    client: Client


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    pool = FakePool()
    server = RpcServer("127.0.0.1", 0)
    server.bind()
    await server.start(
        ActivationServiceImpl(pool, fetch_timeout_s=0.2),  # type: ignore[arg-type]
        QueueServiceImpl(pool),  # type: ignore[arg-type]
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    client = Client(
        activation_pb2_grpc.ActivationServiceStub(channel),
        activation_pb2_grpc.QueueServiceStub(channel),
    )
    yield Setup(pool, client)
    await channel.close()
    await server.stop(0)


# --- FetchActivation ---------------------------------------------------------------------


async def test_fetch_is_delegated_to_the_queue_with_the_parsed_fields(
    setup: Setup,
) -> None:
    queue = setup.pool.add()
    msg = activation()
    queue.answer = FetchResult(message=msg)

    result = await setup.client.fetch(container_id="c9", warmed=True, last_duration=42)

    assert result.message is not None
    assert result.message.activation_id == msg.activation_id
    assert queue.fetches == [
        {"container_id": "c9", "warmed": True, "last_duration_ms": 42, "alive": True}
    ]


async def test_first_fetch_has_no_last_duration_and_alive_false_is_passed(
    setup: Setup,
) -> None:
    queue = setup.pool.add()

    await setup.client.fetch(alive=False)

    assert queue.fetches[0]["last_duration_ms"] is None
    assert queue.fetches[0]["alive"] is False


async def test_fetch_without_any_queue_answers_no_memory_queue(setup: Setup) -> None:
    result = await setup.client.fetch()

    assert result.error is FetchError.NO_MEMORY_QUEUE


async def test_fetch_for_another_revision_answers_action_mismatch(setup: Setup) -> None:
    queue = setup.pool.add("2-bbb")

    result = await setup.client.fetch(rev=json.dumps("1-aaa"))

    assert result.error is FetchError.ACTION_MISMATCH
    assert queue.fetches == []


async def test_fetch_answers_no_activation_when_the_queue_does_not_answer(
    setup: Setup,
) -> None:
    queue = setup.pool.add()
    queue.answer = FetchResult(message=activation())
    queue.answer_delay_s = 2.0

    result = await setup.client.fetch()

    assert result.error is FetchError.NO_ACTIVATION_MESSAGE


async def test_fetch_for_the_warm_up_action_answers_no_activation(setup: Setup) -> None:
    result = await setup.client.fetch(
        fqn=json.dumps(WARM_UP_ACTION.to_json()), rev="null"
    )

    assert result.error is FetchError.NO_ACTIVATION_MESSAGE


async def test_fetch_accepts_a_bare_fqn_string_and_null_revision(setup: Setup) -> None:
    queue = setup.pool.add("")

    await setup.client.fetch(fqn=json.dumps(str(ACTION)), rev="null")
    await setup.client.fetch(fqn=str(ACTION), rev="null")

    assert len(queue.fetches) == 2


@pytest.mark.parametrize(
    ("fqn", "rev"),
    [
        ('{"path": "bob"}', json.dumps(REV)),
        ("nonsense", json.dumps(REV)),
        (json.dumps(ACTION.to_json()), "3-not-json"),
        (json.dumps(ACTION.to_json()), "{}"),
    ],
)
async def test_unparsable_fqn_or_revision_fails_the_call(
    setup: Setup, fqn: str, rev: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await setup.client.fetch(fqn=fqn, rev=rev)

    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_failing_pool_is_an_internal_error_not_a_crash(setup: Setup) -> None:
    setup.pool.broken = True

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await setup.client.fetch()
    setup.pool.broken = False
    result = await setup.client.fetch()

    assert raised.value.code() is grpc.StatusCode.INTERNAL
    assert result.error is FetchError.NO_MEMORY_QUEUE


# --- RescheduleActivation --------------------------------------------------------------------


def reschedule_request(msg: ActivationMessage, rev: str = REV) -> Any:
    return activation_pb2.RescheduleRequest(
        invocationNamespace=NS,
        fqn=json.dumps(ACTION.to_json()),
        rev=json.dumps(rev),
        activationMessage=json.dumps(msg.to_json()),
    )


async def test_reschedule_puts_the_activation_back_into_its_queue(setup: Setup) -> None:
    queue = setup.pool.add()
    msg = activation()

    response = await setup.client.activations.RescheduleActivation(
        reschedule_request(msg), timeout=5
    )

    assert response.isRescheduled is True
    assert [m.activation_id for m in queue.puts] == [msg.activation_id]


async def test_reschedule_for_a_retired_revision_is_routed_to_the_current_one(
    setup: Setup,
) -> None:
    setup.pool.add("2-bbb")
    msg = activation()

    response = await setup.client.activations.RescheduleActivation(
        reschedule_request(msg), timeout=5
    )

    assert response.isRescheduled is True
    assert [m.activation_id for m in setup.pool.handled] == [msg.activation_id]


async def test_reschedule_without_the_queue_is_refused(setup: Setup) -> None:
    response = await setup.client.activations.RescheduleActivation(
        reschedule_request(activation()), timeout=5
    )

    assert response.isRescheduled is False


# --- QueueService --------------------------------------------------------------------------------


async def test_create_queue_is_passed_to_the_pool(setup: Setup) -> None:
    request = CreateQueueRequest(NS, ACTION, REV, metadata())

    response = await setup.client.queues.CreateQueue(
        activation_pb2.CreateQueueRequest(request=json.dumps(request.to_json())),
        timeout=5,
    )

    assert response.success is True
    assert setup.pool.create_requests == [request]


async def test_malformed_create_queue_is_invalid_argument(setup: Setup) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await setup.client.queues.CreateQueue(
            activation_pb2.CreateQueueRequest(request="[1, 2]"), timeout=5
        )

    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert setup.pool.create_requests == []


async def test_create_queue_failure_in_the_pool_is_internal(setup: Setup) -> None:
    setup.pool.broken = True
    request = CreateQueueRequest(NS, ACTION, REV, metadata())

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await setup.client.queues.CreateQueue(
            activation_pb2.CreateQueueRequest(request=json.dumps(request.to_json())),
            timeout=5,
        )

    assert raised.value.code() is grpc.StatusCode.INTERNAL


async def test_forwarded_activation_is_routed_by_the_pool(setup: Setup) -> None:
    msg = activation()

    response = await setup.client.queues.ForwardActivation(
        activation_pb2.ForwardRequest(activationMessage=json.dumps(msg.to_json())),
        timeout=5,
    )

    assert response.accepted is True
    assert [m.activation_id for m in setup.pool.handled] == [msg.activation_id]


async def test_malformed_forward_is_invalid_argument(setup: Setup) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await setup.client.queues.ForwardActivation(
            activation_pb2.ForwardRequest(activationMessage='{"activationId": 1}'),
            timeout=5,
        )

    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert setup.pool.handled == []
