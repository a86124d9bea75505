"""Request bodies: content codings, strict JSON, and answers that are always JSON."""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any

import pytest

from wisp.controller.bodies import (
    MAX_JSON_DEPTH,
    UnsupportedEncodingError,
    content_codings,
    dumps,
    inflate,
    parse_json,
)
from wisp.core.errors import BadRequestError, PayloadTooLargeError


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# --- strict JSON -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            b'{"a": [1, 2.5, -3e10, true, null, "NaN"]}',
            {"a": [1, 2.5, -3e10, True, None, "NaN"]},
        ),
        (b"1.7976931348623157e308", 1.7976931348623157e308),
        (b"1e-400", 0.0),
        (b'"Infinity"', "Infinity"),
        (nested(MAX_JSON_DEPTH), json.loads(nested(MAX_JSON_DEPTH))),
        (b'"' + b"[" * 500 + b'"', "[" * 500),
    ],
)
def test_standard_json_parses(text: bytes, expected: Any) -> None:
    assert parse_json(text) == expected


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (b"NaN", "NaN is not a JSON value"),
        (b'{"a": {"b": [Infinity]}}', "Infinity is not a JSON value"),
        (b"[-Infinity]", "-Infinity is not a JSON value"),
        (b"1e400", "the number 1e400 is out of range"),
        (b"[-1.5e309]", "the number -1.5e309 is out of range"),
        (b"1" * 5000, "digits"),
        (nested(MAX_JSON_DEPTH + 1), "nested too deeply"),
        (b'{"a": ' * 200 + b"1" + b"}" * 200, "nested too deeply"),
        (nested(100_000), "nested too deeply"),
        (b"{broken", "Expecting property name"),
        (b"\xff\xfe\x00", "malformed"),
    ],
)
def test_text_that_is_not_standard_json_is_a_bad_request(
    text: bytes, needle: str
) -> None:
    with pytest.raises(BadRequestError) as caught:
        parse_json(text)

    assert caught.value.message.startswith("The request content was malformed")
    assert needle in caught.value.message
    assert caught.value.field == "body"


def test_dumps_writes_non_finite_numbers_as_null() -> None:
    value = {"a": float("nan"), "b": [float("-inf"), 2.0], "c": "NaN"}

    text = dumps(value)

    assert json.loads(text) == {"a": None, "b": [None, 2.0], "c": "NaN"}
    assert "NaN," not in text and "Infinity" not in text


# --- content codings ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("", []),
        ("identity", []),
        ("GZIP", ["gzip"]),
        ("deflate, gzip", ["deflate", "gzip"]),
        ("x-gzip", ["x-gzip"]),
    ],
)
def test_content_codings_in_the_order_applied(header: str, expected: list[str]) -> None:
    assert content_codings(header) == expected


@pytest.mark.parametrize("header", ["br", "gzip, zstd", "compress"])
def test_unknown_content_coding_is_unsupported(header: str) -> None:
    with pytest.raises(UnsupportedEncodingError) as caught:
        content_codings(header)

    assert caught.value.status == 415
    assert "is not supported" in caught.value.message


def test_gzip_with_several_members_inflates_whole() -> None:
    data = gzip.compress(b'{"a": ') + gzip.compress(b"1}")

    assert inflate(data, "gzip", 100) == b'{"a": 1}'


def test_deflate_inflates_zlib_data() -> None:
    assert inflate(zlib.compress(b"[1]"), "deflate", 100) == b"[1]"


@pytest.mark.parametrize(
    ("data", "coding", "needle"),
    [
        (b"plain text", "gzip", "not valid gzip data"),
        (gzip.compress(b"[1, 2, 3]")[:-4], "gzip", "truncated"),
        (gzip.compress(b"[1]") + b"junk", "gzip", "not valid gzip data"),
        (zlib.compress(b"[1]") + b"junk", "deflate", "data after its deflate stream"),
    ],
)
def test_data_that_does_not_inflate_is_a_bad_request(
    data: bytes, coding: str, needle: str
) -> None:
    with pytest.raises(BadRequestError) as caught:
        inflate(data, coding, 1000)

    assert needle in caught.value.message


def test_inflating_past_the_limit_stops_at_the_limit() -> None:
    bomb = gzip.compress(b"0" * 10_000_000)

    with pytest.raises(PayloadTooLargeError) as caught:
        inflate(bomb, "gzip", 1000)

    assert caught.value.status == 413
    assert caught.value.message == (
        "The request content is too large: it exceeds the limit of 1000 bytes."
    )
