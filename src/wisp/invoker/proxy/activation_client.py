"""ActivationClientProxy (module 20): one container's gRPC pull client to its queue.

The container proxy asks it for work; it long-polls the scheduler that holds the
action's queue, follows the queue to another scheduler through the etcd leader key,
hands activations back on request and says goodbye (`alive=False`) when it closes.
gRPC errors stop here: callers see `ActivationClientError` and its subclasses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any, Protocol

import grpc

from wisp.core.activation import ActivationMessage
from wisp.core.entity import FullyQualifiedEntityName
from wisp.core.errors import CoordinationError, WispError
from wisp.core.ids import TransactionId
from wisp.core.messages import FetchError, FetchResult, SchedulerEndpoints
from wisp.infra.etcd.client import EtcdClient
from wisp.infra.etcd.keys import EtcdKeys
from wisp.infra.rpc import activation_pb2, activation_pb2_grpc

log = logging.getLogger(__name__)

#: a fetch waits on the scheduler for its long poll (~1 s) and at most its internal
#: ask timeout (5 s); past this the call is abandoned
FETCH_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5.0
RESCHEDULE_TIMEOUT_S = 5.0
GOODBYE_TIMEOUT_S = 2.0
ETCD_TIMEOUT_S = 5.0
#: reconnects (to the leader found in etcd) one fetch may make before giving up
MAX_RECONNECTS = 3
RECONNECT_BACKOFF_S = 0.1


class ActivationClientError(WispError):
    """The pull client cannot go on; the container it serves retires."""


class ClientCreationError(ActivationClientError):
    """The scheduler could not be reached when the client was created."""


class ActionMismatchError(ActivationClientError):
    """The scheduler holds a queue for another revision of this action."""

    def __init__(self) -> None:
        super().__init__("action version does not match")


class QueueGoneError(ActivationClientError):
    """No scheduler holds this action's queue any more."""


class ClientClosedError(ActivationClientError):
    """The client was closed, or lost its scheduler for good."""


class ActivationClient(Protocol):
    """What a container proxy needs from its pull client (fakes implement it too)."""

    async def connect(self) -> None:
        """Open the channel to the scheduler; raises ClientCreationError."""
        ...

    async def fetch(
        self, last_duration_ms: int | None = None
    ) -> ActivationMessage | None:
        """One long poll: an activation, or None when the queue had none."""
        ...

    async def reschedule(self, msg: ActivationMessage) -> bool: ...

    async def retarget(self, host: str, rpc_port: int) -> None:
        """Pull from this scheduler from now on (a resumed container's new queue)."""
        ...

    def mark_warmed(self) -> None: ...

    async def close(self) -> None: ...


class ActivationClientProxy:
    """Pull client of one container for `(invocation namespace, action, revision)`."""

    def __init__(
        self,
        *,
        invocation_namespace: str,
        action: FullyQualifiedEntityName,
        revision: str,
        container_id: str,
        scheduler_host: str,
        rpc_port: int,
        etcd: EtcdClient,
        keys: EtcdKeys,
        transid: TransactionId | None = None,
        fetch_timeout_s: float = FETCH_TIMEOUT_S,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> None:
        self._ns = invocation_namespace
        self._action = action
        self._revision = revision
        self._container_id = container_id
        self._host = scheduler_host
        self._port = rpc_port
        self._etcd = etcd
        self._keys = keys
        self._transid = transid or TransactionId.system("invoker_fetchActivation")
        self._fetch_timeout_s = fetch_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._warmed = False
        self._closed = False
        self._channel: Any = None
        self._stub: Any = None
        #: serializes channel swaps between concurrent fetches
        self._swap = asyncio.Lock()
        # the wire forms never change for this client
        self._fqn_json = json.dumps(action.to_json(), separators=(",", ":"))
        self._rev_json = json.dumps(revision or None)
        self._tid_json = json.dumps(self._transid.to_json())

    @property
    def endpoint(self) -> tuple[str, int]:
        return self._host, self._port

    @property
    def warmed(self) -> bool:
        return self._warmed

    def mark_warmed(self) -> None:
        self._warmed = True

    # --- lifecycle ------------------------------------------------------------------

    async def connect(self) -> None:
        async with self._swap:
            await self._open(self._host, self._port)

    async def retarget(self, host: str, rpc_port: int) -> None:
        async with self._swap:
            if (host, rpc_port) == (
                self._host,
                self._port,
            ) and self._channel is not None:
                return
            log.debug(
                "Switching scheduler %s:%s -> %s:%s",
                self._host,
                self._port,
                host,
                rpc_port,
            )
            await self._drop_channel()
            await self._open(host, rpc_port)

    async def close(self) -> None:
        """Say goodbye (`alive=False`) so the scheduler forgets this container, then
        close the channel. Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        async with self._swap:
            stub = self._stub
            if stub is not None:
                try:
                    await stub.FetchActivation(
                        self._request(alive=False, last_duration_ms=None),
                        timeout=GOODBYE_TIMEOUT_S,
                    )
                except grpc.aio.AioRpcError as exc:
                    log.debug("Goodbye fetch failed: %s", exc.code())
            await self._drop_channel()

    # --- the pull -------------------------------------------------------------------

    async def fetch(
        self, last_duration_ms: int | None = None
    ) -> ActivationMessage | None:
        reconnects = 0
        while True:
            if self._closed:
                raise ClientClosedError("activation client is closed")
            stub = self._stub
            if stub is None:
                raise ClientClosedError("activation client is not connected")
            try:
                response = await stub.FetchActivation(
                    self._request(alive=True, last_duration_ms=last_duration_ms),
                    timeout=self._fetch_timeout_s,
                )
            except grpc.aio.AioRpcError as exc:
                if self._closed:
                    raise ClientClosedError("activation client is closed") from exc
                if exc.code() is grpc.StatusCode.DEADLINE_EXCEEDED:
                    log.debug("Fetch timed out on %s:%s", self._host, self._port)
                    return None
                log.warning(
                    "Fetch from %s:%s failed: %s", self._host, self._port, exc.code()
                )
                reconnects = await self._follow_leader(stub, reconnects)
                continue

            result = self._parse(response.activationMessage)
            if result is None:
                return None
            if result.message is not None:
                return result.message
            if result.error is FetchError.NO_ACTIVATION_MESSAGE:
                return None
            if result.error is FetchError.ACTION_MISMATCH:
                raise ActionMismatchError()
            # NO_MEMORY_QUEUE: the queue moved (or is gone); follow its leader key
            log.debug("No queue on %s:%s for %s", self._host, self._port, self._action)
            reconnects = await self._follow_leader(stub, reconnects)

    async def reschedule(self, msg: ActivationMessage) -> bool:
        """Hand `msg` back to its queue; False when the queue is gone or unreachable."""
        stub = self._stub
        if stub is None or self._closed:
            return False
        request = activation_pb2.RescheduleRequest(
            invocationNamespace=self._ns,
            fqn=self._fqn_json,
            rev=self._rev_json,
            activationMessage=json.dumps(msg.to_json(), separators=(",", ":")),
        )
        try:
            response = await stub.RescheduleActivation(
                request, timeout=RESCHEDULE_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as exc:
            log.warning("Rescheduling %s failed: %s", msg.activation_id, exc.code())
            return False
        return bool(response.isRescheduled)

    # --- helpers --------------------------------------------------------------------

    def _request(self, *, alive: bool, last_duration_ms: int | None) -> Any:
        request = activation_pb2.FetchRequest(
            transactionId=self._tid_json,
            invocationNamespace=self._ns,
            fqn=self._fqn_json,
            rev=self._rev_json,
            containerId=self._container_id,
            warmed=self._warmed,
            alive=alive,
        )
        if last_duration_ms is not None:
            # setting the wrapper's value marks the optional field present
            request.lastDuration.value = last_duration_ms
        return request

    def _parse(self, text: str) -> FetchResult | None:
        try:
            return FetchResult.from_json(json.loads(text))
        except (ValueError, KeyError, TypeError) as exc:
            # OpenWhisk asks again after an unreadable answer
            log.warning("Unreadable fetch answer (%s); asking again", exc)
            return None

    async def _follow_leader(self, failed_stub: Any, reconnects: int) -> int:
        """Reconnect to the scheduler the leader key names; returns the new count."""
        if reconnects >= MAX_RECONNECTS:
            raise QueueGoneError(
                f"no scheduler serves the queue of {self._action} after "
                f"{reconnects} reconnects"
            )
        if reconnects:
            await asyncio.sleep(RECONNECT_BACKOFF_S * 2 ** (reconnects - 1))
        async with self._swap:
            if self._closed:
                raise ClientClosedError("activation client is closed")
            if self._stub is not failed_stub:
                # another fetch on this channel reconnected already
                return reconnects + 1
            leader = await self._leader()
            if leader is None:
                raise QueueGoneError(f"no queue leader for {self._action}")
            await self._drop_channel()
            await self._open(leader.host, leader.rpc_port)
        return reconnects + 1

    async def _leader(self) -> SchedulerEndpoints | None:
        key = self._keys.queue_leader(self._ns, self._action.unversioned())
        try:
            kv = await asyncio.wait_for(self._etcd.get(key), ETCD_TIMEOUT_S)
        except (CoordinationError, TimeoutError) as exc:
            raise ClientClosedError(f"leader lookup failed: {exc}") from exc
        if kv is None or not kv.value:
            return None
        try:
            return SchedulerEndpoints.from_json(json.loads(kv.value))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("Unreadable leader record at %s: %s", key, exc)
            return None

    async def _open(self, host: str, port: int) -> None:
        channel = grpc.aio.insecure_channel(f"{host}:{port}")
        try:
            await asyncio.wait_for(channel.channel_ready(), self._connect_timeout_s)
        except (TimeoutError, grpc.aio.AioRpcError) as exc:
            await channel.close()
            raise ClientCreationError(f"scheduler {host}:{port} unreachable") from exc
        self._channel = channel
        self._stub = activation_pb2_grpc.ActivationServiceStub(channel)  # type: ignore[no-untyped-call]
        self._host, self._port = host, port

    async def _drop_channel(self) -> None:
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            with contextlib.suppress(Exception):
                await channel.close()
