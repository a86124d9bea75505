"""QueueServiceClient: the gRPC client of a scheduler's QueueService, used by
controllers (CreateQueue) and by schedulers forwarding to a queue's leader
(ForwardActivation), one channel per scheduler endpoint. gRPC errors end here."""

from __future__ import annotations

import json
import logging
from typing import Any

import grpc

from wisp.core.activation import ActivationMessage
from wisp.core.messages import CreateQueueRequest
from wisp.infra.rpc import activation_pb2, activation_pb2_grpc

log = logging.getLogger(__name__)

_generated: Any = activation_pb2_grpc


class QueueServiceClient:
    def __init__(self) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}

    async def create_queue(
        self, endpoint: str, request: CreateQueueRequest, timeout_s: float
    ) -> bool:
        """Ask the scheduler at `endpoint` (host:port) to make sure the queue exists."""
        payload = activation_pb2.CreateQueueRequest(
            request=json.dumps(request.to_json())
        )
        try:
            response = await self._stub(endpoint).CreateQueue(
                payload, timeout=timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            log.warning("CreateQueue on %s failed: %s", endpoint, exc.code().name)
            return False
        return bool(response.success)

    async def forward(
        self, endpoint: str, msg: ActivationMessage, timeout_s: float
    ) -> bool:
        """Hand `msg` to the scheduler at `endpoint`; False when it was not taken."""
        payload = activation_pb2.ForwardRequest(
            activationMessage=json.dumps(msg.to_json(), separators=(",", ":"))
        )
        try:
            response = await self._stub(endpoint).ForwardActivation(
                payload, timeout=timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            log.info("ForwardActivation to %s failed: %s", endpoint, exc.code().name)
            await self.forget(endpoint)
            return False
        return bool(response.accepted)

    async def forget(self, endpoint: str) -> None:
        """Drop the channel of a scheduler that left or failed."""
        channel = self._channels.pop(endpoint, None)
        if channel is not None:
            await channel.close(grace=None)

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close(grace=None)

    def _stub(self, endpoint: str) -> Any:
        channel = self._channels.get(endpoint)
        if channel is None:
            channel = self._channels[endpoint] = grpc.aio.insecure_channel(endpoint)
        return _generated.QueueServiceStub(channel)
