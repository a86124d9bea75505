"""Pure parts of the process backend: response mapping, launch plans, names."""

from __future__ import annotations

import json
import pathlib
import resource

import pytest

from wisp.config.model import RuntimeConfig
from wisp.core.errors import ContainerStartupError
from wisp.infra.runtime.container import RunOutcome
from wisp.infra.runtime.process import container_name
from wisp.infra.runtime.responses import (
    INVALID_RESPONSE_MESSAGE,
    MAX_RESULT_DEPTH,
    MEMORY_MESSAGE,
    TOO_DEEP_MESSAGE,
    interpret_init_response,
    interpret_run_response,
    nested_deeper_than,
)
from wisp.infra.runtime.sandbox import (
    ResourceLimits,
    SandboxMode,
    plan_launch,
    resolve_sandbox,
)

LIMIT = 1000


@pytest.mark.parametrize(
    ("status", "body", "outcome", "result"),
    [
        (200, b'{"a": 1}', RunOutcome.OK, {"a": 1}),
        (200, b"[1, 2]", RunOutcome.OK, [1, 2]),
        (200, b'{"error": "nope"}', RunOutcome.APPLICATION_ERROR, {"error": "nope"}),
        (502, b'{"error": "boom"}', RunOutcome.DEVELOPER_ERROR, {"error": "boom"}),
        (
            502,
            b'{"error": "An error has occurred: MemoryError: "}',
            RunOutcome.DEVELOPER_ERROR,
            {"error": MEMORY_MESSAGE},
        ),
        (
            200,
            b"42",
            RunOutcome.DEVELOPER_ERROR,
            {"error": INVALID_RESPONSE_MESSAGE.format(body="42")},
        ),
        (
            200,
            b"not json",
            RunOutcome.DEVELOPER_ERROR,
            {"error": INVALID_RESPONSE_MESSAGE.format(body="not json")},
        ),
        (
            500,
            b'{"no": "error field"}',
            RunOutcome.DEVELOPER_ERROR,
            {"error": INVALID_RESPONSE_MESSAGE.format(body='{"no": "error field"}')},
        ),
    ],
)
def test_run_response_maps_to_outcome(
    status: int, body: bytes, outcome: RunOutcome, result: object
) -> None:
    assert interpret_run_response(status, body, len(body), LIMIT) == (outcome, result)


def test_run_response_503_asks_for_reschedule() -> None:
    outcome, _ = interpret_run_response(503, b'{"error": "bye"}', 16, LIMIT)

    assert outcome is RunOutcome.UNAVAILABLE


def test_oversized_run_response_is_application_error_with_truncated_text() -> None:
    body = b'{"big": "' + b"x" * 20

    outcome, result = interpret_run_response(200, body, 5000, 20)

    assert outcome is RunOutcome.APPLICATION_ERROR
    assert result["error"] == (
        "The action produced a response that exceeded the allowed length: "
        '5000 > 20 bytes. The truncated response was: {"big": "xxxxxxxxxxx'
    )


def nested(depth: int) -> bytes:
    return b'{"a": ' * (depth - 1) + b"[1]" + b"}" * (depth - 1)


@pytest.mark.parametrize(
    "body",
    [
        b'{"x": NaN}',
        b'{"x": Infinity}',
        b"[-Infinity]",
        b'{"x": 1e999}',
        b'{"x": -1' + b"0" * 400 + b".5}",
    ],
)
def test_run_response_with_nan_or_infinity_is_not_json(body: bytes) -> None:
    outcome, result = interpret_run_response(200, body, len(body), LIMIT)

    assert outcome is RunOutcome.DEVELOPER_ERROR
    assert result == {"error": INVALID_RESPONSE_MESSAGE.format(body=body.decode())}


def test_run_response_keeps_large_but_finite_numbers() -> None:
    body = b'{"big": 1e308, "int": 1' + b"0" * 400 + b"}"

    outcome, result = interpret_run_response(200, body, len(body), LIMIT)

    assert outcome is RunOutcome.OK
    assert result["big"] == 1e308
    assert json.loads(json.dumps(result, allow_nan=False)) == result


@pytest.mark.parametrize("depth", [MAX_RESULT_DEPTH + 1, 999, 3000, 100_000])
def test_run_response_nested_too_deeply_is_developer_error(depth: int) -> None:
    body = nested(depth)

    outcome, result = interpret_run_response(200, body, len(body), len(body))

    assert outcome is RunOutcome.DEVELOPER_ERROR
    assert result == {"error": TOO_DEEP_MESSAGE.format(depth=MAX_RESULT_DEPTH)}
    assert "nested too deeply" in result["error"]


def test_run_response_at_the_depth_limit_is_kept_and_can_be_stored() -> None:
    body = nested(MAX_RESULT_DEPTH)

    outcome, result = interpret_run_response(200, body, len(body), len(body))

    assert outcome is RunOutcome.OK
    assert json.loads(json.dumps(result)) == result


def test_init_response_nested_too_deeply_fails_without_an_exception() -> None:
    body = b'{"error": ' + nested(3000) + b"}"

    outcome, result = interpret_init_response(502, body, len(body), len(body))

    assert outcome is RunOutcome.DEVELOPER_ERROR
    assert "nested too deeply" in result["error"]


@pytest.mark.parametrize(
    ("value", "deeper"),
    [
        ([[[]]], True),
        ([[], [], {}, []], False),
        ({"a": [{"b": []}]}, True),
        (["[[[[[[", "]]]]", "\\"], False),
        ([['\\"[[[[[[[\\']], False),
        ({"k": "\\", "v": [[{}]]}, True),
    ],
)
def test_nesting_depth_counts_brackets_outside_strings_only(
    value: object, deeper: bool
) -> None:
    body = json.dumps(value).encode()

    assert nested_deeper_than(body, 2) is deeper


@pytest.mark.parametrize(
    ("status", "body", "outcome", "result"),
    [
        (200, b'{"ok": true}', RunOutcome.OK, {"ok": True}),
        (200, b"OK", RunOutcome.OK, {}),
        (
            502,
            b'{"error": "no main"}',
            RunOutcome.DEVELOPER_ERROR,
            {"error": "no main"},
        ),
        (
            500,
            b"crash",
            RunOutcome.DEVELOPER_ERROR,
            {"error": "The action failed during initialization: crash"},
        ),
        (503, b"{}", RunOutcome.UNAVAILABLE, None),
    ],
)
def test_init_response_maps_to_outcome(
    status: int, body: bytes, outcome: RunOutcome, result: object
) -> None:
    got_outcome, got_result = interpret_init_response(status, body, len(body), LIMIT)

    assert got_outcome is outcome
    if result is not None:
        assert got_result == result


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("guest/hello", "wsk0_7_guest_hello"),
        ("ns/pkg/act-ion.v2", "wsk0_7_ns_pkg_act_ion_v2"),
        ("///", "wsk0_7"),
    ],
)
def test_container_name_is_readable(name: str, expected: str) -> None:
    assert container_name("wsk0", 7, name) == expected


def test_plan_launch_rejects_unknown_kind() -> None:
    with pytest.raises(ContainerStartupError, match="Unknown runtime kind 'java:8'"):
        plan_launch("java:8", 256, RuntimeConfig(), port_fd=3)


def test_plan_launch_bounds_node_heap_and_data_by_memory() -> None:
    plan = plan_launch("nodejs:20", 256, RuntimeConfig(max_open_files=77), port_fd=3)

    assert "--max-old-space-size=256" in plan.argv
    assert plan.limits.data_bytes == (256 + 128) * 1024 * 1024
    assert plan.limits.open_files == 77


def test_plan_launch_missing_interpreter_fails_startup() -> None:
    config = RuntimeConfig(python_executable="/nonexistent/python")

    with pytest.raises(ContainerStartupError, match="not found"):
        plan_launch("python:3", 256, config, port_fd=3)


def test_resource_limits_never_exceed_the_hard_limits_we_have() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limits = ResourceLimits(None, None, open_files=10**9, processes=5)

    pairs = dict(limits.rlimits())

    assert pairs[resource.RLIMIT_NOFILE] <= hard
    assert pairs[resource.RLIMIT_CORE] == 0
    assert resource.RLIMIT_AS not in pairs


def test_required_bwrap_that_does_not_work_fails_startup() -> None:
    with pytest.raises(ContainerStartupError, match="bwrap"):
        resolve_sandbox("bwrap", bwrap_path="/nonexistent/bwrap")


def test_auto_sandbox_falls_back_to_none_without_bwrap() -> None:
    sandbox = resolve_sandbox("auto", bwrap_path="/nonexistent/bwrap")

    assert sandbox.mode is SandboxMode.NONE
    assert sandbox.command(["x"], work_dir=pathlib.Path("/w"), read_only=[]) == ["x"]
    assert sandbox.runtimes_dir(pathlib.Path("/src/rt")) == pathlib.Path("/src/rt")
