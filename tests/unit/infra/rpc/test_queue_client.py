"""QueueServiceClient against a real gRPC server on loopback: answers and failures."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from tests.support.standalone import free_port
from wisp.core.activation import ActivationMessage
from wisp.core.entity import FullyQualifiedEntityName, Identity
from wisp.core.ids import ControllerInstanceId, TransactionId
from wisp.core.messages import CreateQueueRequest
from wisp.infra.rpc import activation_pb2, activation_pb2_grpc
from wisp.infra.rpc.queue_client import QueueServiceClient

ACTION = FullyQualifiedEntityName("guest", "hello", "0.0.1")


class Servicer(activation_pb2_grpc.QueueServiceServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []
        self.forwarded: list[dict[str, Any]] = []

    async def CreateQueue(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.created.append(json.loads(request.request))
        return activation_pb2.CreateQueueResponse(success=True)

    async def ForwardActivation(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.forwarded.append(json.loads(request.activationMessage))
        return activation_pb2.ForwardResponse(accepted=True)


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, Servicer]]:
    servicer = Servicer()
    srv = grpc.aio.server()
    activation_pb2_grpc.add_QueueServiceServicer_to_server(servicer, srv)
    port = srv.add_insecure_port("127.0.0.1:0")
    await srv.start()
    yield f"127.0.0.1:{port}", servicer
    await srv.stop(None)


async def test_create_queue_and_forward_reach_the_scheduler(
    server: tuple[str, Servicer],
) -> None:
    endpoint, servicer = server
    client = QueueServiceClient()
    msg = ActivationMessage(
        TransactionId("t", 1),
        ACTION,
        "1-a",
        Identity("guest", "guest", "u", "k"),
        "c" * 32,
        ControllerInstanceId("0"),
        True,
    )

    created = await client.create_queue(
        endpoint, CreateQueueRequest("guest", ACTION, "1-a"), 2.0
    )
    forwarded = await client.forward(endpoint, msg, 2.0)
    await client.close()

    assert created and forwarded
    assert servicer.created[0]["invocationNamespace"] == "guest"
    assert servicer.forwarded[0]["activationId"] == "c" * 32


async def test_an_unreachable_scheduler_answers_false_not_an_exception() -> None:
    client = QueueServiceClient()
    endpoint = f"127.0.0.1:{free_port()}"

    created = await client.create_queue(
        endpoint, CreateQueueRequest("guest", ACTION, "1-a"), 0.5
    )

    assert created is False
    await client.close()
