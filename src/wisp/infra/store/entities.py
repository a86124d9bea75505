"""EntityStore: actions and identities (namespaces and their keys)."""

from __future__ import annotations

from typing import Protocol

from wisp.core.entity import Identity, WhiskAction


class EntityStore(Protocol):
    async def put_action(self, action: WhiskAction, *, overwrite: bool) -> WhiskAction:
        """Create or replace; returns the stored action with its new `rev`, `version`
        and `updated_ms`. Raises ConflictError when it exists and not overwrite.

        Revisions are CouchDB's `<generation>-<digest>` and only ever grow per name:
        creating an action that was deleted continues after the deleted revision's
        generation (its version starts again at 0.0.1)."""
        ...

    async def get_action(self, namespace: str, name: str) -> WhiskAction | None:
        """The latest revision of the action, or None."""
        ...

    async def delete_action(self, namespace: str, name: str) -> WhiskAction | None:
        """Remove the action and return it (None when absent); its last revision stays
        behind as a tombstone for the next create."""
        ...

    async def list_actions(
        self, namespace: str, *, skip: int = 0, limit: int = 30
    ) -> list[WhiskAction]: ...

    async def put_identity(self, identity: Identity) -> None: ...

    async def identity_by_key(self, uuid: str, key: str) -> Identity | None: ...

    async def identity_by_namespace(self, namespace: str) -> Identity | None: ...

    async def close(self) -> None: ...
