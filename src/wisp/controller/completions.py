"""The controller's ack feed and the blocking wait (OpenWhisk's PrimitiveActions).

`CompletionConsumer` reads `completed{N}` and hands every ack to the balancer.
`wait_for_activation` is what a blocking invoke awaits: the ack's record, else the
activation store when the ack was shrunk or lost, else None at the deadline (202).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Protocol

from wisp.core.activation import WhiskActivation
from wisp.core.errors import MessagingError, StoreError
from wisp.core.messages import CompletionAck, decode
from wisp.infra.messaging.broker import MessageConsumer, MessagingProvider
from wisp.infra.messaging.topics import completed_topic
from wisp.infra.store.activations import ActivationStore

from .balancer import ActivationResult

log = logging.getLogger(__name__)

#: acks taken per poll and the long-poll of one peek (OpenWhisk: 128, 1 s)
ACK_MAX_PEEK = 128
ACK_POLL_S = 1.0
_BACKOFF_START_S = 0.1
_BACKOFF_MAX_S = 2.0

#: while waiting for the ack, read the store this often as a safety net
SAFETY_POLL_S = 15.0
#: after an id-only answer, read the store at once, then after these pauses (the
#: last one repeats)
STORE_POLL_DELAYS_S = (0.05, 0.1, 0.2, 0.5, 1.0)


class AckProcessor(Protocol):
    """What the consumer hands acks to (FPCPoolBalancer)."""

    def process_ack(self, ack: CompletionAck) -> None: ...


class CompletionConsumer:
    """Consumes this controller's ack topic; survives bad messages and broker errors."""

    def __init__(
        self,
        messaging: MessagingProvider,
        balancer: AckProcessor,
        controller_id: str,
        *,
        max_peek: int = ACK_MAX_PEEK,
        poll_s: float = ACK_POLL_S,
    ) -> None:
        self._messaging = messaging
        self._balancer = balancer
        self._topic = completed_topic(controller_id)
        self._max_peek = max_peek
        self._poll_s = poll_s
        self._consumer: MessageConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._messaging.ensure_topic(self._topic)
        self._consumer = await self._messaging.consumer(
            self._topic, self._topic, self._max_peek
        )
        self._task = asyncio.get_running_loop().create_task(
            self._run(self._consumer), name=f"acks:{self._topic}"
        )
        log.info("Consuming acks from %s", self._topic)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._consumer is not None:
            with contextlib.suppress(MessagingError):
                await self._consumer.close()
            self._consumer = None

    async def _run(self, consumer: MessageConsumer) -> None:
        backoff = _BACKOFF_START_S
        while True:
            try:
                batch = await consumer.peek(self._max_peek, self._poll_s)
                for payload in batch:
                    self._handle(payload)
                if batch:
                    await consumer.commit()
                backoff = _BACKOFF_START_S
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("Reading acks from %s failed; retrying", self._topic)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)

    def _handle(self, payload: bytes) -> None:
        try:
            ack = CompletionAck.from_json(decode(payload))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("Dropping an unreadable ack: %s", exc)
            return
        self._balancer.process_ack(ack)


async def wait_for_activation(
    future: asyncio.Future[ActivationResult],
    store: ActivationStore,
    namespace: str,
    activation_id: str,
    timeout_s: float,
    *,
    safety_poll_s: float = SAFETY_POLL_S,
) -> WhiskActivation | None:
    """The record of a blocking activation, or None when `timeout_s` passed first."""
    deadline = time.monotonic() + timeout_s

    # wait for the ack, reading the store now and then in case it was lost
    while not future.done():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        done, _ = await asyncio.wait({future}, timeout=min(remaining, safety_poll_s))
        if done:
            break
        record = await _read(store, namespace, activation_id)
        if record is not None:
            return record
    if future.cancelled():
        return None
    result = future.result()
    if isinstance(result, WhiskActivation):
        return result

    # only the id came back (shrunk, lost result or forced): the store has the record
    attempt = 0
    while True:
        record = await _read(store, namespace, activation_id)
        if record is not None:
            return record
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        delay = STORE_POLL_DELAYS_S[min(attempt, len(STORE_POLL_DELAYS_S) - 1)]
        attempt += 1
        await asyncio.sleep(min(delay, remaining))


async def _read(
    store: ActivationStore, namespace: str, activation_id: str
) -> WhiskActivation | None:
    try:
        return await store.get_activation(namespace, activation_id)
    except StoreError as exc:
        log.warning("Reading activation %s failed: %s", activation_id, exc)
        return None
