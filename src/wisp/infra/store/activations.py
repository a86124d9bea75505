"""ActivationStore: activation records, listed newest first."""

from __future__ import annotations

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
