"""An action container's log output: buffered per activation between the sentinel
lines, bounded in memory, and formatted as OpenWhisk stores it (used by `process`).
"""

from __future__ import annotations

import collections
import itertools
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from wisp.infra.runtime.container import LOG_SENTINEL

MIB = 1024 * 1024

#: output kept per activation until it is collected (the rest is dropped)
LOG_BUFFER_LIMIT_BYTES = 16 * MIB
#: what a line costs beyond its text: about the time and stream it is stored with
LINE_OVERHEAD_BYTES = 40

TRUNCATED_LOGS_MESSAGE = (
    "Logs were truncated because the total bytes size exceeds the limit of "
    "{limit} bytes."
)
LOG_ISSUE_MESSAGE = (
    "There was an issue while collecting your logs. Data might be missing."
)

STREAMS = ("stdout", "stderr")


@dataclass(frozen=True, slots=True)
class LogLine:
    seq: int
    at: float
    stream: str
    #: None marks a sentinel
    text: str | None

    @property
    def cost(self) -> int:
        return len(self.text or "") + LINE_OVERHEAD_BYTES


@dataclass(frozen=True, slots=True)
class TakenLogs:
    """One activation's output, in arrival order, without the sentinels."""

    lines: list[LogLine]
    #: lines the activation wrote past the buffer's limit, dropped on arrival
    dropped: int


class LogBuffer:
    """Unread output of both streams, in arrival order, with the sentinels kept.

    A stream's output up to its next sentinel belongs to one activation. Each
    activation keeps the start of its output, up to `activation_limit_bytes`; what it
    writes past that is dropped as it arrives, until its sentinel. Activations nobody
    collects (logs are off for the action) are dropped whole, oldest first, once the
    buffer holds more than two activations' worth.
    """

    def __init__(self, activation_limit_bytes: int = LOG_BUFFER_LIMIT_BYTES) -> None:
        self.activation_limit_bytes = activation_limit_bytes
        self._lines: dict[str, collections.deque[LogLine]] = {
            stream: collections.deque() for stream in STREAMS
        }
        #: sentinels buffered per stream: a new line of a stream belongs to the
        #: activation with that number (0 is the oldest one buffered)
        self._sentinels = dict.fromkeys(STREAMS, 0)
        #: bytes kept and lines dropped per buffered activation, oldest first
        self._kept = [0]
        self._dropped = [0]
        self._closed: set[str] = set()
        self._seq = itertools.count()
        self._bytes = 0

    @property
    def size_bytes(self) -> int:
        """What the buffered lines cost, sentinels included."""
        return self._bytes

    def append(self, stream: str, text: str, at: float) -> None:
        # Output without a final newline glues the sentinel to its last line.
        if text.rstrip().endswith(LOG_SENTINEL):
            before = text.rstrip()[: -len(LOG_SENTINEL)]
            if before:
                self._add_line(LogLine(next(self._seq), at, stream, before))
            self._add_sentinel(LogLine(next(self._seq), at, stream, None))
        else:
            self._add_line(LogLine(next(self._seq), at, stream, text))

    def _activation(self, stream: str) -> int:
        index = self._sentinels[stream]
        while len(self._kept) <= index:
            self._kept.append(0)
            self._dropped.append(0)
        return index

    def _add_line(self, line: LogLine) -> None:
        index = self._activation(line.stream)
        if self._kept[index] + line.cost > self.activation_limit_bytes:
            self._dropped[index] += 1
            return
        self._kept[index] += line.cost
        self._store(line)

    def _add_sentinel(self, line: LogLine) -> None:
        self._activation(line.stream)
        self._sentinels[line.stream] += 1
        self._store(line)

    @property
    def total_limit_bytes(self) -> int:
        """The bound of the whole buffer: a finished activation waiting to be
        collected, the next one, and their sentinels fit."""
        return 2 * (self.activation_limit_bytes + 2 * LINE_OVERHEAD_BYTES)

    def _store(self, line: LogLine) -> None:
        self._lines[line.stream].append(line)
        self._bytes += line.cost
        # The newest activation is never dropped here: it is bounded by itself.
        while self._bytes > self.total_limit_bytes and len(self._kept) > 1:
            self.take()

    def close(self, stream: str) -> None:
        self._closed.add(stream)

    def complete(self) -> bool:
        """Every stream has reached a sentinel or its end."""
        return all(self._sentinels[s] > 0 or s in self._closed for s in STREAMS)

    def take(self) -> TakenLogs:
        """Remove and return the oldest activation's output: each stream's lines up
        to its first sentinel (or all of them)."""
        taken: list[LogLine] = []
        for stream, queue in self._lines.items():
            while queue:
                line = queue.popleft()
                self._bytes -= line.cost
                if line.text is None:
                    self._sentinels[stream] -= 1
                    break
                taken.append(line)
        taken.sort(key=lambda line: line.seq)

        dropped = self._dropped.pop(0)
        self._kept.pop(0)
        if not self._kept:
            self._kept.append(0)
            self._dropped.append(0)
        return TakenLogs(taken, dropped)


def _timestamp(at: float) -> str:
    return datetime.fromtimestamp(at, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def format_log_line(at: float, stream: str, text: str) -> str:
    return f"{_timestamp(at):<30} {stream}: {text}"


def format_logs(
    lines: list[LogLine], limit_bytes: int, *, truncated: bool = False
) -> list[str]:
    """`<time> <stream>: <text>` lines from the start, cut with a notice past
    `limit_bytes` (or at the end when the lines were `truncated` already)."""
    formatted: list[str] = []
    used = 0
    for line in lines:
        text = format_log_line(line.at, line.stream, line.text or "")
        used += len(text.encode("utf-8"))
        if used > limit_bytes:
            truncated = True
            break
        formatted.append(text)
    if truncated:
        notice = TRUNCATED_LOGS_MESSAGE.format(limit=limit_bytes)
        formatted.append(format_log_line(time.time(), "stderr", notice))
    return formatted
