"""LogBuffer and format_logs: one activation per take, the start kept, memory bounded."""

from __future__ import annotations

from wisp.infra.runtime.container import LOG_SENTINEL
from wisp.infra.runtime.logs import (
    LINE_OVERHEAD_BYTES,
    LogBuffer,
    format_logs,
)

NOTICE = "Logs were truncated because the total bytes size exceeds the limit of"


def texts(buffer: LogBuffer) -> list[str | None]:
    return [line.text for line in buffer.take().lines]


def end_activation(buffer: LogBuffer, at: float = 0.0) -> None:
    buffer.append("stdout", LOG_SENTINEL, at)
    buffer.append("stderr", LOG_SENTINEL, at)


def test_log_buffer_takes_one_activation_per_call_in_arrival_order() -> None:
    buffer = LogBuffer()
    buffer.append("stdout", "first out", 1.0)
    buffer.append("stderr", "first err", 1.1)
    end_activation(buffer, 1.2)
    buffer.append("stdout", "second out", 2.0)

    first = buffer.take()
    second_complete = buffer.complete()
    second = buffer.take()

    assert [(line.stream, line.text) for line in first.lines] == [
        ("stdout", "first out"),
        ("stderr", "first err"),
    ]
    assert first.dropped == 0
    assert not second_complete
    assert [line.text for line in second.lines] == ["second out"]


def test_log_buffer_splits_a_sentinel_glued_to_unterminated_output() -> None:
    buffer = LogBuffer()
    buffer.append("stdout", "no newline" + LOG_SENTINEL, 1.0)
    buffer.close("stderr")

    complete = buffer.complete()
    lines = texts(buffer)

    assert complete
    assert lines == ["no newline"]


def test_log_buffer_keeps_the_start_of_an_activation_and_counts_the_rest() -> None:
    line_cost = len("line 0") + LINE_OVERHEAD_BYTES
    buffer = LogBuffer(activation_limit_bytes=3 * line_cost)
    for index in range(10):
        buffer.append("stdout", f"line {index}", float(index))
    end_activation(buffer)

    taken = buffer.take()

    assert [line.text for line in taken.lines] == ["line 0", "line 1", "line 2"]
    assert taken.dropped == 7


def test_log_buffer_stays_bounded_while_an_activation_prints() -> None:
    limit = 10_000
    buffer = LogBuffer(activation_limit_bytes=limit)

    sizes = []
    for index in range(5_000):
        buffer.append("stdout" if index % 2 else "stderr", "x" * 100, float(index))
        sizes.append(buffer.size_bytes)

    assert max(sizes) <= limit


def test_log_buffer_next_activation_starts_clean_after_a_truncated_one() -> None:
    buffer = LogBuffer(activation_limit_bytes=200)
    for index in range(100):
        buffer.append("stdout", f"first {index}", 0.0)
        buffer.append("stderr", f"first err {index}", 0.0)
    end_activation(buffer)
    buffer.append("stdout", "second", 1.0)
    end_activation(buffer, 1.0)

    first = buffer.take()
    second = buffer.take()

    assert first.lines[0].text == "first 0" and first.dropped > 0
    assert [line.text for line in second.lines] == ["second"]
    assert second.dropped == 0


def test_log_buffer_drops_uncollected_activations_oldest_first() -> None:
    buffer = LogBuffer(activation_limit_bytes=200)
    for index in range(50):
        buffer.append("stdout", f"activation {index}", float(index))
        end_activation(buffer, float(index))

    remaining = []
    while buffer.size_bytes:
        remaining += texts(buffer)

    assert buffer.size_bytes == 0
    assert remaining[-1] == "activation 49"
    assert "activation 0" not in remaining
    assert len(remaining) < 10


def test_format_logs_pads_time_and_truncates_past_the_limit() -> None:
    buffer = LogBuffer()
    buffer.append("stdout", "a" * 10, 0.0)
    buffer.append("stderr", "b" * 10, 0.5)

    lines = format_logs(buffer.take().lines, limit_bytes=60)

    assert lines[0] == "1970-01-01T00:00:00.000000Z    stdout: aaaaaaaaaa"
    assert lines[1].endswith(f"stderr: {NOTICE} 60 bytes.")
    assert len(lines) == 2


def test_format_logs_keeps_the_first_lines_up_to_the_limit() -> None:
    buffer = LogBuffer()
    for index in range(1000):
        buffer.append("stdout", f"line {index}", 0.0)

    lines = format_logs(buffer.take().lines, limit_bytes=500)

    # 45 bytes a line up to "line 9", then 46: eleven lines fit in 500 bytes
    assert [line.split(": ", 1)[1] for line in lines[:-1]] == [
        f"line {index}" for index in range(11)
    ]
    assert NOTICE in lines[-1]


def test_format_logs_adds_the_notice_when_the_buffer_dropped_lines() -> None:
    buffer = LogBuffer()
    buffer.append("stdout", "kept", 0.0)

    lines = format_logs(buffer.take().lines, limit_bytes=10_000, truncated=True)

    assert lines[0].endswith("stdout: kept")
    assert lines[1].endswith(f"stderr: {NOTICE} 10000 bytes.")
