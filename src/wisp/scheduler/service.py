"""FPCScheduler (module 23): the scheduler role's composition root. Builds the lease,
watcher, data management, gRPC server, queue manager, container manager, creation job
manager and admin API over the adapters it is given, and starts and stops them in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from wisp.config.model import WispConfig
from wisp.core.entity import FullyQualifiedEntityName
from wisp.core.errors import CoordinationError
from wisp.core.ids import SchedulerInstanceId
from wisp.core.messages import (
    ContainerCreationMessage,
    SchedulerEndpoints,
    SchedulerStates,
    decode,
)
from wisp.infra.etcd.client import EtcdClient
from wisp.infra.etcd.coordination import Coordination
from wisp.infra.etcd.keys import EtcdKeys
from wisp.infra.messaging.acks import ActiveAck
from wisp.infra.messaging.broker import (
    MessageConsumer,
    MessageProducer,
    MessagingProvider,
)
from wisp.infra.messaging.topics import creation_ack_topic, scheduler_topic
from wisp.infra.store.activations import ActivationStore
from wisp.infra.store.entities import EntityStore
from wisp.scheduler.admin import AdminServer
from wisp.scheduler.container.creation_jobs import CreationJobManager
from wisp.scheduler.container.manager import ContainerManager
from wisp.scheduler.ports import QueueParent
from wisp.scheduler.queue.counter import NamespaceContainerCountRegistry
from wisp.scheduler.queue.duration import StoreDurationChecker
from wisp.scheduler.queue.manager import QueueManager
from wisp.scheduler.queue.memory_queue import MemoryQueue
from wisp.scheduler.rpc_server import ActivationServiceImpl, QueueServiceImpl, RpcServer

log = logging.getLogger(__name__)

_CREATION_ACK_PEEK = 128
_START_STEP_TIMEOUT_S = 10.0
_STOP_STEP_TIMEOUT_S = 5.0


class Scheduler:
    """One scheduler process (or one scheduler service inside standalone Wisp)."""

    def __init__(
        self,
        config: WispConfig,
        *,
        etcd: EtcdClient,
        messaging: MessagingProvider,
        entity_store: EntityStore,
        activation_store: ActivationStore,
    ) -> None:
        self._config = config
        self._etcd = etcd
        self._messaging = messaging
        self._entity_store = entity_store
        self._activation_store = activation_store
        self._sid = SchedulerInstanceId(config.scheduler.instance_id)
        self._keys = EtcdKeys(config.etcd.cluster_name)
        self._endpoints: SchedulerEndpoints | None = None
        self._coordination: Coordination | None = None
        self._rpc: RpcServer | None = None
        self._producer: MessageProducer | None = None
        self._consumers: list[MessageConsumer] = []
        self._jobs: CreationJobManager | None = None
        self._containers: ContainerManager | None = None
        self._queues: QueueManager | None = None
        self._admin: AdminServer | None = None

    # --- what others read ----------------------------------------------------------------

    @property
    def sid(self) -> SchedulerInstanceId:
        return self._sid

    @property
    def rpc_port(self) -> int:
        return self._rpc.port if self._rpc is not None else 0

    @property
    def endpoints(self) -> SchedulerEndpoints:
        if self._endpoints is None:
            raise RuntimeError("the scheduler has not started")
        return self._endpoints

    @property
    def admin_port(self) -> int | None:
        return self._admin.port if self._admin is not None else None

    @property
    def queue_manager(self) -> QueueManager:
        if self._queues is None:
            raise RuntimeError("the scheduler has not started")
        return self._queues

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            log.exception("Scheduler %s failed to start", self._sid)
            await self.stop()
            raise

    async def _start(self) -> None:
        config = self._config
        sconfig = config.scheduler
        sid = self._sid.as_string

        # Topics exist before anyone publishes to them.
        for topic in (scheduler_topic(sid), creation_ack_topic(sid)):
            await asyncio.wait_for(
                self._messaging.ensure_topic(topic), _START_STEP_TIMEOUT_S
            )

        # One lease for everything this scheduler registers; DMS writes it back
        # when a new lease replaces a lost one.
        self._coordination = await Coordination.start(
            self._etcd, config.etcd, self._keys, str(self._sid)
        )
        watcher, dms = self._coordination.watcher, self._coordination.dms

        # The gRPC port goes into every leader key: bind it before anything else.
        self._rpc = RpcServer(sconfig.host, sconfig.rpc_port)
        self._endpoints = SchedulerEndpoints(sconfig.host, self._rpc.bind())

        # Messaging: one producer, a consumer per own topic.
        self._producer = self._messaging.producer()
        ack = ActiveAck(
            self._producer,
            self._activation_store,
            {**self._sid.to_json(), "instanceType": "scheduler"},
        )
        ack_consumer = await asyncio.wait_for(
            self._messaging.consumer(
                creation_ack_topic(sid), creation_ack_topic(sid), _CREATION_ACK_PEEK
            ),
            _START_STEP_TIMEOUT_S,
        )
        self._consumers.append(ack_consumer)
        activation_consumer = await asyncio.wait_for(
            self._messaging.consumer(
                scheduler_topic(sid), scheduler_topic(sid), sconfig.max_peek
            ),
            _START_STEP_TIMEOUT_S,
        )
        self._consumers.append(activation_consumer)

        # Container side: creation jobs and placement.
        self._jobs = CreationJobManager(
            config=sconfig,
            sid=sid,
            keys=self._keys,
            dms=dms,
            consumer=ack_consumer,
            lookup=self._lookup,
            reschedule=self._reschedule,
            on_finished=self._creation_finished,
        )
        self._containers = ContainerManager(
            config=sconfig,
            etcd=self._etcd,
            keys=self._keys,
            watcher=watcher,
            producer=self._producer,
            jobs=self._jobs,
            lookup=self._lookup,
            request_timeout_s=config.etcd.request_timeout_s,
        )

        # Queue side: the shared collaborators every MemoryQueue gets.
        counters = NamespaceContainerCountRegistry(
            self._etcd,
            self._keys,
            watcher,
            timeout_s=config.etcd.request_timeout_s,
        )
        durations = StoreDurationChecker(self._activation_store)
        endpoints = self._endpoints
        containers = self._containers

        def make_queue(
            *,
            invocation_namespace: str,
            action: FullyQualifiedEntityName,
            revision: str,
            action_metadata: dict[str, Any],
            parent: QueueParent,
            namespace_limit: Callable[[str], Awaitable[int]],
        ) -> MemoryQueue:
            return MemoryQueue(
                invocation_namespace=invocation_namespace,
                action=action,
                revision=revision,
                action_metadata=action_metadata,
                config=sconfig,
                sid=self._sid,
                endpoints=endpoints,
                etcd=self._etcd,
                keys=self._keys,
                watcher=watcher,
                dms=dms,
                counters=counters,
                duration_checker=durations,
                container_creator=containers,
                parent=parent,
                ack=ack,
                namespace_limit=namespace_limit,
            )

        self._queues = QueueManager(
            config=config,
            sid=self._sid,
            endpoints=endpoints,
            etcd=self._etcd,
            keys=self._keys,
            watcher=watcher,
            dms=dms,
            entity_store=self._entity_store,
            ack=ack,
            consumer=activation_consumer,
            queue_factory=make_queue,
        )

        # Start inside out: outcomes and placement, then the RPCs, then the queue
        # manager, whose scheduler record lets controllers choose this scheduler.
        await self._jobs.start()
        await self._containers.start()
        await self._rpc.start(
            ActivationServiceImpl(self._queues), QueueServiceImpl(self._queues)
        )
        await self._queues.start()
        if sconfig.admin_port >= 0:
            self._admin = AdminServer(
                self,
                host=sconfig.host,
                port=sconfig.admin_port,
                username=sconfig.admin_username,
                password=sconfig.admin_password,
            )
            await self._admin.start()
        log.info("Scheduler %s started on %s", self._sid, endpoints.rpc_endpoint)

    async def stop(self) -> None:
        """Leave the cluster in order; safe after a partial start and when repeated."""
        grace_s = self._config.scheduler.queue.graceful_shutdown_timeout_s

        # 1. Stop intake: unregister the scheduler record, retire every queue.
        if self._queues is not None:
            self._queues.graceful_shutdown()

            # 2. Queues keep serving containers until empty, within the bound.
            if not await self._queues.drain(grace_s):
                log.warning("Queues still busy after %.1fs; stopping anyway", grace_s)

        # 3. No more pulls, forwards or admin calls.
        if self._admin is not None:
            await self._admin.stop()
            self._admin = None
        if self._rpc is not None:
            await self._rpc.stop(grace_s=min(1.0, grace_s))

        # 4. Consumers and background work.
        if self._queues is not None:
            await self._queues.stop()
        if self._containers is not None:
            await self._containers.stop()
        if self._jobs is not None:
            await self._jobs.stop()
        for consumer in self._consumers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.close(), _STOP_STEP_TIMEOUT_S)
        self._consumers.clear()

        # 5. The last etcd writes (unregistrations) go out, the watches close, and the
        # lease goes: whatever is still under it disappears now.
        if self._coordination is not None:
            await self._coordination.stop(_STOP_STEP_TIMEOUT_S)
            self._coordination = None
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._producer.close(), _STOP_STEP_TIMEOUT_S)
        self._queues = self._containers = self._jobs = None
        self._rpc = self._producer = None
        log.info("Scheduler %s stopped", self._sid)

    # --- wiring between the parts ----------------------------------------------------------

    def _lookup(
        self, invocation_ns: str, fqn: str, revision: str
    ) -> MemoryQueue | None:
        return (
            self._queues.lookup(invocation_ns, fqn, revision) if self._queues else None
        )

    def _reschedule(self, msg: ContainerCreationMessage) -> None:
        if self._containers is not None:
            self._containers.reschedule(msg)

    def _creation_finished(self, creation_id: str) -> None:
        if self._containers is not None:
            self._containers.creation_finished(creation_id)

    # --- SchedulerAdmin (admin API) --------------------------------------------------------

    async def state(self) -> dict[str, str]:
        """`queue`: leader queues as published in etcd (-1 when unreadable)."""
        queue_size = -1
        try:
            kv = await asyncio.wait_for(
                self._etcd.get(self._keys.scheduler(self._sid.as_string)),
                self._config.etcd.request_timeout_s,
            )
            if kv is not None:
                queue_size = SchedulerStates.from_json(decode(kv.value)).queue_size
        except (CoordinationError, TimeoutError, ValueError, KeyError, TypeError):
            log.warning("Reading the scheduler record failed")
        creations = len(self._jobs.in_progress) if self._jobs is not None else 0
        # DIVERGENCE(openwhisk): creationCount read a key family nobody writes (always
        # 0); here it is the number of creations in flight.
        return {"queue": str(queue_size), "creationCount": str(creations)}

    def disable(self) -> None:
        if self._queues is not None:
            self._queues.graceful_shutdown()

    def queue_statuses(self) -> list[dict[str, Any]]:
        return self._queues.status() if self._queues is not None else []

    def queue_count(self) -> int:
        return self._queues.queue_count if self._queues is not None else 0

    def activation_count(self) -> int:
        return self._queues.waiting_count() if self._queues is not None else 0
