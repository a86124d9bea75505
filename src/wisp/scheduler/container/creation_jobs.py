"""CreationJobManager (module 18): every container creation in flight, from its
registration to one final outcome told to the queue (success, failure or timeout).

Jobs are recorded in etcd (in-progress keys, counted by every scheduler), acks come
from `creationAck{sid}`, recoverable errors are rescheduled with doubling backoff.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from wisp.config.model import SchedulerConfig
from wisp.core.messages import (
    ContainerCreationAckMessage,
    ContainerCreationError,
    ContainerCreationMessage,
    decode,
)
from wisp.infra.etcd.data_management import DataManagementService
from wisp.infra.etcd.keys import EtcdKeys
from wisp.infra.messaging.broker import MessageConsumer
from wisp.scheduler.container.placement import is_blackbox

if TYPE_CHECKING:
    from wisp.scheduler.queue.memory_queue import MemoryQueue

log = logging.getLogger(__name__)

#: (invocation namespace, unversioned fqn, revision) → the queue, if this scheduler has it
QueueLookup = Callable[[str, str, str], "MemoryQueue | None"]

_PEEK_TIMEOUT_S = 1.0
_CONSUMER_BACKOFF_S = 0.5


@dataclass(slots=True)
class _Job:
    msg: ContainerCreationMessage
    timeout: asyncio.TimerHandle
    retry: asyncio.TimerHandle | None = None


class CreationJobManager:
    def __init__(
        self,
        *,
        config: SchedulerConfig,
        sid: str,
        keys: EtcdKeys,
        dms: DataManagementService,
        consumer: MessageConsumer,
        lookup: QueueLookup,
        reschedule: Callable[[ContainerCreationMessage], None],
        on_finished: Callable[[str], None] | None = None,
    ) -> None:
        self._config = config
        self._sid = sid
        self._keys = keys
        self._dms = dms
        self._consumer = consumer
        self._lookup = lookup
        self._reschedule = reschedule
        self._on_finished = on_finished
        self._jobs: dict[str, _Job] = {}
        self._task: asyncio.Task[None] | None = None

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(
            self._consume(), name=f"creation-acks-{self._sid}"
        )

    async def stop(self) -> None:
        """Stop the ack consumer and every timer; open jobs end with the process."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for job in self._jobs.values():
            job.timeout.cancel()
            if job.retry is not None:
                job.retry.cancel()
        self._jobs.clear()

    @property
    def in_progress(self) -> frozenset[str]:
        """Creation ids of the jobs still waiting for an outcome."""
        return frozenset(self._jobs)

    # --- inputs -------------------------------------------------------------------------

    def register(self, msg: ContainerCreationMessage) -> None:
        """Record a new creation; a known creation id (a reschedule) changes nothing."""
        job = self._jobs.get(msg.creation_id)
        if job is not None:
            job.msg = msg
            return
        self._dms.register_data(self._in_progress_key(msg), "", failover=False)
        timeout_s = self._config.in_progress_job_retention_s
        if is_blackbox(msg.action_metadata):
            timeout_s *= self._config.blackbox_multiple
        handle = asyncio.get_running_loop().call_later(
            timeout_s, self._on_timeout, msg.creation_id, timeout_s
        )
        self._jobs[msg.creation_id] = _Job(msg, handle)

    def handle_ack(self, ack: ContainerCreationAckMessage) -> None:
        job = self._jobs.get(ack.creation_id)
        if job is None:
            # Already ended (timed out or answered twice): only the key may be left.
            log.info("Ack for unknown creation %s ignored", ack.creation_id)
            self._dms.unregister_data(
                self._keys.in_progress_container(
                    ack.invocation_namespace,
                    ack.action.unversioned(),
                    ack.revision,
                    self._sid,
                    ack.creation_id,
                )
            )
            return
        if ack.error is None:
            self._finish(ack.creation_id, None, "")
            return
        self.creation_error(
            replace(job.msg, retry_count=ack.retry_count),
            ack.error,
            ack.reason or "unknown reason",
        )

    def creation_error(
        self, msg: ContainerCreationMessage, error: ContainerCreationError, reason: str
    ) -> None:
        """A registered creation failed (ack, placement or send): retry or give up."""
        job = self._jobs.get(msg.creation_id)
        if job is None or job.retry is not None:
            return
        if (
            not error.is_whisk_error
            or msg.retry_count >= self._config.creation_max_retries
        ):
            self._finish(msg.creation_id, error, reason)
            return
        delay_s = self._config.creation_retry_base_ms * 2**msg.retry_count / 1000
        log.info(
            "Creation %s failed (%s), retry %d in %.2fs",
            msg.creation_id,
            error.value,
            msg.retry_count + 1,
            delay_s,
        )
        job.retry = asyncio.get_running_loop().call_later(
            delay_s, self._retry, replace(msg, retry_count=msg.retry_count + 1)
        )

    # --- outcomes -----------------------------------------------------------------------

    def _retry(self, msg: ContainerCreationMessage) -> None:
        job = self._jobs.get(msg.creation_id)
        if job is None:
            return
        job.retry = None
        job.msg = msg
        try:
            self._reschedule(msg)
        except Exception:
            log.exception("Rescheduling creation %s failed", msg.creation_id)
            self.creation_error(
                msg, ContainerCreationError.WHISK_ERROR, "rescheduling failed"
            )

    def _on_timeout(self, creation_id: str, timeout_s: float) -> None:
        job = self._jobs.get(creation_id)
        if job is None:
            return
        reason = (
            f"[{job.msg.action}] timeout waiting for the ack of {creation_id} "
            f"after {timeout_s:g} seconds"
        )
        log.warning("%s", reason)
        self._finish(creation_id, ContainerCreationError.TIMEOUT_ERROR, reason)

    def _finish(
        self, creation_id: str, error: ContainerCreationError | None, reason: str
    ) -> None:
        job = self._jobs.pop(creation_id, None)
        if job is None:
            return
        job.timeout.cancel()
        if job.retry is not None:
            job.retry.cancel()
        msg = job.msg
        self._dms.unregister_data(self._in_progress_key(msg))
        if self._on_finished is not None:
            self._on_finished(creation_id)
        queue = self._lookup(
            msg.invocation_namespace, msg.action.unversioned(), msg.revision
        )
        if queue is None:
            log.info("No queue for the outcome of creation %s", creation_id)
            return
        if error is None:
            queue.creation_succeeded(creation_id)
        else:
            queue.creation_failed(creation_id, error, reason)

    def _in_progress_key(self, msg: ContainerCreationMessage) -> str:
        return self._keys.in_progress_container(
            msg.invocation_namespace,
            msg.action.unversioned(),
            msg.revision,
            self._sid,
            msg.creation_id,
        )

    # --- ack consumer ---------------------------------------------------------------------

    async def _consume(self) -> None:
        while True:
            try:
                batch = await asyncio.wait_for(
                    self._consumer.peek(128, _PEEK_TIMEOUT_S), _PEEK_TIMEOUT_S + 5
                )
                for raw in batch:
                    self._on_raw(raw)
                if batch:
                    await asyncio.wait_for(self._consumer.commit(), 5)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("Creation ack consumer failed; retrying")
                await asyncio.sleep(_CONSUMER_BACKOFF_S)

    def _on_raw(self, raw: bytes) -> None:
        try:
            ack = ContainerCreationAckMessage.from_json(decode(raw))
        except (ValueError, KeyError, TypeError):
            # The job, if any, ends by its timeout.
            log.error("Unparsable creation ack dropped: %.200r", raw)
            return
        self.handle_ack(ack)
