"""In-process broker for standalone Wisp: one FIFO per topic, shared by its consumers."""

from __future__ import annotations

import asyncio
from collections import deque

from wisp.core.errors import MessagingError


class _Topic:
    def __init__(self) -> None:
        self.messages: deque[bytes] = deque()
        self.ready = asyncio.Condition()


class MemoryBroker:
    """A MessagingProvider whose topics live in this process."""

    def __init__(self) -> None:
        self._topics: dict[str, _Topic] = {}
        self._closed = False

    def _topic(self, name: str) -> _Topic:
        topic = self._topics.get(name)
        if topic is None:
            topic = self._topics[name] = _Topic()
        return topic

    async def ensure_topic(self, topic: str) -> None:
        self._topic(topic)

    def producer(self) -> MemoryProducer:
        return MemoryProducer(self)

    async def consumer(
        self, topic: str, group_id: str, max_peek: int
    ) -> MemoryConsumer:
        return MemoryConsumer(self, topic)

    async def publish(self, topic: str, payload: bytes) -> None:
        if self._closed:
            raise MessagingError("broker is closed")
        state = self._topic(topic)
        async with state.ready:
            state.messages.append(payload)
            state.ready.notify_all()

    async def close(self) -> None:
        self._closed = True

    def depth(self, topic: str) -> int:
        return len(self._topic(topic).messages)


class MemoryProducer:
    def __init__(self, broker: MemoryBroker) -> None:
        self._broker = broker

    async def send(self, topic: str, payload: bytes) -> None:
        await self._broker.publish(topic, payload)

    async def close(self) -> None:
        return None


class MemoryConsumer:
    def __init__(self, broker: MemoryBroker, topic: str) -> None:
        self._broker = broker
        self._topic_name = topic
        self._state = broker._topic(topic)
        self._closed = False

    @property
    def topic(self) -> str:
        return self._topic_name

    async def peek(self, max_messages: int, timeout_s: float) -> list[bytes]:
        if self._closed:
            raise MessagingError(f"consumer of {self._topic_name} is closed")
        state = self._state
        async with state.ready:
            if not state.messages:
                try:
                    await asyncio.wait_for(
                        state.ready.wait_for(lambda: bool(state.messages)), timeout_s
                    )
                except TimeoutError:
                    return []
            batch: list[bytes] = []
            while state.messages and len(batch) < max_messages:
                batch.append(state.messages.popleft())
            return batch

    async def commit(self) -> None:
        # Peeked messages already left the in-memory topic.
        return None

    async def close(self) -> None:
        self._closed = True
