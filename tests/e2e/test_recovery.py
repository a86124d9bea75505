"""Recovery on a real standalone server: a re-created action runs its new code, and
every accepted activation ends with a record even when the process is killed."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import Api
from tests.support.standalone import StandaloneProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

LOST_TEXT = "The activation was lost: Wisp stopped before it completed."


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def returning(value: int) -> str:
    return f"def main(args):\n    return {{'v': {value}}}\n"


async def create(api: Api, name: str, code: str, kind: str = "python:3") -> Any:
    """A plain create (no overwrite): it must not find an action of that name."""
    status, body = await api.request(
        "PUT", f"/actions/{name}", json={"exec": {"kind": kind, "code": code}}
    )
    assert status == 200, body
    return body


# --- delete, then create again ------------------------------------------------------------


async def test_recreated_action_runs_its_new_code(api: Api) -> None:
    name = unique("st2")
    first = await create(api, name, returning(1))
    status, result = await api.invoke(name, result=True)
    assert (status, result) == (200, {"v": 1})

    status, _ = await api.request("DELETE", f"/actions/{name}")
    assert status == 200
    second = await create(api, name, returning(2))
    status, result = await api.invoke(name, result=True)

    assert (status, result) == (200, {"v": 2})
    assert int(second["rev"].split("-")[0]) > int(first["rev"].split("-")[0])


async def test_recreated_action_of_another_kind_runs_in_its_new_runtime(
    api: Api,
) -> None:
    name = unique("kind")
    await create(api, name, "def main(args):\n    return {'runtime': 'python'}\n")
    status, result = await api.invoke(name, result=True)
    assert (status, result) == (200, {"runtime": "python"})

    await api.request("DELETE", f"/actions/{name}")
    await create(
        api,
        name,
        "function main(args) { return {runtime: 'nodejs'}; }",
        kind="nodejs:default",
    )
    status, result = await api.invoke(name, result=True)

    assert (status, result) == (200, {"runtime": "nodejs"})


# --- a killed server --------------------------------------------------------------------

SLOW = (
    "import time\n\ndef main(args):\n    time.sleep(2)\n    return {'n': args['n']}\n"
)
INVOKES = 60


async def _records(api: Api, ids: list[str]) -> dict[str, Any]:
    """The records of `ids` that exist now."""
    found: dict[str, Any] = {}
    for activation_id in ids:
        status, body = await api.request("GET", f"/activations/{activation_id}")
        if status == 200:
            found[activation_id] = body
        else:
            assert status == 404, body
    return found


async def test_every_accepted_activation_has_a_record_after_a_kill(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    timeout = aiohttp.ClientTimeout(total=60)

    # accept many slow activations, let some finish, then kill the server outright
    first = StandaloneProcess(data_dir)
    first.start()
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            api = Api(session, first.url)
            await api.create_action("slow", SLOW)
            ids = []
            for n in range(INVOKES):
                status, body = await api.request("POST", "/actions/slow", json={"n": n})
                assert status == 202, body
                ids.append(body["activationId"])
            for _ in range(150):  # 30 s at most
                if await _records(api, ids[:4]):
                    break
                await asyncio.sleep(0.2)
    finally:
        assert first.proc is not None
        first.proc.kill()
        first.proc.wait(10)

    # the restarted server knows how every one of them ended
    with StandaloneProcess(data_dir) as second:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            api = Api(session, second.url)
            records = await _records(api, ids)

    assert set(records) == set(ids)
    finished = [r for r in records.values() if r["response"]["success"]]
    lost = [r for r in records.values() if not r["response"]["success"]]
    assert finished, "no activation finished before the kill"
    assert lost, "every activation finished before the kill"
    for record in finished:
        assert record["response"]["result"] == {"n": ids.index(record["activationId"])}
    for record in lost:
        assert record["response"]["status"] == "whisk internal error"
        assert record["response"]["result"] == {"error": LOST_TEXT}
        assert record["name"] == "slow"
        assert record["namespace"] == "guest"
