"""Messaging seam: a producer per process and a consumer per topic.

Delivery is at-least-once in order per topic; a message is gone from the topic once a
consumer has peeked it and committed. Backends: `memory.MemoryBroker` (standalone) and a
broker adapter (cluster). Callers see only `MessagingError`.
"""

from __future__ import annotations

from typing import Protocol


class MessageProducer(Protocol):
    async def send(self, topic: str, payload: bytes) -> None: ...

    async def close(self) -> None: ...


class MessageConsumer(Protocol):
    @property
    def topic(self) -> str: ...

    async def peek(self, max_messages: int, timeout_s: float) -> list[bytes]:
        """Up to `max_messages`, waiting at most `timeout_s` for the first one."""
        ...

    async def commit(self) -> None:
        """Mark everything peeked so far as processed."""
        ...

    async def close(self) -> None: ...


class MessagingProvider(Protocol):
    def producer(self) -> MessageProducer: ...

    async def consumer(
        self, topic: str, group_id: str, max_peek: int
    ) -> MessageConsumer: ...

    async def ensure_topic(self, topic: str) -> None: ...

    async def close(self) -> None: ...
