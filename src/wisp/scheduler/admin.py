"""FPCSchedulerServer (module 3): the scheduler's small HTTP admin API.

`GET /ping` is open; `/state`, `/disable`, `/queues`, `/queues/count` and
`/activation/count` need HTTP Basic credentials. Used to drain a scheduler.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

log = logging.getLogger(__name__)

DEFAULT_USERNAME = "scheduler.user"
DEFAULT_PASSWORD = "scheduler.pass"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class SchedulerAdmin(Protocol):
    """What the admin routes read from and do to the scheduler."""

    async def state(self) -> dict[str, str]: ...

    def disable(self) -> None: ...

    def queue_statuses(self) -> list[dict[str, Any]]: ...

    def queue_count(self) -> int: ...

    def activation_count(self) -> int: ...


class AdminServer:
    def __init__(
        self,
        scheduler: SchedulerAdmin,
        *,
        host: str,
        port: int,
        username: str = DEFAULT_USERNAME,
        password: str = DEFAULT_PASSWORD,
    ) -> None:
        self._scheduler = scheduler
        self._host = host
        self._requested_port = port
        self._credentials = f"{username}:{password}".encode()
        self._runner: web.AppRunner | None = None
        self._port = 0

    @property
    def port(self) -> int:
        """The bound port (0 before start)."""
        return self._port

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/ping", self._ping)
        app.router.add_get("/state", self._state)
        app.router.add_post("/disable", self._disable)
        app.router.add_get("/queues", self._queues)
        app.router.add_get("/queues/", self._queues)
        app.router.add_get("/queues/count", self._queue_count)
        app.router.add_get("/activation/count", self._activation_count)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._requested_port)
        await site.start()
        addresses = self._runner.addresses
        self._port = int(addresses[0][1]) if addresses else self._requested_port
        log.info("Admin API on %s:%d", self._host, self._port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/ping" or self._authorized(request):
            return await handler(request)
        return web.Response(
            status=401,
            text="The supplied authentication is invalid",
            headers={"WWW-Authenticate": 'Basic realm="scheduler"'},
        )

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            given = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(given, self._credentials)

    async def _ping(self, request: web.Request) -> web.Response:
        return web.Response(text="pong")

    async def _state(self, request: web.Request) -> web.Response:
        return web.json_response(await self._scheduler.state())

    async def _disable(self, request: web.Request) -> web.Response:
        log.info("Scheduler disabled through the admin API")
        self._scheduler.disable()
        return web.Response(text="scheduler disabled")

    async def _queues(self, request: web.Request) -> web.Response:
        return web.json_response(self._scheduler.queue_statuses())

    async def _queue_count(self, request: web.Request) -> web.Response:
        return web.Response(text=str(self._scheduler.queue_count()))

    async def _activation_count(self, request: web.Request) -> web.Response:
        return web.Response(text=str(self._scheduler.activation_count()))
