"""Bad input over HTTP gets OpenWhisk's JSON errors with the right status codes."""

from __future__ import annotations

import uuid

import pytest

from tests.e2e.conftest import Api
from tests.support.standalone import basic_auth

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

CODE = "def main(args):\n    return {}\n"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def assert_error(status: int, body: object, expected: int) -> None:
    assert status == expected, body
    assert isinstance(body, dict)
    assert isinstance(body.get("error"), str) and body["error"]
    assert "code" in body


async def test_missing_key_is_401(api: Api) -> None:
    async with api.session.get(api.base + "/actions") as resp:
        body = await resp.json(content_type=None)

    assert_error(resp.status, body, 401)


async def test_wrong_key_is_401(api: Api) -> None:
    wrong = basic_auth("23bc46b1-71f6-4ed5-8c54-816aa4f8c502:not-the-key")

    status, body = await api.request("GET", "/actions", auth=wrong)

    assert_error(status, body, 401)


async def test_unknown_action_is_404(api: Api) -> None:
    status, body = await api.request("POST", f"/actions/{unique('nope')}?blocking=true")

    assert_error(status, body, 404)


async def test_create_over_existing_without_overwrite_is_409(api: Api) -> None:
    name = unique("dup")
    exec_ = {"exec": {"kind": "python:3", "code": CODE}}
    status, _ = await api.request("PUT", f"/actions/{name}", json=exec_)
    assert status == 200

    status, body = await api.request("PUT", f"/actions/{name}", json=exec_)

    assert_error(status, body, 409)


async def test_malformed_json_is_400(api: Api) -> None:
    status, body = await api.request(
        "PUT", f"/actions/{unique('bad')}", data=b"{not json", json_type=True
    )

    assert_error(status, body, 400)


async def test_unknown_kind_is_400_and_names_the_kinds(api: Api) -> None:
    status, body = await api.request(
        "PUT",
        f"/actions/{unique('kind')}",
        json={"exec": {"kind": "cobol:85", "code": CODE}},
    )

    assert_error(status, body, 400)
    assert "python:3" in body["error"]


async def test_missing_code_is_400(api: Api) -> None:
    status, body = await api.request(
        "PUT", f"/actions/{unique('nocode')}", json={"exec": {"kind": "python:3"}}
    )

    assert_error(status, body, 400)


async def test_out_of_range_memory_limit_is_400(api: Api) -> None:
    status, body = await api.request(
        "PUT",
        f"/actions/{unique('mem')}",
        json={"exec": {"kind": "python:3", "code": CODE}, "limits": {"memory": 1}},
    )

    assert_error(status, body, 400)


async def test_invoke_with_non_object_body_is_400(api: Api) -> None:
    name = unique("arr")
    await api.create_action(name, CODE)

    status, body = await api.request(
        "POST", f"/actions/{name}?blocking=true", data=b'"a string"', json_type=True
    )

    assert_error(status, body, 400)


async def test_unknown_activation_is_404(api: Api) -> None:
    status, body = await api.request("GET", f"/activations/{uuid.uuid4().hex}")

    assert_error(status, body, 404)
