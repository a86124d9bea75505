"""Request parsing: every bad input is a 4xx naming its field."""

from __future__ import annotations

import json
from typing import Any

import pytest

from wisp.controller import validation
from wisp.controller.auth import parse_basic_auth
from wisp.core.entity import ActionLimits, Exec, WhiskAction
from wisp.core.errors import BadRequestError, UserInputError

PREVIOUS = WhiskAction(
    "guest",
    "hello",
    Exec("python:3", "old code"),
    parameters={"a": 1},
    limits=ActionLimits(timeout_ms=5_000, memory_mb=128),
    annotations={"exec": "python", "owner": "me"},
    version="0.0.3",
    rev="3-x",
)


def body(raw: Any) -> bytes:
    return json.dumps(raw).encode()


@pytest.mark.parametrize(
    "name", ["hello", "a", "hello-world", "my.action_2", "x@y", "with space-x"]
)
def test_valid_entity_names_pass(name: str) -> None:
    assert validation.entity_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "-lead", "trail ", "semi;colon", "a/b", "x" * 257]
)
def test_invalid_entity_names_are_refused(name: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        validation.entity_name(name)

    assert caught.value.field == "name"


@pytest.mark.parametrize(
    ("query", "name", "expected"),
    [
        ({}, "blocking", False),
        ({"blocking": "true"}, "blocking", True),
        ({"blocking": "False"}, "blocking", False),
        ({"blocking": "yes"}, "blocking", True),
        ({"blocking": "On"}, "blocking", True),
        ({"blocking": "1"}, "blocking", True),
        ({"blocking": "no"}, "blocking", False),
        ({"blocking": "off"}, "blocking", False),
        ({"blocking": "0"}, "blocking", False),
    ],
)
def test_query_bool_parses_flags(
    query: dict[str, str], name: str, expected: bool
) -> None:
    assert validation.query_bool(query, name) is expected


# DIVERGENCE(openwhisk): an empty value is the default there (`?blocking=` does not
# block); here it is refused like every other value that is not a boolean.
@pytest.mark.parametrize("text", ["", "maybe", "2", "truee"])
def test_query_bool_refuses_empty_and_other_text(text: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        validation.query_bool({"blocking": text}, "blocking")

    assert caught.value.field == "blocking"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, (0, 30)),
        ({"skip": "5", "limit": "10"}, (5, 10)),
        ({"limit": "0"}, (0, 200)),
    ],
)
def test_list_window(query: dict[str, str], expected: tuple[int, int]) -> None:
    assert validation.list_window(query) == expected


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"skip": "-1"}, "skip"),
        ({"limit": "201"}, "limit"),
        ({"limit": "ten"}, "limit"),
    ],
)
def test_list_window_refuses_out_of_range(query: dict[str, str], field: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        validation.list_window(query)

    assert caught.value.field == field


@pytest.mark.parametrize(
    ("query", "expected_s"),
    [({}, 60.0), ({"timeout": "250"}, 0.25), ({"timeout": "60000"}, 60.0)],
)
def test_blocking_timeout_defaults_to_the_maximum(
    query: dict[str, str], expected_s: float
) -> None:
    assert validation.blocking_timeout_s(query, 60.0) == expected_s


@pytest.mark.parametrize("timeout", ["0", "60001", "soon"])
def test_blocking_timeout_out_of_range_is_refused(timeout: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        validation.blocking_timeout_s({"timeout": timeout}, 60.0)

    assert caught.value.field == "timeout"


@pytest.mark.parametrize(
    ("raw", "expected"), [(b"", {}), (b"  ", {}), (b'{"a": 1}', {"a": 1})]
)
def test_invoke_payload_accepts_objects_and_nothing(raw: bytes, expected: Any) -> None:
    assert validation.invoke_payload(raw) == expected


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"text"', b"null", b"42", b"{not json"])
def test_invoke_payload_refuses_everything_else(raw: bytes) -> None:
    with pytest.raises(BadRequestError) as caught:
        validation.invoke_payload(raw)

    assert caught.value.status == 400 and caught.value.field == "body"


def test_merge_parameters_puts_the_payload_over_the_action() -> None:
    assert validation.merge_parameters(PREVIOUS, {"a": 2, "b": 3}) == {"a": 2, "b": 3}


def test_final_action_refuses_overriding_its_parameters() -> None:
    final = WhiskAction(
        "guest",
        "f",
        Exec("python:3", "c"),
        parameters={"a": 1},
        annotations={"final": True},
    )

    with pytest.raises(BadRequestError) as caught:
        validation.merge_parameters(final, {"a": 2})

    assert caught.value.field == "a"
    assert validation.merge_parameters(final, {"b": 2}) == {"a": 1, "b": 2}


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({}, "exec"),
        ({"exec": "code"}, "exec"),
        ({"exec": {"kind": "java:8", "code": "x"}}, "exec.kind"),
        ({"exec": {"kind": "python:3"}}, "exec.code"),
        ({"exec": {"kind": "python:3", "code": "x", "main": "1x"}}, "exec.main"),
        (
            {"exec": {"kind": "python:3", "code": "x"}, "limits": {"memory": 1}},
            "limits.memory",
        ),
        (
            {"exec": {"kind": "python:3", "code": "x"}, "limits": {"timeout": "1s"}},
            "limits.timeout",
        ),
        ({"exec": {"kind": "python:3", "code": "x"}, "limits": []}, "limits"),
        ({"exec": {"kind": "python:3", "code": "x"}, "parameters": 3}, "parameters"),
        (
            {"exec": {"kind": "python:3", "code": "x"}, "annotations": [1]},
            "annotations",
        ),
        ({"exec": {"kind": "python:3", "code": "x"}, "publish": "yes"}, "publish"),
    ],
)
def test_bad_action_documents_name_their_field(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(UserInputError) as caught:
        validation.action_document("guest", "hello", body(raw), None)

    assert caught.value.status == 400
    assert caught.value.field == field


def test_non_object_action_body_is_refused() -> None:
    with pytest.raises(BadRequestError):
        validation.action_document("guest", "hello", b"[]", None)


def test_new_action_document_takes_the_body() -> None:
    raw = {
        "exec": {
            "kind": "python:default",
            "code": "def main(a): return a",
            "main": "main",
        },
        "parameters": [{"key": "name", "value": "world"}],
        "limits": {"timeout": 1000},
        "annotations": [{"key": "web-export", "value": True}],
    }

    action = validation.action_document("guest", "hello", body(raw), None)

    assert action.exec == Exec("python:3", "def main(a): return a")
    assert action.parameters == {"name": "world"}
    assert action.limits == ActionLimits(timeout_ms=1000)
    assert action.annotations == {"web-export": True}


def test_update_keeps_absent_fields_and_merges_limits_and_annotations() -> None:
    raw = {"limits": {"memory": 256}, "annotations": {"extra": 1}}

    action = validation.action_document("guest", "hello", body(raw), PREVIOUS)

    assert action.exec == PREVIOUS.exec
    assert action.parameters == {"a": 1}
    assert action.limits == ActionLimits(timeout_ms=5_000, memory_mb=256)
    assert action.annotations == {"owner": "me", "extra": 1}
    assert (action.version, action.rev) == ("0.0.3", "3-x")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Basic dXVpZDprZXk=", ("uuid", "key")),
        ("basic   dXVpZDprZXk=", ("uuid", "key")),
        ("Basic dXVpZDprZXk6d2l0aDpjb2xvbnM=", ("uuid", "key:with:colons")),
        (None, None),
        ("", None),
        ("Bearer dXVpZDprZXk=", None),
        ("Basic !!!", None),
        ("Basic dXVpZA==", None),  # "uuid" without a key
    ],
)
def test_parse_basic_auth(header: str | None, expected: tuple[str, str] | None) -> None:
    assert parse_basic_auth(header) == expected


def test_activation_ids_must_be_32_hex() -> None:
    assert validation.activation_id("a" * 32) == "a" * 32

    with pytest.raises(BadRequestError) as caught:
        validation.activation_id("not-an-id")

    assert caught.value.field == "activationId"
