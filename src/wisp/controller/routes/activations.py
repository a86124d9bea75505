"""`/api/v1/namespaces/{namespace}/activations[/{id}[/result|/logs]]`: activation
records as invokers and schedulers stored them (the controller only reads)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from wisp.core.activation import WhiskActivation
from wisp.core.errors import NotFoundError

from .. import validation
from ..bodies import json_response
from ..context import ControllerContext, caller
from ..entitlement import Right

_MAX_TIMESTAMP = 2**63 - 1


def summary(activation: WhiskActivation) -> dict[str, Any]:
    """A list entry: the record without result and logs, plus its status code (as
    OpenWhisk's list without `docs`)."""
    raw = activation.to_json()
    raw.pop("logs", None)
    raw.pop("response", None)
    raw["statusCode"] = int(activation.response.status)
    return raw


async def list_activations(request: web.Request) -> web.Response:
    ctx, identity, namespace = await caller(request)
    ctx.entitlement.check(identity, Right.READ)
    query = request.query
    skip, limit = validation.list_window(query)
    name = query.get("name") or None
    if name is not None:
        for part in name.split("/"):
            validation.entity_name(part, "name")
    since = validation.query_int(query, "since", None, 0, _MAX_TIMESTAMP)
    upto = validation.query_int(query, "upto", None, 0, _MAX_TIMESTAMP)
    docs = validation.query_bool(query, "docs", False)

    records = await ctx.activation_store.list_activations(
        namespace, name=name, skip=skip, limit=limit, since_ms=since, upto_ms=upto
    )

    return json_response([r.to_json() if docs else summary(r) for r in records])


async def _activation(
    request: web.Request,
) -> tuple[ControllerContext, WhiskActivation]:
    ctx, identity, namespace = await caller(request)
    ctx.entitlement.check(identity, Right.READ)
    activation_id = validation.activation_id(request.match_info["activation_id"])
    record = await ctx.activation_store.get_activation(namespace, activation_id)
    if record is None:
        raise NotFoundError(validation.NOT_FOUND)
    return ctx, record


async def get_activation(request: web.Request) -> web.Response:
    _, record = await _activation(request)
    return json_response(record.to_json())


async def get_result(request: web.Request) -> web.Response:
    _, record = await _activation(request)
    return json_response(record.response.to_json())


async def get_logs(request: web.Request) -> web.Response:
    _, record = await _activation(request)
    return json_response({"logs": list(record.logs)})
