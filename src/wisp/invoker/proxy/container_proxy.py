"""FunctionPullingContainerProxy (module 21): one container's life in one asyncio task.

Create the container, connect its pull client, advertise it in etcd, pull and run
activations (`/init` once, then `/run`), pause when idle, resume on reuse, and on every
way out delete its keys, say goodbye to the scheduler and destroy the container.
The rules it follows are pure functions in `state.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from wisp.config.model import ContainerProxyConfig
from wisp.core.activation import (
    ActivationMessage,
    ActivationResponse,
    ResponseStatus,
    WhiskActivation,
    failed_activation,
)
from wisp.core.entity import FullyQualifiedEntityName, WhiskAction
from wisp.core.errors import ContainerStartupError, StoreError, WispError
from wisp.core.ids import InvokerInstanceId, now_ms
from wisp.core.messages import ContainerCreationMessage
from wisp.infra.etcd.keys import EtcdKeys
from wisp.infra.runtime.container import (
    Container,
    ContainerFactory,
    ContainerSpec,
    RunOutcome,
    RunResult,
)
from wisp.invoker.proxy.activation_client import ActivationClient, ActivationClientError
from wisp.invoker.proxy.state import (
    ABNORMAL_RUN,
    ACTION_NOT_FETCHED,
    ACTION_NOT_FOUND,
    LOG_COLLECTION_FAILED,
    ContainerFate,
    ProxyState,
    build_activation,
    can_transition,
    container_name,
    context_fields,
    fate_of,
    init_payload,
    init_succeeded,
    run_body,
    split_content,
)
from wisp.observability.logging import log_context

log = logging.getLogger(__name__)

#: generous bound on the factory; it enforces its own startup timeout
CREATE_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 10.0
#: suspend / resume / destroy of one container
CONTAINER_OP_TIMEOUT_S = 10.0
ACK_TIMEOUT_S = 10.0
STORE_TIMEOUT_S = 5.0
CLOSE_TIMEOUT_S = 5.0
#: slack on top of the action's time limit before an /init or /run call is abandoned
CALL_SLACK_S = 5.0

STARTUP_FAILED = "Failed to provision resources to run the action."

_sequence = itertools.count(1)


class IllegalTransitionError(WispError):
    """A proxy was asked to take an edge its transition table does not have."""


# --- what the proxy needs from its surroundings -------------------------------------


class ProxyParent(Protocol):
    """The pool's side of the conversation (FunctionPullingContainerPool)."""

    def proxy_ready(self, proxy: FunctionPullingContainerProxy) -> None:
        """Container started and client connected: the creation succeeded."""

    def proxy_creation_failed(
        self, proxy: FunctionPullingContainerProxy, reason: str
    ) -> None: ...

    def proxy_paused(self, proxy: FunctionPullingContainerProxy) -> None: ...

    def proxy_resumed(self, proxy: FunctionPullingContainerProxy) -> None: ...

    def proxy_resume_failed(
        self, proxy: FunctionPullingContainerProxy, creation: ContainerCreationMessage
    ) -> None: ...

    def proxy_removed(self, proxy: FunctionPullingContainerProxy) -> None:
        """The proxy is gone for good (its container destroyed)."""


class KeyRegistry(Protocol):
    """The part of DataManagementService a proxy uses."""

    def register_data(self, key: str, value: str, *, failover: bool = True) -> None: ...

    def unregister_data(self, key: str) -> None: ...


class Acknowledger(Protocol):
    """ActiveAck: store the record, then ack the controller."""

    async def complete(
        self, msg: ActivationMessage, activation: WhiskActivation
    ) -> None: ...


class ActionReader(Protocol):
    """The part of EntityStore a proxy uses: the latest action with its code."""

    async def get_action(self, namespace: str, name: str) -> WhiskAction | None: ...


ClientFactory = Callable[[ContainerCreationMessage, str], ActivationClient]
"""(creation, container id) → a pull client for that creation's queue."""


def _ignore_health(ok: bool) -> None:
    return None


# --- the proxy ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Resume:
    creation: ContainerCreationMessage


@dataclass(frozen=True, slots=True)
class _Shutdown:
    cause: str


class _Ending(enum.Enum):
    """Why a round of pulling ended."""

    IDLE = "idle"
    SHUTDOWN = "shutdown"
    FAILED = "failed"


class FunctionPullingContainerProxy:
    """Drives one container for `(invocation namespace, action, revision)`."""

    def __init__(
        self,
        *,
        creation: ContainerCreationMessage,
        action: WhiskAction,
        invoker: InvokerInstanceId,
        config: ContainerProxyConfig,
        factory: ContainerFactory,
        client_factory: ClientFactory,
        registry: KeyRegistry,
        keys: EtcdKeys,
        entity_store: ActionReader,
        ack: Acknowledger,
        parent: ProxyParent,
        on_health: Callable[[bool], None] = _ignore_health,
        max_payload_bytes: int = 1_048_576,
    ) -> None:
        self._creation = creation
        self._action = action
        self._invoker = invoker
        self._config = config
        self._factory = factory
        self._client_factory = client_factory
        self._registry = registry
        self._keys = keys
        self._store = entity_store
        self._ack = ack
        self._parent = parent
        self._on_health = on_health
        self._max_payload_bytes = max_payload_bytes
        self._seq = next(_sequence)
        self._spec_name = container_name(creation.invocation_namespace, action.name)
        #: for logs until the container exists, then its id
        self.name = f"{self._spec_name}#{self._seq}"

        self._state = ProxyState.UNINITIALIZED
        self._container: Container | None = None
        self._client: ActivationClient | None = None
        self._initialized = False
        self._paused = False
        #: actions by revision, with code (the creation's and any a message named)
        self._actions: dict[str, WhiskAction] = {}
        if action.rev:
            self._actions[action.rev] = action
        #: etcd keys this proxy wrote and has not deleted yet
        self._held_keys: set[str] = set()
        self._mailbox: asyncio.Queue[_Resume | _Shutdown] = asyncio.Queue()
        self._shutdown_requested = False
        self._ending: _Ending | None = None
        self._workers: set[asyncio.Task[None]] = set()
        self._extra_workers_started = False
        self._in_flight = 0
        self._last_activity = 0.0
        self.last_used = asyncio.get_running_loop().time()
        self._task: asyncio.Task[None] | None = None
        self._removed = asyncio.Event()

    # --- read by the pool and the admin API ----------------------------------------

    @property
    def state(self) -> ProxyState:
        return self._state

    @property
    def invocation_namespace(self) -> str:
        return self._creation.invocation_namespace

    @property
    def action(self) -> FullyQualifiedEntityName:
        return self._creation.action

    @property
    def revision(self) -> str:
        return self._creation.revision

    @property
    def kind(self) -> str:
        return self._action.exec.kind

    @property
    def memory_mb(self) -> int:
        return self._action.limits.memory_mb

    @property
    def container_id(self) -> str | None:
        return self._container.container_id if self._container is not None else None

    @property
    def initialized(self) -> bool:
        return self._initialized

    @property
    def idle(self) -> bool:
        """Warm, pulling and running nothing: the pool may evict it for another
        action."""
        return (
            self._state is ProxyState.RUNNING
            and self._in_flight == 0
            and not self._shutdown_requested
        )

    @property
    def held_keys(self) -> frozenset[str]:
        return frozenset(self._held_keys)

    # --- commands from the pool ------------------------------------------------------

    def start(self) -> None:
        """Cold start: create the container and start pulling."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._lifecycle(), name=f"container-proxy:{self.name}"
            )

    def resume(self, creation: ContainerCreationMessage) -> None:
        """Reuse this paused container for `creation` (its scheduler may differ)."""
        self._mailbox.put_nowait(_Resume(creation))

    def remove(self) -> None:
        """Evict this container (paused, or running with nothing in flight)."""
        self._request_shutdown("removed by the pool")

    def graceful_shutdown(self) -> None:
        """Stop being counted now, finish the work at hand, then go."""
        self._request_shutdown("graceful shutdown")

    async def wait_removed(self, timeout_s: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self._removed.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Shut down gracefully; cancel (still cleaning up) after `timeout_s`."""
        self.graceful_shutdown()
        task = self._task
        if task is None:
            return
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
        if not done:
            log.warning(
                "Container proxy %s did not stop in time; cancelling", self.name
            )
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _request_shutdown(self, cause: str) -> None:
        if self._shutdown_requested:
            return
        self._shutdown_requested = True
        # Schedulers stop counting this container at once, so they can provision
        # elsewhere while it drains (OpenWhisk PR #5333).
        if self._container is not None and not self._paused:
            self._unregister(self._existing_key())
        self._end(_Ending.SHUTDOWN)
        self._mailbox.put_nowait(_Shutdown(cause))

    # --- the state machine ------------------------------------------------------------

    def _transition(self, to: ProxyState, cause: str) -> None:
        """The one place the state changes; staying in a state is a no-op."""
        if to is self._state:
            return
        if not can_transition(self._state, to):
            raise IllegalTransitionError(
                f"{self.name}: {self._state.name} -> {to.name} ({cause})"
            )
        log.debug(
            "Proxy %s: %s -> %s (%s)", self.name, self._state.name, to.name, cause
        )
        self._state = to

    async def _lifecycle(self) -> None:
        try:
            if await self._start_container() and await self._start_client():
                await self._work_until_done()
        except asyncio.CancelledError:
            log.info("Container proxy %s cancelled", self.name)
            raise
        except Exception:
            log.exception("Container proxy %s failed", self.name)
        finally:
            await self._clean_up()

    async def _start_container(self) -> bool:
        if self._shutdown_requested:
            return False
        self._transition(ProxyState.CREATING_CONTAINER, "cold start")
        spec = ContainerSpec(
            name=self._spec_name, kind=self._action.exec.kind, memory_mb=self.memory_mb
        )
        try:
            self._container = await asyncio.wait_for(
                self._factory.create_container(spec), CREATE_TIMEOUT_S
            )
            self.name = self._container.container_id
        except Exception as exc:
            reason = (
                str(exc) if isinstance(exc, ContainerStartupError) else STARTUP_FAILED
            )
            log.warning("Creating container %s failed: %s", self.name, exc)
            # DIVERGENCE(openwhisk): a failed start also counts against the invoker's
            # health, so a broken container backend turns the invoker unhealthy.
            self._on_health(False)
            self._parent.proxy_creation_failed(self, reason)
            return False
        return True

    async def _start_client(self) -> bool:
        assert self._container is not None
        self._transition(ProxyState.CREATING_CLIENT, "container started")
        client = self._client_factory(self._creation, self._container.container_id)
        self._client = client
        try:
            await asyncio.wait_for(client.connect(), CONNECT_TIMEOUT_S)
        except (ActivationClientError, TimeoutError) as exc:
            log.warning("Activation client of %s failed to connect: %s", self.name, exc)
            self._on_health(False)
            return False
        if self._shutdown_requested:
            # never announced: the pool acks the creation as a (retryable) failure
            return False
        self._register(self._existing_key())
        self._transition(ProxyState.CLIENT_CREATED, "client connected")
        self._parent.proxy_ready(self)
        return True

    async def _work_until_done(self) -> None:
        """Pull; when idle pause, and pull again after a resume, until removal."""
        while True:
            ending = await self._serve()
            if ending is not _Ending.IDLE:
                return
            if not self._initialized:
                log.info("Container %s was never used; removing it", self.name)
                return
            if not await self._pause():
                return
            creation = await self._wait_while_paused()
            if creation is None or not await self._resume(creation):
                return

    # --- pulling ----------------------------------------------------------------------

    async def _serve(self) -> _Ending:
        """Run pull workers until all stopped; returns why they stopped."""
        self._ending = _Ending.SHUTDOWN if self._shutdown_requested else None
        self._last_activity = asyncio.get_running_loop().time()
        self._extra_workers_started = False
        self._start_workers(1)
        if self._initialized:
            self._start_extra_workers()
        try:
            while self._workers:
                await asyncio.wait(set(self._workers))
        finally:
            for task in list(self._workers):
                task.cancel()
        return self._ending or _Ending.IDLE

    def _start_workers(self, count: int) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(count):
            task = loop.create_task(
                self._pull(),
                name=f"container-proxy:{self.name}:pull{len(self._workers)}",
            )
            self._workers.add(task)
            task.add_done_callback(self._workers.discard)

    def _start_extra_workers(self) -> None:
        """With `limits.concurrency` N, N fetches/runs are in flight once warm."""
        if self._extra_workers_started:
            return
        self._extra_workers_started = True
        extra = max(0, self._action.limits.concurrency - 1)
        if extra:
            self._start_workers(extra)

    def _end(self, ending: _Ending) -> None:
        """Stop pulling; a failure outranks a shutdown."""
        if self._ending is None or ending is _Ending.FAILED:
            self._ending = ending

    def _stop_pulling(self) -> bool:
        return self._ending in (_Ending.SHUTDOWN, _Ending.FAILED)

    def _idle_long_enough(self) -> bool:
        """Pause only after pause-grace without work and with nothing in flight."""
        idle = asyncio.get_running_loop().time() - self._last_activity
        return self._in_flight == 0 and idle >= self._config.pause_grace_s

    async def _pull(self) -> None:
        assert self._client is not None
        last_duration: int | None = None
        while not self._stop_pulling():
            try:
                msg = await self._client.fetch(last_duration)
            except ActivationClientError as exc:
                log.info("Container %s retires: %s", self.name, exc)
                self._end(_Ending.FAILED)
                return
            except Exception:
                log.exception("Fetch on %s failed", self.name)
                self._end(_Ending.FAILED)
                return
            last_duration = None
            if msg is None:
                if self._idle_long_enough():
                    return
                continue
            if self._ending is _Ending.FAILED:
                # this container is going away; the activation goes back to its queue
                await self._give_back(msg)
                return
            self._in_flight += 1
            try:
                fate, last_duration = await self._activate(msg)
            finally:
                self._in_flight -= 1
                self._last_activity = asyncio.get_running_loop().time()
                self.last_used = self._last_activity
            if fate is not ContainerFate.KEEP:
                self._end(_Ending.FAILED)
                return
            if self._initialized:
                self._start_extra_workers()

    # --- one activation -----------------------------------------------------------------

    async def _activate(
        self, msg: ActivationMessage
    ) -> tuple[ContainerFate, int | None]:
        """Validate, /init if cold, /run, record and ack; returns the fate and the
        run's duration (sent with the next fetch)."""
        with log_context(
            activation_id=msg.activation_id,
            namespace=msg.invocation_namespace,
            action=str(msg.action),
        ):
            try:
                return await self._activate_checked(msg)
            except Exception:
                log.exception("Activation %s failed unexpectedly", msg.activation_id)
                record = self._failed_record(
                    msg, ActivationResponse.whisk_error(ABNORMAL_RUN)
                )
                await self._complete(msg, record)
                return ContainerFate.DESTROY, None

    async def _activate_checked(
        self, msg: ActivationMessage
    ) -> tuple[ContainerFate, int | None]:
        container = self._container
        assert container is not None and self._client is not None
        action = await self._load_action(msg)
        if action is None:
            return ContainerFate.DESTROY, None

        init_env, params = split_content(msg.content, msg.init_args)
        context = context_fields(msg, action)
        limit_ms = action.limits.timeout_ms
        call_timeout_s = limit_ms / 1000

        # Cold start: /init once, with the context as __OW_ variables
        init: RunResult | None = None
        if not self._initialized:
            payload = init_payload(action, init_env, context, now_ms() + limit_ms)
            init = await asyncio.wait_for(
                container.initialize(payload, call_timeout_s),
                call_timeout_s + CALL_SLACK_S,
            )
            if init.outcome is RunOutcome.UNAVAILABLE:
                await self._reschedule(msg, "runtime refused /init")
                return ContainerFate.RESCHEDULE, None
            if not init_succeeded(init):
                record = build_activation(msg, action, init=init, run=None)
                logs, _ = await self._collect_logs(action, record.response)
                await self._complete(msg, replace(record, logs=logs))
                self._on_health(True)
                return ContainerFate.DESTROY, None
            self._initialized = True
            self._client.mark_warmed()
            self._transition(ProxyState.RUNNING, "initialized")

        body = run_body(params, context, now_ms() + limit_ms)
        run = await asyncio.wait_for(
            container.run(body, call_timeout_s, self._max_payload_bytes),
            call_timeout_s + CALL_SLACK_S,
        )
        fate = fate_of(run.outcome)
        if fate is ContainerFate.RESCHEDULE:
            await self._reschedule(msg, "runtime refused /run")
            return fate, None

        # DIVERGENCE(openwhisk): logs are collected before the one ack (combined for
        # blocking invokes), instead of a result ack first and a completion after the
        # logs; a blocking caller waits for the log collection too.
        record = build_activation(msg, action, init=init, run=run)
        logs, logs_ok = await self._collect_logs(action, record.response)
        record = replace(record, logs=logs)
        await self._complete(msg, record)
        self._on_health(record.response.status is not ResponseStatus.WHISK_ERROR)
        if not logs_ok:
            fate = ContainerFate.DESTROY
        return fate, run.duration_ms

    async def _load_action(self, msg: ActivationMessage) -> WhiskAction | None:
        """The action with its code; on failure the activation is failed and acked."""
        revision = msg.revision or ""
        cached = self._actions.get(revision)
        if cached is not None:
            return cached
        try:
            action = await asyncio.wait_for(
                self._store.get_action(msg.action.path, msg.action.name),
                STORE_TIMEOUT_S,
            )
        except (StoreError, TimeoutError) as exc:
            log.warning("Fetching %s failed: %s", msg.action, exc)
            response = ActivationResponse.whisk_error(ACTION_NOT_FETCHED)
            await self._complete(msg, self._failed_record(msg, response))
            return None
        if action is None:
            response = ActivationResponse.application_error(ACTION_NOT_FOUND)
            await self._complete(msg, self._failed_record(msg, response))
            return None
        # The store keeps only the latest revision: OpenWhisk's "mismatch → latest"
        # fallback is what we get.
        if revision and action.rev != revision:
            log.debug(
                "Action %s is at %s, not %s; using it", msg.action, action.rev, revision
            )
        self._actions[action.rev] = action
        return action

    async def _collect_logs(
        self, action: WhiskAction, response: ActivationResponse
    ) -> tuple[list[str], bool]:
        """The activation's log lines and whether collecting them went well."""
        limits = action.limits
        if limits.logs_mb == 0 or self._container is None:
            return [], True
        if limits.concurrency > 1:
            # Interleaved output cannot be told apart per activation; OpenWhisk needs
            # an out-of-band log store for concurrent actions.
            return [], True
        wait_for_sentinel = response.status is not ResponseStatus.DEVELOPER_ERROR
        try:
            lines = await asyncio.wait_for(
                self._container.logs(limits.logs_mb * 1024 * 1024, wait_for_sentinel),
                max(limits.logs_mb, 5) * 2.0,
            )
        except Exception as exc:
            log.warning("Collecting logs of %s failed: %s", self.name, exc)
            return [LOG_COLLECTION_FAILED], False
        return list(lines), True

    async def _reschedule(self, msg: ActivationMessage, cause: str) -> None:
        """Hand `msg` back to its queue; if that fails, fail it with a whisk error."""
        self._transition(ProxyState.RESCHEDULING, cause)
        self._end(_Ending.FAILED)
        await self._give_back(msg)

    async def _give_back(self, msg: ActivationMessage) -> None:
        assert self._client is not None
        try:
            rescheduled = await asyncio.wait_for(
                self._client.reschedule(msg), self._config.rescheduling_timeout_s
            )
        except (ActivationClientError, TimeoutError):
            rescheduled = False
        if rescheduled:
            log.info("Activation %s went back to its queue", msg.activation_id)
            return
        response = ActivationResponse.whisk_error(ABNORMAL_RUN)
        await self._complete(msg, self._failed_record(msg, response))

    def _failed_record(
        self, msg: ActivationMessage, response: ActivationResponse
    ) -> WhiskActivation:
        return failed_activation(
            msg,
            response,
            kind=self._action.exec.kind,
            limits=self._action.limits.to_json(),
        )

    async def _complete(self, msg: ActivationMessage, record: WhiskActivation) -> None:
        try:
            await asyncio.wait_for(self._ack.complete(msg, record), ACK_TIMEOUT_S)
        except Exception:
            log.exception("Acknowledging activation %s failed", msg.activation_id)

    # --- pause and resume -----------------------------------------------------------

    async def _pause(self) -> bool:
        assert self._container is not None
        self._transition(ProxyState.PAUSING, "no work for pause grace")
        try:
            await asyncio.wait_for(self._container.suspend(), CONTAINER_OP_TIMEOUT_S)
        except Exception as exc:
            log.warning("Suspending %s failed: %s", self.name, exc)
            return False
        self._paused = True
        self._register(self._warmed_key())
        self._unregister(self._existing_key())
        self._transition(ProxyState.PAUSED, "suspended")
        self._parent.proxy_paused(self)
        return True

    async def _wait_while_paused(self) -> ContainerCreationMessage | None:
        """The creation that reuses this container, or None when it must go."""
        try:
            command = await asyncio.wait_for(
                self._mailbox.get(), self._config.idle_container_s
            )
        except TimeoutError:
            # DIVERGENCE(openwhisk): no per-namespace warmedContainerKeepingCount yet,
            # so the keep-warm decision always says "remove".
            log.info(
                "Container %s idle for %ss; removing",
                self.name,
                self._config.idle_container_s,
            )
            return None
        if isinstance(command, _Resume):
            return command.creation
        return None

    async def _resume(self, creation: ContainerCreationMessage) -> bool:
        assert self._container is not None and self._client is not None
        try:
            await asyncio.wait_for(self._container.resume(), CONTAINER_OP_TIMEOUT_S)
            self._paused = False
            await self._client.retarget(creation.scheduler_host, creation.rpc_port)
        except Exception as exc:
            log.warning("Resuming %s failed: %s", self.name, exc)
            self._on_health(False)
            self._parent.proxy_resume_failed(self, creation)
            return False
        self._creation = creation
        self._unregister(self._warmed_key())
        self._register(self._existing_key())
        self._transition(ProxyState.RUNNING, "resumed")
        self._parent.proxy_resumed(self)
        return True

    # --- keys and clean-up ------------------------------------------------------------

    def _existing_key(self) -> str:
        assert self._container is not None
        return self._keys.existing_container(
            self.invocation_namespace,
            self.action.unversioned(),
            self.revision,
            self._invoker.instance,
            self._container.container_id,
        )

    def _warmed_key(self) -> str:
        assert self._container is not None
        return self._keys.warmed_container(
            self.invocation_namespace,
            self.action.unversioned(),
            self.revision,
            self._invoker.instance,
            self._container.container_id,
        )

    def _register(self, key: str) -> None:
        self._held_keys.add(key)
        self._registry.register_data(key, "", failover=True)

    def _unregister(self, key: str) -> None:
        if key in self._held_keys:
            self._held_keys.discard(key)
            self._registry.unregister_data(key)

    async def _clean_up(self) -> None:
        """Every way out ends here: keys, client, container, then the pool."""
        self._transition(ProxyState.REMOVING, "cleaning up")

        # 1. stop being counted by schedulers
        for key in list(self._held_keys):
            self._unregister(key)

        # 2. goodbye fetch (alive=False), then close the channel
        if self._client is not None:
            try:
                await asyncio.wait_for(self._client.close(), CLOSE_TIMEOUT_S)
            except Exception as exc:
                log.warning("Closing the client of %s failed: %s", self.name, exc)

        # 3. the container: a paused one is resumed first, then destroyed
        if self._container is not None:
            if self._paused:
                try:
                    await asyncio.wait_for(
                        self._container.resume(), CONTAINER_OP_TIMEOUT_S
                    )
                except Exception as exc:
                    # DIVERGENCE(openwhisk): destroyed anyway; the original leaks it
                    log.warning("Resuming %s before removal failed: %s", self.name, exc)
            try:
                await asyncio.wait_for(
                    self._container.destroy(), CONTAINER_OP_TIMEOUT_S
                )
            except Exception as exc:
                log.error("Destroying container %s failed: %s", self.name, exc)
        self._transition(ProxyState.REMOVED, "container destroyed")

        # 4. a reuse that arrived meanwhile goes back to the pool's choice
        while not self._mailbox.empty():
            command = self._mailbox.get_nowait()
            if isinstance(command, _Resume):
                self._parent.proxy_resume_failed(self, command.creation)
        self._parent.proxy_removed(self)
        self._removed.set()

    def __repr__(self) -> str:
        return f"<ContainerProxy {self.name} {self._state.name}>"
