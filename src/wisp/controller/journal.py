"""The controller's activation journal: every accepted activation is written to the
store before it is published and removed once it completed, so that one lost with a
killed process still ends with a (failed) record when the controller starts again.

Writes are batched: concurrent invokes share one insert (each waits until its entry is
durable), removals are applied lazily in batches. A removal that is lost with the
process costs nothing: recovery skips entries whose activation has a record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from wisp.core.activation import ActivationResponse, WhiskActivation
from wisp.core.errors import StoreError
from wisp.infra.store.activations import ActivationJournalStore, JournalEntry

log = logging.getLogger(__name__)

LOST_TEXT = "The activation was lost: Wisp stopped before it completed."
TIMED_OUT_TEXT = "The activation was lost: no completion arrived in time."

#: removals wait at most this long, or until this many are pending
REMOVE_INTERVAL_S = 1.0
REMOVE_BATCH = 256
#: how long stop() may spend writing what is pending
STOP_TIMEOUT_S = 5.0
_BACKOFF_START_S = 0.1
_BACKOFF_MAX_S = 5.0


def lost_record(entry: JournalEntry, text: str) -> WhiskActivation:
    """The failed, zero-duration record of an activation that never completed, dated
    when it was accepted (so listings by time still find it where it belongs)."""
    return WhiskActivation(
        namespace=entry.namespace,
        name=entry.name,
        subject=entry.subject,
        activation_id=entry.activation_id,
        start_ms=entry.start_ms,
        end_ms=entry.start_ms,
        response=ActivationResponse.whisk_error(text),
        version=entry.version,
        annotations={"path": entry.path, "kind": "unknown"},
    )


async def record_if_missing(
    store: ActivationJournalStore, entry: JournalEntry, text: str
) -> bool:
    """Store the lost record of `entry` unless its activation has one; True if so."""
    if await store.get_activation(entry.namespace, entry.activation_id) is not None:
        return False
    await store.put_activation(lost_record(entry, text))
    return True


async def recover_lost_activations(
    store: ActivationJournalStore, controller_id: str
) -> int:
    """At controller start: give every journaled activation of this controller that has
    no record a failed one, then empty its journal. Returns how many were lost."""
    entries = await store.journal_entries(controller_id)
    lost = 0
    for entry in entries:
        if await record_if_missing(store, entry, LOST_TEXT):
            lost += 1
    await store.journal_remove([e.activation_id for e in entries])
    if lost:
        log.warning(
            "Recorded %d activation(s) lost when controller %s stopped",
            lost,
            controller_id,
        )
    return lost


class _Batch:
    """Entries that go to the store in one write, and the future their callers await."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.entries: list[JournalEntry] = []
        self.done: asyncio.Future[None] = loop.create_future()

    def settle(self, error: BaseException | None) -> None:
        if self.done.done():
            return
        if error is None:
            self.done.set_result(None)
        else:
            self.done.set_exception(error)
            # mark it retrieved: if every caller is gone, asyncio would log it again
            self.done.exception()


class ActivationJournal:
    """The running journal of one controller (a service with start/stop)."""

    def __init__(
        self,
        store: ActivationJournalStore,
        *,
        remove_interval_s: float = REMOVE_INTERVAL_S,
        remove_batch: int = REMOVE_BATCH,
        stop_timeout_s: float = STOP_TIMEOUT_S,
    ) -> None:
        self._store = store
        self._remove_interval_s = remove_interval_s
        self._remove_batch = remove_batch
        self._stop_timeout_s = stop_timeout_s
        self._adding: _Batch | None = None
        self._removing: set[str] = set()
        self._removed_at = 0.0
        self._timed_out: list[JournalEntry] = []
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._stopping = False
        self._removed_at = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name="activation-journal"
        )

    async def stop(self) -> None:
        """Write what is pending (bounded), then end the writer. Entries of activations
        still in flight stay: the next start records them as lost unless they complete
        in between."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._task, self._stop_timeout_s)
            self._task = None
        if self._adding is not None:
            self._adding.settle(StoreError("the activation journal stopped"))
            self._adding = None

    async def add(self, entry: JournalEntry) -> None:
        """Journal an activation about to be published; returns once it is durable.
        Raises StoreError when the store refused it or the journal is not running."""
        if self._task is None or self._stopping:
            raise StoreError("the activation journal is not running")
        if self._adding is None:
            self._adding = _Batch(asyncio.get_running_loop())
        batch = self._adding
        batch.entries.append(entry)
        self._wake.set()
        await asyncio.shield(batch.done)

    def remove(self, activation_id: str) -> None:
        """The activation completed (its record is stored); forget it, lazily."""
        self._removing.add(activation_id)
        if len(self._removing) >= self._remove_batch:
            self._wake.set()

    def timed_out(self, entry: JournalEntry) -> None:
        """No completion came in time: store a failed record unless one exists, then
        forget the activation."""
        self._timed_out.append(entry)
        self._wake.set()

    async def _run(self) -> None:
        backoff = _BACKOFF_START_S
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._remove_interval_s)
            self._wake.clear()
            stopping = self._stopping
            try:
                await self._write(final=stopping)
                backoff = _BACKOFF_START_S
            except Exception:
                log.exception("Writing the activation journal failed")
                if stopping:
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
                continue
            if stopping:
                return

    async def _write(self, *, final: bool) -> None:
        # additions first: a removal never overtakes the insert it undoes
        batch, self._adding = self._adding, None
        if batch is not None:
            try:
                await self._store.journal_add(batch.entries)
            except BaseException as exc:
                batch.settle(
                    exc
                    if isinstance(exc, StoreError)
                    else StoreError(f"journaling failed: {exc!r}")
                )
                raise
            batch.settle(None)

        # activations that never completed get their record before they are forgotten
        while self._timed_out:
            entry = self._timed_out[0]
            if await record_if_missing(self._store, entry, TIMED_OUT_TEXT):
                log.warning("Recorded activation %s as lost", entry.activation_id)
            self._timed_out.pop(0)
            self._removing.add(entry.activation_id)

        # removals: lazily, in batches
        now = time.monotonic()
        due = (
            final
            or len(self._removing) >= self._remove_batch
            or now - self._removed_at >= self._remove_interval_s
        )
        if self._removing and due:
            removing, self._removing = self._removing, set()
            try:
                await self._store.journal_remove(removing)
            except BaseException:
                self._removing |= removing
                raise
            self._removed_at = now
