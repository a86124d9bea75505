"""End to end over HTTP against a real `wisp standalone` process (issue #2)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from tests.e2e.conftest import Api

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

HELLO = """
def main(args):
    name = args.get("name", "stranger")
    print("greeting", name)
    return {"greeting": "Hello " + name}
"""


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def annotation(record: dict[str, Any], key: str) -> Any:
    for item in record["annotations"]:
        if item["key"] == key:
            return item["value"]
    return None


async def test_blocking_invoke_returns_result_and_full_record(api: Api) -> None:
    name = unique("hello")
    await api.create_action(name, HELLO)

    status, record = await api.invoke(name, {"name": "Ada"})

    assert status == 200, record
    assert record["response"]["result"] == {"greeting": "Hello Ada"}
    assert record["response"]["status"] == "success"
    assert record["response"]["success"] is True
    assert record["response"]["statusCode"] == 0
    assert record["namespace"] == "guest"
    assert record["name"] == name
    assert record["subject"] == "guest"
    assert record["version"] == "0.0.1"
    assert record["end"] >= record["start"]
    assert record["duration"] == record["end"] - record["start"]
    assert annotation(record, "path") == f"guest/{name}"
    assert annotation(record, "kind") == "python:3"
    assert annotation(record, "limits")["memory"] == 256
    assert annotation(record, "waitTime") is not None
    assert annotation(record, "initTime") is not None
    assert any("greeting Ada" in line for line in record["logs"])


async def test_second_invoke_reuses_the_warm_container(api: Api) -> None:
    name = unique("warm")
    await api.create_action(name, HELLO)
    status, first = await api.invoke(name)
    assert status == 200, first

    status, second = await api.invoke(name)

    assert status == 200, second
    assert annotation(first, "initTime") is not None
    assert annotation(second, "initTime") is None


async def test_result_only_answer(api: Api) -> None:
    name = unique("result")
    await api.create_action(name, HELLO)

    status, body = await api.invoke(name, {"name": "Bo"}, result=True)

    assert status == 200
    assert body == {"greeting": "Hello Bo"}


async def test_non_blocking_invoke_answers_202_and_record_appears(api: Api) -> None:
    name = unique("async")
    await api.create_action(name, HELLO)

    status, body = await api.request("POST", f"/actions/{name}", json={"name": "Cy"})

    assert status == 202
    activation_id = body["activationId"]
    record = await wait_for_activation(api, activation_id)
    assert record["response"]["result"] == {"greeting": "Hello Cy"}
    status, result = await api.request("GET", f"/activations/{activation_id}/result")
    assert status == 200
    assert result["result"] == {"greeting": "Hello Cy"}
    assert result["success"] is True
    status, logs = await api.request("GET", f"/activations/{activation_id}/logs")
    assert status == 200
    assert any("greeting Cy" in line for line in logs["logs"])


async def test_activation_list_shows_newest_first(api: Api) -> None:
    name = unique("listed")
    await api.create_action(name, HELLO)
    _, first = await api.invoke(name)
    _, second = await api.invoke(name)

    status, listing = await api.request("GET", f"/activations?name={name}")

    assert status == 200
    ids = [item["activationId"] for item in listing]
    assert ids[:2] == [second["activationId"], first["activationId"]]


async def test_fifty_concurrent_blocking_invokes_all_succeed(api: Api) -> None:
    name = unique("burst")
    await api.create_action(name, HELLO)

    answers = await asyncio.gather(
        *(api.invoke(name, {"name": str(i)}) for i in range(50))
    )

    statuses = [status for status, _ in answers]
    assert statuses == [200] * 50, [body for status, body in answers if status != 200][
        :3
    ]
    results = sorted(body["response"]["result"]["greeting"] for _, body in answers)
    assert results == sorted(f"Hello {i}" for i in range(50))


async def test_nodejs_action_runs(api: Api) -> None:
    name = unique("node")
    code = "function main(params) { return {sum: params.a + params.b}; }"
    await api.create_action(name, code, kind="nodejs:default")

    status, body = await api.invoke(name, {"a": 2, "b": 3}, result=True)

    assert status == 200, body
    assert body == {"sum": 5}


async def test_action_that_raises_gives_developer_error_and_502(api: Api) -> None:
    name = unique("raises")
    await api.create_action(name, "def main(args):\n    raise ValueError('boom')\n")

    status, record = await api.invoke(name)

    assert status == 502
    assert record["response"]["success"] is False
    assert record["response"]["status"] in (
        "application error",
        "action developer error",
    )
    assert "boom" in str(record["response"]["result"]["error"])


async def test_action_returning_a_non_object_gives_error_and_502(api: Api) -> None:
    name = unique("scalar")
    await api.create_action(name, "def main(args):\n    return 42\n")

    status, record = await api.invoke(name)

    assert status == 502
    assert record["response"]["statusCode"] in (1, 2)


async def test_action_returning_error_field_is_an_application_error(api: Api) -> None:
    name = unique("apperr")
    await api.create_action(name, "def main(args):\n    return {'error': 'nope'}\n")

    status, record = await api.invoke(name)

    assert status == 502
    assert record["response"]["status"] == "application error"
    assert record["response"]["result"] == {"error": "nope"}


async def test_code_that_does_not_compile_gives_developer_error(api: Api) -> None:
    name = unique("broken")
    await api.create_action(name, "def main(args)\n    return {}\n")

    status, record = await api.invoke(name)

    assert status == 502
    assert record["response"]["status"] == "action developer error"
    assert "error" in record["response"]["result"]


async def wait_for_activation(api: Api, activation_id: str) -> dict[str, Any]:
    for _ in range(200):
        status, body = await api.request("GET", f"/activations/{activation_id}")
        if status == 200:
            return dict(body)
        await asyncio.sleep(0.1)
    raise AssertionError(f"activation {activation_id} never appeared")
