"""Request bodies for the REST API: read within a size limit, undo a gzip or deflate
`Content-Encoding` (the server leaves bodies encoded), and parse strict JSON.

Strict means what the JSON standard allows and nothing Python adds: no NaN/Infinity,
no number that overflows a double, and nesting bounded well below any recursion limit
of the parsers and encoders a payload passes through.
"""

from __future__ import annotations

import json
import math
import zlib
from typing import Any

from aiohttp import web

from wisp.core.errors import BadRequestError, PayloadTooLargeError, UserInputError

MALFORMED = "The request content was malformed"
#: deepest nesting of arrays and objects a body may have (as serde_json's default)
MAX_JSON_DEPTH = 128
TOO_DEEP = f"{MALFORMED}: it is nested too deeply (more than {MAX_JSON_DEPTH} levels)"

_GZIP = ("gzip", "x-gzip")
_DEFLATE = "deflate"
_IDENTITY = "identity"
#: an encoded body may be a little larger on the wire than the limit it decodes within
_ENCODED_SLACK = 1.01


class UnsupportedEncodingError(UserInputError):
    status = 415


# --- reading ---------------------------------------------------------------------------


async def read_body(request: web.Request, limit_bytes: int) -> bytes:
    """The decoded body, refused with 413 above `limit_bytes` (before reading when
    the client announced a larger length), 415 for an unknown content coding and 400
    when the coding does not decode."""
    codings = content_codings(request.headers.get("Content-Encoding", ""))
    wire_limit = limit_bytes if not codings else int(limit_bytes * _ENCODED_SLACK) + 64
    announced = request.content_length
    if announced is not None and announced > wire_limit:
        raise PayloadTooLargeError(announced, limit_bytes)

    raw = bytearray()
    try:
        async for chunk in request.content.iter_any():
            raw += chunk
            if len(raw) > wire_limit:
                raise PayloadTooLargeError(None, limit_bytes)
    except web.RequestPayloadError as exc:
        raise BadRequestError(
            f"{MALFORMED}: the body could not be read ({exc.__class__.__name__})",
            field="body",
        ) from None

    body = bytes(raw)
    for coding in reversed(codings):
        body = inflate(body, coding, limit_bytes)
    if len(body) > limit_bytes:
        raise PayloadTooLargeError(len(body), limit_bytes)
    return body


def content_codings(header: str) -> list[str]:
    """The codings applied to the body, in the order they were applied."""
    codings = [c.strip().lower() for c in header.split(",")]
    codings = [c for c in codings if c and c != _IDENTITY]
    for coding in codings:
        if coding not in _GZIP and coding != _DEFLATE:
            raise UnsupportedEncodingError(
                f"The content encoding '{coding}' is not supported; use gzip, "
                "deflate or identity.",
                field="Content-Encoding",
            )
    return codings


def inflate(data: bytes, coding: str, limit_bytes: int) -> bytes:
    """Undo one gzip (possibly several members) or deflate (zlib) coding, producing
    at most `limit_bytes` (413 beyond: a small body may inflate enormously)."""
    if not data:
        return data
    wbits = 16 + zlib.MAX_WBITS if coding in _GZIP else zlib.MAX_WBITS
    out = bytearray()
    while data:
        decoder = zlib.decompressobj(wbits)
        try:
            out += decoder.decompress(data, limit_bytes + 1 - len(out))
        except zlib.error:
            raise BadRequestError(
                f"{MALFORMED}: the body is not valid {coding} data "
                "(see its Content-Encoding)",
                field="body",
            ) from None
        if len(out) > limit_bytes:
            raise PayloadTooLargeError(None, limit_bytes)
        if not decoder.eof:
            raise BadRequestError(
                f"{MALFORMED}: the {coding} data of the body is truncated",
                field="body",
            )
        data = decoder.unused_data
        if data and coding not in _GZIP:
            raise BadRequestError(
                f"{MALFORMED}: the body has data after its {coding} stream",
                field="body",
            )
    return bytes(out)


# --- parsing ---------------------------------------------------------------------------


class _NotJson(ValueError):
    """Text Python's json accepts but the JSON standard does not."""


def _refuse_constant(name: str) -> Any:
    raise _NotJson(
        f"{name} is not a JSON value (NaN and Infinity are not JSON numbers)"
    )


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotJson(f"the number {text[:40]} is out of range")
    return value


def parse_json(body: bytes) -> Any:
    """Strict JSON from `body`; every refusal is a 400 naming what is wrong."""
    try:
        value = json.loads(
            body, parse_constant=_refuse_constant, parse_float=_finite_float
        )
    except RecursionError:
        raise BadRequestError(TOO_DEEP, field="body") from None
    except ValueError as exc:  # also JSONDecodeError, UnicodeDecodeError, _NotJson
        raise BadRequestError(f"{MALFORMED}: {exc}", field="body") from None
    if _nested_deeper_than(body, value, MAX_JSON_DEPTH):
        raise BadRequestError(TOO_DEEP, field="body")
    return value


def _nested_deeper_than(body: bytes, value: Any, limit: int) -> bool:
    # nesting cannot exceed the number of brackets: most bodies need no walk
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        if depth > limit:
            return True
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


# --- answering ---------------------------------------------------------------------------


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def dumps(value: Any) -> str:
    """Always standard JSON: a non-finite float (from an action's result, say) becomes
    null, as JavaScript's JSON.stringify does."""
    try:
        return json.dumps(value, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value), allow_nan=False)


def json_response(
    body: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(body, status=status, headers=headers, dumps=dumps)
