"""Event recorders that seal every event in the transaction that stores it.

The seal of a log is an RFC 9162 Merkle tree over its stored events (``leaves.py``). Each
event's leaf is kept so ``ketnoi verify`` can name the row that no longer matches: its index
in the tree, when it was sealed and its leaf hash. On PostgreSQL they are three columns of the
event's own row (``leaf_idx``, ``sealed_at``, ``leaf_hash``); on SQLite a table beside the
events, ``<events>_leaves``, one row per leaf (index, position, when sealed, leaf hash).
Beside the events, in the same schema or SQLite file, a log also keeps:

- ``<events>_seal``: one row, a size, the last sealed position and the frontier at that size.
  On SQLite it is the tree's head, moved by every transaction. On PostgreSQL it is a *mark*,
  moved only by the transaction that crosses a multiple of the checkpoint interval (and by
  ``checkpoint_now``): the tree's size and last position are those of its last sealed row,
  and its frontier is the mark's extended by the leaves after it;
- ``<events>_checkpoints``: signed checkpoints (C2SP ``tlog-checkpoint`` notes);
- ``<events>_cosignatures``: a witness's signature lines over those checkpoints.

On PostgreSQL the library locks the events table for every insert (so positions follow
commit order), and the seal rides in the insert's own statement: the statement draws each
row's position from the log's sequence, hashes the row it inserts (the leaf of ``leaves.py``)
and numbers it after the last sealed row, found backwards on the positions' index, all under
that lock, so no writer caches or checks a head and no other row is written. When a position
does not follow the last sealed one, the row gets no index and the transaction is refused:
nothing of it is written. Only the transaction that crosses a multiple of the checkpoint
interval reads the mark and the leaves after it back, to move the mark and sign the
checkpoint. On SQLite the insert holds the file's write lock, and the seal reads its head
under it (an in-process read) and hashes in Python.

A PostgreSQL log sealed in a table of its own (the formats before: one row per transaction,
or one per leaf) is converted in place when its tables are created (``ketnoi migrate``): its
leaves move into the events' columns with the same hashes, so its checkpoints still verify.
"""

from __future__ import annotations

import contextlib
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
from services.runtime.seal.leaves import SealTables, leaf_hashes, leaf_sql, sealed_at_now
from services.runtime.seal.merkle import Frontier
from services.runtime.seal.note import Checkpoint, Signer


class SealError(RuntimeError):
    """The seal cannot follow the log (a position out of order): nothing is written."""


@dataclass(frozen=True)
class Head:
    """Where a log's tree ends: its size and the last sealed position."""

    size: int
    last_position: int


@dataclass
class CheckpointPolicy:
    """Who signs this log's checkpoints, under which origin, and after how many events."""

    signer: Signer | None = None
    origin: str = ""
    every: int = 1000

    def due(self, before: int, after: int) -> bool:
        return self.signer is not None and self.crosses(before, after)

    def crosses(self, before: int, after: int) -> bool:
        """Whether growing from ``before`` to ``after`` leaves crosses a multiple of
        ``every`` (on PostgreSQL, where the seal's mark moves, signer or not)."""
        return before // self.every != after // self.every

    def note(self, frontier: Frontier) -> tuple[int, bytes, str]:
        assert self.signer is not None
        checkpoint = Checkpoint(self.origin, frontier.size, frontier.root())
        return checkpoint.size, checkpoint.root, checkpoint.sign(self.signer)


def sealed_hashes(
    events: Sequence[StoredEvent], positions: Sequence[int], last: int
) -> tuple[list[bytes], int, int]:
    """The leaf hashes of new events stored at ``positions`` after the ``last`` sealed
    position, the instant they are sealed at, and the new last position. Raises SealError
    when the positions do not follow."""
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
    return hashes, at, previous


def seal_events(
    frontier: Frontier, events: Sequence[StoredEvent], positions: Sequence[int], last: int
) -> tuple[list[tuple[int, int, int, bytes]], int]:
    """Leaf rows (index, position, sealed_at, hash) for new events stored at ``positions``
    after the ``last`` sealed position; extends the frontier. Raises SealError when the
    positions do not follow."""
    hashes, at, previous = sealed_hashes(events, positions, last)
    start = frontier.size
    frontier.extend(hashes)
    rows = [(start + i, p, at, h) for i, (p, h) in enumerate(zip(positions, hashes, strict=True))]
    return rows, previous


def _id_bytes(originator_id: Any) -> bytes:
    return bytes(originator_id.bytes)


# The leaf of ``leaves.py`` and its hash, computed by the server from a row it inserts: its
# position (drawn beforehand), the instant given, the aggregate id and version, the topic's
# length and UTF-8, and the stored bytes.
_LEAF_HASH = f"sha256({leaf_sql('e.', 'e.n', '%b::int8')})"

# The columns the seal adds to a log's events table on PostgreSQL.
SEAL_COLUMNS = ("leaf_idx", "sealed_at", "leaf_hash")


class PostgresSeal:
    """Mixin of a PostgreSQL application or process recorder: seals in the insert's own
    statement. Configure ``checkpoints`` to sign checkpoints as the log grows."""

    events_table_name: str
    sql_create_statements: list[Composed]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.checkpoints = CheckpointPolicy()
        self.seal_tables = SealTables(self.events_table_name)
        schema_name = self.datastore.schema  # type: ignore[attr-defined]
        schema = Identifier(schema_name)
        t = self.seal_tables
        ident = {
            "s": schema,
            "events": Identifier(self.events_table_name),
            "event_type": Identifier(self.stored_event_type_name),  # type: ignore[attr-defined]
            "sequence": Literal(f'"{schema_name}"."{self.events_table_name}_notification_id_seq"'),
            "leaves": Identifier(t.leaves),
            "head": Identifier(t.head),
            "checkpoints": Identifier(t.checkpoints),
            "cosignatures": Identifier(t.cosignatures),
            "schema_name": Literal(schema_name),
            "leaves_name": Literal(t.leaves),
        }
        self.sql_create_statements.extend(
            SQL(text).format(**ident)
            for text in (
                "ALTER TABLE {s}.{events} ADD COLUMN IF NOT EXISTS leaf_idx bigint, "
                "ADD COLUMN IF NOT EXISTS sealed_at bigint, "
                "ADD COLUMN IF NOT EXISTS leaf_hash bytea",
                "CREATE TABLE IF NOT EXISTS {s}.{head} (id smallint PRIMARY KEY CHECK (id = 1), "
                "size bigint NOT NULL, last_position bigint NOT NULL, frontier bytea NOT NULL)",
                "INSERT INTO {s}.{head} VALUES (1, 0, 0, '') ON CONFLICT DO NOTHING",
                _CONVERT_LEAVES,
                "CREATE TABLE IF NOT EXISTS {s}.{checkpoints} (size bigint PRIMARY KEY, "
                "root bytea NOT NULL, signed_at timestamptz NOT NULL, note text NOT NULL)",
                "CREATE TABLE IF NOT EXISTS {s}.{cosignatures} (size bigint NOT NULL, "
                "key_name text NOT NULL, line text NOT NULL, signed_at timestamptz NOT NULL, "
                "PRIMARY KEY (size, key_name))",
            )
        )
        # The tree's size and last position: its last sealed row's, read backwards on the
        # positions' index (no row when the mark is missing: the seal was never set up).
        last_sealed = (
            "SELECT leaf_idx + 1 AS size, notification_id AS last_position "
            "FROM {s}.{events} WHERE leaf_idx IS NOT NULL "
            "ORDER BY notification_id DESC LIMIT 1"
        )
        self._select_head = SQL(
            "SELECT coalesce(l.size, 0) AS size, coalesce(l.last_position, 0) AS last_position "
            "FROM {s}.{head} m LEFT JOIN LATERAL (" + last_sealed + ") l ON true WHERE m.id = 1"
        ).format(**ident)
        # The events with their leaves, in one statement under the table lock: each row's
        # position is drawn first (in the order of the events) so the server can hash the
        # row it inserts; its index in the tree follows the last sealed row's. A position
        # that does not follow the last sealed one gets no index, and the transaction is
        # refused (``_fetch_ids_after_insert_events``).
        self._insert_sealed = (
            SQL(
                "WITH tip AS (SELECT coalesce(max(size), 0) AS size, "
                "coalesce(max(last_position), 0) AS last_position FROM (" + last_sealed + ") l), "
                "e AS (SELECT nextval({sequence}::regclass) AS n, u.* FROM "
                "unnest(%s::{s}.{event_type}[]) WITH ORDINALITY "
                "AS u(originator_id, originator_version, topic, state, ord)) "
                "INSERT INTO {s}.{events} (notification_id, originator_id, originator_version, "
                "topic, state, leaf_idx, sealed_at, leaf_hash) "
                "SELECT e.n, e.originator_id, e.originator_version, e.topic, e.state, "
                "CASE WHEN e.n > tip.last_position THEN tip.size + e.ord - 1 END, %b::int8, "
                + _LEAF_HASH
                + " FROM e CROSS JOIN tip RETURNING notification_id, leaf_idx"
            )
            .format(**ident)
            .as_bytes(None)
        )
        # What seal_backlog writes: leaves hashed here, into rows stored unsealed.
        self._write_leaves = SQL(
            "UPDATE {s}.{events} e SET leaf_idx = l.idx, sealed_at = %s, leaf_hash = l.hash "
            "FROM unnest(%s::int8[], %s::int8[], %s::bytea[]) AS l(position, idx, hash) "
            "WHERE e.notification_id = l.position"
        ).format(**ident)
        self._select_mark = SQL(
            "SELECT size, last_position, frontier FROM {s}.{head} WHERE id = 1"
        ).format(**ident)
        # Bounded on both sides, so the positions' index is read even where the table has
        # no statistics (a planner guessing a third of it would scan and sort it all).
        self._select_leaves_between = SQL(
            "SELECT leaf_idx, leaf_hash FROM {s}.{events} WHERE notification_id > %s "
            "AND notification_id <= %s ORDER BY notification_id"
        ).format(**ident)
        self._update_mark = SQL(
            "UPDATE {s}.{head} SET size = %s, last_position = %s, frontier = %s WHERE id = 1"
        ).format(**ident)
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
            "FROM {s}.{events} WHERE notification_id > %s AND notification_id <= "
            "(SELECT max(notification_id) FROM {s}.{events}) AND leaf_idx IS NULL "
            "ORDER BY notification_id"
        ).format(**ident)
        self._draw_positions = SQL(
            "SELECT nextval({sequence}::regclass) AS n FROM generate_series(1, %s)"
        ).format(**ident)

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        return self._sealing(  # type: ignore[no-any-return]
            lambda: super(PostgresSeal, self).insert_events(stored_events, **kwargs)  # type: ignore[misc]
        )

    def insert_groups(self, groups: Sequence[Group]) -> list[Sequence[int] | None]:
        """See ``GroupRecorder``."""
        return self._sealing(  # type: ignore[no-any-return]
            lambda: super(PostgresSeal, self).insert_groups(groups)  # type: ignore[misc]
        )

    def _sealing(self, write: Callable[[], Any]) -> Any:
        """Run an inserting transaction; say so when its seal could not be written."""
        try:
            return write()
        except Exception as exc:
            if self._seal_refused(exc):
                msg = (
                    f"the seal of {self.events_table_name} refused the events (its columns "
                    "are missing: run ketnoi migrate): nothing was written"
                )
                raise SealError(msg) from exc
            raise

    def _seal_refused(self, exc: BaseException) -> bool:
        """Whether ``exc`` is the insert finding the events table without the seal's
        columns (a database not migrated)."""
        cause: BaseException | None = exc
        while cause is not None:
            if isinstance(cause, psycopg.errors.UndefinedColumn):
                return any(column in str(cause) for column in SEAL_COLUMNS)
            cause = cause.__cause__
        return False

    def _insert_stored_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        # The library's insert (after its table lock and notification), sealed in the same
        # statement: the leaves need the positions the insert draws.
        self._lock_table(curs)  # type: ignore[attr-defined]
        self._notify_channel(curs)  # type: ignore[attr-defined]
        rows = [
            self.construct_pg_stored_event(  # type: ignore[attr-defined]
                e.originator_id, e.originator_version, e.topic, e.state
            )
            for e in stored_events
        ]
        at = sealed_at_now()
        curs.execute(self._insert_sealed, (rows, at, at), prepare=True)

    def _fetch_ids_after_insert_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        rows = sorted((r["notification_id"], r["leaf_idx"]) for r in curs.fetchall())
        ids = [position for position, _ in rows]
        if stored_events:
            try:
                indexes = [idx for _, idx in rows]
                if len(ids) != len(stored_events) or None in indexes:
                    raise SealError("a position does not follow the last sealed one")
                self._write_seal(curs, Head(indexes[-1] + 1, ids[-1]), len(ids))
            except Exception as exc:
                # The library re-raises this only after leaving its transaction block, which
                # would commit the events: a statement that fails in the same transaction
                # makes that commit roll back instead.
                with contextlib.suppress(psycopg.Error):
                    curs.execute(
                        SQL("DO $$ BEGIN RAISE EXCEPTION USING MESSAGE = {}; END $$").format(
                            Literal(f"the seal of {self.events_table_name} failed: {exc}")
                        )
                    )
                raise
        return ids

    def _write_seal(self, cursor: Cursor[DictRow], after: Head, appended: int) -> None:
        """After ``appended`` leaves took the tree to ``after``: move the mark (and sign a
        checkpoint when one is due) if they crossed a multiple of the interval. Rare, and
        under the table lock: the frontier is read back from the mark and the rows after
        it."""
        before = after.size - appended
        if not self.checkpoints.crosses(before, after.size):
            return
        frontier = self._frontier_at(cursor, after)
        if frontier is None:
            raise SealError(f"the leaves of {self.events_table_name} do not follow its mark")
        cursor.execute(self._update_mark, (after.size, after.last_position, frontier.to_bytes()))
        if self.checkpoints.due(before, after.size):
            size, root, note = self.checkpoints.note(frontier)
            cursor.execute(self._insert_checkpoint, (size, root, datetime.now(UTC), note))

    def _frontier_at(self, cursor: Cursor[DictRow], head: Head) -> Frontier | None:
        """The frontier of the tree up to ``head``: the mark's, extended by the sealed rows
        after it; None when those rows do not end at the head's size."""
        cursor.execute(self._select_mark)
        mark = cursor.fetchone()
        if mark is None:
            raise SealError(f"the seal of {self.events_table_name} is missing: run ketnoi migrate")
        frontier = Frontier.from_bytes(mark["size"], bytes(mark["frontier"]))
        cursor.execute(self._select_leaves_between, (mark["last_position"], head.last_position))
        hashes: list[bytes] = []
        for row in cursor.fetchall():
            if row["leaf_idx"] is None:
                continue  # a row stored unsealed is not in the tree
            if row["leaf_idx"] != frontier.size + len(hashes):
                return None
            hashes.append(bytes(row["leaf_hash"]))
        frontier.extend(hashes)
        return frontier if frontier.size == head.size else None

    def create_table(self) -> None:
        super().create_table()  # type: ignore[misc]
        self.seal_backlog()

    def checkpoint_now(self) -> int | None:
        """Sign a checkpoint of the tree as it is, unless one of that size exists; returns
        its size, or None when the log has not grown or no signer is configured. The mark
        moves there too."""
        if self.checkpoints.signer is None:
            return None
        datastore = self.datastore  # type: ignore[attr-defined]
        with datastore.transaction(commit=True) as curs:
            self._lock_table(curs)  # type: ignore[attr-defined]
            curs.execute(self._select_head)
            row = curs.fetchone()
            if row is None:
                raise SealError(f"the seal of {self.events_table_name} is missing")
            curs.execute(self._select_last_checkpoint)
            last = curs.fetchone()["size"]
            if row["size"] == 0 or (last is not None and last >= row["size"]):
                return None
            frontier = self._frontier_at(curs, Head(row["size"], row["last_position"]))
            if frontier is None:
                raise SealError(f"the leaves of {self.events_table_name} do not follow its mark")
            size, root, note = self.checkpoints.note(frontier)
            curs.execute(self._update_mark, (size, row["last_position"], frontier.to_bytes()))
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
            return self.seal_backlog_locked(curs)

    def seal_backlog_locked(self, curs: Cursor[DictRow]) -> int:
        """Seal the rows past the last sealed position, in a transaction that holds the
        table lock; returns how many."""
        curs.execute(self._select_head)
        row = curs.fetchone()
        if row is None:
            raise SealError(f"the seal of {self.events_table_name} is missing")
        head = Head(row["size"], row["last_position"])
        curs.execute(self._select_backlog, (head.last_position,))
        backlog = curs.fetchall()
        if not backlog:
            return 0
        events = [
            StoredEvent(r["originator_id"], r["originator_version"], r["topic"], r["state"])
            for r in backlog
        ]
        ids = [r["notification_id"] for r in backlog]
        hashes, at, last = sealed_hashes(events, ids, head.last_position)
        indexes = list(range(head.size, head.size + len(ids)))
        curs.execute(self._write_leaves, (at, ids, indexes, hashes))
        self._write_seal(curs, Head(head.size + len(ids), last), len(ids))
        return len(events)

    def draw_positions(self, curs: Cursor[DictRow], count: int) -> list[int]:
        """``count`` new positions from the log's sequence, ascending, for rows written
        with COPY under the table lock (a bulk load): what the sealed insert draws."""
        curs.execute(self._draw_positions, (count,))
        return sorted(row["n"] for row in curs.fetchall())


# A log sealed in a table of its own (``<events>_leaves``: one row per transaction, or, before
# that, one row per leaf) has its leaves moved into the seal's columns of its events, with the
# same hashes, so its checkpoints still verify; the table is dropped. Refused when a leaf names
# a row that is missing (``ketnoi verify`` names it): nothing is converted then.
_CONVERT_LEAVES = """DO $$ DECLARE moved bigint; sealed bigint; BEGIN
IF EXISTS (SELECT 1 FROM information_schema.tables WHERE table_schema = {schema_name}
    AND table_name = {leaves_name}) THEN
  LOCK TABLE {s}.{events} IN ACCESS EXCLUSIVE MODE;
  IF EXISTS (SELECT 1 FROM information_schema.tables WHERE table_schema = {schema_name}
      AND table_name = {leaves_name}) THEN
    IF EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = {schema_name}
        AND table_name = {leaves_name} AND column_name = 'leaf_hash') THEN
      SELECT count(*) INTO sealed FROM {s}.{leaves};
      UPDATE {s}.{events} e SET leaf_idx = l.idx, sealed_at = l.sealed_at,
        leaf_hash = l.leaf_hash FROM {s}.{leaves} l WHERE e.notification_id = l.position;
    ELSE
      SELECT coalesce(sum(cardinality(positions)), 0) INTO sealed FROM {s}.{leaves};
      UPDATE {s}.{events} e SET leaf_idx = l.idx + u.n - 1, sealed_at = l.sealed_at,
        leaf_hash = substring(l.hashes FROM (32 * u.n - 31)::int FOR 32)
        FROM {s}.{leaves} l CROSS JOIN LATERAL unnest(l.positions) WITH ORDINALITY AS u(p, n)
        WHERE e.notification_id = u.p;
    END IF;
    GET DIAGNOSTICS moved = ROW_COUNT;
    IF moved <> sealed THEN
      RAISE EXCEPTION 'the seal of %.% names % rows, of which % are missing from the log: '
        'run ketnoi verify; nothing was converted',
        {schema_name}, {leaves_name}, sealed, sealed - moved;
    END IF;
    DROP TABLE {s}.{leaves};
  END IF;
END IF;
END $$"""


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
