"""`/api/v1/namespaces/{namespace}/actions[/{name}]`: create, read, list, delete and
invoke actions."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from wisp.core.activation import ActivationMessage, ResponseStatus, WhiskActivation
from wisp.core.errors import NotFoundError
from wisp.core.ids import new_activation_id
from wisp.observability.logging import log_context

from .. import validation
from ..bodies import json_response, read_body
from ..completions import wait_for_activation
from ..context import caller, transaction_of
from ..entitlement import Right

log = logging.getLogger(__name__)

ACTIVATION_ID_HEADER = "x-openwhisk-activation-id"

#: HTTP status of a finished blocking invoke, by the activation's status
_STATUS_OF = {
    ResponseStatus.SUCCESS: 200,
    ResponseStatus.APPLICATION_ERROR: 502,
    ResponseStatus.DEVELOPER_ERROR: 502,
    ResponseStatus.WHISK_ERROR: 500,
}


async def list_actions(request: web.Request) -> web.Response:
    ctx, identity, namespace = await caller(request)
    ctx.entitlement.check(identity, Right.READ)
    skip, limit = validation.list_window(request.query)

    actions = await ctx.entity_store.list_actions(namespace, skip=skip, limit=limit)

    return json_response([a.to_json(with_code=False) for a in actions])


async def get_action(request: web.Request) -> web.Response:
    ctx, identity, namespace = await caller(request)
    ctx.entitlement.check(identity, Right.READ)
    name = validation.entity_name(request.match_info["name"])
    with_code = validation.query_bool(request.query, "code", True)

    action = await ctx.entity_store.get_action(namespace, name)

    if action is None:
        raise NotFoundError(validation.NOT_FOUND)
    return json_response(action.to_json(with_code=with_code))


async def put_action(request: web.Request) -> web.Response:
    ctx, identity, namespace = await caller(request)
    ctx.entitlement.check(identity, Right.PUT)
    name = validation.entity_name(request.match_info["name"])
    overwrite = validation.query_bool(request.query, "overwrite", False)
    body = await read_body(request, validation.ACTION_MAX_BYTES)

    previous = await ctx.entity_store.get_action(namespace, name) if overwrite else None
    action = validation.action_document(namespace, name, body, previous)
    stored = await ctx.entity_store.put_action(action, overwrite=overwrite)

    log.info("Action %s/%s stored at %s", namespace, name, stored.rev)
    return json_response(stored.to_json())


async def delete_action(request: web.Request) -> web.Response:
    ctx, identity, namespace = await caller(request)
    ctx.entitlement.check(identity, Right.DELETE)
    name = validation.entity_name(request.match_info["name"])

    deleted = await ctx.entity_store.delete_action(namespace, name)

    if deleted is None:
        raise NotFoundError(validation.NOT_FOUND)
    log.info("Action %s/%s deleted", namespace, name)
    return json_response(deleted.to_json())


async def invoke_action(request: web.Request) -> web.Response:
    ctx, identity, namespace = await caller(request)
    name = validation.entity_name(request.match_info["name"])
    blocking = validation.query_bool(request.query, "blocking", False)
    result_only = validation.query_bool(request.query, "result", False)
    timeout_s = validation.blocking_timeout_s(
        request.query, ctx.config.controller.max_blocking_wait_s
    )
    body = await read_body(request, ctx.config.limits.max_payload_bytes)
    payload = validation.invoke_payload(body)

    # resolve, entitle, build the message
    action = await ctx.entity_store.get_action(namespace, name)
    if action is None:
        raise NotFoundError(validation.NOT_FOUND)
    ctx.entitlement.check(identity, Right.ACTIVATE, action.fqn)
    msg = ActivationMessage(
        transid=transaction_of(request),
        action=action.fqn,
        revision=action.rev,
        user=identity,
        activation_id=new_activation_id(),
        root_controller_index=ctx.controller_id,
        blocking=blocking,
        content=validation.merge_parameters(action, payload),
    )
    headers = {ACTIVATION_ID_HEADER: msg.activation_id}

    with log_context(
        namespace=namespace, action=str(action.fqn), activation_id=msg.activation_id
    ):
        future = await ctx.balancer.publish(action, msg)
        if future is None:
            return _accepted(msg.activation_id, headers)

        # blocking: the record, or 202 once the caller's timeout passed
        activation = await wait_for_activation(
            future, ctx.activation_store, namespace, msg.activation_id, timeout_s
        )
    if activation is None:
        return _accepted(msg.activation_id, headers)
    return _finished(activation, result_only, headers)


def _accepted(activation_id: str, headers: dict[str, str]) -> web.Response:
    return json_response({"activationId": activation_id}, status=202, headers=headers)


def _finished(
    activation: WhiskActivation, result_only: bool, headers: dict[str, str]
) -> web.Response:
    status = _STATUS_OF[activation.response.status]
    body: Any = activation.to_json()
    if result_only:
        result = activation.response.result
        body = result if result is not None else {}
    return json_response(body, status=status, headers=headers)
