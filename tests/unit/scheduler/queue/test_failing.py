"""Which response a failed activation gets, and how the failer acks each one."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from wisp.core.activation import (
    ActivationMessage,
    ActivationResponse,
    ResponseStatus,
    WhiskActivation,
)
from wisp.core.entity import FullyQualifiedEntityName, Identity
from wisp.core.ids import ControllerInstanceId, TransactionId, new_activation_id
from wisp.core.messages import ContainerCreationError
from wisp.infra.messaging.acks import ActiveAck
from wisp.scheduler.queue.failing import (
    TOO_MANY_CONCURRENT_REQUESTS,
    ActivationFailer,
    FlushCause,
    fails_fast,
    flush_response,
    throttle_response,
)

pytestmark = pytest.mark.timeout(5)

E = ContainerCreationError


def activation() -> ActivationMessage:
    return ActivationMessage(
        transid=TransactionId.new(),
        action=FullyQualifiedEntityName("bob/utils", "resize", "0.0.1"),
        revision="1-aaa",
        user=Identity("alice-subject", "alice", "uuid-alice", "key"),
        activation_id=new_activation_id(),
        root_controller_index=ControllerInstanceId("0"),
        blocking=False,
    )


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (E.NO_AVAILABLE_INVOKERS, False),  # recoverable: wait for retention
        (E.RESOURCE_NOT_ENOUGH, False),
        (E.ZERO_NAMESPACE_LIMIT, True),  # recoverable there, but nothing can run it
        (E.NON_EXECUTABLE_ACTION, True),
        (E.INVALID_ACTION_LIMIT, True),
    ],
    ids=lambda v: getattr(v, "value", str(v)),
)
def test_activations_fail_at_once_on_errors_nothing_can_recover_from(
    error: ContainerCreationError, expected: bool
) -> None:
    fast = fails_fast(error)

    assert fast is expected


@pytest.mark.parametrize(
    ("flush", "status", "text"),
    [
        (None, ResponseStatus.WHISK_ERROR, "not initiated for 60000 ms"),
        (
            FlushCause(E.NO_AVAILABLE_INVOKERS, "no invokers"),
            ResponseStatus.WHISK_ERROR,
            "no invokers",
        ),
        (
            FlushCause(E.NON_EXECUTABLE_ACTION, "bad image"),
            ResponseStatus.DEVELOPER_ERROR,
            "bad image",
        ),
    ],
    ids=["expired", "whisk-error", "developer-error"],
)
def test_a_flushed_activation_carries_the_creation_failure_reason(
    flush: FlushCause | None, status: ResponseStatus, text: str
) -> None:
    response = flush_response(flush, 60_000)

    assert response.status is status
    assert text in response.result["error"]


@pytest.mark.parametrize(
    ("as_whisk_error", "status"),
    [(True, ResponseStatus.WHISK_ERROR), (False, ResponseStatus.DEVELOPER_ERROR)],
)
def test_throttled_activations_fail_with_the_configured_status(
    as_whisk_error: bool, status: ResponseStatus
) -> None:
    response = throttle_response(as_whisk_error)

    assert response.status is status
    assert response.result == {"error": TOO_MANY_CONCURRENT_REQUESTS}


class FlakyAck:
    """Acks every activation but raises for the first one."""

    def __init__(self) -> None:
        self.acked: list[tuple[str, WhiskActivation]] = []

    async def complete(self, msg: ActivationMessage, record: WhiskActivation) -> None:
        self.acked.append((msg.activation_id, record))
        if len(self.acked) == 1:
            raise RuntimeError("broker down")


async def test_failer_acks_every_activation_even_after_one_ack_failed() -> None:
    ack = FlakyAck()
    metadata: dict[str, Any] = {"exec": {"kind": "python:3"}, "limits": {"memory": 128}}
    failer = ActivationFailer(
        name="q",
        task_prefix="queue:test",
        ack=cast(ActiveAck, ack),
        action_metadata=metadata,
    )
    msgs = [activation(), activation()]

    failer.fail(msgs, ActivationResponse.whisk_error("gone"))
    await failer.drain(1.0)
    await asyncio.sleep(0)

    assert [ident for ident, _ in ack.acked] == [m.activation_id for m in msgs]
    record = ack.acked[1][1]
    assert record.response.status is ResponseStatus.WHISK_ERROR
    assert record.annotations["kind"] == "python:3"
    assert not failer.tasks
