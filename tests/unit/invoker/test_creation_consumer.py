"""ContainerMessageConsumer: creations reach the pool with their action, or are acked."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from tests.unit.invoker.fakes import eventually, make_action, make_creation
from wisp.core.entity import WhiskAction
from wisp.core.errors import StoreError
from wisp.core.ids import TransactionId
from wisp.core.messages import (
    WARM_UP_ACTION,
    ContainerCreationError,
    ContainerCreationMessage,
    ContainerDeletionMessage,
    encode,
)
from wisp.infra.messaging.memory import MemoryBroker
from wisp.invoker.creation_consumer import ContainerMessageConsumer

pytestmark = pytest.mark.timeout(10)

ACTION = make_action()


class RecordingPool:
    def __init__(self) -> None:
        self.created: list[tuple[ContainerCreationMessage, WhiskAction]] = []
        self.deleted: list[ContainerDeletionMessage] = []
        self.rejected: list[
            tuple[ContainerCreationMessage, ContainerCreationError, str]
        ] = []

    def create(self, creation: ContainerCreationMessage, action: WhiskAction) -> None:
        self.created.append((creation, action))

    def delete(self, msg: ContainerDeletionMessage) -> None:
        self.deleted.append(msg)

    def reject(
        self,
        creation: ContainerCreationMessage,
        error: ContainerCreationError,
        reason: str,
    ) -> None:
        self.rejected.append((creation, error, reason))


class DictStore:
    def __init__(self, *actions: WhiskAction) -> None:
        self.actions = {(a.namespace, a.name): a for a in actions}
        self.error: Exception | None = None

    async def get_action(self, namespace: str, name: str) -> WhiskAction | None:
        if self.error is not None:
            raise self.error
        return self.actions.get((namespace, name))


async def consumer_with(
    store: DictStore,
) -> tuple[ContainerMessageConsumer, RecordingPool]:
    broker = MemoryBroker()
    pool = RecordingPool()
    topic = await broker.consumer("invoker0", "invoker0", 10)
    return ContainerMessageConsumer(consumer=topic, pool=pool, entity_store=store), pool


def payload(msg: Any) -> bytes:
    return encode(msg.to_json())


async def test_creation_reaches_the_pool_with_the_action_and_its_code() -> None:
    consumer, pool = await consumer_with(DictStore(ACTION))
    creation = make_creation(ACTION)

    await consumer.handle(payload(creation))

    assert pool.created == [(creation, ACTION)]
    assert pool.created[0][1].exec.code
    assert pool.rejected == []


async def test_missing_action_is_acked_as_db_fetch_error() -> None:
    consumer, pool = await consumer_with(DictStore())
    creation = make_creation(ACTION)

    await consumer.handle(payload(creation))

    assert pool.created == []
    assert pool.rejected == [
        (
            creation,
            ContainerCreationError.DB_FETCH_ERROR,
            "Action could not be found or may have been deleted.",
        )
    ]


async def test_store_failure_is_acked_as_db_fetch_error() -> None:
    store = DictStore(ACTION)
    store.error = StoreError("database is locked")
    consumer, pool = await consumer_with(store)

    await consumer.handle(payload(make_creation(ACTION)))

    [(_, error, reason)] = pool.rejected
    assert error is ContainerCreationError.DB_FETCH_ERROR
    assert reason == "Action could not be fetched."


async def test_creation_for_a_newer_revision_than_stored_is_refused() -> None:
    consumer, pool = await consumer_with(DictStore(ACTION))

    await consumer.handle(payload(make_creation(ACTION, revision="5-zzz")))

    [(_, error, reason)] = pool.rejected
    assert error is ContainerCreationError.DB_FETCH_ERROR
    assert reason == "Action version is not compatible and cannot be invoked."


async def test_creation_for_an_older_revision_uses_the_latest_action() -> None:
    latest = replace(ACTION, rev="3-ccc")
    consumer, pool = await consumer_with(DictStore(latest))

    await consumer.handle(payload(make_creation(ACTION, revision="1-aaa")))

    [(creation, action)] = pool.created
    assert creation.revision == "1-aaa"
    assert action.rev == "3-ccc"


async def test_warm_up_creation_is_dropped() -> None:
    consumer, pool = await consumer_with(DictStore(ACTION))
    warm_up = replace(make_creation(ACTION), action=WARM_UP_ACTION)

    await consumer.handle(payload(warm_up))

    assert pool.created == [] and pool.rejected == []


async def test_deletion_goes_to_the_pool() -> None:
    consumer, pool = await consumer_with(DictStore(ACTION))
    deletion = ContainerDeletionMessage(
        TransactionId.new(), "alice", ACTION.fqn, ACTION.rev, ACTION.metadata_json()
    )

    await consumer.handle(payload(deletion))

    assert pool.deleted == [deletion]


async def test_unreadable_message_is_dropped() -> None:
    consumer, pool = await consumer_with(DictStore(ACTION))

    await consumer.handle(b'{"creationId": 1}')
    await consumer.handle(b"not json")

    assert (pool.created, pool.deleted, pool.rejected) == ([], [], [])


async def test_running_consumer_reads_its_topic() -> None:
    broker = MemoryBroker()
    pool = RecordingPool()
    topic = await broker.consumer("invoker0", "invoker0", 10)
    consumer = ContainerMessageConsumer(
        consumer=topic,
        pool=pool,
        entity_store=DictStore(ACTION),
    )
    await consumer.start()

    await broker.publish("invoker0", payload(make_creation(ACTION)))
    await eventually(lambda: len(pool.created) == 1)
    await consumer.stop()
    await asyncio.sleep(0)

    assert pool.created[0][1] == ACTION
