"""Invoker (module 22, FPCInvokerReactive): the invoker role's composition root.

Wires the lease, etcd data management, health record, container pool, container
proxies with their pull clients and the creation consumer; starts them in order and
stops them in the reverse order.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from wisp.config.model import WispConfig
from wisp.core.entity import WhiskAction
from wisp.core.ids import InvokerInstanceId
from wisp.core.messages import ContainerCreationMessage, InvokerStatus
from wisp.infra.etcd.client import EtcdClient
from wisp.infra.etcd.coordination import Coordination
from wisp.infra.etcd.keys import EtcdKeys
from wisp.infra.messaging.acks import ActiveAck
from wisp.infra.messaging.broker import MessageProducer, MessagingProvider
from wisp.infra.messaging.topics import invoker_topic
from wisp.infra.runtime.container import ContainerFactory
from wisp.infra.store.activations import ActivationStore
from wisp.infra.store.entities import EntityStore
from wisp.invoker.admin import InvokerAdminServer
from wisp.invoker.creation_consumer import ContainerMessageConsumer
from wisp.invoker.health import ContainerProbe, InvokerHealthManager
from wisp.invoker.pool import FunctionPullingContainerPool
from wisp.invoker.proxy.activation_client import ActivationClientProxy
from wisp.invoker.proxy.container_proxy import FunctionPullingContainerProxy

log = logging.getLogger(__name__)

DMS_FLUSH_TIMEOUT_S = 5.0


class Invoker:
    def __init__(
        self,
        config: WispConfig,
        *,
        etcd: EtcdClient,
        messaging: MessagingProvider,
        entity_store: EntityStore,
        activation_store: ActivationStore,
        container_factory: ContainerFactory,
        admin_port: int | None = None,
        admin_username: str | None = None,
        admin_password: str | None = None,
        health_probe: bool | None = None,
    ) -> None:
        iconfig = config.invoker
        self._config = config
        self._etcd = etcd
        self._messaging = messaging
        self._entity_store = entity_store
        self._activation_store = activation_store
        self._factory = container_factory
        # Explicit arguments (tests) win over the configuration.
        self._admin_port = iconfig.admin_port if admin_port is None else admin_port
        self._admin_credentials = (
            iconfig.admin_username if admin_username is None else admin_username,
            iconfig.admin_password if admin_password is None else admin_password,
        )
        self._health_probe = (
            iconfig.health_probe if health_probe is None else health_probe
        )
        self._id = InvokerInstanceId(
            config.invoker.instance_id, config.invoker.user_memory_mb
        )
        self._keys = EtcdKeys(config.etcd.cluster_name)

        self._coordination: Coordination | None = None
        self._producer: MessageProducer | None = None
        self._ack: ActiveAck | None = None
        self._health: InvokerHealthManager | None = None
        self._pool: FunctionPullingContainerPool | None = None
        self._consumer: ContainerMessageConsumer | None = None
        self._admin: InvokerAdminServer | None = None
        self._stopped = False

    # --- read by callers ------------------------------------------------------------

    @property
    def instance(self) -> InvokerInstanceId:
        return self._id

    @property
    def name(self) -> str:
        return str(self._id)

    @property
    def pool(self) -> FunctionPullingContainerPool:
        if self._pool is None:
            raise RuntimeError("invoker is not started")
        return self._pool

    @property
    def health(self) -> InvokerHealthManager:
        if self._health is None:
            raise RuntimeError("invoker is not started")
        return self._health

    @property
    def admin_port(self) -> int | None:
        return self._admin.port if self._admin is not None else None

    # --- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            log.error("Invoker %s failed to start; stopping what started", self._id)
            await self.stop()
            raise
        log.info("Invoker %s started (%s MB)", self._id, self._id.user_memory_mb)

    async def _start(self) -> None:
        cfg = self._config

        # 1. liveness: the process lease, the shared watcher, lease-bound writes
        self._coordination = await Coordination.start(
            self._etcd, cfg.etcd, self._keys, f"invoker{self._id.instance}"
        )

        # 2. the producer for creation acks and completion acks
        topic = invoker_topic(self._id.instance)
        await self._messaging.ensure_topic(topic)
        self._producer = self._messaging.producer()
        self._ack = ActiveAck(
            self._producer, self._activation_store, self._id.to_json()
        )

        # 3. the health record, Healthy at once
        probe = (
            ContainerProbe(self._factory, self._id.instance)
            if self._health_probe
            else None
        )
        self._health = InvokerHealthManager(
            invoker=self._id,
            config=cfg.invoker,
            registry=self._coordination.dms,
            keys=self._keys,
            probe=probe,
        )
        await self._health.start()
        self._health.enable()

        # 4. the container pool
        self._pool = FunctionPullingContainerPool(
            invoker=self._id,
            config=cfg.invoker,
            producer=self._producer,
            proxy_factory=self._new_proxy,
            on_memory=self._health.update_memory,
        )
        await self._pool.start()

        # 5. intake: creation and deletion messages
        consumer = await self._messaging.consumer(
            topic, f"invoker{self._id.instance}", cfg.invoker.max_peek
        )
        self._consumer = ContainerMessageConsumer(
            consumer=consumer,
            pool=self._pool,
            entity_store=self._entity_store,
            max_peek=cfg.invoker.max_peek,
        )
        await self._consumer.start()

        # 6. the admin API (optional)
        if self._admin_port >= 0:
            user, password = self._admin_credentials
            self._admin = InvokerAdminServer(
                self, port=self._admin_port, username=user, password=password
            )
            await self._admin.start()

    async def stop(self) -> None:
        """Stop intake, drain and remove containers, delete keys, release the lease."""
        if self._stopped:
            return
        self._stopped = True

        # 1. stop intake: no new creations, no admin commands
        if self._admin is not None:
            await self._admin.stop()
            self._admin = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

        # 2. tell schedulers to place nothing here any more
        if self._health is not None:
            self._health.disable()

        # 3. drain and remove every container (each deletes its own keys)
        if self._pool is not None:
            await self._pool.stop()
        with contextlib.suppress(Exception):
            await self._factory.cleanup()

        # 4. pending etcd writes (key deletions) go out; then the writers stop
        if self._health is not None:
            await self._health.stop()
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._producer.close()

        # 5. the last writes go out, then the lease goes: every lease-bound key left
        # (the health record) vanishes
        if self._coordination is not None:
            await self._coordination.stop(DMS_FLUSH_TIMEOUT_S)
            self._coordination = None
        log.info("Invoker %s stopped", self._id)

    # --- InvokerCore (admin API) -------------------------------------------------------

    async def enable(self) -> None:
        self.pool.enable()
        self.health.enable()

    async def disable(self) -> None:
        self.health.disable()
        self.pool.graceful_shutdown()

    def is_enabled(self) -> bool:
        return (
            self._health is not None
            and self._health.status is not InvokerStatus.OFFLINE
        )

    def pool_state(self) -> dict[str, Any]:
        return self.pool.state()

    # --- factories ------------------------------------------------------------------------

    def _new_proxy(
        self,
        creation: ContainerCreationMessage,
        action: WhiskAction,
        pool: FunctionPullingContainerPool,
    ) -> FunctionPullingContainerProxy:
        assert (
            self._coordination is not None
            and self._ack is not None
            and self._health is not None
        )
        return FunctionPullingContainerProxy(
            creation=creation,
            action=action,
            invoker=self._id,
            config=self._config.invoker.proxy,
            factory=self._factory,
            client_factory=self._new_client,
            registry=self._coordination.dms,
            keys=self._keys,
            entity_store=self._entity_store,
            ack=self._ack,
            parent=pool,
            on_health=self._health.report,
            max_payload_bytes=self._config.limits.max_payload_bytes,
        )

    def _new_client(
        self, creation: ContainerCreationMessage, container_id: str
    ) -> ActivationClientProxy:
        return ActivationClientProxy(
            invocation_namespace=creation.invocation_namespace,
            action=creation.action,
            revision=creation.revision,
            container_id=container_id,
            scheduler_host=creation.scheduler_host,
            rpc_port=creation.rpc_port,
            etcd=self._etcd,
            keys=self._keys,
            transid=creation.transid,
        )
