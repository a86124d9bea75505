"""The ack feed and the blocking wait with its activation-store fallback."""

from __future__ import annotations

import asyncio
import base64
import time

import pytest

from wisp.controller.auth import Authenticator
from wisp.controller.balancer import ActivationResult
from wisp.controller.completions import CompletionConsumer, wait_for_activation
from wisp.core.activation import ActivationResponse, WhiskActivation
from wisp.core.entity import Identity
from wisp.core.errors import AuthenticationError
from wisp.core.ids import TransactionId
from wisp.core.messages import CompletionAck, encode
from wisp.infra.messaging.memory import MemoryBroker
from wisp.infra.store.memory import MemoryStore

from .conftest import INSTANCE

pytestmark = pytest.mark.timeout(10)

ACTIVATION_ID = "a" * 32


def record(activation_id: str = ACTIVATION_ID) -> WhiskActivation:
    return WhiskActivation(
        namespace="guest",
        name="hello",
        subject="guest",
        activation_id=activation_id,
        start_ms=1,
        end_ms=2,
        response=ActivationResponse.ok({"ok": True}),
    )


def pending() -> asyncio.Future[ActivationResult]:
    return asyncio.get_running_loop().create_future()


async def test_wait_returns_the_record_the_ack_carried() -> None:
    future = pending()
    future.set_result(record())

    found = await wait_for_activation(
        future, MemoryStore(), "guest", ACTIVATION_ID, 1.0
    )

    assert found == record()


async def test_wait_reads_the_store_when_only_the_id_came_back() -> None:
    store = MemoryStore()
    future = pending()
    future.set_result(ACTIVATION_ID)
    loop = asyncio.get_running_loop()
    loop.call_later(0.1, lambda: loop.create_task(store.put_activation(record())))

    found = await wait_for_activation(future, store, "guest", ACTIVATION_ID, 2.0)

    assert found == record()


async def test_wait_gives_up_at_the_timeout_without_an_ack() -> None:
    started = time.monotonic()

    found = await wait_for_activation(
        pending(), MemoryStore(), "guest", ACTIVATION_ID, 0.1
    )

    assert found is None
    assert time.monotonic() - started < 1.0


async def test_wait_gives_up_at_the_timeout_when_the_store_never_has_it() -> None:
    future = pending()
    future.set_result(ACTIVATION_ID)

    found = await wait_for_activation(
        future, MemoryStore(), "guest", ACTIVATION_ID, 0.2
    )

    assert found is None


async def test_wait_finds_the_record_of_a_lost_ack_by_polling() -> None:
    store = MemoryStore()
    await store.put_activation(record())

    found = await wait_for_activation(
        pending(), store, "guest", ACTIVATION_ID, 1.0, safety_poll_s=0.02
    )

    assert found == record()


class _Acks:
    def __init__(self) -> None:
        self.acks: list[CompletionAck] = []
        self.arrived = asyncio.Event()

    def process_ack(self, ack: CompletionAck) -> None:
        self.acks.append(ack)
        self.arrived.set()


async def test_consumer_hands_acks_over_and_skips_unreadable_ones() -> None:
    broker = MemoryBroker()
    acks = _Acks()
    consumer = CompletionConsumer(broker, acks, "0", poll_s=0.05)
    await consumer.start()
    try:
        ack = CompletionAck.completion(
            TransactionId.new(), ACTIVATION_ID, False, INSTANCE
        )
        await broker.publish("completed0", b"not json")
        await broker.publish("completed0", b'{"no": "transid"}')
        await broker.publish("completed0", encode(ack.to_json()))

        await asyncio.wait_for(acks.arrived.wait(), 2.0)
    finally:
        await consumer.stop()

    assert [a.activation_id for a in acks.acks] == [ACTIVATION_ID]
    assert acks.acks[0].frees_slot


class _CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.lookups = 0

    async def identity_by_key(self, uuid: str, key: str) -> Identity | None:
        self.lookups += 1
        return await super().identity_by_key(uuid, key)


AUTH = "Basic " + base64.b64encode(b"uuid-a:secret").decode()


async def test_authenticator_caches_a_verified_key_briefly() -> None:
    store = _CountingStore()
    await store.put_identity(Identity("alice", "alice", "uuid-a", "secret"))
    now = [0.0]
    authenticator = Authenticator(store, ttl_s=5.0, clock=lambda: now[0])

    first = await authenticator.authenticate(AUTH)
    await authenticator.authenticate(AUTH)
    lookups_cached = store.lookups
    now[0] = 6.0
    await authenticator.authenticate(AUTH)

    assert first.namespace == "alice"
    assert lookups_cached == 1
    assert store.lookups == 2


async def test_authenticator_refuses_unknown_keys() -> None:
    authenticator = Authenticator(MemoryStore())

    with pytest.raises(
        AuthenticationError, match="The supplied authentication is invalid"
    ):
        await authenticator.authenticate(AUTH)
