"""ActiveAck: the record is stored before the ack, retried when the store fails."""

from __future__ import annotations

from typing import Any

from wisp.core.activation import (
    ActivationMessage,
    ActivationResponse,
    WhiskActivation,
    failed_activation,
)
from wisp.core.entity import FullyQualifiedEntityName, Identity
from wisp.core.errors import StoreError
from wisp.core.ids import ControllerInstanceId, TransactionId
from wisp.core.messages import CompletionAck, decode
from wisp.infra.messaging import acks
from wisp.infra.messaging.acks import ActiveAck
from wisp.infra.messaging.memory import MemoryBroker

INSTANCE = {"asString": "0", "instanceType": "scheduler"}


class FlakyStore:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.stored: list[WhiskActivation] = []

    async def put_activation(self, activation: WhiskActivation) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise StoreError("disk busy")
        self.stored.append(activation)


def message(blocking: bool) -> ActivationMessage:
    return ActivationMessage(
        transid=TransactionId("t", 1),
        action=FullyQualifiedEntityName("guest", "a", "0.0.1"),
        revision="1-a",
        user=Identity("guest", "guest", "u", "k"),
        activation_id="b" * 32,
        root_controller_index=ControllerInstanceId("7"),
        blocking=blocking,
    )


async def sent_acks(broker: MemoryBroker) -> list[CompletionAck]:
    consumer = await broker.consumer("completed7", "completed7", 10)
    return [CompletionAck.from_json(decode(m)) for m in await consumer.peek(10, 0.1)]


async def test_record_is_stored_then_the_ack_goes_to_the_controller() -> None:
    broker = MemoryBroker()
    store = FlakyStore(failures=0)
    msg = message(blocking=True)
    record = failed_activation(msg, ActivationResponse.whisk_error("x"))

    await ActiveAck(broker.producer(), store, INSTANCE).complete(msg, record)  # type: ignore[arg-type]

    assert store.stored == [record]
    [ack] = await sent_acks(broker)
    assert ack.activation == record and ack.frees_slot


async def test_a_failing_store_is_retried_before_the_ack(monkeypatch: Any) -> None:
    monkeypatch.setattr(acks, "STORE_RETRY_S", 0.001)
    broker = MemoryBroker()
    store = FlakyStore(failures=2)
    msg = message(blocking=False)
    record = failed_activation(msg, ActivationResponse.whisk_error("x"))

    await ActiveAck(broker.producer(), store, INSTANCE).complete(msg, record)  # type: ignore[arg-type]

    assert store.stored == [record]
    [ack] = await sent_acks(broker)
    assert ack.activation is None and ack.activation_id == record.activation_id
