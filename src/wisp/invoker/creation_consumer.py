"""ContainerMessageConsumer (module 17): creation and deletion messages → the pool.

Reads `invoker{N}`, loads the action (with code) a creation names and hands both to
the pool; a creation whose action cannot be loaded is answered with a DBFetchError
ack at once. Deletions go straight to the pool. Each batch is committed after it
was handled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from wisp.core.entity import WhiskAction, revision_generation
from wisp.core.errors import MessagingError, StoreError
from wisp.core.messages import (
    ContainerCreationError,
    ContainerCreationMessage,
    ContainerDeletionMessage,
    decode,
    is_warm_up,
    parse_invoker_message,
)
from wisp.infra.messaging.broker import MessageConsumer

log = logging.getLogger(__name__)

POLL_TIMEOUT_S = 1.0
STORE_TIMEOUT_S = 5.0
BACKOFF_S = 0.5

ACTION_NOT_FOUND = "Action could not be found or may have been deleted."
ACTION_NOT_COMPATIBLE = "Action version is not compatible and cannot be invoked."
ACTION_NOT_FETCHED = "Action could not be fetched."


class CreationTarget(Protocol):
    """The pool's entry points used here."""

    def create(
        self, creation: ContainerCreationMessage, action: WhiskAction
    ) -> None: ...

    def delete(self, msg: ContainerDeletionMessage) -> None: ...

    def reject(
        self,
        creation: ContainerCreationMessage,
        error: ContainerCreationError,
        reason: str,
    ) -> None: ...


class ActionReader(Protocol):
    """The part of EntityStore used here."""

    async def get_action(self, namespace: str, name: str) -> WhiskAction | None: ...


class ContainerMessageConsumer:
    def __init__(
        self,
        *,
        consumer: MessageConsumer,
        pool: CreationTarget,
        entity_store: ActionReader,
        max_peek: int = 500,
    ) -> None:
        self._consumer = consumer
        self._pool = pool
        self._store = entity_store
        self._max_peek = max_peek
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._consume(), name=f"container-message-consumer:{self._consumer.topic}"
        )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(MessagingError):
            await self._consumer.close()

    async def _consume(self) -> None:
        while True:
            try:
                batch = await self._consumer.peek(self._max_peek, POLL_TIMEOUT_S)
                for payload in batch:
                    await self.handle(payload)
                if batch:
                    await self._consumer.commit()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("Consuming %s failed; backing off", self._consumer.topic)
                await asyncio.sleep(BACKOFF_S)

    async def handle(self, payload: bytes) -> None:
        """One message from the topic; never raises for bad input."""
        try:
            msg = parse_invoker_message(decode(payload))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning(
                "Unreadable message on %s dropped: %s", self._consumer.topic, exc
            )
            return
        if isinstance(msg, ContainerDeletionMessage):
            log.info("Deletion of %s@%s", msg.action, msg.revision)
            self._pool.delete(msg)
            return
        if is_warm_up(msg.action):
            # it exists only to open the path from the scheduler
            return
        action = await self._load(msg)
        if action is not None:
            self._pool.create(msg, action)

    async def _load(self, msg: ContainerCreationMessage) -> WhiskAction | None:
        """The action with its code, or None after acking the creation with an error."""
        try:
            action = await asyncio.wait_for(
                self._store.get_action(msg.action.path, msg.action.name),
                STORE_TIMEOUT_S,
            )
        except (StoreError, TimeoutError) as exc:
            log.warning("Loading %s failed: %s", msg.action, exc)
            self._pool.reject(
                msg, ContainerCreationError.DB_FETCH_ERROR, ACTION_NOT_FETCHED
            )
            return None
        if action is None:
            self._pool.reject(
                msg, ContainerCreationError.DB_FETCH_ERROR, ACTION_NOT_FOUND
            )
            return None
        # DIVERGENCE(openwhisk): the store keeps only the latest revision, so a newer
        # one stands in for the requested one (the proxy's "mismatch → latest" rule);
        # only an older one than asked for is refused.
        if msg.revision and revision_generation(action.rev) < revision_generation(
            msg.revision
        ):
            self._pool.reject(
                msg, ContainerCreationError.DB_FETCH_ERROR, ACTION_NOT_COMPATIBLE
            )
            return None
        return action
