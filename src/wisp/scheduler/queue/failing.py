"""How a MemoryQueue fails the activations it cannot run: the response for each cause
(throttled, expired, creation failed) and the owned tasks that store and ack them.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from wisp.core.activation import (
    ActivationMessage,
    ActivationResponse,
    WhiskActivation,
    failed_activation,
)
from wisp.core.messages import ContainerCreationError
from wisp.infra.messaging.acks import ActiveAck
from wisp.scheduler.queue import state as rules

log = logging.getLogger(__name__)

_ACK_TIMEOUT_S = 10.0

#: the text of activations failed by namespace or action throttling (OpenWhisk's
#: MemoryQueue text; the controller's per-minute 429 text is a different one)
TOO_MANY_CONCURRENT_REQUESTS = "Too many concurrent requests in flight."


@dataclass(slots=True)
class FlushCause:
    """Why the queue is Flushing: the last creation failure."""

    error: ContainerCreationError
    reason: str
    #: an activation arrived since the last flush check
    active: bool = False


def fails_fast(error: ContainerCreationError) -> bool:
    """Whether activations fail at once on this creation error rather than waiting
    out their retention time."""
    # DIVERGENCE(openwhisk): a zero namespace limit is a whisk error there, so queued
    # activations wait for the retention time; nothing can run them, so they fail now.
    return (
        not error.is_whisk_error or error is ContainerCreationError.ZERO_NAMESPACE_LIMIT
    )


def throttle_response(as_whisk_error: bool) -> ActivationResponse:
    if as_whisk_error:
        return ActivationResponse.whisk_error(TOO_MANY_CONCURRENT_REQUESTS)
    return ActivationResponse.developer_error(TOO_MANY_CONCURRENT_REQUESTS)


def expired_response(retention_ms: int) -> ActivationResponse:
    return ActivationResponse.whisk_error(rules.not_initiated_text(retention_ms))


def flush_response(flush: FlushCause | None, retention_ms: int) -> ActivationResponse:
    """The creation failure's reason, or plain expiry when there is no failure."""
    if flush is None:
        return expired_response(retention_ms)
    if flush.error.is_whisk_error:
        return ActivationResponse.whisk_error(flush.reason)
    return ActivationResponse.developer_error(flush.reason)


class ActivationFailer:
    """Stores a failed record for each activation and sends its completion ack, in
    tasks this object owns so that the queue can drain or cancel them."""

    def __init__(
        self,
        *,
        name: str,
        task_prefix: str,
        ack: ActiveAck,
        action_metadata: dict[str, Any],
    ) -> None:
        self._name = name
        self._task_name = f"{task_prefix}:ack"
        self._ack = ack
        self._kind = rules.exec_kind(action_metadata)
        self._limits = rules.action_limits(action_metadata)
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def tasks(self) -> frozenset[asyncio.Task[None]]:
        """The acks still being sent."""
        return frozenset(self._tasks)

    def fail(self, msgs: list[ActivationMessage], response: ActivationResponse) -> None:
        if not msgs:
            return
        log.info(
            "Queue %s: failing %d activations: %s",
            self._name,
            len(msgs),
            response.result,
        )
        records = [
            (m, failed_activation(m, response, kind=self._kind, limits=self._limits))
            for m in msgs
        ]
        task = asyncio.get_running_loop().create_task(
            self._complete(records), name=self._task_name
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout_s: float) -> None:
        """Wait (bounded) for the acks under way."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)

    async def _complete(
        self, records: list[tuple[ActivationMessage, WhiskActivation]]
    ) -> None:
        for msg, record in records:
            try:
                async with asyncio.timeout(_ACK_TIMEOUT_S):
                    await self._ack.complete(msg, record)
            except Exception:
                log.exception(
                    "Queue %s: acking %s failed", self._name, msg.activation_id
                )
