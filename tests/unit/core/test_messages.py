"""Wire shapes of the messages between roles round-trip with OpenWhisk's names."""

from __future__ import annotations

import pytest

from wisp.core.activation import (
    ActivationMessage,
    ActivationResponse,
    WhiskActivation,
    failed_activation,
)
from wisp.core.entity import FullyQualifiedEntityName, Identity, revision_generation
from wisp.core.ids import (
    ControllerInstanceId,
    InvokerInstanceId,
    SchedulerInstanceId,
    TransactionId,
)
from wisp.core.messages import (
    ACTION_MISMATCH,
    NO_ACTIVATION,
    CompletionAck,
    ContainerCreationAckMessage,
    ContainerCreationError,
    ContainerCreationMessage,
    ContainerDeletionMessage,
    FetchResult,
    InvokerResourceMessage,
    InvokerStatus,
    ack_for,
    decode,
    encode,
    parse_invoker_message,
)

USER = Identity("guest", "guest", "uuid-1", "secret")
FQN = FullyQualifiedEntityName("guest", "hello", "0.0.1")


def activation_message(blocking: bool = True) -> ActivationMessage:
    return ActivationMessage(
        transid=TransactionId("tid", 1000),
        action=FQN,
        revision="1-abc",
        user=USER,
        activation_id="a" * 32,
        root_controller_index=ControllerInstanceId("0"),
        blocking=blocking,
        content={"x": 1},
        init_args=frozenset({"secret"}),
    )


def test_activation_message_round_trips() -> None:
    msg = activation_message()

    again = ActivationMessage.from_json(decode(encode(msg.to_json())))

    assert again == msg
    assert msg.to_json()["rootControllerIndex"] == {
        "asString": "0",
        "instanceType": "controller",
    }


def test_creation_and_deletion_share_a_topic_and_are_told_apart() -> None:
    creation = ContainerCreationMessage(
        TransactionId("sid_containerCreation", 1),
        "guest",
        FQN,
        "1-abc",
        {"name": "hello"},
        SchedulerInstanceId("0"),
        "127.0.0.1",
        1234,
        "c" * 32,
    )
    deletion = ContainerDeletionMessage(
        TransactionId("sid_containerDeletion", 1), "guest", FQN, "1-abc", {}
    )

    assert parse_invoker_message(creation.to_json()) == creation
    assert parse_invoker_message(deletion.to_json()) == deletion


@pytest.mark.parametrize("error", list(ContainerCreationError))
def test_every_creation_error_parses_from_its_name(
    error: ContainerCreationError,
) -> None:
    ack = ContainerCreationAckMessage(
        TransactionId("t", 1),
        "c" * 32,
        "guest",
        FQN,
        "1-abc",
        {},
        InvokerInstanceId(0, 2048),
        "127.0.0.1",
        1,
        error=error,
        reason=error.text,
    )

    again = ContainerCreationAckMessage.from_json(decode(encode(ack.to_json())))

    assert again.error is error
    assert ContainerCreationError.parse(error.value.upper()) is error


def test_whisk_errors_are_the_recoverable_ones() -> None:
    assert ContainerCreationError.RESOURCE_NOT_ENOUGH.is_whisk_error
    assert ContainerCreationError.SHUTTING_DOWN.is_whisk_error
    assert not ContainerCreationError.NON_EXECUTABLE_ACTION.is_whisk_error
    assert not ContainerCreationError.INVALID_ACTION_LIMIT.is_whisk_error


def test_blocking_ack_is_combined_and_non_blocking_only_frees_the_slot() -> None:
    record = failed_activation(
        activation_message(), ActivationResponse.whisk_error("gone")
    )
    instance = {"asString": "0", "instanceType": "scheduler"}

    combined = ack_for(activation_message(blocking=True), record, instance)
    completion = ack_for(activation_message(blocking=False), record, instance)

    parsed = CompletionAck.from_json(decode(encode(combined.to_json())))
    assert parsed.frees_slot and parsed.has_result and parsed.is_system_error
    assert parsed.activation == record
    parsed = CompletionAck.from_json(decode(encode(completion.to_json())))
    assert parsed.frees_slot and not parsed.has_result
    assert parsed.activation_id == record.activation_id


def test_failed_activation_record_has_zero_duration_and_path() -> None:
    record = failed_activation(
        activation_message(), ActivationResponse.whisk_error("x")
    )

    assert record.duration_ms == 0
    assert record.annotations["path"] == "guest/hello"
    assert record.to_json()["response"]["status"] == "whisk internal error"
    assert WhiskActivation.from_json(record.to_json()) == record


def test_fetch_results_use_the_type_discriminator() -> None:
    assert NO_ACTIVATION.to_json() == {
        "message": {
            "noActivationMessage": "no activation message exist",
            "type": "NoActivationMessage",
        }
    }
    assert FetchResult.from_json(ACTION_MISMATCH.to_json()) == ACTION_MISMATCH
    with_message = FetchResult(message=activation_message())
    assert FetchResult.from_json(with_message.to_json()) == with_message


def test_unknown_invoker_status_reads_as_offline() -> None:
    record = InvokerResourceMessage.from_json({"status": "unresponsive"})

    assert record.status is InvokerStatus.OFFLINE


@pytest.mark.parametrize(
    ("rev", "generation"), [(None, -1), ("", -1), ("3-abc", 3), ("x-abc", 0)]
)
def test_revision_ordering_uses_the_generation(
    rev: str | None, generation: int
) -> None:
    assert revision_generation(rev) == generation
