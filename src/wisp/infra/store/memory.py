"""MemoryStore: entities, activations and the activation journal kept in this process
(tests, `store.backend = "memory"`). Behaves like SqliteStore; both share the revision
and filter rules here.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Collection, Sequence
from dataclasses import replace

from wisp.core.activation import WhiskActivation
from wisp.core.entity import Identity, WhiskAction, bump_version, next_revision
from wisp.core.errors import ConflictError
from wisp.core.ids import now_ms
from wisp.infra.store.activations import JournalEntry

ALREADY_EXISTS = "resource already exists"


# --- rules shared by every store backend ------------------------------------------------


def revise_action(
    action: WhiskAction, previous: WhiskAction | None, deleted_rev: str | None = None
) -> WhiskAction:
    """The document to store: a new `rev` from the content digest, the version bumped
    on update (OpenWhisk's semantic patch bump) and `updated_ms` set to now.

    `deleted_rev` is the tombstone of a deleted action of the same name: as in CouchDB
    the re-created document continues its revision generation, so that everything
    comparing generations (queues, containers) sees the new code as newer.
    """
    version = action.version if previous is None else bump_version(previous.version)
    stamped = replace(action, version=version, rev="", updated_ms=0)
    doc = json.dumps(stamped.to_json(), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(doc.encode()).hexdigest()
    old_rev = previous.rev if previous is not None else deleted_rev
    revised = replace(stamped, rev=next_revision(old_rev, digest), updated_ms=now_ms())
    # round-trip so that every backend hands out exactly what a reread returns
    return WhiskAction.from_json(revised.to_json())


def activation_path(activation: WhiskActivation) -> str:
    """The unversioned fqn the record belongs to (annotation `path`, as OpenWhisk)."""
    path = activation.annotations.get("path")
    if isinstance(path, str) and path:
        return path
    return f"{activation.namespace}/{activation.name}"


def name_matches(activation: WhiskActivation, name: str) -> bool:
    """`name` filters by action name, or by `pkg/name` / full path when it has a `/`."""
    if "/" not in name:
        return activation.name == name
    path = activation_path(activation)
    return path == name or path == f"{activation.namespace}/{name}"


def key_matches(identity: Identity, key: str) -> bool:
    return hmac.compare_digest(identity.key.encode(), key.encode())


# --- the store ------------------------------------------------------------------------------


class MemoryStore:
    """An EntityStore and ActivationStore over dicts; lost when the process ends."""

    def __init__(self) -> None:
        self._actions: dict[tuple[str, str], WhiskAction] = {}
        #: the last revision of each deleted action (CouchDB's tombstone)
        self._tombstones: dict[tuple[str, str], str] = {}
        self._identities: dict[str, Identity] = {}
        #: insertion order breaks ties between records that started in the same ms
        self._activations: dict[str, tuple[int, WhiskActivation]] = {}
        self._sequence = 0
        self._journal: dict[str, JournalEntry] = {}

    # --- EntityStore: actions --------------------------------------------------------

    async def put_action(self, action: WhiskAction, *, overwrite: bool) -> WhiskAction:
        key = (action.namespace, action.name)
        previous = self._actions.get(key)
        if previous is not None and not overwrite:
            raise ConflictError(ALREADY_EXISTS)
        stored = revise_action(action, previous, self._tombstones.get(key))
        self._actions[key] = stored
        return stored

    async def get_action(self, namespace: str, name: str) -> WhiskAction | None:
        return self._actions.get((namespace, name))

    async def delete_action(self, namespace: str, name: str) -> WhiskAction | None:
        deleted = self._actions.pop((namespace, name), None)
        if deleted is not None:
            self._tombstones[(namespace, name)] = deleted.rev
        return deleted

    async def list_actions(
        self, namespace: str, *, skip: int = 0, limit: int = 30
    ) -> list[WhiskAction]:
        mine = [a for (ns, _), a in self._actions.items() if ns == namespace]
        mine.sort(key=lambda a: (-a.updated_ms, a.name))
        return mine[skip : skip + limit]

    # --- EntityStore: identities ----------------------------------------------------

    async def put_identity(self, identity: Identity) -> None:
        self._identities[identity.uuid] = identity

    async def identity_by_key(self, uuid: str, key: str) -> Identity | None:
        identity = self._identities.get(uuid)
        if identity is None or not key_matches(identity, key):
            return None
        return identity

    async def identity_by_namespace(self, namespace: str) -> Identity | None:
        for identity in self._identities.values():
            if identity.namespace == namespace:
                return identity
        return None

    async def ensure_identity(self, identity: Identity) -> Identity:
        """Store `identity` unless its uuid exists; returns the stored one."""
        existing = self._identities.get(identity.uuid)
        if existing is not None:
            return existing
        await self.put_identity(identity)
        return identity

    # --- ActivationStore --------------------------------------------------------------

    async def put_activation(self, activation: WhiskActivation) -> None:
        self._sequence += 1
        record = WhiskActivation.from_json(activation.to_json())
        self._activations[activation.activation_id] = (self._sequence, record)

    async def get_activation(
        self, namespace: str, activation_id: str
    ) -> WhiskActivation | None:
        entry = self._activations.get(activation_id)
        if entry is None:
            return None
        record = entry[1]
        return record if record.namespace == namespace else None

    async def list_activations(
        self,
        namespace: str,
        *,
        name: str | None = None,
        skip: int = 0,
        limit: int = 30,
        since_ms: int | None = None,
        upto_ms: int | None = None,
    ) -> list[WhiskActivation]:
        found: list[tuple[int, int, WhiskActivation]] = []
        for sequence, record in self._activations.values():
            if record.namespace != namespace:
                continue
            if name is not None and not name_matches(record, name):
                continue
            if since_ms is not None and record.start_ms < since_ms:
                continue
            if upto_ms is not None and record.start_ms > upto_ms:
                continue
            found.append((record.start_ms, sequence, record))
        found.sort(key=lambda item: (item[0], item[1]), reverse=True)
        return [record for _, _, record in found[skip : skip + limit]]

    async def average_duration(
        self, namespace: str, path: str, since_ms: int
    ) -> tuple[float | None, int]:
        durations = [
            record.duration_ms
            for _, record in self._activations.values()
            if record.namespace == namespace
            and record.start_ms >= since_ms
            and activation_path(record) == path
        ]
        if not durations:
            return None, 0
        return sum(durations) / len(durations), len(durations)

    # --- ActivationJournalStore ---------------------------------------------------------

    async def journal_add(self, entries: Sequence[JournalEntry]) -> None:
        for entry in entries:
            self._journal[entry.activation_id] = entry

    async def journal_remove(self, activation_ids: Collection[str]) -> None:
        for activation_id in activation_ids:
            self._journal.pop(activation_id, None)

    async def journal_entries(self, controller_id: str) -> list[JournalEntry]:
        mine = [e for e in self._journal.values() if e.controller_id == controller_id]
        mine.sort(key=lambda e: (e.start_ms, e.activation_id))
        return mine

    async def close(self) -> None:
        return None
