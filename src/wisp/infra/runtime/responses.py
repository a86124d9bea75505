"""What an action runtime answered, as the invoker sees it: pure mapping of `/init`
and `/run` answers to an outcome and a storable JSON result (used by `process`).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from wisp.infra.runtime.container import RunOutcome

TIMEOUT_MESSAGE = "The action exceeded its time limits of {ms} milliseconds."
INIT_TIMEOUT_MESSAGE = (
    "The action exceeded its time limits of {ms} milliseconds during initialization."
)
EXITED_MESSAGE = "The action did not produce a valid response and exited unexpectedly."
INIT_EXITED_MESSAGE = "The action did not initialize and exited unexpectedly."
MEMORY_MESSAGE = "The action exhausted its memory and was aborted."
INVALID_RESPONSE_MESSAGE = (
    "The action did not produce a valid JSON or JSON Array response: {body}"
)
TOO_DEEP_MESSAGE = (
    "The action produced a response that is nested too deeply: more than {depth} "
    "levels of objects and arrays."
)
INIT_FAILED_MESSAGE = "The action failed during initialization: {body}"
TRUNCATED_RESPONSE_MESSAGE = (
    "The action produced a response that exceeded the allowed length: "
    "{size} > {limit} bytes. The truncated response was: {text}"
)
UNAVAILABLE_MESSAGE = "The action container is not available: {reason}"

# DIVERGENCE(openwhisk): results nested deeper than MAX_RESULT_DEPTH are refused as a
# developer error. Python's json recursion limit (~1000 levels, less on a deep stack)
# would otherwise fail later, when the record is stored or sent.
MAX_RESULT_DEPTH = 500

#: output that shows a runtime ran out of memory (Python, V8, Node, libc)
_MEMORY_MARKERS = (
    "MemoryError",
    "JavaScript heap out of memory",
    "Fatal process out of memory",
    "Array buffer allocation failed",
    "std::bad_alloc",
)


def shows_memory_exhaustion(text: str) -> bool:
    return any(marker in text for marker in _MEMORY_MARKERS)


# --- strict JSON ----------------------------------------------------------------


class _NotJson:
    """The body is not JSON as RFC 8259 has it (NaN and Infinity included)."""


class _TooDeep:
    """The body is JSON nested deeper than MAX_RESULT_DEPTH."""


NOT_JSON = _NotJson()
TOO_DEEP = _TooDeep()

#: a JSON string literal, escapes included
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
#: every byte but the brackets, and `{}` folded onto `[]` (proper nesting is kept)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_FOLD_BRACKETS = bytes.maketrans(b"{}", b"[]")


def _finite_float(text: str) -> float:
    value = float(text)
    # A literal such as 1e999 parses as infinity, which has no JSON form.
    if math.isinf(value):
        raise ValueError(f"number out of range: {text[:40]}")
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def nested_deeper_than(body: bytes, depth: int) -> bool:
    """Whether the valid JSON text `body` nests objects and arrays over `depth`."""
    # Fewer brackets than the depth: nothing to look at (the common case).
    if body.count(b"[") + body.count(b"{") <= depth:
        return False
    brackets = _STRING.sub(b"", body).translate(_FOLD_BRACKETS, _NOT_BRACKETS)

    # Each pass removes the innermost level of every bracket pair.
    for _ in range(depth):
        brackets = brackets.replace(b"[]", b"")
        if not brackets:
            return False
    return True


def parse_json(body: bytes) -> Any:
    """The JSON value of `body`, or NOT_JSON, or TOO_DEEP. Stricter than
    `json.loads`: NaN, Infinity and out-of-range numbers are not JSON."""
    try:
        value = json.loads(
            body, parse_float=_finite_float, parse_constant=_refuse_constant
        )
    except RecursionError:
        return TOO_DEEP
    except ValueError:
        return NOT_JSON
    if nested_deeper_than(body, MAX_RESULT_DEPTH):
        return TOO_DEEP
    return value


# --- answers --------------------------------------------------------------------


def _body_text(body: bytes) -> str:
    return body.decode("utf-8", errors="replace")


def _developer_error(error: Any) -> tuple[RunOutcome, Any]:
    if isinstance(error, str) and shows_memory_exhaustion(error):
        error = MEMORY_MESSAGE
    return RunOutcome.DEVELOPER_ERROR, {"error": error}


def _truncated(body: bytes, size: int, limit: int) -> str:
    return TRUNCATED_RESPONSE_MESSAGE.format(
        size=size, limit=limit, text=_body_text(body[:limit])
    )


def _unavailable() -> tuple[RunOutcome, Any]:
    reason = "the runtime is shutting down"
    return RunOutcome.UNAVAILABLE, {"error": UNAVAILABLE_MESSAGE.format(reason=reason)}


def _too_deep() -> tuple[RunOutcome, Any]:
    message = TOO_DEEP_MESSAGE.format(depth=MAX_RESULT_DEPTH)
    return RunOutcome.DEVELOPER_ERROR, {"error": message}


def interpret_run_response(
    status: int, body: bytes, size: int, limit: int
) -> tuple[RunOutcome, Any]:
    """Map an /run answer to an outcome and result. `body` holds at most `limit`
    bytes of the answer, `size` is its full length."""
    if status == 503:
        return _unavailable()
    if size > limit:
        return RunOutcome.APPLICATION_ERROR, {"error": _truncated(body, size, limit)}

    parsed = parse_json(body)
    if parsed is TOO_DEEP:
        return _too_deep()
    if status == 200 and isinstance(parsed, dict):
        if "error" in parsed:
            return RunOutcome.APPLICATION_ERROR, parsed
        return RunOutcome.OK, parsed
    if status == 200 and isinstance(parsed, list):
        return RunOutcome.OK, parsed
    if status != 200 and isinstance(parsed, dict) and "error" in parsed:
        return _developer_error(parsed["error"])
    return RunOutcome.DEVELOPER_ERROR, {
        "error": INVALID_RESPONSE_MESSAGE.format(body=_body_text(body))
    }


def interpret_init_response(
    status: int, body: bytes, size: int, limit: int
) -> tuple[RunOutcome, Any]:
    """Map an /init answer: 200 is success whatever the body, anything else fails."""
    parsed = parse_json(body)
    if status == 200:
        return RunOutcome.OK, parsed if isinstance(parsed, dict) else {}
    if status == 503:
        return _unavailable()
    if size > limit:
        return RunOutcome.DEVELOPER_ERROR, {"error": _truncated(body, size, limit)}
    if parsed is TOO_DEEP:
        return _too_deep()
    if isinstance(parsed, dict) and "error" in parsed:
        return _developer_error(parsed["error"])
    return RunOutcome.DEVELOPER_ERROR, {
        "error": INIT_FAILED_MESSAGE.format(body=_body_text(body))
    }
