"""Pure rules of the container proxy: transitions, fates, bodies and records."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.unit.invoker.fakes import USER, make_action, make_message
from wisp.core.activation import ResponseStatus
from wisp.core.ids import TransactionId
from wisp.infra.runtime.container import RunOutcome, RunResult
from wisp.invoker.proxy.state import (
    ABNORMAL_RUN,
    ALLOWED_TRANSITIONS,
    ContainerFate,
    ProxyState,
    build_activation,
    can_transition,
    container_name,
    context_fields,
    env_text,
    fate_of,
    init_payload,
    init_succeeded,
    response_of,
    run_body,
    split_content,
)

S = ProxyState


@pytest.mark.parametrize(
    ("current", "to", "allowed"),
    [
        (S.UNINITIALIZED, S.CREATING_CONTAINER, True),
        (S.CREATING_CONTAINER, S.CREATING_CLIENT, True),
        (S.CREATING_CLIENT, S.CLIENT_CREATED, True),
        (S.CLIENT_CREATED, S.RUNNING, True),
        (S.CLIENT_CREATED, S.PAUSING, False),
        (S.RUNNING, S.PAUSING, True),
        (S.PAUSING, S.PAUSED, True),
        (S.PAUSED, S.RUNNING, True),
        (S.PAUSED, S.CLIENT_CREATED, False),
        (S.RUNNING, S.RESCHEDULING, True),
        (S.RESCHEDULING, S.RUNNING, False),
        (S.RESCHEDULING, S.REMOVING, True),
        (S.REMOVING, S.REMOVED, True),
        (S.REMOVED, S.REMOVING, False),
        (S.UNINITIALIZED, S.RUNNING, False),
    ],
)
def test_transition_table_allows_only_the_lifecycle_edges(
    current: ProxyState, to: ProxyState, allowed: bool
) -> None:
    assert can_transition(current, to) is allowed


def test_every_live_state_can_be_cleaned_up() -> None:
    live = set(ProxyState) - {S.REMOVING, S.REMOVED}

    reachable = {state for state in live if S.REMOVING in ALLOWED_TRANSITIONS[state]}

    assert reachable == live


@pytest.mark.parametrize(
    ("run_outcome", "fate"),
    [
        (RunOutcome.OK, ContainerFate.KEEP),
        (RunOutcome.APPLICATION_ERROR, ContainerFate.KEEP),
        (RunOutcome.DEVELOPER_ERROR, ContainerFate.DESTROY),
        (RunOutcome.TIMEOUT, ContainerFate.DESTROY),
        (RunOutcome.UNAVAILABLE, ContainerFate.RESCHEDULE),
    ],
)
def test_fate_follows_the_run_outcome(
    run_outcome: RunOutcome, fate: ContainerFate
) -> None:
    assert fate_of(run_outcome) is fate


@pytest.mark.parametrize(
    ("init_outcome", "ok"),
    [
        (RunOutcome.OK, True),
        (RunOutcome.APPLICATION_ERROR, True),
        (RunOutcome.DEVELOPER_ERROR, False),
        (RunOutcome.TIMEOUT, False),
    ],
)
def test_init_succeeds_on_any_200(init_outcome: RunOutcome, ok: bool) -> None:
    assert init_succeeded(RunResult(init_outcome, {}, 0, 1)) is ok


@pytest.mark.parametrize(
    ("content", "init_args", "env", "params"),
    [
        (None, frozenset(), {}, {}),
        ({"a": 1, "b": 2}, frozenset(), {}, {"a": 1, "b": 2}),
        ({"a": 1, "secret": "s"}, frozenset({"secret"}), {"secret": "s"}, {"a": 1}),
        ([1, 2, 3], frozenset({"a"}), {}, [1, 2, 3]),
    ],
)
def test_split_content_moves_init_args_to_the_env(
    content: object, init_args: frozenset[str], env: dict[str, object], params: object
) -> None:
    assert split_content(content, init_args) == (env, params)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, ""),
        ("plain", "plain"),
        (True, "true"),
        (3, "3"),
        (1.5, "1.5"),
        ({"k": [1, 2]}, '{"k":[1,2]}'),
    ],
)
def test_env_values_are_text(value: object, text: str) -> None:
    assert env_text(value) == text


def test_context_includes_the_api_key_unless_the_action_declines() -> None:
    action = make_action()
    declined = replace(action, annotations={"provide-api-key": False})
    msg = make_message(action)

    with_key = context_fields(msg, action)
    without_key = context_fields(msg, declined)

    assert with_key["api_key"] == USER.authkey
    assert with_key["action_name"] == "/alice/hello"
    assert with_key["namespace"] == "alice"
    assert "api_key" not in without_key


def test_init_payload_carries_code_and_ow_env() -> None:
    action = make_action()
    msg = make_message(action)

    payload = init_payload(action, {"secret": 7}, context_fields(msg, action), 12345)

    assert payload["code"] == action.exec.code
    assert payload["main"] == "main"
    assert payload["env"]["secret"] == "7"
    assert payload["env"]["__OW_ACTIVATION_ID"] == msg.activation_id
    assert payload["env"]["__OW_DEADLINE"] == "12345"


def test_run_body_has_value_context_and_string_deadline() -> None:
    action = make_action()
    msg = make_message(action)

    body = run_body({"x": 1}, context_fields(msg, action), 999)

    assert body["value"] == {"x": 1}
    assert body["activation_id"] == msg.activation_id
    assert body["deadline"] == "999"


def test_container_name_keeps_letters_digits_and_underscores() -> None:
    assert container_name("alice-dev", "pkg/act.v2") == "alice_dev_pkg_actv2"


@pytest.mark.parametrize(
    ("result", "init", "status", "error"),
    [
        (RunResult(RunOutcome.OK, {"a": 1}, 0, 1), False, ResponseStatus.SUCCESS, None),
        (
            RunResult(RunOutcome.APPLICATION_ERROR, {"error": "no"}, 0, 1),
            False,
            ResponseStatus.APPLICATION_ERROR,
            "no",
        ),
        (
            RunResult(RunOutcome.DEVELOPER_ERROR, {"error": "bad json"}, 0, 1),
            False,
            ResponseStatus.DEVELOPER_ERROR,
            "bad json",
        ),
        (
            RunResult(RunOutcome.DEVELOPER_ERROR, "crash", 0, 1),
            False,
            ResponseStatus.DEVELOPER_ERROR,
            ABNORMAL_RUN,
        ),
        (
            RunResult(RunOutcome.TIMEOUT, {"error": "x"}, 0, 1),
            False,
            ResponseStatus.DEVELOPER_ERROR,
            "The action exceeded its time limits of 1000 milliseconds.",
        ),
        (
            RunResult(RunOutcome.TIMEOUT, {"error": "x"}, 0, 1),
            True,
            ResponseStatus.DEVELOPER_ERROR,
            "The action exceeded its time limits of 1000 milliseconds during "
            "initialization.",
        ),
        (
            RunResult(RunOutcome.UNAVAILABLE, {"error": "503"}, 0, 1),
            False,
            ResponseStatus.WHISK_ERROR,
            ABNORMAL_RUN,
        ),
    ],
)
def test_response_status_follows_the_outcome(
    result: RunResult, init: bool, status: ResponseStatus, error: str | None
) -> None:
    response = response_of(result, 1000, init=init)

    assert response.status is status
    if error is not None:
        assert response.result == {"error": error}


def test_cold_start_record_spans_init_and_run_with_init_time() -> None:
    action = make_action(timeout_ms=1000)
    msg = replace(make_message(action), transid=TransactionId("t", 1000))
    init = RunResult(RunOutcome.OK, {}, 1100, 1150)
    run = RunResult(RunOutcome.OK, {"r": 1}, 1160, 1200)

    record = build_activation(msg, action, init=init, run=run, logs=["line"])

    assert (record.start_ms, record.end_ms) == (1100, 1200)
    assert record.annotations["initTime"] == 50
    assert record.annotations["waitTime"] == 100
    assert record.annotations["timeout"] is False
    assert record.annotations["path"] == "alice/hello"
    assert record.annotations["kind"] == "python:3"
    assert record.response.result == {"r": 1}
    assert record.logs == ["line"]


def test_warm_record_has_no_init_time() -> None:
    action = make_action()
    msg = make_message(action)
    run = RunResult(
        RunOutcome.OK, {}, msg.transid.start_ms + 5, msg.transid.start_ms + 9
    )

    record = build_activation(msg, action, init=None, run=run)

    assert "initTime" not in record.annotations
    assert record.duration_ms == 4


def test_run_reaching_the_limit_is_marked_as_timeout() -> None:
    action = make_action(timeout_ms=100)
    msg = make_message(action)
    run = RunResult(RunOutcome.TIMEOUT, {"error": "slow"}, 0, 100)

    record = build_activation(msg, action, init=None, run=run)

    assert record.annotations["timeout"] is True
    assert record.response.status is ResponseStatus.DEVELOPER_ERROR


def test_failed_init_record_tells_the_init_error() -> None:
    action = make_action()
    msg = make_message(action)
    init = RunResult(RunOutcome.DEVELOPER_ERROR, {"error": "syntax error"}, 10, 30)

    record = build_activation(msg, action, init=init, run=None)

    assert record.response.status is ResponseStatus.DEVELOPER_ERROR
    assert record.response.result == {"error": "syntax error"}
    assert record.annotations["initTime"] == 20
