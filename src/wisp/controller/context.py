"""What every request handler needs, stored once on the aiohttp application."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from wisp.config.model import WispConfig
from wisp.core.entity import Identity
from wisp.core.ids import ControllerInstanceId, TransactionId
from wisp.infra.store.activations import ActivationStore
from wisp.infra.store.entities import EntityStore

from .auth import Authenticator
from .balancer import FPCPoolBalancer
from .entitlement import FPCEntitlementProvider


@dataclass(frozen=True, slots=True)
class ControllerContext:
    config: WispConfig
    controller_id: ControllerInstanceId
    entity_store: EntityStore
    activation_store: ActivationStore
    authenticator: Authenticator
    entitlement: FPCEntitlementProvider
    balancer: FPCPoolBalancer


CONTEXT = web.AppKey("wisp_controller", ControllerContext)
_TRANSACTION = web.RequestKey("wisp_transaction", TransactionId)


def context_of(request: web.Request) -> ControllerContext:
    return request.app[CONTEXT]


def set_transaction(request: web.Request, transid: TransactionId) -> None:
    request[_TRANSACTION] = transid


def transaction_of(request: web.Request) -> TransactionId:
    """The request's transaction id (the error `code`, the activation's transid)."""
    transid = request.get(_TRANSACTION)
    if transid is None:
        transid = TransactionId.new()
        request[_TRANSACTION] = transid
    return transid


async def caller(request: web.Request) -> tuple[ControllerContext, Identity, str]:
    """Authenticate the request and resolve its `{namespace}` (when the path has one):
    (context, identity, namespace). Raises 401 / 403."""
    ctx = context_of(request)
    identity = await ctx.authenticator.authenticate(
        request.headers.get("Authorization")
    )
    namespace = request.match_info.get("namespace")
    if namespace is None:
        return ctx, identity, identity.namespace
    return ctx, identity, ctx.entitlement.namespace_of(identity, namespace)
