"""Controller admin endpoints: invoker health and in-flight activations (no auth, as
OpenWhisk's controller serves them)."""

from __future__ import annotations

from aiohttp import web

from ..bodies import json_response
from ..context import context_of


async def invokers(request: web.Request) -> web.Response:
    """`{"invoker0": "up", "invoker1": "down", ...}` from the invokers' etcd records."""
    health = await context_of(request).balancer.invoker_health()
    return json_response({name: status for _, name, status in health})


async def healthy_invoker_count(request: web.Request) -> web.Response:
    health = await context_of(request).balancer.invoker_health()
    return json_response(sum(1 for _, _, status in health if status == "up"))


async def in_flight(request: web.Request) -> web.Response:
    activations = context_of(request).balancer.in_flight()
    return json_response([{"activationId": a, "fqn": f} for a, f in activations])


async def in_flight_count(request: web.Request) -> web.Response:
    return json_response(context_of(request).balancer.total_active_activations)
