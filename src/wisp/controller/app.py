"""The controller's aiohttp application: route table and the one place where errors
become OpenWhisk's JSON answers `{"error": ..., "code": <transaction id>}`."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from wisp.core.errors import ServiceUnavailable, UserInputError
from wisp.core.ids import TransactionId
from wisp.observability.logging import log_context

from . import validation
from .bodies import json_response
from .context import CONTEXT, ControllerContext, set_transaction
from .routes import actions, activations, admin, namespaces

log = logging.getLogger(__name__)

INTERNAL_ERROR = "The server encountered an internal error; try again later."

_HTTP_TEXT = {
    404: validation.NOT_FOUND,
    405: "The requested method is not allowed for this resource.",
    413: "The request content is too large.",
}


def error_response(status: int, message: str, transid: TransactionId) -> web.Response:
    return json_response({"error": message, "code": transid.id}, status=status)


@web.middleware
async def error_middleware(
    request: web.Request, handler: Handler
) -> web.StreamResponse:
    """Gives each request its transaction id and maps every error to its answer."""
    transid = TransactionId.new()
    set_transaction(request, transid)
    with log_context(tid=transid.id):
        try:
            return await handler(request)
        except UserInputError as exc:
            log.debug(
                "%s %s refused (%d): %s",
                request.method,
                request.path,
                exc.status,
                exc.message,
            )
            return error_response(exc.status, exc.message, transid)
        except ServiceUnavailable as exc:
            log.warning("%s %s unavailable: %s", request.method, request.path, exc)
            return error_response(503, str(exc), transid)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            text = _HTTP_TEXT.get(exc.status, exc.reason)
            return error_response(exc.status, text, transid)
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            return error_response(500, INTERNAL_ERROR, transid)


def create_app(ctx: ControllerContext) -> web.Application:
    max_body = max(validation.ACTION_MAX_BYTES, ctx.config.limits.max_payload_bytes)
    app = web.Application(middlewares=[error_middleware], client_max_size=max_body + 1)
    app[CONTEXT] = ctx
    ns = "/api/v1/namespaces/{namespace}"
    app.add_routes(
        [
            web.get("/", namespaces.server_info),
            web.get("/api/v1", namespaces.api_info),
            web.get("/api/v1/namespaces", namespaces.list_namespaces),
            # actions
            web.get(f"{ns}/actions", actions.list_actions),
            web.get(f"{ns}/actions/{{name}}", actions.get_action),
            web.put(f"{ns}/actions/{{name}}", actions.put_action),
            web.delete(f"{ns}/actions/{{name}}", actions.delete_action),
            web.post(f"{ns}/actions/{{name}}", actions.invoke_action),
            # activations
            web.get(f"{ns}/activations", activations.list_activations),
            web.get(f"{ns}/activations/{{activation_id}}", activations.get_activation),
            web.get(
                f"{ns}/activations/{{activation_id}}/result", activations.get_result
            ),
            web.get(f"{ns}/activations/{{activation_id}}/logs", activations.get_logs),
            # admin
            web.get("/invokers", admin.invokers),
            web.get("/invokers/healthy/count", admin.healthy_invoker_count),
            web.get("/activation", admin.in_flight),
            web.get("/activation/count", admin.in_flight_count),
        ]
    )
    return app
