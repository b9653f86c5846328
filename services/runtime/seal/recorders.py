"""Event recorders that seal every event in the transaction that stores it.

The seal of a log is an RFC 9162 Merkle tree over its stored events (``leaves.py``). Beside
the events table, in the same schema or SQLite file, a log keeps:

- ``<events>_leaves``: one row per leaf (index in the tree, position in the log, when it was
  sealed, leaf hash), so ``ketnoi verify`` can name the row that no longer matches;
- ``<events>_seal``: one row, the tree's size, the last sealed position and its frontier;
- ``<events>_checkpoints``: signed checkpoints (C2SP ``tlog-checkpoint`` notes);
- ``<events>_cosignatures``: a witness's signature lines over those checkpoints.

On PostgreSQL the library locks the events table for every insert (so positions follow
commit order); the seal writes its leaves and moves its head inside that lock, pipelined with
the insert and the commit, without an extra round trip. A recorder keeps the head it last
committed (``HeadCache``): while no other writer moves the log, it appends from that head
without reading it. The write names the size it expects and fails, writing nothing, when the
head has moved (another process, another recorder on the same log); the recorder then runs the
transaction again reading the head under the lock, and reads it before every append until an
append finds the head as it left it. On SQLite the insert holds the file's write lock, and the
seal reads its head under it (an in-process read).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor, SQLiteProcessRecorder
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composed, Identifier, Literal

from services.runtime.group_commit import Group
from services.runtime.persistence import (
    WindowedApplicationRecorder,
    WindowedProcessRecorder,
)
from services.runtime.seal.groups import PostgresGroups, SQLiteGroups
from services.runtime.seal.leaves import SealTables, leaf_hashes, sealed_at_now
from services.runtime.seal.merkle import Frontier
from services.runtime.seal.note import Checkpoint, Signer


class SealError(RuntimeError):
    """The seal cannot follow the log (a position out of order): nothing is written."""


@dataclass(frozen=True)
class Head:
    """A log's seal head: the tree's size, the last sealed position and the frontier."""

    size: int
    last_position: int
    frontier: bytes


class HeadCache:
    """The head this process last committed to a log, and whether to append from it unread.

    It is only a guess: the append's statement checks it under the table lock. After a
    transaction that found the head moved (``missed``), appends read the head again, and trust
    the cache only once a read finds the head as this process left it (``check``).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._head: Head | None = None
        self._trusted = False

    def get(self) -> Head | None:
        """The head to append from without reading it, or None to read it."""
        with self._lock:
            return self._head if self._trusted else None

    def check(self, read: Head) -> None:
        """A head read under the lock: trust the cache from now on if it is the same."""
        with self._lock:
            self._trusted = read == self._head

    def committed(self, head: Head) -> None:
        """The head a transaction of this process committed (a later one may have won)."""
        with self._lock:
            if self._head is None or head.size > self._head.size:
                self._head = head

    def missed(self) -> None:
        with self._lock:
            self._head, self._trusted = None, False


class StaleHeadError(RuntimeError):
    """The head an append expected had moved: nothing of its transaction was written."""


@dataclass
class CheckpointPolicy:
    """Who signs this log's checkpoints, under which origin, and after how many events."""

    signer: Signer | None = None
    origin: str = ""
    every: int = 1000

    def due(self, before: int, after: int) -> bool:
        return self.signer is not None and before // self.every != after // self.every

    def note(self, frontier: Frontier) -> tuple[int, bytes, str]:
        assert self.signer is not None
        checkpoint = Checkpoint(self.origin, frontier.size, frontier.root())
        return checkpoint.size, checkpoint.root, checkpoint.sign(self.signer)


def seal_events(
    frontier: Frontier, events: Sequence[StoredEvent], positions: Sequence[int], last: int
) -> tuple[list[tuple[int, int, int, bytes]], int]:
    """Leaf rows (index, position, sealed_at, hash) for new events stored at ``positions``
    after the ``last`` sealed position; extends the frontier. Raises SealError when the
    positions do not follow."""
    if len(positions) != len(events):
        raise SealError("the store returned no position for some events")
    previous = last
    for position in positions:
        if position <= previous:
            msg = f"position {position} does not follow the last sealed position {previous}"
            raise SealError(msg)
        previous = position
    at = sealed_at_now()
    hashes = leaf_hashes(
        (p, at, _id_bytes(e.originator_id), e.originator_version, e.topic, e.state)
        for p, e in zip(positions, events, strict=True)
    )
    start = frontier.size
    frontier.extend(hashes)
    rows = [(start + i, p, at, h) for i, (p, h) in enumerate(zip(positions, hashes, strict=True))]
    return rows, previous


def _id_bytes(originator_id: Any) -> bytes:
    return bytes(originator_id.bytes)


class PostgresSeal:
    """Mixin of a PostgreSQL application or process recorder: seals in the insert's
    transaction. Configure ``checkpoints`` to sign checkpoints as the log grows."""

    events_table_name: str
    sql_create_statements: list[Composed]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.checkpoints = CheckpointPolicy()
        self.seal_tables = SealTables(self.events_table_name)
        self._pending = threading.local()
        schema = Identifier(self.datastore.schema)  # type: ignore[attr-defined]
        t = self.seal_tables
        ident = {
            "s": schema,
            "leaves": Identifier(t.leaves),
            "head": Identifier(t.head),
            "checkpoints": Identifier(t.checkpoints),
            "cosignatures": Identifier(t.cosignatures),
        }
        self.sql_create_statements.extend(
            SQL(text).format(**ident)
            for text in (
                "CREATE TABLE IF NOT EXISTS {s}.{leaves} (idx bigint PRIMARY KEY, "
                "position bigint NOT NULL, sealed_at bigint NOT NULL, leaf_hash bytea NOT NULL)",
                "CREATE TABLE IF NOT EXISTS {s}.{head} (id smallint PRIMARY KEY CHECK (id = 1), "
                "size bigint NOT NULL, last_position bigint NOT NULL, frontier bytea NOT NULL)",
                "INSERT INTO {s}.{head} VALUES (1, 0, 0, '') ON CONFLICT DO NOTHING",
                "CREATE TABLE IF NOT EXISTS {s}.{checkpoints} (size bigint PRIMARY KEY, "
                "root bytea NOT NULL, signed_at timestamptz NOT NULL, note text NOT NULL)",
                "CREATE TABLE IF NOT EXISTS {s}.{cosignatures} (size bigint NOT NULL, "
                "key_name text NOT NULL, line text NOT NULL, signed_at timestamptz NOT NULL, "
                "PRIMARY KEY (size, key_name))",
            )
        )
        # The statements of every append are rendered once, not at each execute.
        self._select_head = (
            SQL("SELECT size, last_position, frontier FROM {s}.{head} WHERE id = 1")
            .format(**ident)
            .as_bytes(None)
        )
        # One statement moves the head from the size it expects and writes the leaves after
        # it; parameters go in binary. When the head is not at that size (another writer
        # moved it, or it is missing) no row is updated, the leaves' index is NULL and the
        # statement fails: the transaction commits nothing.
        self._write_leaves = (
            SQL(
                "WITH head AS (UPDATE {s}.{head} SET size = %b, last_position = %b, "
                "frontier = %b WHERE id = 1 AND size = %b RETURNING size) "
                "INSERT INTO {s}.{leaves} (idx, position, sealed_at, leaf_hash) "
                "SELECT (SELECT size FROM head) - %b + u.n - 1, u.p, %b::int8, u.h "
                "FROM unnest(%b::int8[], %b::bytea[]) WITH ORDINALITY AS u(p, h, n)"
            )
            .format(**ident)
            .as_bytes(None)
        )
        self.head_cache = HeadCache()
        self._insert_checkpoint = SQL(
            "INSERT INTO {s}.{checkpoints} (size, root, signed_at, note) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING"
        ).format(**ident)
        self._insert_cosignature = SQL(
            "INSERT INTO {s}.{cosignatures} (size, key_name, line, signed_at) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING"
        ).format(**ident)
        self._select_last_checkpoint = SQL(
            "SELECT max(size) AS size FROM {s}.{checkpoints}"
        ).format(**ident)
        self._select_latest_checkpoint = SQL(
            "SELECT size, note FROM {s}.{checkpoints} ORDER BY size DESC LIMIT 1"
        ).format(**ident)
        self._select_backlog = SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state "
            "FROM {s}.{events} WHERE notification_id > %s ORDER BY notification_id"
        ).format(events=Identifier(self.events_table_name), **ident)

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        return self._with_head(  # type: ignore[no-any-return]
            lambda: super(PostgresSeal, self).insert_events(stored_events, **kwargs)  # type: ignore[misc]
        )

    def insert_groups(self, groups: Sequence[Group]) -> list[Sequence[int] | None]:
        """See ``GroupRecorder``."""
        return self._with_head(  # type: ignore[no-any-return]
            lambda: super(PostgresSeal, self).insert_groups(groups)  # type: ignore[misc]
        )

    def _with_head(self, write: Callable[[], Any]) -> Any:
        """Run an inserting transaction; when it found the seal's head moved (nothing was
        written), run it again reading the head. Remember the head it committed."""
        pending = self._pending
        for attempt in (1, 2):
            pending.written = None
            try:
                result = write()
            except Exception as exc:
                self.head_cache.missed()
                if attempt == 1 and self._head_moved(exc):
                    continue
                raise
            written: Head | None = pending.__dict__.pop("written", None)
            if written is not None:
                self.head_cache.committed(written)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _head_moved(self, exc: BaseException) -> bool:
        """Whether ``exc`` is the append's statement finding the head not where expected."""
        cause: BaseException | None = exc
        while cause is not None:
            if isinstance(cause, psycopg.errors.NotNullViolation):
                return cause.diag.table_name == self.seal_tables.leaves
            cause = cause.__cause__
        return False

    def _insert_stored_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        super()._insert_stored_events(curs, stored_events, **kwargs)  # type: ignore[misc]
        cached = self.head_cache.get()
        if cached is None:
            # Under the table lock the insert just took: queued in the same pipeline, on a
            # cursor of its own (the insert's ids are still to be read).
            cursor = curs.connection.cursor()
            cursor.execute(self._select_head, prepare=True)
            self._pending.head = (cursor, None)
        else:
            # The leaves are written on the insert's cursor, once its ids are read.
            self._pending.head = (curs, cached)

    def _fetch_ids_after_insert_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        ids = super()._fetch_ids_after_insert_events(  # type: ignore[misc]
            curs, stored_events, **kwargs
        )
        cursor: Cursor[DictRow]
        cursor, cached = self._pending.__dict__.pop("head")
        try:
            head = cached if cached is not None else self._read_head(cursor)
            self._pending.written = self._write_seal(cursor, head, stored_events, ids)
        except Exception as exc:
            # The library re-raises this only after leaving its transaction block, which
            # would commit the events unsealed: a statement that fails in the same
            # transaction makes that commit roll back instead.
            with contextlib.suppress(psycopg.Error):
                cursor.execute(
                    SQL("DO $$ BEGIN RAISE EXCEPTION USING MESSAGE = {}; END $$").format(
                        Literal(f"the seal of {self.events_table_name} failed: {exc}")
                    )
                )
            raise
        return ids  # type: ignore[no-any-return]

    def _read_head(self, cursor: Cursor[DictRow]) -> Head:
        row = cursor.fetchone()
        if row is None:
            raise SealError(f"the seal of {self.events_table_name} is missing: run ketnoi migrate")
        head = Head(row["size"], row["last_position"], bytes(row["frontier"]))
        self.head_cache.check(head)
        return head

    def _write_seal(
        self, cursor: Cursor[DictRow], head: Head, events: Sequence[StoredEvent], ids: Sequence[int]
    ) -> Head:
        """Queue the statement that appends ``events`` stored at ``ids`` to the tree at
        ``head`` (and signs a checkpoint when one is due); returns the head it moves to."""
        frontier = Frontier.from_bytes(head.size, head.frontier)
        leaves, last = seal_events(frontier, events, ids, head.last_position)
        after = Head(frontier.size, last, frontier.to_bytes())
        cursor.execute(
            self._write_leaves,
            [
                after.size,
                last,
                after.frontier,
                head.size,
                len(leaves),
                leaves[0][2],
                [leaf[1] for leaf in leaves],
                [leaf[3] for leaf in leaves],
            ],
            prepare=True,
        )
        if self.checkpoints.due(head.size, frontier.size):
            size, root, note = self.checkpoints.note(frontier)
            cursor.execute(self._insert_checkpoint, (size, root, datetime.now(UTC), note))
        return after

    def create_table(self) -> None:
        super().create_table()  # type: ignore[misc]
        self.seal_backlog()

    def checkpoint_now(self) -> int | None:
        """Sign a checkpoint of the tree as it is, unless one of that size exists; returns
        its size, or None when the log has not grown or no signer is configured."""
        if self.checkpoints.signer is None:
            return None
        datastore = self.datastore  # type: ignore[attr-defined]
        with datastore.transaction(commit=True) as curs:
            curs.execute(self._select_head)
            row = curs.fetchone()
            curs.execute(self._select_last_checkpoint)
            last = curs.fetchone()["size"]
            if row["size"] == 0 or (last is not None and last >= row["size"]):
                return None
            frontier = Frontier.from_bytes(row["size"], bytes(row["frontier"]))
            size, root, note = self.checkpoints.note(frontier)
            curs.execute(self._insert_checkpoint, (size, root, datetime.now(UTC), note))
            return size

    def latest_checkpoint(self) -> tuple[int, str] | None:
        """The latest signed checkpoint (its tree size and note), None before the first."""
        datastore = self.datastore  # type: ignore[attr-defined]
        with datastore.transaction(commit=False) as curs:
            curs.execute(self._select_latest_checkpoint)
            row = curs.fetchone()
        return None if row is None else (int(row["size"]), str(row["note"]))

    def add_cosignature(self, size: int, key_name: str, line: str) -> None:
        """Store a witness's signature line over the checkpoint of ``size``."""
        datastore = self.datastore  # type: ignore[attr-defined]
        with datastore.transaction(commit=True) as curs:
            curs.execute(self._insert_cosignature, (size, key_name, line, datetime.now(UTC)))

    def seal_backlog(self) -> int:
        """Seal events stored before the seal existed (an older database); returns how many."""
        datastore = self.datastore  # type: ignore[attr-defined]
        with datastore.transaction(commit=True) as curs:
            self._lock_table(curs)  # type: ignore[attr-defined]
            curs.execute(self._select_head)
            row = curs.fetchone()
            if row is None:
                raise SealError(f"the seal of {self.events_table_name} is missing")
            curs.execute(self._select_backlog, (row["last_position"],))
            backlog = curs.fetchall()
            if not backlog:
                return 0
            events = [
                StoredEvent(r["originator_id"], r["originator_version"], r["topic"], r["state"])
                for r in backlog
            ]
            ids = [r["notification_id"] for r in backlog]
            head = Head(row["size"], row["last_position"], bytes(row["frontier"]))
            self._write_seal(curs, head, events, ids)
        self.head_cache.missed()
        return len(events)


class SealedPostgresApplicationRecorder(PostgresSeal, PostgresGroups, WindowedApplicationRecorder):
    """A service's log on PostgreSQL, sealed."""


class SealedPostgresProcessRecorder(PostgresSeal, PostgresGroups, WindowedProcessRecorder):
    """A following service's log (events and tracking) on PostgreSQL, sealed."""


class SQLiteSeal:
    """Mixin of a SQLite application or process recorder: seals in the insert's transaction."""

    events_table_name: str

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.checkpoints = CheckpointPolicy()
        t = self.seal_tables = SealTables(self.events_table_name)
        self._select_head = f"SELECT size, last_position, frontier FROM {t.head} WHERE id = 1"
        self._insert_leaves = f"INSERT INTO {t.leaves} VALUES (?, ?, ?, ?)"
        self._update_head = (
            f"UPDATE {t.head} SET size = ?, last_position = ?, frontier = ? WHERE id = 1"
        )
        self._insert_checkpoint = f"INSERT OR IGNORE INTO {t.checkpoints} VALUES (?, ?, ?, ?)"

    def construct_create_table_statements(self) -> list[str]:
        statements: list[str] = super().construct_create_table_statements()  # type: ignore[misc]
        t = SealTables(self.events_table_name)
        return [
            *statements,
            f"CREATE TABLE IF NOT EXISTS {t.leaves} (idx INTEGER PRIMARY KEY, "
            "position INTEGER NOT NULL, sealed_at INTEGER NOT NULL, leaf_hash BLOB NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS {t.head} (id INTEGER PRIMARY KEY CHECK (id = 1), "
            "size INTEGER NOT NULL, last_position INTEGER NOT NULL, frontier BLOB NOT NULL)",
            f"INSERT OR IGNORE INTO {t.head} VALUES (1, 0, 0, x'')",
            f"CREATE TABLE IF NOT EXISTS {t.checkpoints} (size INTEGER PRIMARY KEY, "
            "root BLOB NOT NULL, signed_at TEXT NOT NULL, note TEXT NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS {t.cosignatures} (size INTEGER NOT NULL, "
            "key_name TEXT NOT NULL, line TEXT NOT NULL, signed_at TEXT NOT NULL, "
            "PRIMARY KEY (size, key_name))",
        ]

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        # The insert takes the file's write lock; the seal follows under it.
        ids = super()._insert_events(c, stored_events, **kwargs)  # type: ignore[misc]
        if stored_events:
            self._write_seal(c, stored_events, ids)
        return ids  # type: ignore[no-any-return]

    def _write_seal(
        self, c: SQLiteCursor, events: Sequence[StoredEvent], ids: Sequence[int]
    ) -> None:
        c.execute(self._select_head)
        row = c.fetchone()
        if row is None:
            raise SealError(f"the seal of {self.events_table_name} is missing")
        frontier = Frontier.from_bytes(row["size"], bytes(row["frontier"]))
        before = frontier.size
        leaves, last = seal_events(frontier, events, ids, row["last_position"])
        c.executemany(self._insert_leaves, leaves)
        c.execute(self._update_head, (frontier.size, last, frontier.to_bytes()))
        if self.checkpoints.due(before, frontier.size):
            size, root, note = self.checkpoints.note(frontier)
            c.execute(self._insert_checkpoint, (size, root, datetime.now(UTC).isoformat(), note))

    def create_table(self) -> None:
        super().create_table()  # type: ignore[misc]
        self.seal_backlog()

    def checkpoint_now(self) -> int | None:
        """Sign a checkpoint of the tree as it is, unless one of that size exists; returns
        its size, or None when the log has not grown or no signer is configured."""
        if self.checkpoints.signer is None:
            return None
        datastore = self.datastore  # type: ignore[attr-defined]
        with datastore.transaction(commit=True) as c:
            c.execute(self._select_head)
            row = c.fetchone()
            c.execute(f"SELECT max(size) FROM {self.seal_tables.checkpoints}")
            last = c.fetchone()[0]
            if row["size"] == 0 or (last is not None and last >= row["size"]):
                return None
            frontier = Frontier.from_bytes(row["size"], bytes(row["frontier"]))
            size, root, note = self.checkpoints.note(frontier)
            c.execute(self._insert_checkpoint, (size, root, datetime.now(UTC).isoformat(), note))
            return size

    def latest_checkpoint(self) -> tuple[int, str] | None:
        """The latest signed checkpoint (its tree size and note), None before the first."""
        datastore = self.datastore  # type: ignore[attr-defined]
        with datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT size, note FROM {self.seal_tables.checkpoints} ORDER BY size DESC LIMIT 1"
            )
            row = c.fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def add_cosignature(self, size: int, key_name: str, line: str) -> None:
        """Store a witness's signature line over the checkpoint of ``size``."""
        datastore = self.datastore  # type: ignore[attr-defined]
        with datastore.transaction(commit=True) as c:
            c.execute(
                f"INSERT OR IGNORE INTO {self.seal_tables.cosignatures} VALUES (?, ?, ?, ?)",
                (size, key_name, line, datetime.now(UTC).isoformat()),
            )

    def seal_backlog(self) -> int:
        """Seal events stored before the seal existed (an older file); returns how many."""
        datastore = self.datastore  # type: ignore[attr-defined]
        with datastore.transaction(commit=True) as c:
            # Take the write lock first, so no writer slips in between the reads.
            c.execute(f"UPDATE {self.seal_tables.head} SET size = size WHERE id = 1")
            c.execute(self._select_head)
            last = c.fetchone()["last_position"]
            c.execute(
                "SELECT rowid, originator_id, originator_version, topic, state FROM "
                f"{self.events_table_name} WHERE rowid > ? ORDER BY rowid",
                (last,),
            )
            backlog = c.fetchall()
            if not backlog:
                return 0
            events = [
                StoredEvent(
                    UUID(r["originator_id"]), r["originator_version"], r["topic"], r["state"]
                )
                for r in backlog
            ]
            self._write_seal(c, events, [r["rowid"] for r in backlog])
            return len(events)


class SealedSQLiteApplicationRecorder(SQLiteGroups, SQLiteSeal, SQLiteApplicationRecorder):
    """A service's log in its SQLite file, sealed."""


class SealedSQLiteProcessRecorder(SQLiteGroups, SQLiteSeal, SQLiteProcessRecorder):
    """A following service's log (events and tracking) in its SQLite file, sealed."""


SealedRecorder = PostgresSeal | SQLiteSeal
