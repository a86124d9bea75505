"""FPCPoolBalancer (module 24): routes activations to the scheduler leading the
action's queue, bootstraps queues over gRPC, tracks in-flight activations and their
blocking waiters, and mirrors the schedulers' throttle flags from etcd.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from wisp.config.model import WispConfig
from wisp.core.activation import ActivationMessage, WhiskActivation
from wisp.core.entity import FullyQualifiedEntityName, WhiskAction
from wisp.core.errors import (
    CoordinationError,
    MessagingError,
    ServiceUnavailable,
    StoreError,
)
from wisp.core.ids import ControllerInstanceId, TransactionId
from wisp.core.messages import (
    CompletionAck,
    CreateQueueRequest,
    InvokerResourceMessage,
    InvokerStatus,
    SchedulerEndpoints,
    SchedulerStates,
    encode,
)
from wisp.infra.etcd.client import EtcdClient, WatchEvent
from wisp.infra.etcd.keys import EtcdKeys, invoker_id_from_invoker_key
from wisp.infra.etcd.watcher import WatcherService
from wisp.infra.messaging.broker import MessageProducer
from wisp.infra.messaging.topics import scheduler_topic
from wisp.infra.rpc.queue_client import QueueServiceClient
from wisp.infra.store.activations import JournalEntry
from wisp.infra.tasks import TaskSet

from .journal import ActivationJournal

log = logging.getLogger(__name__)

NO_SCHEDULER = "No scheduler endpoint available"
SEND_FAILED = "The activation could not be handed to a scheduler"
JOURNAL_FAILED = "The activation could not be recorded; try again later"

#: OpenWhisk's standard action timeout: the floor of the forced-completion timer
_STD_TIMEOUT_S = 60.0
#: bound on producing one activation to a scheduler topic
_SEND_TIMEOUT_S = 10.0
#: pause before trying schedulers that already failed a CreateQueue again
_CREATE_QUEUE_BACKOFF_S = 0.2
#: deleted keys remembered so that a late read cannot resurrect them
_TOMBSTONES_MAX = 4096

#: what a blocking waiter receives: the record, or only its id (read the store then)
ActivationResult = WhiskActivation | str

T = TypeVar("T")


# --- pure decisions -------------------------------------------------------------------


def throttle_flag(
    flags: Mapping[str, bool], keys: EtcdKeys, invocation_ns: str, fqn: str
) -> bool:
    """OpenWhisk's checkThrottle: the action key decides when present (an explicit
    false beats a throttled namespace), else the namespace key, else not throttled."""
    action_flag = flags.get(keys.action_throttling(invocation_ns, fqn))
    if action_flag is not None:
        return action_flag
    return flags.get(keys.namespace_throttling(invocation_ns.split("/", 1)[0]), False)


def least_loaded(
    schedulers: Iterable[SchedulerStates], exclude: frozenset[str] = frozenset()
) -> SchedulerStates | None:
    """The scheduler leading the fewest queues (ties: lowest id), skipping `exclude`."""
    candidates = [s for s in schedulers if s.sid.as_string not in exclude]
    if not candidates:
        return None
    return min(candidates, key=lambda s: (s.queue_size, s.sid.as_string))


def forced_completion_after_s(
    action_timeout_ms: int, timeout_factor: float, timeout_addon_s: float
) -> float:
    """max(action timeout, 60 s) × factor + addon."""
    # DIVERGENCE(openwhisk): FPC hard-codes the addon to one minute and ignores
    # `timeout-addon`; here the configured addon (default 60 s, the same) applies.
    return (
        max(action_timeout_ms / 1000.0, _STD_TIMEOUT_S) * timeout_factor
        + timeout_addon_s
    )


def parse_bool_flag(value: str) -> bool:
    return value.strip().lower() == "true"


def parse_scheduler(value: str) -> SchedulerStates | None:
    try:
        return SchedulerStates.from_json(json.loads(value))
    except (ValueError, KeyError, TypeError):
        return None


def parse_leader(value: str) -> SchedulerEndpoints | None:
    """A leader key's endpoints; other values (e.g. a removal marker) are not leaders."""
    try:
        raw = json.loads(value)
        if not isinstance(raw, dict) or "host" not in raw:
            return None
        return SchedulerEndpoints.from_json(raw)
    except (ValueError, KeyError, TypeError):
        return None


def invoker_statuses(
    records: Iterable[tuple[str, str]], keys: EtcdKeys
) -> list[tuple[int, str, str]]:
    """(id, name, status) per invoker from `(key, value)` health records, sorted by id;
    ids missing between the lowest and highest are reported "down" (Offline)."""
    found: dict[int, tuple[str, str]] = {}
    prefix = keys.invokers_prefix()
    for key, value in records:
        invoker_id = invoker_id_from_invoker_key(key)
        if invoker_id < 0:
            continue
        try:
            status = InvokerResourceMessage.from_json(json.loads(value)).status
        except (ValueError, TypeError, AttributeError):
            status = InvokerStatus.OFFLINE
        extra = key[len(prefix) :].split("/")[1:]
        name = "/".join([f"invoker{invoker_id}", *extra])
        found[invoker_id] = (name, status.value)
    if not found:
        return []
    out: list[tuple[int, str, str]] = []
    for invoker_id in range(min(found), max(found) + 1):
        name, text = found.get(invoker_id, (f"invoker{invoker_id}", "down"))
        out.append((invoker_id, name, text))
    return out


class KeyMirror(Generic[T]):
    """An in-memory copy of some etcd keys that applies a write only when it is newer
    than what it has seen for that key, so that a snapshot read and watch events can
    arrive in any order."""

    def __init__(self, parse: Callable[[str], T | None]) -> None:
        self._parse = parse
        self.values: dict[str, T] = {}
        self._revisions: dict[str, int] = {}
        self._tombstones: OrderedDict[str, int] = OrderedDict()

    def _seen(self, key: str) -> int:
        return self._revisions.get(key, self._tombstones.get(key, 0))

    def put(self, key: str, value: str, revision: int) -> T | None:
        """Apply a put; returns the parsed value when applied (None: stale or unparsable
        values leave the mirror as it was)."""
        if revision < self._seen(key):
            return None
        parsed = self._parse(value)
        if parsed is None:
            return None
        self._tombstones.pop(key, None)
        self._revisions[key] = revision
        self.values[key] = parsed
        return parsed

    def delete(self, key: str, revision: int) -> T | None:
        """Apply a delete; returns the value it removed."""
        if revision < self._seen(key):
            return None
        self._revisions.pop(key, None)
        self._tombstones[key] = revision
        self._tombstones.move_to_end(key)
        while len(self._tombstones) > _TOMBSTONES_MAX:
            self._tombstones.popitem(last=False)
        return self.values.pop(key, None)


# --- the queue RPC ----------------------------------------------------------------------


class QueueClient(Protocol):
    async def create_queue(
        self, endpoint: str, request: CreateQueueRequest, timeout_s: float
    ) -> bool:
        """Ask the scheduler at `endpoint` (host:port) to make sure the queue exists."""
        ...

    async def forget(self, endpoint: str) -> None:
        """Drop what is kept for a scheduler that left (its channel)."""
        ...

    async def close(self) -> None: ...


# --- in-flight bookkeeping ---------------------------------------------------------------


@dataclass(slots=True)
class ActivationEntry:
    """OpenWhisk's DistributedActivationEntry: one activation this controller awaits."""

    activation_id: str
    namespace_uuid: str
    invocation_namespace: str
    fqn: FullyQualifiedEntityName
    revision: str
    action_metadata: dict[str, object]
    memory_mb: int
    blocking: bool
    transid: TransactionId
    #: what the journal holds for it (None: the balancer runs without a journal)
    journal: JournalEntry | None = field(default=None, repr=False)
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)


class FPCPoolBalancer:
    def __init__(
        self,
        config: WispConfig,
        *,
        etcd: EtcdClient,
        watcher: WatcherService,
        producer: MessageProducer,
        controller_id: ControllerInstanceId,
        keys: EtcdKeys | None = None,
        queue_client: QueueClient | None = None,
        journal: ActivationJournal | None = None,
    ) -> None:
        self._config = config.controller
        self._etcd_timeout_s = config.etcd.request_timeout_s
        self._etcd = etcd
        self._watcher = watcher
        self._producer = producer
        self._controller_id = controller_id
        self._keys = keys or EtcdKeys(config.etcd.cluster_name)
        self._queue_client: QueueClient = queue_client or QueueServiceClient()
        self._journal = journal
        self._watch_name = f"controller{controller_id.as_string}-balancer"

        self._schedulers: KeyMirror[SchedulerStates] = KeyMirror(parse_scheduler)
        self._leaders: KeyMirror[SchedulerEndpoints] = KeyMirror(parse_leader)
        self._throttles: KeyMirror[bool] = KeyMirror(parse_bool_flag)
        #: leader key → scheduler id, while a CreateQueue for it is under way
        self._creating: dict[str, str] = {}

        self._entries: dict[str, ActivationEntry] = {}
        self._promises: dict[str, asyncio.Future[ActivationResult]] = {}
        self._per_namespace: dict[str, int] = {}
        self._memory_mb = 0
        self._tasks = TaskSet(f"balancer:{controller_id.as_string}", log)
        self._running = False

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe to schedulers, queue leaders and throttle flags, then read what
        etcd holds already (the mirrors order both by revision)."""
        keys = self._keys
        self._watcher.watch(
            keys.scheduler_prefix(),
            prefix=True,
            name=self._watch_name,
            on_put=self._on_scheduler_put,
            on_delete=self._on_scheduler_delete,
        )
        self._watcher.watch(
            keys.queue_prefix(),
            prefix=True,
            name=self._watch_name,
            on_put=self._on_queue_put,
            on_delete=self._on_queue_delete,
        )
        self._watcher.watch(
            keys.throttling_prefix(),
            prefix=True,
            name=self._watch_name,
            on_put=self._on_throttle_put,
            on_delete=self._on_throttle_delete,
        )
        self._running = True
        # the streams must be open before the read, or writes in between are missed
        try:
            await self._watcher.wait_ready(self._etcd_timeout_s)
        except TimeoutError:
            log.warning("etcd watches are not open yet; reading etcd anyway")
        await self._load_snapshot()
        log.info("Balancer started with %d scheduler(s)", len(self._schedulers.values))

    async def _load_snapshot(self) -> None:
        try:
            schedulers = await asyncio.wait_for(
                self._etcd.get_prefix(self._keys.scheduler_prefix()),
                self._etcd_timeout_s,
            )
            for kv in schedulers:
                self._schedulers.put(kv.key, kv.value, kv.mod_revision)
            throttles = await asyncio.wait_for(
                self._etcd.get_prefix(self._keys.throttling_prefix()),
                self._etcd_timeout_s,
            )
            for kv in throttles:
                self._throttles.put(kv.key, kv.value, kv.mod_revision)
        except (CoordinationError, TimeoutError) as exc:
            # the watches fill the mirrors as soon as etcd answers again
            log.warning("Reading schedulers and throttles from etcd failed: %r", exc)

    async def stop(self) -> None:
        """Stop routing; waiters get the activation id (they read the store or 202)."""
        self._running = False
        for prefix in (
            self._keys.scheduler_prefix(),
            self._keys.queue_prefix(),
            self._keys.throttling_prefix(),
        ):
            self._watcher.unwatch(prefix, prefix=True, name=self._watch_name)
        await self._tasks.cancel_all()
        for entry in list(self._entries.values()):
            if entry.timer is not None:
                entry.timer.cancel()
        self._entries.clear()
        self._per_namespace.clear()
        self._memory_mb = 0
        for activation_id in list(self._promises):
            self._resolve(activation_id, activation_id)
        await self._queue_client.close()

    # --- watch callbacks (sync, in the watcher's task) --------------------------------

    def _on_scheduler_put(self, event: WatchEvent) -> None:
        # DIVERGENCE(openwhisk): a newly seen scheduler gets no warm-up activation or
        # warm-up CreateQueue; they only pre-opened Kafka and actor-remoting paths,
        # which the broker and gRPC channels here do not need.
        known = event.key in self._schedulers.values
        state = self._schedulers.put(event.key, event.value, event.revision)
        if state is None:
            log.warning("Ignoring scheduler record %s: %r", event.key, event.value)
        elif not known:
            log.info(
                "Scheduler %s joined at %s", state.sid, state.endpoints.rpc_endpoint
            )

    def _on_scheduler_delete(self, event: WatchEvent) -> None:
        state = self._schedulers.delete(event.key, event.revision)
        if state is None:
            return
        log.info("Scheduler %s left", state.sid)
        if self._running:
            self._spawn(
                self._queue_client.forget(state.endpoints.rpc_endpoint),
                f"forget:{state.sid}",
            )

    def _on_throttle_put(self, event: WatchEvent) -> None:
        self._throttles.put(event.key, event.value, event.revision)

    def _on_throttle_delete(self, event: WatchEvent) -> None:
        self._throttles.delete(event.key, event.revision)

    def _on_queue_put(self, event: WatchEvent) -> None:
        if event.key.endswith("/leader"):
            self._leaders.put(event.key, event.value, event.revision)

    def _on_queue_delete(self, event: WatchEvent) -> None:
        if not event.key.endswith("/leader"):
            return
        self._leaders.delete(event.key, event.revision)
        if not self._running:
            return
        # a queue vanished under activations we still await: have it made again
        for entry in self._entries.values():
            leader_key = self._keys.queue_leader(
                entry.invocation_namespace, entry.fqn.unversioned()
            )
            if leader_key == event.key:
                log.info(
                    "Queue of %s is gone with work in flight; recreating", entry.fqn
                )
                self._start_create_queue(leader_key, self._create_request(entry), None)
                break

    # --- throttles and health ------------------------------------------------------------

    def check_throttle(self, invocation_ns: str, fqn: str) -> bool:
        return throttle_flag(self._throttles.values, self._keys, invocation_ns, fqn)

    async def invoker_health(self) -> list[tuple[int, str, str]]:
        try:
            kvs = await asyncio.wait_for(
                self._etcd.get_prefix(self._keys.invokers_prefix()),
                self._etcd_timeout_s,
            )
        except (CoordinationError, TimeoutError) as exc:
            raise ServiceUnavailable("The invoker records cannot be read now") from exc
        return invoker_statuses(((kv.key, kv.value) for kv in kvs), self._keys)

    @property
    def schedulers(self) -> list[SchedulerStates]:
        return list(self._schedulers.values.values())

    @property
    def total_active_activations(self) -> int:
        return len(self._entries)

    @property
    def total_active_memory_mb(self) -> int:
        return self._memory_mb

    def active_activations_for(self, namespace_uuid: str) -> int:
        return self._per_namespace.get(namespace_uuid, 0)

    def in_flight(self) -> list[tuple[str, str]]:
        """(activation id, fqn) of every activation awaiting its completion."""
        return [(e.activation_id, str(e.fqn)) for e in self._entries.values()]

    # --- publish ---------------------------------------------------------------------------

    async def publish(
        self, action: WhiskAction, msg: ActivationMessage
    ) -> asyncio.Future[ActivationResult] | None:
        """Send `msg` to the scheduler that leads (or will lead) the action's queue.

        Returns the future a blocking caller awaits (None when not blocking). Raises
        ServiceUnavailable when no scheduler is known, the journal refuses the entry or
        the send fails; in that case nothing of the activation stays registered.
        """
        if not self._schedulers.values:
            raise ServiceUnavailable(NO_SCHEDULER)
        scheduler = await self._scheduler_for(action, msg)

        # journal before sending: whatever happens next, the activation gets a record
        journal_entry = await self._journal_activation(action, msg)

        # register before sending: an ack can arrive before send() returns
        future = self._setup_activation(action, msg, journal_entry)
        topic = scheduler_topic(scheduler.sid.as_string)
        try:
            await asyncio.wait_for(
                self._producer.send(topic, encode(msg.to_json())), _SEND_TIMEOUT_S
            )
        except (MessagingError, TimeoutError) as exc:
            log.error("Sending %s to %s failed: %s", msg.activation_id, topic, exc)
            self._abandon(msg.activation_id)
            raise ServiceUnavailable(SEND_FAILED) from exc
        log.debug("Activation %s sent to %s", msg.activation_id, topic)
        return future

    async def _journal_activation(
        self, action: WhiskAction, msg: ActivationMessage
    ) -> JournalEntry | None:
        if self._journal is None:
            return None
        entry = JournalEntry(
            activation_id=msg.activation_id,
            namespace=msg.invocation_namespace,
            path=action.fqn.unversioned(),
            version=action.version,
            subject=msg.user.subject,
            controller_id=self._controller_id.as_string,
            start_ms=msg.transid.start_ms,
        )
        try:
            await self._journal.add(entry)
        except StoreError as exc:
            log.error("Journaling %s failed: %s", msg.activation_id, exc)
            raise ServiceUnavailable(JOURNAL_FAILED) from exc
        return entry

    async def _scheduler_for(
        self, action: WhiskAction, msg: ActivationMessage
    ) -> SchedulerStates:
        fqn = action.fqn.unversioned()
        leader_key = self._keys.queue_leader(msg.invocation_namespace, fqn)
        endpoints = self._leaders.values.get(leader_key)

        # a queue being created: keep routing to its scheduler, no second CreateQueue
        pending = self._pending_creation(leader_key, endpoints)
        if pending is not None:
            return pending

        if endpoints is None:
            endpoints = await self._read_leader(leader_key)
            # another activation may have started the creation while we read
            pending = self._pending_creation(leader_key, endpoints)
            if pending is not None:
                return pending
        if endpoints is not None:
            scheduler = self._scheduler_by_endpoints(endpoints)
            if scheduler is not None:
                return scheduler
            # the leader is not (yet) in our list: any scheduler forwards to it
            return random.choice(list(self._schedulers.values.values()))

        # no queue yet: the least-loaded scheduler creates it, in the background
        # DIVERGENCE(openwhisk): the activation is still sent at once, but further
        # activations for the action follow it there until the leader key shows up,
        # instead of each firing its own CreateQueue.
        scheduler = least_loaded(self._schedulers.values.values())
        if scheduler is None:
            raise ServiceUnavailable(NO_SCHEDULER)
        request = CreateQueueRequest(
            msg.invocation_namespace, action.fqn, action.rev, action.metadata_json()
        )
        self._start_create_queue(leader_key, request, scheduler)
        return scheduler

    def _pending_creation(
        self, leader_key: str, endpoints: SchedulerEndpoints | None
    ) -> SchedulerStates | None:
        if endpoints is not None or leader_key not in self._creating:
            return None
        return self._scheduler_by_sid(self._creating[leader_key])

    async def _read_leader(self, leader_key: str) -> SchedulerEndpoints | None:
        try:
            kv = await asyncio.wait_for(
                self._etcd.get(leader_key), self._etcd_timeout_s
            )
        except (CoordinationError, TimeoutError) as exc:
            log.warning("Reading queue leader %s failed: %r", leader_key, exc)
            raise ServiceUnavailable(NO_SCHEDULER) from exc
        if kv is None:
            return None
        applied = self._leaders.put(kv.key, kv.value, kv.mod_revision)
        return applied if applied is not None else self._leaders.values.get(leader_key)

    def _scheduler_by_sid(self, sid: str) -> SchedulerStates | None:
        for state in self._schedulers.values.values():
            if state.sid.as_string == sid:
                return state
        return None

    def _scheduler_by_endpoints(
        self, endpoints: SchedulerEndpoints
    ) -> SchedulerStates | None:
        for state in self._schedulers.values.values():
            if (state.endpoints.host, state.endpoints.rpc_port) == (
                endpoints.host,
                endpoints.rpc_port,
            ):
                return state
        return None

    # --- queue creation -----------------------------------------------------------------

    def _create_request(self, entry: ActivationEntry) -> CreateQueueRequest:
        return CreateQueueRequest(
            entry.invocation_namespace, entry.fqn, entry.revision, entry.action_metadata
        )

    def _start_create_queue(
        self,
        leader_key: str,
        request: CreateQueueRequest,
        first: SchedulerStates | None,
    ) -> None:
        first = first or least_loaded(self._schedulers.values.values())
        if first is None:
            log.error("No scheduler to create the queue of %s", request.action)
            return
        self._creating[leader_key] = first.sid.as_string
        self._spawn(
            self._create_queue(leader_key, request, first),
            f"create-queue:{request.action.unversioned()}",
        )

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run `work` in the background; stop() cancels what is still running."""
        self._tasks.spawn(work, name)

    async def _create_queue(
        self, leader_key: str, request: CreateQueueRequest, first: SchedulerStates
    ) -> None:
        """CreateQueue on `first`; on failure on the next least-loaded scheduler not yet
        tried (all tried: start over after a pause), `create_queue_retries` times."""
        scheduler: SchedulerStates | None = first
        tried: set[str] = set()
        try:
            for attempt in range(self._config.create_queue_retries + 1):
                if scheduler is None:
                    tried.clear()
                    await asyncio.sleep(_CREATE_QUEUE_BACKOFF_S * attempt)
                    scheduler = least_loaded(self._schedulers.values.values())
                    if scheduler is None:
                        continue
                endpoint = scheduler.endpoints.rpc_endpoint
                try:
                    created = await self._queue_client.create_queue(
                        endpoint, request, self._config.create_queue_timeout_s
                    )
                except Exception:
                    log.exception("CreateQueue on %s raised", endpoint)
                    created = False
                if created:
                    log.debug(
                        "Queue of %s created on %s", request.action, scheduler.sid
                    )
                    return
                tried.add(scheduler.sid.as_string)
                scheduler = least_loaded(
                    self._schedulers.values.values(), frozenset(tried)
                )
            log.error(
                "Creating the queue of %s failed on every scheduler", request.action
            )
        finally:
            if self._creating.get(leader_key) == first.sid.as_string:
                del self._creating[leader_key]

    # --- in-flight entries ------------------------------------------------------------

    def _setup_activation(
        self,
        action: WhiskAction,
        msg: ActivationMessage,
        journal_entry: JournalEntry | None = None,
    ) -> asyncio.Future[ActivationResult] | None:
        loop = asyncio.get_running_loop()
        delay_s = forced_completion_after_s(
            action.limits.timeout_ms,
            self._config.timeout_factor,
            self._config.timeout_addon_s,
        )
        entry = ActivationEntry(
            activation_id=msg.activation_id,
            namespace_uuid=msg.user.uuid,
            invocation_namespace=msg.invocation_namespace,
            fqn=action.fqn,
            revision=action.rev,
            action_metadata=action.metadata_json(),
            memory_mb=action.limits.memory_mb,
            blocking=msg.blocking,
            transid=msg.transid,
            journal=journal_entry,
        )
        entry.timer = loop.call_later(
            delay_s, self.process_completion, msg.activation_id, True, False
        )
        self._entries[msg.activation_id] = entry
        self._per_namespace[entry.namespace_uuid] = (
            self._per_namespace.get(entry.namespace_uuid, 0) + 1
        )
        self._memory_mb += entry.memory_mb
        if not msg.blocking:
            return None
        future: asyncio.Future[ActivationResult] = loop.create_future()
        self._promises[msg.activation_id] = future
        return future

    def _release(self, activation_id: str) -> ActivationEntry | None:
        entry = self._entries.pop(activation_id, None)
        if entry is None:
            return None
        if entry.timer is not None:
            entry.timer.cancel()
        left = self._per_namespace.get(entry.namespace_uuid, 1) - 1
        if left > 0:
            self._per_namespace[entry.namespace_uuid] = left
        else:
            self._per_namespace.pop(entry.namespace_uuid, None)
        self._memory_mb -= entry.memory_mb
        return entry

    def _abandon(self, activation_id: str) -> None:
        """Undo `_setup_activation` for an activation that never left (the caller
        gets an error, so it needs no record)."""
        entry = self._release(activation_id)
        if (
            self._journal is not None
            and entry is not None
            and entry.journal is not None
        ):
            self._journal.remove(activation_id)
        future = self._promises.pop(activation_id, None)
        if future is not None and not future.done():
            future.cancel()

    def _resolve(self, activation_id: str, result: ActivationResult) -> bool:
        future = self._promises.pop(activation_id, None)
        if future is None:
            return False
        if not future.done():
            future.set_result(result)
        return True

    # --- acks ------------------------------------------------------------------------------

    def process_ack(self, ack: CompletionAck) -> None:
        """One message from `completed{N}`: result first (it wakes the waiter with the
        record), then the completion (it frees the slot)."""
        if ack.activation is not None or not ack.frees_slot:
            self.process_result(ack.activation_id, ack.activation)
        if ack.frees_slot:
            self.process_completion(ack.activation_id, False, ack.is_system_error)

    def process_result(
        self, activation_id: str, activation: WhiskActivation | None
    ) -> None:
        """A result (None: the shrunk form, only the id) for a blocking waiter."""
        self._resolve(
            activation_id, activation if activation is not None else activation_id
        )

    def process_completion(
        self, activation_id: str, forced: bool, is_system_error: bool
    ) -> None:
        """Free the slot of `activation_id`; `forced` when the timer fired first."""
        entry = self._release(activation_id)
        if entry is None:
            if not forced:
                log.debug("Completion of %s after it was forced", activation_id)
            return
        if forced:
            log.error(
                "Timeout waiting for the active ack of %s (%s)",
                activation_id,
                entry.fqn,
            )
        elif is_system_error:
            log.warning("Activation %s ended with a system error", activation_id)
        if self._journal is not None and entry.journal is not None:
            if forced:
                # DIVERGENCE(openwhisk): a forced completion leaves no record there;
                # here the activation gets a failed one unless its record exists.
                self._journal.timed_out(entry.journal)
            else:
                self._journal.remove(activation_id)
        # DIVERGENCE(openwhisk): the original keeps the promise when a completion comes
        # without a result; here every path removes it. The waiter gets the id and
        # reads the activation store (the record is stored before the ack is sent).
        self._resolve(activation_id, activation_id)
