"""FPCSchedulerServer: ping, Basic auth and the drain routes (FPCSchedulerServerTests)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from wisp.scheduler.admin import AdminServer

pytestmark = pytest.mark.timeout(10)


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


AUTH = basic("scheduler.user", "scheduler.pass")


class FakeScheduler:
    def __init__(self) -> None:
        self.disabled = 0

    async def state(self) -> dict[str, str]:
        return {"queue": "2", "creationCount": "0"}

    def disable(self) -> None:
        self.disabled += 1

    def queue_statuses(self) -> list[dict[str, Any]]:
        return [{"fqn": "bob/a@0.0.1", "waitingActivation": ["x"]}]

    def queue_count(self) -> int:
        return 3

    def activation_count(self) -> int:
        return 7


@pytest.fixture
async def admin() -> AsyncIterator[tuple[str, FakeScheduler]]:
    scheduler = FakeScheduler()
    server = AdminServer(scheduler, host="127.0.0.1", port=0)
    await server.start()
    yield f"http://127.0.0.1:{server.port}", scheduler
    await server.stop()


async def test_ping_needs_no_credentials(admin: tuple[str, FakeScheduler]) -> None:
    base, _ = admin

    async with aiohttp.ClientSession() as session, session.get(f"{base}/ping") as resp:
        body = await resp.text()

    assert (resp.status, body) == (200, "pong")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/state", {"queue": "2", "creationCount": "0"}),
        ("/queues", [{"fqn": "bob/a@0.0.1", "waitingActivation": ["x"]}]),
        ("/queues/count", 3),
        ("/activation/count", 7),
    ],
)
async def test_routes_answer_with_credentials(
    admin: tuple[str, FakeScheduler], path: str, expected: Any
) -> None:
    base, _ = admin

    async with aiohttp.ClientSession(headers=AUTH) as session:
        async with session.get(base + path) as resp:
            body = await resp.json(content_type=None)

    assert (resp.status, body) == (200, expected)


async def test_disable_drains_the_scheduler(admin: tuple[str, FakeScheduler]) -> None:
    base, scheduler = admin

    async with aiohttp.ClientSession(headers=AUTH) as session:
        async with session.post(f"{base}/disable") as resp:
            body = await resp.text()

    assert (resp.status, body) == (200, "scheduler disabled")
    assert scheduler.disabled == 1


@pytest.mark.parametrize(
    "auth",
    [
        {},
        basic("scheduler.user", "wrong"),
        basic("", ""),
        {"Authorization": "Basic !!"},
    ],
)
async def test_wrong_or_missing_credentials_are_refused(
    admin: tuple[str, FakeScheduler], auth: dict[str, str]
) -> None:
    base, scheduler = admin

    async with aiohttp.ClientSession(headers=auth) as session:
        async with session.post(f"{base}/disable") as resp:
            status = resp.status

    assert status == 401
    assert scheduler.disabled == 0
