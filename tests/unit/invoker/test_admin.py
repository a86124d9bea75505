"""FPCInvokerServer: ping, basic-auth enable/disable, isEnabled and pool state."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from wisp.invoker.admin import InvokerAdminServer

pytestmark = pytest.mark.timeout(10)


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


AUTH = basic("invoker.user", "invoker.pass")


class FakeCore:
    def __init__(self) -> None:
        self.enabled = True

    @property
    def name(self) -> str:
        return "invoker0"

    async def enable(self) -> None:
        self.enabled = True

    async def disable(self) -> None:
        self.enabled = False

    def is_enabled(self) -> bool:
        return self.enabled

    def pool_state(self) -> dict[str, Any]:
        return {"totalContainers": 2, "inProgressCount": 1}


@pytest.fixture
async def admin() -> AsyncIterator[tuple[FakeCore, str]]:
    core = FakeCore()
    server = InvokerAdminServer(
        core, host="127.0.0.1", port=0, username="invoker.user", password="invoker.pass"
    )
    await server.start()
    yield core, f"http://127.0.0.1:{server.port}"
    await server.stop()


async def test_ping_needs_no_credentials(admin: tuple[FakeCore, str]) -> None:
    _, base = admin
    async with aiohttp.ClientSession() as http, http.get(f"{base}/ping") as response:
        text = await response.text()

    assert (response.status, text) == (200, "pong")


async def test_disable_and_enable_switch_the_invoker(
    admin: tuple[FakeCore, str],
) -> None:
    core, base = admin
    async with aiohttp.ClientSession(headers=AUTH) as http:
        async with http.post(f"{base}/disable") as response:
            disabled_text = await response.text()
        async with http.get(f"{base}/isEnabled") as response:
            after_disable = await response.json()
        async with http.post(f"{base}/enable") as response:
            enabled_text = await response.text()
        async with http.get(f"{base}/isEnabled") as response:
            after_enable = await response.json()

    assert disabled_text == "invoker0 is now disabled."
    assert after_disable == {"enabled": False}
    assert enabled_text == "invoker0 is now enabled."
    assert after_enable == {"enabled": True}
    assert core.enabled


@pytest.mark.parametrize(
    "auth",
    [{}, basic("invoker.user", "wrong"), basic("", "")],
    ids=["none", "wrong-password", "empty"],
)
async def test_commands_without_valid_credentials_are_refused(
    admin: tuple[FakeCore, str], auth: dict[str, str]
) -> None:
    core, base = admin
    async with (
        aiohttp.ClientSession(headers=auth) as http,
        http.post(f"{base}/disable") as response,
    ):
        status = response.status

    assert status == 401
    assert core.enabled


async def test_pool_and_pool_count_report_the_pool(admin: tuple[FakeCore, str]) -> None:
    _, base = admin
    async with aiohttp.ClientSession(headers=AUTH) as http:
        async with http.get(f"{base}/pool") as response:
            state = await response.json()
        async with http.get(f"{base}/pool/count") as response:
            count = await response.json()

    assert state["totalContainers"] == 2
    assert count == 2
