"""The meeting point inside a MemoryQueue: activations waiting for a container (the
backlog) and containers long-polling for an activation (the poll registry).
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from wisp.core.activation import ActivationMessage
from wisp.core.messages import NO_ACTIVATION, FetchResult
from wisp.scheduler.queue import state as rules


@dataclass(slots=True)
class Entry:
    msg: ActivationMessage
    #: clock() when the activation entered the queue
    enqueued: float


class Backlog:
    """The waiting activations in arrival order, each with the time it came in."""

    def __init__(self) -> None:
        self._entries: deque[Entry] = deque()

    def __len__(self) -> int:
        return len(self._entries)

    def append(self, entry: Entry) -> None:
        self._entries.append(entry)

    def put_back(self, entry: Entry) -> None:
        """Return an entry to the head (its poll went away before using it)."""
        self._entries.appendleft(entry)

    def pop(self) -> Entry:
        return self._entries.popleft()

    def activation_ids(self) -> list[str]:
        return [e.msg.activation_id for e in self._entries]

    def count_waited(self, now: float, threshold_s: float) -> int:
        """How many activations, from the head, have waited `threshold_s` or more."""
        return rules.count_waited_at_least(
            (e.enqueued for e in self._entries), now, threshold_s
        )

    def take_waited(self, now: float, threshold_s: float) -> list[ActivationMessage]:
        """Remove and return the activations that have waited `threshold_s` or more."""
        count = self.count_waited(now, threshold_s)
        return [self._entries.popleft().msg for _ in range(count)]

    def take_all(self) -> list[ActivationMessage]:
        msgs = [e.msg for e in self._entries]
        self._entries.clear()
        return msgs


@dataclass(slots=True)
class Poll:
    """An open long-poll of one container."""

    container_id: str
    order: str
    future: asyncio.Future[FetchResult]
    #: the entry handed to this poll, to put back if the caller went away
    handed: Entry | None = None


class PollRegistry:
    """At most one open poll per container; an arriving activation goes to the best
    one (warmed first, then the largest container id)."""

    def __init__(self) -> None:
        self._polls: dict[str, Poll] = {}

    def open(self, container_id: str, warmed: bool) -> Poll:
        """Register a new poll; a poll still open for the container answers
        NO_ACTIVATION."""
        self.end(container_id, NO_ACTIVATION)
        future: asyncio.Future[FetchResult] = asyncio.get_running_loop().create_future()
        poll = Poll(container_id, rules.poll_order_key(container_id, warmed), future)
        self._polls[container_id] = poll
        return poll

    def offer(self, entry: Entry) -> bool:
        """Hand the entry to the best waiting poll; False when none waits."""
        live = [p for p in self._polls.values() if not p.future.done()]
        if not live:
            return False
        poll = max(live, key=lambda p: p.order)
        del self._polls[poll.container_id]
        poll.handed = entry
        poll.future.set_result(FetchResult(message=entry.msg))
        return True

    def abandon(self, poll: Poll) -> Entry | None:
        """Close a poll nobody waits for; returns the entry already handed to it, which
        the caller must put somewhere again."""
        if self._polls.get(poll.container_id) is poll:
            del self._polls[poll.container_id]
        if not poll.future.done():
            poll.future.cancel()
            return None
        return poll.handed

    def end(self, container_id: str, result: FetchResult) -> None:
        """Answer the container's open poll, if any, with `result`."""
        poll = self._polls.pop(container_id, None)
        if poll is not None and not poll.future.done():
            poll.future.set_result(result)

    def end_all(self, result: FetchResult) -> None:
        for container_id in list(self._polls):
            self.end(container_id, result)
