"""SqliteStore: entities, activations and the activation journal in one SQLite file
(aiosqlite, WAL mode).

Standalone Wisp's durable store; reopening the same file finds everything again.
sqlite3 errors are translated to StoreError here and go no further.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from wisp.core.activation import WhiskActivation
from wisp.core.entity import Identity, WhiskAction
from wisp.core.errors import ConflictError, StoreError
from wisp.infra.store.activations import JournalEntry
from wisp.infra.store.memory import (
    ALREADY_EXISTS,
    activation_path,
    key_matches,
    revise_action,
)

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS actions (
    namespace TEXT NOT NULL,
    name      TEXT NOT NULL,
    rev       TEXT NOT NULL,
    version   TEXT NOT NULL,
    updated   INTEGER NOT NULL,
    json      TEXT NOT NULL,
    PRIMARY KEY (namespace, name)
);
CREATE INDEX IF NOT EXISTS actions_by_updated ON actions (namespace, updated DESC);

-- the last revision of a deleted action: a re-created one continues its generation
CREATE TABLE IF NOT EXISTS action_tombstones (
    namespace TEXT NOT NULL,
    name      TEXT NOT NULL,
    rev       TEXT NOT NULL,
    PRIMARY KEY (namespace, name)
);

CREATE TABLE IF NOT EXISTS identities (
    uuid      TEXT PRIMARY KEY,
    key       TEXT NOT NULL,
    namespace TEXT NOT NULL,
    subject   TEXT NOT NULL,
    json      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS identities_by_namespace ON identities (namespace);

CREATE TABLE IF NOT EXISTS activations (
    id        TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    name      TEXT NOT NULL,
    path      TEXT NOT NULL,
    start     INTEGER NOT NULL,
    "end"     INTEGER NOT NULL,
    duration  INTEGER NOT NULL,
    json      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS activations_newest ON activations (namespace, start DESC);
CREATE INDEX IF NOT EXISTS activations_by_name ON activations (namespace, name, start DESC);
CREATE INDEX IF NOT EXISTS activations_by_path ON activations (namespace, path, start);

-- accepted activations without a completion yet; read only when a controller starts,
-- so no index beyond the key keeps the per-activation insert and delete cheap
CREATE TABLE IF NOT EXISTS activation_journal (
    id         TEXT PRIMARY KEY,
    controller TEXT NOT NULL,
    namespace  TEXT NOT NULL,
    path       TEXT NOT NULL,
    version    TEXT NOT NULL,
    subject    TEXT NOT NULL,
    start      INTEGER NOT NULL
);
"""

#: rows per multi-row statement (7 parameters each stays below SQLite's 999 limit)
_JOURNAL_ROWS_PER_STATEMENT = 128


class SqliteStore:
    """An EntityStore and ActivationStore on one SQLite database."""

    def __init__(self, conn: aiosqlite.Connection, path: str) -> None:
        self._conn = conn
        self._path = path
        #: serializes read-modify-write of actions (one connection, many coroutines)
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str | Path) -> SqliteStore:
        """Open (creating if needed) the database at `path`; ":memory:" works too."""
        text = str(path)
        if text != ":memory:":
            Path(text).parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = await aiosqlite.connect(text, isolation_level=None)
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA synchronous=NORMAL")
            await conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store at {text}: {exc}") from exc
        log.info("Opened store %s", text)
        return cls(conn, text)

    @asynccontextmanager
    async def _translated(self, what: str) -> AsyncIterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreError(f"{what} failed: {exc}") from exc

    async def _rows(self, sql: str, args: Iterable[Any] = ()) -> list[sqlite3.Row]:
        async with self._conn.execute(sql, tuple(args)) as cursor:
            return list(await cursor.fetchall())

    # --- EntityStore: actions --------------------------------------------------------

    async def put_action(self, action: WhiskAction, *, overwrite: bool) -> WhiskAction:
        async with self._write_lock, self._translated("storing an action"):
            previous = await self._get_action(action.namespace, action.name)
            if previous is not None and not overwrite:
                raise ConflictError(ALREADY_EXISTS)
            deleted_rev = None
            if previous is None:
                deleted_rev = await self._tombstone(action.namespace, action.name)
            stored = revise_action(action, previous, deleted_rev)
            await self._conn.execute(
                "INSERT OR REPLACE INTO actions"
                " (namespace, name, rev, version, updated, json)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    stored.namespace,
                    stored.name,
                    stored.rev,
                    stored.version,
                    stored.updated_ms,
                    json.dumps(stored.to_json()),
                ),
            )
            return stored

    async def get_action(self, namespace: str, name: str) -> WhiskAction | None:
        async with self._translated("reading an action"):
            return await self._get_action(namespace, name)

    async def _get_action(self, namespace: str, name: str) -> WhiskAction | None:
        rows = await self._rows(
            "SELECT json FROM actions WHERE namespace = ? AND name = ?",
            (namespace, name),
        )
        return _action(rows[0][0]) if rows else None

    async def _tombstone(self, namespace: str, name: str) -> str | None:
        rows = await self._rows(
            "SELECT rev FROM action_tombstones WHERE namespace = ? AND name = ?",
            (namespace, name),
        )
        return str(rows[0][0]) if rows else None

    async def delete_action(self, namespace: str, name: str) -> WhiskAction | None:
        async with self._write_lock, self._translated("deleting an action"):
            previous = await self._get_action(namespace, name)
            if previous is None:
                return None
            # tombstone first: a crash in between leaves the action, never neither
            await self._conn.execute(
                "INSERT OR REPLACE INTO action_tombstones (namespace, name, rev)"
                " VALUES (?, ?, ?)",
                (namespace, name, previous.rev),
            )
            await self._conn.execute(
                "DELETE FROM actions WHERE namespace = ? AND name = ?",
                (namespace, name),
            )
            return previous

    async def list_actions(
        self, namespace: str, *, skip: int = 0, limit: int = 30
    ) -> list[WhiskAction]:
        async with self._translated("listing actions"):
            rows = await self._rows(
                "SELECT json FROM actions WHERE namespace = ?"
                " ORDER BY updated DESC, name ASC LIMIT ? OFFSET ?",
                (namespace, limit, skip),
            )
        return [_action(row[0]) for row in rows]

    # --- EntityStore: identities ----------------------------------------------------

    async def put_identity(self, identity: Identity) -> None:
        async with self._translated("storing an identity"):
            await self._conn.execute(
                "INSERT OR REPLACE INTO identities (uuid, key, namespace, subject, json)"
                " VALUES (?, ?, ?, ?, ?)",
                (
                    identity.uuid,
                    identity.key,
                    identity.namespace,
                    identity.subject,
                    json.dumps(identity.to_json()),
                ),
            )

    async def identity_by_key(self, uuid: str, key: str) -> Identity | None:
        async with self._translated("reading an identity"):
            rows = await self._rows(
                "SELECT json FROM identities WHERE uuid = ?", (uuid,)
            )
        if not rows:
            return None
        identity = Identity.from_json(json.loads(rows[0][0]))
        return identity if key_matches(identity, key) else None

    async def identity_by_namespace(self, namespace: str) -> Identity | None:
        async with self._translated("reading an identity"):
            rows = await self._rows(
                "SELECT json FROM identities WHERE namespace = ? ORDER BY uuid LIMIT 1",
                (namespace,),
            )
        return Identity.from_json(json.loads(rows[0][0])) if rows else None

    async def ensure_identity(self, identity: Identity) -> Identity:
        """Store `identity` unless its uuid exists; returns the stored one."""
        async with self._write_lock, self._translated("storing an identity"):
            rows = await self._rows(
                "SELECT json FROM identities WHERE uuid = ?", (identity.uuid,)
            )
            if rows:
                return Identity.from_json(json.loads(rows[0][0]))
        await self.put_identity(identity)
        return identity

    # --- ActivationStore --------------------------------------------------------------

    async def put_activation(self, activation: WhiskActivation) -> None:
        async with self._translated("storing an activation"):
            await self._conn.execute(
                "INSERT OR REPLACE INTO activations"
                ' (id, namespace, name, path, start, "end", duration, json)'
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    activation.activation_id,
                    activation.namespace,
                    activation.name,
                    activation_path(activation),
                    activation.start_ms,
                    activation.end_ms,
                    activation.duration_ms,
                    json.dumps(activation.to_json()),
                ),
            )

    async def get_activation(
        self, namespace: str, activation_id: str
    ) -> WhiskActivation | None:
        async with self._translated("reading an activation"):
            rows = await self._rows(
                "SELECT json FROM activations WHERE id = ? AND namespace = ?",
                (activation_id, namespace),
            )
        return WhiskActivation.from_json(json.loads(rows[0][0])) if rows else None

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
        where = ["namespace = ?"]
        args: list[Any] = [namespace]
        if name is not None and "/" not in name:
            where.append("name = ?")
            args.append(name)
        elif name is not None:
            where.append("(path = ? OR path = ?)")
            args += [name, f"{namespace}/{name}"]
        if since_ms is not None:
            where.append("start >= ?")
            args.append(since_ms)
        if upto_ms is not None:
            where.append("start <= ?")
            args.append(upto_ms)
        sql = (
            "SELECT json FROM activations WHERE "
            + " AND ".join(where)
            + " ORDER BY start DESC, rowid DESC LIMIT ? OFFSET ?"
        )
        async with self._translated("listing activations"):
            rows = await self._rows(sql, [*args, limit, skip])
        return [WhiskActivation.from_json(json.loads(row[0])) for row in rows]

    async def average_duration(
        self, namespace: str, path: str, since_ms: int
    ) -> tuple[float | None, int]:
        async with self._translated("averaging durations"):
            rows = await self._rows(
                "SELECT AVG(duration), COUNT(*) FROM activations"
                " WHERE namespace = ? AND path = ? AND start >= ?",
                (namespace, path, since_ms),
            )
        average, count = rows[0]
        return (float(average) if average is not None else None), int(count)

    # --- ActivationJournalStore ---------------------------------------------------------

    async def journal_add(self, entries: Sequence[JournalEntry]) -> None:
        # one multi-row statement per chunk: each is one (autocommitted) transaction
        async with self._translated("adding to the activation journal"):
            for chunk in _chunks(entries, _JOURNAL_ROWS_PER_STATEMENT):
                rows = ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * len(chunk))
                args: list[Any] = []
                for e in chunk:
                    args += [
                        e.activation_id,
                        e.controller_id,
                        e.namespace,
                        e.path,
                        e.version,
                        e.subject,
                        e.start_ms,
                    ]
                await self._conn.execute(
                    "INSERT OR REPLACE INTO activation_journal"
                    " (id, controller, namespace, path, version, subject, start)"
                    f" VALUES {rows}",
                    args,
                )

    async def journal_remove(self, activation_ids: Collection[str]) -> None:
        async with self._translated("removing from the activation journal"):
            for chunk in _chunks(list(activation_ids), _JOURNAL_ROWS_PER_STATEMENT):
                marks = ", ".join(["?"] * len(chunk))
                await self._conn.execute(
                    f"DELETE FROM activation_journal WHERE id IN ({marks})", chunk
                )

    async def journal_entries(self, controller_id: str) -> list[JournalEntry]:
        async with self._translated("reading the activation journal"):
            rows = await self._rows(
                "SELECT id, namespace, path, version, subject, start"
                " FROM activation_journal WHERE controller = ? ORDER BY start, id",
                (controller_id,),
            )
        return [
            JournalEntry(
                activation_id=str(row[0]),
                namespace=str(row[1]),
                path=str(row[2]),
                version=str(row[3]),
                subject=str(row[4]),
                controller_id=controller_id,
                start_ms=int(row[5]),
            )
            for row in rows
        ]

    async def close(self) -> None:
        try:
            await self._conn.close()
        except sqlite3.Error as exc:
            log.warning("Closing store %s failed: %s", self._path, exc)


def _action(text: str) -> WhiskAction:
    return WhiskAction.from_json(json.loads(text))


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
