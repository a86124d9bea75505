"""ActiveAck: finish an activation: store its record, then tell its controller.

Used by invokers for every activation they run and by schedulers for the activations
they give up on, so that every accepted activation ends with a record and an ack.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from wisp.core.activation import ActivationMessage, WhiskActivation
from wisp.core.errors import MessagingError, StoreError
from wisp.core.messages import CompletionAck, ack_for, encode
from wisp.infra.messaging.broker import MessageProducer
from wisp.infra.messaging.topics import completed_topic
from wisp.infra.store.activations import ActivationStore

log = logging.getLogger(__name__)

STORE_ATTEMPTS = 4
STORE_RETRY_S = 0.1


class ActiveAck:
    def __init__(
        self,
        producer: MessageProducer,
        store: ActivationStore,
        instance: dict[str, Any],
    ) -> None:
        self._producer = producer
        self._store = store
        self._instance = instance

    async def complete(
        self, msg: ActivationMessage, activation: WhiskActivation
    ) -> None:
        """Store the record, then send the combined (blocking) or completion ack.

        The store is retried a few times: the ack frees the controller's journal
        entry, after which nothing would write the record again.
        """
        for attempt in range(STORE_ATTEMPTS):
            try:
                await self._store.put_activation(activation)
                break
            except StoreError:
                if attempt == STORE_ATTEMPTS - 1:
                    log.exception(
                        "Storing activation %s failed", activation.activation_id
                    )
                else:
                    await asyncio.sleep(STORE_RETRY_S * 2**attempt)
        await self.send(
            msg.root_controller_index.as_string,
            ack_for(msg, activation, self._instance),
        )

    async def send(self, controller_id: str, ack: CompletionAck) -> None:
        try:
            await self._producer.send(
                completed_topic(controller_id), encode(ack.to_json())
            )
        except MessagingError:
            log.exception("Sending ack for %s failed", ack.activation_id)
