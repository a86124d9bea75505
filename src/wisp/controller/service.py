"""Controller: the composition root of the controller role (REST API, balancer, ack
feed, activation journal), started and stopped as one service."""

from __future__ import annotations

import logging

from aiohttp import web

from wisp.config.model import WispConfig
from wisp.core.ids import ControllerInstanceId
from wisp.infra.etcd.client import EtcdClient
from wisp.infra.etcd.keys import EtcdKeys
from wisp.infra.etcd.watcher import WatcherService
from wisp.infra.messaging.broker import MessageProducer, MessagingProvider
from wisp.infra.store.activations import ActivationJournalStore
from wisp.infra.store.entities import EntityStore

from .app import create_app
from .auth import GUEST_IDENTITY, Authenticator
from .balancer import FPCPoolBalancer, QueueClient
from .completions import CompletionConsumer
from .context import ControllerContext
from .entitlement import FPCEntitlementProvider
from .journal import ActivationJournal, recover_lost_activations

log = logging.getLogger(__name__)

#: how long in-flight requests may finish once the site stops listening
_HTTP_SHUTDOWN_S = 5.0


class Controller:
    def __init__(
        self,
        config: WispConfig,
        *,
        etcd: EtcdClient,
        messaging: MessagingProvider,
        entity_store: EntityStore,
        activation_store: ActivationJournalStore,
        queue_client: QueueClient | None = None,
    ) -> None:
        self._config = config
        self._etcd = etcd
        self._messaging = messaging
        self._entity_store = entity_store
        self._activation_store = activation_store
        self._instance = ControllerInstanceId(config.controller.instance_id)
        self._keys = EtcdKeys(config.etcd.cluster_name)
        self._watcher = WatcherService(etcd)
        self._producer: MessageProducer | None = None
        self._queue_client = queue_client
        self._balancer: FPCPoolBalancer | None = None
        self._completions: CompletionConsumer | None = None
        self._journal: ActivationJournal | None = None
        self._runner: web.AppRunner | None = None
        self._port = 0

    @property
    def port(self) -> int:
        """The port the REST API listens on (known after start)."""
        return self._port

    @property
    def balancer(self) -> FPCPoolBalancer:
        if self._balancer is None:
            raise RuntimeError("controller not started")
        return self._balancer

    async def start(self) -> None:
        config = self._config

        # the guest namespace exists from the first start
        if (
            await self._entity_store.identity_by_namespace(GUEST_IDENTITY.namespace)
            is None
        ):
            await self._entity_store.put_identity(GUEST_IDENTITY)
            log.info("Created the guest namespace")

        # activations an earlier run accepted but never finished get their records
        await recover_lost_activations(self._activation_store, self._instance.as_string)
        self._journal = ActivationJournal(self._activation_store)
        await self._journal.start()

        # etcd watches, then the balancer that mirrors schedulers and throttles
        await self._watcher.start()
        self._producer = self._messaging.producer()
        self._balancer = FPCPoolBalancer(
            config,
            etcd=self._etcd,
            watcher=self._watcher,
            producer=self._producer,
            controller_id=self._instance,
            keys=self._keys,
            queue_client=self._queue_client,
            journal=self._journal,
        )
        await self._balancer.start()

        # the ack feed, before any activation can be sent
        self._completions = CompletionConsumer(
            self._messaging, self._balancer, self._instance.as_string
        )
        await self._completions.start()

        # finally the REST API
        balancer = self._balancer
        ctx = ControllerContext(
            config=config,
            controller_id=self._instance,
            entity_store=self._entity_store,
            activation_store=self._activation_store,
            authenticator=Authenticator(self._entity_store),
            entitlement=FPCEntitlementProvider(config.limits, balancer.check_throttle),
            balancer=balancer,
        )
        # bodies stay encoded: read_body decodes them within the size limit and
        # answers a bad Content-Encoding with a JSON error
        self._runner = web.AppRunner(
            create_app(ctx),
            shutdown_timeout=_HTTP_SHUTDOWN_S,
            access_log=None,
            auto_decompress=False,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, config.controller.host, config.controller.port)
        await site.start()
        self._port = _bound_port(self._runner, config.controller.port)
        log.info(
            "Controller %s listening on %s:%d",
            self._instance.as_string,
            config.controller.host,
            self._port,
        )

    async def stop(self) -> None:
        # stop intake: no new requests, running ones finish (bounded)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        # stop the ack feed, then release waiters and in-flight bookkeeping
        if self._completions is not None:
            await self._completions.stop()
            self._completions = None
        if self._balancer is not None:
            await self._balancer.stop()
        # completed activations leave the journal; those in flight stay for recovery
        if self._journal is not None:
            await self._journal.stop()
            self._journal = None
        # close clients
        await self._watcher.stop()
        if self._producer is not None:
            await self._producer.close()
            self._producer = None
        log.info("Controller %s stopped", self._instance.as_string)


def _bound_port(runner: web.AppRunner, configured: int) -> int:
    """The real port when the configuration asked for any free one (0)."""
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return configured
