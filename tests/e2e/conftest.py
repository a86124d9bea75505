"""Fixtures for end-to-end tests: a real standalone Wisp process and an HTTP client."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.etcd_server import EtcdServer
from tests.support.standalone import StandaloneProcess, basic_auth


@pytest.fixture(scope="session", params=["embedded", "etcd"])
def standalone(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StandaloneProcess]:
    """The same suite runs on the embedded store and on a real etcd (`--etcd`)."""
    with contextlib.ExitStack() as stack:
        extra: tuple[str, ...] = ()
        if request.param == "etcd":
            etcd = EtcdServer(tmp_path_factory.mktemp("etcd"))
            etcd.start()
            stack.callback(etcd.stop)
            extra = ("--etcd", etcd.endpoint)
        server = StandaloneProcess(
            tmp_path_factory.mktemp("wisp-e2e"), extra_args=extra
        )
        server.etcd_endpoint = extra[1] if extra else None
        server.start()
        stack.callback(server.stop)
        yield server


class Api:
    """A small client for the REST API v1 as the guest user."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base + "/api/v1/namespaces/_"

    async def request(
        self,
        method: str,
        path: str,
        *,
        auth: str | None = None,
        json_type: bool = False,
        **kwargs: Any,
    ) -> tuple[int, Any]:
        headers = {"Authorization": auth or basic_auth()}
        if json_type:
            headers["Content-Type"] = "application/json"
        async with self.session.request(
            method, self.base + path, headers=headers, **kwargs
        ) as resp:
            body = await resp.json(content_type=None)
            return resp.status, body

    async def create_action(
        self, name: str, code: str, kind: str = "python:3", **extra: Any
    ) -> dict[str, Any]:
        status, body = await self.request(
            "PUT",
            f"/actions/{name}?overwrite=true",
            json={"exec": {"kind": kind, "code": code}, **extra},
        )
        assert status == 200, body
        return dict(body)

    async def invoke(
        self, name: str, params: dict[str, Any] | None = None, *, result: bool = False
    ) -> tuple[int, Any]:
        query = "?blocking=true" + ("&result=true" if result else "")
        return await self.request("POST", f"/actions/{name}{query}", json=params or {})


@pytest.fixture
async def api(standalone: StandaloneProcess) -> AsyncIterator[Api]:
    timeout = aiohttp.ClientTimeout(total=90)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        yield Api(session, standalone.url)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
