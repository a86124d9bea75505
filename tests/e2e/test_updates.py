"""Updating an action while it is being invoked, end to end on a real standalone
server: every invoke runs, on one of the action's versions, without waiting out a
queue's retention time."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from tests.e2e.conftest import Api

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

WORKERS = 8
INVOKES_PER_WORKER = 8
UPDATES = 8
UPDATE_EVERY_S = 0.15
#: a healthy invoke takes well under a second; a stuck one waited 60 s
INVOKE_BOUND_S = 15.0
RACE_BOUND_S = 60.0


def code(version: int) -> str:
    return (
        "import time\n"
        "def main(args):\n"
        "    time.sleep(0.05)\n"
        f"    return {{'v': {version}}}\n"
    )


async def timed_invoke(api: Api, name: str) -> tuple[int | None, Any, float]:
    """(status, body, seconds); status None when the bound ran out."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        status, body = await asyncio.wait_for(api.invoke(name), INVOKE_BOUND_S)
    except TimeoutError:
        return None, "no answer", loop.time() - started
    return status, body, loop.time() - started


def version_of(body: Any) -> Any:
    try:
        return body["response"]["result"]["v"]
    except (KeyError, TypeError):
        return None


async def test_every_invoke_runs_while_the_action_is_updated_again_and_again(
    api: Api,
) -> None:
    name = f"race-{uuid.uuid4().hex[:8]}"
    await api.create_action(name, code(0))
    results: list[tuple[int | None, Any, float]] = []

    async def invoker() -> None:
        for _ in range(INVOKES_PER_WORKER):
            results.append(await timed_invoke(api, name))

    async def updater() -> None:
        for version in range(1, UPDATES + 1):
            await asyncio.sleep(UPDATE_EVERY_S)
            await api.create_action(name, code(version))

    await asyncio.wait_for(
        asyncio.gather(updater(), *(invoker() for _ in range(WORKERS))),
        RACE_BOUND_S,
    )
    status, final = await api.invoke(name)

    failed = [(s, b) for s, b, _ in results if s != 200]
    assert failed == [], f"{len(failed)} of {len(results)} invokes failed: {failed}"
    assert len(results) == WORKERS * INVOKES_PER_WORKER
    assert max(seconds for _, _, seconds in results) < INVOKE_BOUND_S
    assert {version_of(b) for _, b, _ in results} <= set(range(UPDATES + 1))
    # Once the updates are over, the last code runs.
    assert status == 200, final
    assert version_of(final) == UPDATES
