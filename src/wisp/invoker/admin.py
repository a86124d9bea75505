"""FPCInvokerServer (module 15): the invoker's small admin HTTP API.

`GET /ping` is open; `POST /enable`, `POST /disable`, `GET /isEnabled`, `GET /pool` and
`GET /pool/count` need basic auth with the invoker's admin credentials.
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

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class InvokerCore(Protocol):
    """What the admin API drives (implemented by `service.Invoker`)."""

    @property
    def name(self) -> str: ...

    async def enable(self) -> None: ...

    async def disable(self) -> None: ...

    def is_enabled(self) -> bool: ...

    def pool_state(self) -> dict[str, Any]: ...


class InvokerAdminServer:
    def __init__(
        self,
        core: InvokerCore,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        username: str,
        password: str,
    ) -> None:
        self._core = core
        self._host = host
        self._port = port
        self._credentials = (username, password)
        self._runner: web.AppRunner | None = None
        self.app = self._build_app()

    @property
    def port(self) -> int:
        """The bound port (after start), useful when 0 asked for a free one."""
        return self._port

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        if self._port == 0 and self._runner.addresses:
            self._port = int(self._runner.addresses[0][1])
        log.info("Invoker admin API on %s:%s", self._host, self._port)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/ping", self._ping)
        app.router.add_post("/enable", self._enable)
        app.router.add_post("/disable", self._disable)
        app.router.add_get("/isEnabled", self._is_enabled)
        app.router.add_get("/pool", self._pool)
        app.router.add_get("/pool/count", self._pool_count)
        return app

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/ping" or self._authorized(
            request.headers.get("Authorization")
        ):
            return await handler(request)
        return web.json_response(
            {"error": "The supplied authentication is invalid"},
            status=401,
            headers={"WWW-Authenticate": 'Basic realm="invoker"'},
        )

    def _authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            decoded = base64.b64decode(header[6:], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, sep, password = decoded.partition(":")
        if not sep:
            return False
        want_user, want_password = self._credentials
        return hmac.compare_digest(
            user.encode(), want_user.encode()
        ) & hmac.compare_digest(password.encode(), want_password.encode())

    async def _ping(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="pong")

    async def _enable(self, request: web.Request) -> web.StreamResponse:
        await self._core.enable()
        return web.Response(text=f"{self._core.name} is now enabled.")

    async def _disable(self, request: web.Request) -> web.StreamResponse:
        await self._core.disable()
        return web.Response(text=f"{self._core.name} is now disabled.")

    async def _is_enabled(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"enabled": self._core.is_enabled()})

    async def _pool(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self._core.pool_state())

    async def _pool_count(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(int(self._core.pool_state()["totalContainers"]))
