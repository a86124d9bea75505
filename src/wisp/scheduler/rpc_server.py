"""The scheduler's gRPC server: ActivationService (module 7, containers pull work) and
QueueService (controllers create queues, schedulers forward activations).

Handlers translate every error into a status or a structured answer; none escapes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any, Protocol

import grpc

from wisp.core.activation import ActivationMessage
from wisp.core.entity import FullyQualifiedEntityName
from wisp.core.errors import WispError
from wisp.core.messages import (
    ACTION_MISMATCH,
    NO_ACTIVATION,
    NO_MEMORY_QUEUE,
    CreateQueueRequest,
    FetchResult,
    is_warm_up,
)
from wisp.infra.rpc import activation_pb2, activation_pb2_grpc

if TYPE_CHECKING:
    from wisp.scheduler.queue.memory_queue import MemoryQueue

log = logging.getLogger(__name__)

#: the generated module is untyped; use it through Any
_generated: Any = activation_pb2_grpc

#: longest a FetchActivation waits for the queue's answer (the queue long-polls ~1 s)
FETCH_TIMEOUT_S = 5.0


class QueuePool(Protocol):
    """What the RPC handlers need from QueueManager."""

    def lookup(
        self, invocation_ns: str, fqn: str, revision: str | None
    ) -> MemoryQueue | None: ...

    def queues_for(self, invocation_ns: str, fqn: str) -> list[MemoryQueue]: ...

    async def create_queue(self, request: CreateQueueRequest) -> bool: ...

    def handle_activation(self, msg: ActivationMessage) -> None: ...


class _BadRequest(ValueError):
    pass


def parse_fqn(text: str) -> FullyQualifiedEntityName:
    """An FQN JSON object, a JSON string, or bare `owner/pkg/name` text."""
    try:
        raw: Any = json.loads(text)
    except ValueError:
        raw = text
    try:
        return FullyQualifiedEntityName.from_json(raw)
    except (ValueError, KeyError, TypeError) as exc:
        raise _BadRequest(f"unparsable fqn: {text!r}") from exc


def parse_revision(text: str) -> str:
    """A JSON string or `null` (empty revision); empty text counts as null."""
    if not text:
        return ""
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise _BadRequest(f"unparsable revision: {text!r}") from exc
    if raw is None:
        return ""
    if not isinstance(raw, str):
        raise _BadRequest(f"unparsable revision: {text!r}")
    return raw


def _parse_activation(text: str) -> ActivationMessage:
    try:
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError("not an object")
        return ActivationMessage.from_json(raw)
    except (ValueError, KeyError, TypeError) as exc:
        raise _BadRequest(f"unparsable activation message: {exc}") from exc


def _invalid(context: grpc.aio.ServicerContext[Any, Any], error: Exception) -> None:
    context.set_code(grpc.StatusCode.INVALID_ARGUMENT)
    context.set_details(str(error))


def _internal(context: grpc.aio.ServicerContext[Any, Any], what: str) -> None:
    log.exception("%s failed", what)
    context.set_code(grpc.StatusCode.INTERNAL)
    context.set_details(f"{what} failed")


def _fetch_response(result: FetchResult) -> Any:
    return activation_pb2.FetchResponse(
        activationMessage=json.dumps(result.to_json(), separators=(",", ":"))
    )


class ActivationServiceImpl:
    """FetchActivation and RescheduleActivation, routed to the queue pool."""

    def __init__(
        self, pool: QueuePool, fetch_timeout_s: float = FETCH_TIMEOUT_S
    ) -> None:
        self._pool = pool
        self._fetch_timeout_s = fetch_timeout_s

    async def FetchActivation(  # noqa: N802 (gRPC method name)
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        try:
            fqn = parse_fqn(request.fqn)
            revision = parse_revision(request.rev)
        except _BadRequest as exc:
            _invalid(context, exc)
            return activation_pb2.FetchResponse()
        try:
            result = await self._fetch(request, fqn, revision)
        except Exception:
            _internal(context, "FetchActivation")
            return activation_pb2.FetchResponse()
        return _fetch_response(result)

    async def _fetch(
        self, request: Any, fqn: FullyQualifiedEntityName, revision: str
    ) -> FetchResult:
        if is_warm_up(fqn):
            return NO_ACTIVATION
        ns = request.invocationNamespace
        queue = self._pool.lookup(ns, fqn.unversioned(), revision)
        if queue is None:
            if self._pool.queues_for(ns, fqn.unversioned()):
                return ACTION_MISMATCH
            return NO_MEMORY_QUEUE
        last_duration = (
            int(request.lastDuration.value)
            if request.HasField("lastDuration")
            else None
        )
        try:
            return await asyncio.wait_for(
                queue.get_activation(
                    request.containerId,
                    warmed=bool(request.warmed),
                    last_duration_ms=last_duration,
                    alive=bool(request.alive),
                ),
                self._fetch_timeout_s,
            )
        except (TimeoutError, WispError) as exc:
            log.info("Fetch by %s got no answer: %r", request.containerId, exc)
            return NO_ACTIVATION

    async def RescheduleActivation(  # noqa: N802 (gRPC method name)
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        try:
            fqn = parse_fqn(request.fqn)
            revision = parse_revision(request.rev)
            msg = _parse_activation(request.activationMessage)
        except _BadRequest as exc:
            _invalid(context, exc)
            return activation_pb2.RescheduleResponse(isRescheduled=False)
        try:
            ns = request.invocationNamespace
            queue = self._pool.lookup(ns, fqn.unversioned(), revision)
            if queue is not None:
                queue.put(msg)
                return activation_pb2.RescheduleResponse(isRescheduled=True)
            if self._pool.queues_for(ns, fqn.unversioned()):
                # The revision's queue retired after an update: the activation runs
                # on the current revision, routed like any other.
                self._pool.handle_activation(msg)
                return activation_pb2.RescheduleResponse(isRescheduled=True)
            return activation_pb2.RescheduleResponse(isRescheduled=False)
        except Exception:
            _internal(context, "RescheduleActivation")
            return activation_pb2.RescheduleResponse(isRescheduled=False)


class QueueServiceImpl:
    """CreateQueue (controller → scheduler) and ForwardActivation (scheduler → leader)."""

    def __init__(self, pool: QueuePool) -> None:
        self._pool = pool

    async def CreateQueue(  # noqa: N802 (gRPC method name)
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        try:
            raw = json.loads(request.request)
            if not isinstance(raw, dict):
                raise ValueError("not an object")
            create = CreateQueueRequest.from_json(raw)
        except (ValueError, KeyError, TypeError) as exc:
            _invalid(context, _BadRequest(f"unparsable CreateQueue request: {exc}"))
            return activation_pb2.CreateQueueResponse(success=False)
        try:
            success = await self._pool.create_queue(create)
        except Exception:
            _internal(context, "CreateQueue")
            return activation_pb2.CreateQueueResponse(success=False)
        return activation_pb2.CreateQueueResponse(success=success)

    async def ForwardActivation(  # noqa: N802 (gRPC method name)
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        try:
            msg = _parse_activation(request.activationMessage)
        except _BadRequest as exc:
            _invalid(context, exc)
            return activation_pb2.ForwardResponse(accepted=False)
        try:
            self._pool.handle_activation(msg)
        except Exception:
            _internal(context, "ForwardActivation")
            return activation_pb2.ForwardResponse(accepted=False)
        return activation_pb2.ForwardResponse(accepted=True)


class RpcServer:
    """One grpc.aio server for both services; `bind()` first to learn the port."""

    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._requested_port = port
        self._server: grpc.aio.Server | None = None
        self._port = 0

    @property
    def port(self) -> int:
        """The bound port (0 before `bind`)."""
        return self._port

    def bind(self) -> int:
        self._server = grpc.aio.server()
        self._port = self._server.add_insecure_port(
            f"{self._host}:{self._requested_port}"
        )
        if self._port == 0:
            raise OSError(f"cannot bind gRPC on {self._host}:{self._requested_port}")
        return self._port

    async def start(
        self, activations: ActivationServiceImpl, queues: QueueServiceImpl
    ) -> None:
        if self._server is None:
            self.bind()
        assert self._server is not None
        _generated.add_ActivationServiceServicer_to_server(activations, self._server)
        _generated.add_QueueServiceServicer_to_server(queues, self._server)
        await self._server.start()
        log.info("gRPC serving on %s:%d", self._host, self._port)

    async def stop(self, grace_s: float = 1.0) -> None:
        if self._server is not None:
            await self._server.stop(grace_s)
            self._server = None
