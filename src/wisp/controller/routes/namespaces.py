"""`/`, `/api/v1` (what this server is) and `/api/v1/namespaces` (the caller's)."""

from __future__ import annotations

from aiohttp import web

import wisp
from wisp.core.entity import DEFAULT_BOUNDS, SUPPORTED_KINDS

from ..bodies import json_response
from ..context import caller, context_of
from ..entitlement import Right

API_PATH = "/api/v1"


async def server_info(request: web.Request) -> web.Response:
    limits = context_of(request).config.limits
    bounds = DEFAULT_BOUNDS
    return json_response(
        {
            "description": "Wisp, a serverless platform on OpenWhisk's FPC design",
            "api_paths": [API_PATH],
            "runtimes": {
                "python": [{"kind": "python:3", "default": True}],
                "nodejs": [{"kind": "nodejs:20", "default": True}],
            },
            "kinds": sorted(SUPPORTED_KINDS),
            "limits": {
                "actions_per_minute": limits.invocations_per_minute,
                "concurrent_actions": limits.concurrent_invocations,
                "max_action_duration": bounds.timeout_max_ms,
                "min_action_duration": bounds.timeout_min_ms,
                "max_action_memory": bounds.memory_max_mb * 1024 * 1024,
                "min_action_memory": bounds.memory_min_mb * 1024 * 1024,
                "max_payload_bytes": limits.max_payload_bytes,
            },
        }
    )


async def api_info(request: web.Request) -> web.Response:
    return json_response(
        {
            "api_paths": [API_PATH],
            "description": "Wisp REST API (OpenWhisk API v1)",
            "api_version": "1.0.0",
            "api_version_path": "v1",
            "build": wisp.__version__,
        }
    )


async def list_namespaces(request: web.Request) -> web.Response:
    ctx, identity, namespace = await caller(request)
    ctx.entitlement.check(identity, Right.READ)
    return json_response([namespace])
