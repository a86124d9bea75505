"""The python:3 and nodejs:20 action proxies, driven through ProcessContainer."""

from __future__ import annotations

import asyncio
import base64
import io
import time
import zipfile
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from wisp.infra.runtime.container import LOG_SENTINEL, ContainerSpec, RunOutcome
from wisp.infra.runtime.process import ProcessContainer, ProcessContainerFactory

StartAction = Callable[..., Awaitable[ProcessContainer]]

pytestmark = pytest.mark.timeout(30)

KINDS = ["python:3", "nodejs:20"]
MB = 1024 * 1024


def run_body(value: Any, **context: str) -> dict[str, Any]:
    return {"value": value, "namespace": "guest", **context}


ECHO = {
    "python:3": """
import os, sys
print("loading the action")
def main(params):
    print("hello", params.get("name"))
    print("warning to stderr", file=sys.stderr)
    env = {k: v for k, v in os.environ.items() if k.startswith("__OW_") or k == "GREETING"}
    return {"params": params, "env": env}
""",
    "nodejs:20": """
console.log("loading the action");
function main(params) {
  console.log("hello", params.name);
  console.error("warning to stderr");
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith("__OW_") || k === "GREETING") env[k] = v;
  }
  return {params, env};
}
""",
}

SYNTAX_ERROR = {
    "python:3": "def main(params):\n    return {}\n\ndef broken(:\n    pass\n",
    "nodejs:20": "function main(params) {\n  return {};\n}\nconst broken = ;\n",
}

NO_MAIN = {
    "python:3": "def handler(params):\n    return {}\n",
    "nodejs:20": "function handler(params) { return {}; }\n",
}

RAISES = {
    "python:3": "def main(params):\n    raise ValueError('bad input')\n",
    "nodejs:20": "function main(params) { throw new TypeError('bad input'); }\n",
}

RETURNS_SCALAR = {
    "python:3": "def main(params):\n    return 42\n",
    "nodejs:20": "function main(params) { return 42; }\n",
}

RETURNS_ARRAY = {
    "python:3": "def main(params):\n    return [1, 'two', {'three': 3}]\n",
    "nodejs:20": "function main(params) { return [1, 'two', {three: 3}]; }\n",
}

RETURNS_ERROR_FIELD = {
    "python:3": "def main(params):\n    return {'error': 'not found'}\n",
    "nodejs:20": "function main(params) { return {error: 'not found'}; }\n",
}

SLEEPS = {
    "python:3": """
import time
def main(params):
    time.sleep(params["sleep"])
    return {"slept": params["sleep"]}
""",
    "nodejs:20": """
function main(params) {
  return new Promise((resolve) => setTimeout(() => resolve({slept: params.sleep}),
                                             params.sleep * 1000));
}
""",
}

HANDLER = {
    "python:3": "def handler(params):\n    return {'via': 'handler'}\n",
    "nodejs:20": "exports.handler = (params) => ({via: 'handler'});\n",
}


@pytest.mark.parametrize("kind", KINDS)
async def test_run_sees_params_context_env_and_init_env(
    kind: str, start_action: StartAction
) -> None:
    container = await start_action(kind, ECHO[kind], env={"GREETING": "hi"})

    result = await container.run(
        run_body({"name": "wisp"}, activation_id="a1", deadline="123"), 5.0, MB
    )

    assert result.outcome is RunOutcome.OK
    assert result.result["params"] == {"name": "wisp"}
    assert result.result["env"] == {
        "GREETING": "hi",
        "__OW_NAMESPACE": "guest",
        "__OW_ACTIVATION_ID": "a1",
        "__OW_DEADLINE": "123",
    }


@pytest.mark.parametrize("kind", KINDS)
async def test_second_init_is_refused(kind: str, start_action: StartAction) -> None:
    container = await start_action(kind, ECHO[kind])

    again = await container.initialize({"code": ECHO[kind], "main": "main"}, 5.0)

    assert again.outcome is RunOutcome.DEVELOPER_ERROR
    assert again.result == {"error": "Cannot initialize the action more than once."}


@pytest.mark.parametrize("kind", KINDS)
async def test_run_before_init_is_refused(
    kind: str, factory: ProcessContainerFactory
) -> None:
    container = await factory.create_container(
        ContainerSpec(name="early", kind=kind, memory_mb=256)
    )

    result = await container.run(run_body({}), 5.0, MB)

    assert result.outcome is RunOutcome.DEVELOPER_ERROR
    assert result.result == {"error": "Cannot invoke an uninitialized action."}


@pytest.mark.parametrize("kind", KINDS)
async def test_syntax_error_fails_init_naming_the_line(
    kind: str, factory: ProcessContainerFactory
) -> None:
    container = await factory.create_container(
        ContainerSpec(name="broken", kind=kind, memory_mb=256)
    )

    result = await container.initialize(
        {"code": SYNTAX_ERROR[kind], "main": "main"}, 5.0
    )

    assert result.outcome is RunOutcome.DEVELOPER_ERROR
    assert "SyntaxError" in result.result["error"]
    assert "line 4" in result.result["error"]


@pytest.mark.parametrize("kind", KINDS)
async def test_missing_entry_point_fails_init(
    kind: str, factory: ProcessContainerFactory
) -> None:
    container = await factory.create_container(
        ContainerSpec(name="nomain", kind=kind, memory_mb=256)
    )

    result = await container.initialize({"code": NO_MAIN[kind], "main": "main"}, 5.0)

    assert result.outcome is RunOutcome.DEVELOPER_ERROR
    assert result.result == {
        "error": "The action code does not define a function named 'main'."
    }


@pytest.mark.parametrize("kind", KINDS)
async def test_entry_point_can_be_named(kind: str, start_action: StartAction) -> None:
    container = await start_action(kind, HANDLER[kind], main="handler")

    result = await container.run(run_body({}), 5.0, MB)

    assert result.result == {"via": "handler"}


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("python:3", "An error has occurred: ValueError: bad input"),
        ("nodejs:20", "An error has occurred: TypeError: bad input"),
    ],
)
async def test_exception_is_developer_error_with_trace_in_logs(
    kind: str, error: str, start_action: StartAction
) -> None:
    container = await start_action(kind, RAISES[kind])

    result = await container.run(run_body({}), 5.0, MB)
    logs = await container.logs(MB, wait_for_sentinel=True)

    assert result.outcome is RunOutcome.DEVELOPER_ERROR
    assert result.result == {"error": error}
    assert any("stderr:" in line and "bad input" in line for line in logs)


@pytest.mark.parametrize("kind", KINDS)
async def test_scalar_result_is_developer_error(
    kind: str, start_action: StartAction
) -> None:
    container = await start_action(kind, RETURNS_SCALAR[kind])

    result = await container.run(run_body({}), 5.0, MB)

    assert result.outcome is RunOutcome.DEVELOPER_ERROR
    assert result.result == {"error": "The action did not return a dictionary."}


@pytest.mark.parametrize(
    ("kind", "code", "reason"),
    [
        (
            "python:3",
            "def main(p):\n    return {'x': float('nan')}\n",
            "Out of range float values are not JSON compliant",
        ),
        (
            "python:3",
            "def main(p):\n    return {'x': [1, float('inf')]}\n",
            "Out of range float values are not JSON compliant",
        ),
        (
            "python:3",
            "def main(p):\n    return {'when': {1, 2}}\n",
            "Object of type set is not JSON serializable",
        ),
        (
            "nodejs:20",
            "function main(p) { return {n: 10n}; }",
            "Do not know how to serialize a BigInt",
        ),
        (
            "nodejs:20",
            "function main(p) { const o = {}; o.self = o; return o; }",
            "Converting circular structure to JSON",
        ),
    ],
)
async def test_result_that_is_not_json_is_a_clear_developer_error(
    kind: str, code: str, reason: str, start_action: StartAction
) -> None:
    container = await start_action(kind, code)

    result = await container.run(run_body({}), 5.0, MB)

    assert result.outcome is RunOutcome.DEVELOPER_ERROR
    error = result.result["error"]
    assert error.startswith("The action returned a value that is not valid JSON: ")
    assert reason in error


NESTS_DEEPLY = {
    "python:3": """
def main(p):
    value = []
    for _ in range(p["depth"]):
        value = [value]
    return {"deep": value}
""",
    "nodejs:20": """
function main(p) {
  let value = [];
  for (let i = 0; i < p.depth; i++) value = [value];
  return {deep: value};
}
""",
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("depth", [600, 3000, 100_000])
async def test_result_nested_too_deeply_is_a_developer_error(
    kind: str, depth: int, start_action: StartAction
) -> None:
    container = await start_action(kind, NESTS_DEEPLY[kind])

    result = await container.run(run_body({"depth": depth}), 5.0, 10 * MB)

    assert result.outcome is RunOutcome.DEVELOPER_ERROR
    assert "nested too deeply" in result.result["error"]


@pytest.mark.parametrize("kind", KINDS)
async def test_array_result_is_success(kind: str, start_action: StartAction) -> None:
    container = await start_action(kind, RETURNS_ARRAY[kind])

    result = await container.run(run_body([1, 2]), 5.0, MB)

    assert result.outcome is RunOutcome.OK
    assert result.result == [1, "two", {"three": 3}]


@pytest.mark.parametrize("kind", KINDS)
async def test_result_with_error_field_is_application_error(
    kind: str, start_action: StartAction
) -> None:
    container = await start_action(kind, RETURNS_ERROR_FIELD[kind])

    result = await container.run(run_body({}), 5.0, MB)

    assert result.outcome is RunOutcome.APPLICATION_ERROR
    assert result.result == {"error": "not found"}


@pytest.mark.parametrize("kind", KINDS)
async def test_concurrent_runs_overlap(kind: str, start_action: StartAction) -> None:
    container = await start_action(kind, SLEEPS[kind])
    started = time.monotonic()

    results = await asyncio.gather(
        *(container.run(run_body({"sleep": 0.4}), 5.0, MB) for _ in range(5))
    )
    elapsed = time.monotonic() - started

    assert all(r.outcome is RunOutcome.OK for r in results)
    assert elapsed < 1.2


@pytest.mark.parametrize("kind", KINDS)
async def test_logs_hold_one_activation_with_init_output_in_the_first(
    kind: str, start_action: StartAction
) -> None:
    container = await start_action(kind, ECHO[kind])

    await container.run(run_body({"name": "one"}), 5.0, MB)
    first = await container.logs(MB, wait_for_sentinel=True)
    await container.run(run_body({"name": "two"}), 5.0, MB)
    second = await container.logs(MB, wait_for_sentinel=True)

    assert [line.split(" ", 1)[1].strip() for line in first] == [
        "stdout: loading the action",
        "stdout: hello one",
        "stderr: warning to stderr",
    ]
    assert [line.split(" ", 1)[1].strip() for line in second] == [
        "stdout: hello two",
        "stderr: warning to stderr",
    ]
    assert not any(LOG_SENTINEL in line for line in first + second)
    assert first[0][:30].rstrip().endswith("Z") and first[0][30] == " "


async def test_python_zip_action_runs_its_main_module(
    start_action: StartAction,
) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("helper.py", "def shout(s):\n    return s.upper()\n")
        zipped.writestr(
            "__main__.py",
            "from helper import shout\ndef main(p):\n    return {'says': shout(p['w'])}\n",
        )
    code = base64.b64encode(archive.getvalue()).decode()
    container = await start_action("python:3", code, binary=True)

    result = await container.run(run_body({"w": "hi"}), 5.0, MB)

    assert result.result == {"says": "HI"}


async def test_node_promise_results_and_rejections(start_action: StartAction) -> None:
    code = """
exports.main = async function (params) {
  if (params.fail) return Promise.reject({error: 'rejected'});
  return {async: true};
};
"""
    container = await start_action("nodejs:20", code)

    ok = await container.run(run_body({}), 5.0, MB)
    rejected = await container.run(run_body({"fail": True}), 5.0, MB)

    assert (ok.outcome, ok.result) == (RunOutcome.OK, {"async": True})
    assert rejected.outcome is RunOutcome.APPLICATION_ERROR
    assert rejected.result == {"error": "rejected"}


async def test_node_binary_action_is_refused_clearly(
    factory: ProcessContainerFactory,
) -> None:
    container = await factory.create_container(
        ContainerSpec(name="zip", kind="nodejs:20", memory_mb=256)
    )

    result = await container.initialize(
        {"code": "UEsDBA==", "binary": True, "main": "main"}, 5.0
    )

    assert result.outcome is RunOutcome.DEVELOPER_ERROR
    assert "not supported" in result.result["error"]
