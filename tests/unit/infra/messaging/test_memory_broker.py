"""The in-process broker: FIFO per topic, bounded peeks, waiting with a timeout."""

from __future__ import annotations

import asyncio

import pytest

from wisp.core.errors import MessagingError
from wisp.infra.messaging.memory import MemoryBroker


async def test_messages_arrive_in_order_in_bounded_batches() -> None:
    broker = MemoryBroker()
    consumer = await broker.consumer("scheduler0", "scheduler0", 128)
    for i in range(5):
        await broker.producer().send("scheduler0", f"m{i}".encode())

    first = await consumer.peek(3, 0.1)
    second = await consumer.peek(3, 0.1)

    assert first == [b"m0", b"m1", b"m2"]
    assert second == [b"m3", b"m4"]


async def test_peek_waits_for_a_message_then_gives_up() -> None:
    broker = MemoryBroker()
    consumer = await broker.consumer("invoker0", "invoker0", 10)

    empty = await consumer.peek(10, 0.05)
    later = asyncio.create_task(consumer.peek(10, 2.0))
    await asyncio.sleep(0.01)
    await broker.producer().send("invoker0", b"hello")

    assert empty == []
    assert await later == [b"hello"]


async def test_topics_are_separate() -> None:
    broker = MemoryBroker()
    a = await broker.consumer("a", "a", 10)
    await broker.producer().send("b", b"for b")

    assert await a.peek(10, 0.02) == []
    assert broker.depth("b") == 1


async def test_closed_broker_refuses_messages() -> None:
    broker = MemoryBroker()
    await broker.close()

    with pytest.raises(MessagingError):
        await broker.producer().send("a", b"x")
