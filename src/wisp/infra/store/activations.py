"""ActivationStore: activation records, listed newest first; and the controller's
journal of accepted activations that have no completion yet (ActivationJournalStore).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from wisp.core.activation import WhiskActivation


class ActivationStore(Protocol):
    async def put_activation(self, activation: WhiskActivation) -> None:
        """Store (or replace) the record with this activation id."""
        ...

    async def get_activation(
        self, namespace: str, activation_id: str
    ) -> WhiskActivation | None: ...

    async def list_activations(
        self,
        namespace: str,
        *,
        name: str | None = None,
        skip: int = 0,
        limit: int = 30,
        since_ms: int | None = None,
        upto_ms: int | None = None,
    ) -> list[WhiskActivation]: ...

    async def average_duration(
        self, namespace: str, path: str, since_ms: int
    ) -> tuple[float | None, int]:
        """(average duration in ms, number of records) of the action at `path`
        (unversioned fqn) since `since_ms`; feeds the duration checker."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """An activation a controller accepted: enough to write its record if it is lost."""

    activation_id: str
    #: the invocation namespace, where the record is stored
    namespace: str
    #: the action's unversioned fqn (`owner/[pkg/]name`)
    path: str
    version: str
    subject: str
    controller_id: str
    start_ms: int

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


class ActivationJournalStore(ActivationStore, Protocol):
    """An ActivationStore that also keeps the controllers' activation journal: an entry
    is added before an activation is published and removed once it completed."""

    async def journal_add(self, entries: Sequence[JournalEntry]) -> None:
        """Add (or replace) entries; durable when this returns."""
        ...

    async def journal_remove(self, activation_ids: Collection[str]) -> None:
        """Remove these entries; unknown ids are ignored."""
        ...

    async def journal_entries(self, controller_id: str) -> list[JournalEntry]:
        """Every entry of `controller_id`, oldest first."""
        ...
