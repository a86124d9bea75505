"""Request parsing for the REST API: query flags, names, bodies and action documents.

Everything here raises a UserInputError naming the offending field; the error
middleware in `app.py` turns it into OpenWhisk's JSON error answer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from wisp.core.entity import (
    ActionLimits,
    Exec,
    WhiskAction,
    key_value_list,
)
from wisp.core.errors import BadRequestError

from .bodies import MALFORMED, parse_json

#: OpenWhisk's entity name rule: word characters, then also `@ . -` and spaces inside
_ENTITY_NAME = re.compile(r"\A(?:\w|\w[\w@ .-]*[\w@.-])\Z")
_ENTITY_NAME_MAX = 256
_ACTIVATION_ID = re.compile(r"\A[0-9a-f]{32}\Z")

#: largest action document accepted (OpenWhisk's exec size limit)
ACTION_MAX_BYTES = 48 * 1024 * 1024
LIST_LIMIT_DEFAULT = 30
LIST_LIMIT_MAX = 200

NOT_FOUND = "The requested resource does not exist."
FINAL_PARAMETERS = (
    "Request defines parameters that are not allowed (e.g., reserved properties or "
    "attempts to overwrite immutable parameters)."
)


# --- names -----------------------------------------------------------------------------


def entity_name(text: str, what: str = "name") -> str:
    if len(text) > _ENTITY_NAME_MAX or not _ENTITY_NAME.match(text):
        raise BadRequestError(
            f"The {what} '{text}' contains illegal characters or is too long.",
            field=what,
        )
    return text


def activation_id(text: str) -> str:
    if not _ACTIVATION_ID.match(text):
        raise BadRequestError(
            f"The activation id '{text}' is not valid (32 lowercase hex characters).",
            field="activationId",
        )
    return text


# --- query parameters ------------------------------------------------------------------


_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def query_bool(query: Mapping[str, str], name: str, default: bool = False) -> bool:
    """An absent flag is `default`; the words OpenWhisk (Akka) accepts set it."""
    raw = query.get(name)
    if raw is None:
        return default
    text = raw.lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    # DIVERGENCE(openwhisk): an empty value (`?blocking=` or `?blocking`) falls back
    # to the default there, so a caller who asked to block silently gets a 202; here
    # it is refused like any other value that is not a boolean.
    raise BadRequestError(
        f"The query parameter '{name}' must be true or false.", field=name
    )


def query_int(
    query: Mapping[str, str], name: str, default: int | None, low: int, high: int
) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequestError(
            f"The query parameter '{name}' must be an integer.", field=name
        ) from None
    if not low <= value <= high:
        raise BadRequestError(
            f"The query parameter '{name}' must be within [{low}, {high}].", field=name
        )
    return value


def list_window(query: Mapping[str, str]) -> tuple[int, int]:
    """(skip, limit) of a list request; `limit=0` means the largest page."""
    skip = query_int(query, "skip", 0, 0, 2**31 - 1) or 0
    limit = query_int(query, "limit", LIST_LIMIT_DEFAULT, 0, LIST_LIMIT_MAX)
    return skip, (limit or LIST_LIMIT_MAX)


def blocking_timeout_s(query: Mapping[str, str], max_wait_s: float) -> float:
    """The `timeout` (ms) a blocking invoke waits; 1 ms .. the configured maximum."""
    max_ms = max(1, int(max_wait_s * 1000))
    timeout_ms = query_int(query, "timeout", max_ms, 1, max_ms)
    assert timeout_ms is not None
    return timeout_ms / 1000.0


# --- bodies ----------------------------------------------------------------------------


def invoke_payload(body: bytes) -> dict[str, Any]:
    """An invoke body: absent → {}; else it must be a JSON object."""
    if not body.strip():
        return {}
    payload = parse_json(body)
    if not isinstance(payload, dict):
        raise BadRequestError(
            f"{MALFORMED}: the invoke body must be a JSON object of parameters",
            field="body",
        )
    return payload


def merge_parameters(action: WhiskAction, payload: dict[str, Any]) -> dict[str, Any]:
    """The action's parameters with the payload over them; a `final` action refuses
    payloads that override its parameters (as OpenWhisk)."""
    if action.annotations.get("final") is True:
        overridden = sorted(k for k in payload if k in action.parameters)
        if overridden:
            raise BadRequestError(FINAL_PARAMETERS, field=overridden[0])
    return {**action.parameters, **payload}


def action_document(
    namespace: str, name: str, body: bytes, previous: WhiskAction | None
) -> WhiskAction:
    """The action to store from a PUT body; on update, absent fields keep their value,
    `limits` merge field by field and `annotations` merge over the old ones."""
    raw = parse_json(body) if body.strip() else {}
    if not isinstance(raw, dict):
        raise BadRequestError(
            f"{MALFORMED}: the body must be a JSON object", field="body"
        )

    # exec: required on create, kept on update when absent
    if "exec" in raw:
        exec_ = Exec.from_json(raw["exec"])
    elif previous is not None:
        exec_ = previous.exec
    else:
        raise BadRequestError(
            "exec undefined: an action needs exec.kind and exec.code", field="exec"
        )

    # limits: field-wise over the previous ones
    limits_raw = raw.get("limits")
    if limits_raw is not None and not isinstance(limits_raw, dict):
        raise BadRequestError("limits must be a JSON object", field="limits")
    if previous is not None:
        merged = {**previous.limits.to_json(), **(limits_raw or {})}
        limits = ActionLimits.from_json(merged)
    else:
        limits = ActionLimits.from_json(limits_raw)

    # parameters replace, annotations merge
    if "parameters" in raw:
        parameters = key_value_list(raw["parameters"], "parameters")
    else:
        parameters = dict(previous.parameters) if previous is not None else {}
    annotations = dict(previous.annotations) if previous is not None else {}
    # the `exec` annotation follows the kind; to_json derives it again
    annotations.pop("exec", None)
    annotations.update(key_value_list(raw.get("annotations"), "annotations"))

    publish = raw.get("publish", previous.publish if previous is not None else False)
    if not isinstance(publish, bool):
        raise BadRequestError("publish must be true or false", field="publish")

    base = previous or WhiskAction(namespace=namespace, name=name, exec=exec_)
    return replace(
        base,
        exec=exec_,
        parameters=parameters,
        limits=limits,
        annotations=annotations,
        publish=publish,
    )
