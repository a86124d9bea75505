"""The container proxy's states and the pure rules it follows (module 21's core).

States and legal edges, the container's fate after a call, the /init and /run bodies,
and how a finished (or failed) activation becomes a WhiskActivation record.
"""

from __future__ import annotations

import enum
import json
import re
from typing import Any

from wisp.core.activation import (
    ActivationMessage,
    ActivationResponse,
    ResponseStatus,
    WhiskActivation,
)
from wisp.core.entity import WhiskAction
from wisp.infra.runtime.container import RunOutcome, RunResult


class ProxyState(enum.Enum):
    UNINITIALIZED = "uninitialized"
    #: the container factory is starting the container (cold start)
    CREATING_CONTAINER = "creating_container"
    #: the container runs; its activation client is connecting to the scheduler
    CREATING_CLIENT = "creating_client"
    #: connected and pulling, the action is not initialized yet
    CLIENT_CREATED = "client_created"
    #: initialized (warm) and pulling
    RUNNING = "running"
    PAUSING = "pausing"
    PAUSED = "paused"
    #: handing an activation back to its queue before the container goes
    RESCHEDULING = "rescheduling"
    REMOVING = "removing"
    REMOVED = "removed"


ALLOWED_TRANSITIONS: dict[ProxyState, frozenset[ProxyState]] = {
    ProxyState.UNINITIALIZED: frozenset(
        {ProxyState.CREATING_CONTAINER, ProxyState.REMOVING}
    ),
    ProxyState.CREATING_CONTAINER: frozenset(
        {ProxyState.CREATING_CLIENT, ProxyState.REMOVING}
    ),
    ProxyState.CREATING_CLIENT: frozenset(
        {ProxyState.CLIENT_CREATED, ProxyState.REMOVING}
    ),
    ProxyState.CLIENT_CREATED: frozenset(
        {ProxyState.RUNNING, ProxyState.RESCHEDULING, ProxyState.REMOVING}
    ),
    ProxyState.RUNNING: frozenset(
        {ProxyState.PAUSING, ProxyState.RESCHEDULING, ProxyState.REMOVING}
    ),
    ProxyState.PAUSING: frozenset({ProxyState.PAUSED, ProxyState.REMOVING}),
    ProxyState.PAUSED: frozenset({ProxyState.RUNNING, ProxyState.REMOVING}),
    ProxyState.RESCHEDULING: frozenset({ProxyState.REMOVING}),
    ProxyState.REMOVING: frozenset({ProxyState.REMOVED}),
    ProxyState.REMOVED: frozenset(),
}


def can_transition(current: ProxyState, to: ProxyState) -> bool:
    return to in ALLOWED_TRANSITIONS[current]


# --- what happens to the container after a call -----------------------------------


class ContainerFate(enum.Enum):
    #: the container stays and pulls the next activation
    KEEP = "keep"
    #: the container is destroyed after this activation
    DESTROY = "destroy"
    #: the activation goes back to its queue, then the container is destroyed
    RESCHEDULE = "reschedule"


_FATE = {
    RunOutcome.OK: ContainerFate.KEEP,
    RunOutcome.APPLICATION_ERROR: ContainerFate.KEEP,
    RunOutcome.DEVELOPER_ERROR: ContainerFate.DESTROY,
    RunOutcome.TIMEOUT: ContainerFate.DESTROY,
    RunOutcome.UNAVAILABLE: ContainerFate.RESCHEDULE,
}


def fate_of(outcome: RunOutcome) -> ContainerFate:
    """Success and application errors keep the container; a broken or slow runtime
    is destroyed; a runtime that refuses work hands the activation back."""
    return _FATE[outcome]


def init_succeeded(result: RunResult) -> bool:
    """/init answered 200; its body is not looked at."""
    return result.outcome in (RunOutcome.OK, RunOutcome.APPLICATION_ERROR)


# --- error texts (OpenWhisk's wording) ---------------------------------------------

ACTION_NOT_FOUND = "Action could not be found or may have been deleted."
ACTION_NOT_COMPATIBLE = "Action version is not compatible and cannot be invoked."
ACTION_NOT_FETCHED = "Action could not be fetched."
ABNORMAL_RUN = "The action did not produce a valid response and exited unexpectedly."
ABNORMAL_INIT = "The action did not initialize and exited unexpectedly."
LOG_COLLECTION_FAILED = (
    "There was an issue while collecting your logs. Data might be missing."
)


def run_timeout_text(timeout_ms: int) -> str:
    return f"The action exceeded its time limits of {timeout_ms} milliseconds."


def init_timeout_text(timeout_ms: int) -> str:
    return (
        f"The action exceeded its time limits of {timeout_ms} milliseconds "
        "during initialization."
    )


# --- /init and /run bodies -----------------------------------------------------------


def split_content(
    content: Any, init_args: frozenset[str]
) -> tuple[dict[str, Any], Any]:
    """Parameters named in `init_args` go to /init's env, the rest to /run's value.

    Arrays (and other non-objects) pass through untouched.
    """
    if content is None:
        return {}, {}
    if not isinstance(content, dict):
        return {}, content
    env = {k: v for k, v in content.items() if k in init_args}
    params = {k: v for k, v in content.items() if k not in init_args}
    return env, params


def context_fields(msg: ActivationMessage, action: WhiskAction) -> dict[str, str]:
    """The per-activation context a runtime exposes as `__OW_<KEY>` variables.

    `api_key` is left out only when the action says `provide-api-key: false`.
    """
    fields = {
        "namespace": msg.user.namespace,
        "action_name": f"/{msg.action.unversioned()}",
        "action_version": action.version,
        "activation_id": msg.activation_id,
        "transaction_id": msg.transid.id,
    }
    if action.annotations.get("provide-api-key", True) is not False:
        fields["api_key"] = msg.user.authkey
    return fields


def env_text(value: Any) -> str:
    """Env values are text: null → "", scalars as written, objects as compact JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, separators=(",", ":"))


def init_payload(
    action: WhiskAction,
    init_env: dict[str, Any],
    context: dict[str, str],
    deadline_ms: int,
) -> dict[str, Any]:
    """The `value` of POST /init."""
    env = {key: env_text(value) for key, value in init_env.items()}
    for key, value in context.items():
        env[f"__OW_{key.upper()}"] = value
    env["__OW_DEADLINE"] = str(deadline_ms)
    return {
        "name": action.name,
        "main": action.exec.main,
        "code": action.exec.code,
        "binary": action.exec.binary,
        "env": env,
    }


def run_body(params: Any, context: dict[str, str], deadline_ms: int) -> dict[str, Any]:
    """The body of POST /run; the deadline travels as a string."""
    body: dict[str, Any] = {"value": params}
    body.update(context)
    body["deadline"] = str(deadline_ms)
    return body


_NAME_JUNK = re.compile(r"[^A-Za-z0-9_]")


def container_name(namespace: str, action_name: str) -> str:
    """`<ns>_<action>` with letters, digits and `_` only; the factory adds its
    `wsk<invoker>_<seq>_` prefix."""
    raw = f"{namespace}_{action_name}"
    return _NAME_JUNK.sub("", raw.replace("/", "_").replace("-", "_"))


# --- activation records --------------------------------------------------------------


def response_of(
    result: RunResult, timeout_ms: int, *, init: bool
) -> ActivationResponse:
    """The activation response a finished /init or /run call stands for."""
    if result.outcome is RunOutcome.OK:
        return ActivationResponse.ok(result.result)
    if result.outcome is RunOutcome.APPLICATION_ERROR:
        return ActivationResponse(ResponseStatus.APPLICATION_ERROR, result.result)
    if result.outcome is RunOutcome.TIMEOUT:
        text = init_timeout_text(timeout_ms) if init else run_timeout_text(timeout_ms)
        return ActivationResponse.developer_error(text)
    if result.outcome is RunOutcome.DEVELOPER_ERROR:
        if isinstance(result.result, dict) and "error" in result.result:
            return ActivationResponse(ResponseStatus.DEVELOPER_ERROR, result.result)
        return ActivationResponse.developer_error(
            ABNORMAL_INIT if init else ABNORMAL_RUN
        )
    # UNAVAILABLE reaches a record only when the activation could not go back
    return ActivationResponse.whisk_error(ABNORMAL_RUN)


def build_activation(
    msg: ActivationMessage,
    action: WhiskAction,
    *,
    init: RunResult | None,
    run: RunResult | None,
    logs: list[str] | None = None,
) -> WhiskActivation:
    """The record of one activation on a container.

    `init` is given for the cold start only (it sets `initTime` and the interval
    starts there); `run` is None when /init failed (the record then tells why).
    """
    if init is None and run is None:
        raise ValueError("an activation needs an /init or a /run result")
    limit_ms = action.limits.timeout_ms
    first = init if init is not None else run
    assert first is not None
    last = run if run is not None else first
    if run is None:
        response = response_of(first, limit_ms, init=True)
        timed_out = first.outcome is RunOutcome.TIMEOUT
    else:
        response = response_of(run, limit_ms, init=False)
        timed_out = run.outcome is RunOutcome.TIMEOUT or run.duration_ms >= limit_ms

    annotations: dict[str, Any] = {
        "path": msg.action.unversioned(),
        "kind": action.exec.kind,
        "limits": action.limits.to_json(),
        "timeout": timed_out,
        "waitTime": max(0, first.start_ms - msg.transid.start_ms),
    }
    if init is not None:
        annotations["initTime"] = init.duration_ms
    if msg.cause:
        annotations["causedBy"] = "sequence"
    if msg.action.binding:
        annotations["binding"] = msg.action.binding

    return WhiskActivation(
        namespace=msg.invocation_namespace,
        name=msg.action.name,
        subject=msg.user.subject,
        activation_id=msg.activation_id,
        start_ms=first.start_ms,
        end_ms=max(first.start_ms, last.end_ms),
        response=response,
        version=action.version,
        logs=list(logs or []),
        annotations=annotations,
        cause=msg.cause,
        publish=action.publish,
    )
