"""Read a database's sealed logs for checking: PostgreSQL schemas or SQLite files.

Both read in one snapshot (PostgreSQL: a repeatable-read, read-only transaction; SQLite: one
read transaction per file), so a verification of a live database sees every log as of one
instant. Nothing here writes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol, cast

import psycopg
from psycopg import sql

from services.runtime.seal.leaves import SealTables, leaf_sql
from services.runtime.settings import Settings

LeafRow = tuple[int, int, int, bytes]  # idx, position, sealed_at, leaf hash
EventRow = tuple[int, bytes, int, str, bytes]  # position, originator id, version, topic, state


@dataclass(frozen=True)
class Head:
    """Where a log's tree ends (its size and last sealed position), and the frontier it keeps
    at ``frontier_size`` and ``frontier_position``: the tree's own on SQLite, the mark's on
    PostgreSQL."""

    size: int
    last_position: int
    frontier: bytes
    frontier_size: int
    frontier_position: int = 0


class Chunk(NamedTuple):
    """Leaves, and the rows read with them. Where the database assembles the leaves (on
    PostgreSQL, from the events' own rows, when every row read was sealed), ``hashed`` holds
    what each leaf hash is taken of (``0x00 || leaf``, as ``leaves.py`` lays the leaf out),
    in the leaves' order, and ``events`` is left empty: the rows themselves are read again
    only to name one that differs. A leaf may be a longer row whose first four fields are
    the leaf's."""

    leaves: Sequence[LeafRow]
    events: Sequence[EventRow]
    hashed: Sequence[bytes] | None = None


class LogSource(Protocol):
    """One sealed log, as stored. ``leaves_in_rows``: each leaf is kept in its event's own
    row, so a deleted row takes its leaf with it (PostgreSQL); otherwise in a table beside."""

    name: str
    leaves_in_rows: bool

    def head(self) -> Head: ...

    def checkpoints(self) -> list[tuple[int, str]]: ...

    def cosignatures(self) -> list[tuple[int, str, str]]: ...

    def leaves(self, from_idx: int, limit: int) -> Sequence[LeafRow]: ...

    def events(self, after: int, upto: int | None) -> Sequence[EventRow]: ...

    def chunk(self, idx: int, after: int, limit: int) -> Chunk:
        """The next leaves and the rows read with them, past position ``after``: where the
        leaves are kept beside, those from index ``idx`` (up to ``limit``) and the rows up to
        the last of their positions; where they are kept in the rows, the leaves of the next
        window of ``limit`` positions that holds any row, each assembled by the database from
        its row, or the rows in full where one of them was never sealed."""
        ...

    def count_events(self) -> int: ...


def chunk_beside(log: LogSource, idx: int, after: int, limit: int) -> Chunk:
    """``LogSource.chunk`` where the leaves are kept in a table beside the events."""
    leaves = log.leaves(idx, limit)
    return Chunk(leaves, log.events(after, leaves[-1][1]) if leaves else [])


class PostgresLog:
    """A log in its PostgreSQL schema: its leaves in its events' rows (``recorders.py``),
    or, in a database not migrated since, in a table beside them: one row per transaction,
    or one row per leaf."""

    def __init__(self, conn: psycopg.Connection[Any], name: str, schema: str, table: str) -> None:
        self.conn, self.name = conn, name
        t = SealTables(table)
        ident = {
            "s": sql.Identifier(schema),
            "events": sql.Identifier(table),
            "leaves": sql.Identifier(t.leaves),
            "head": sql.Identifier(t.head),
            "cp": sql.Identifier(t.checkpoints),
            "co": sql.Identifier(t.cosignatures),
        }
        columns = {
            (row[0], row[1])
            for row in conn.execute(
                "SELECT table_name, column_name FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name IN (%s, %s)",
                (schema, table, t.leaves),
            ).fetchall()
        }
        self.beside = any(found == t.leaves for found, _ in columns)
        self.leaves_in_rows = not self.beside
        self.per_leaf = (t.leaves, "leaf_hash") in columns
        # Where the next leaves start, after a read of the leaves in rows: (index, position).
        self._next: tuple[int, int] = (0, 0)
        self._bounds: tuple[int, int] | None = None  # the first and last position
        q = {
            "mark": "SELECT size, last_position, frontier FROM {s}.{head} WHERE id = 1",
            "tip": "SELECT idx + cardinality(positions), positions[cardinality(positions)] "
            "FROM {s}.{leaves} ORDER BY idx DESC LIMIT 1",
            "row_tip": "SELECT leaf_idx + 1, notification_id FROM {s}.{events} "
            "WHERE leaf_idx IS NOT NULL ORDER BY notification_id DESC LIMIT 1",
            "cp": "SELECT size, note FROM {s}.{cp} ORDER BY size",
            "co": "SELECT size, key_name, line FROM {s}.{co} ORDER BY size, key_name",
            # The leaves from..from+limit, unpacked by the server from the rows that hold
            # them (the one that holds ``from`` first); a position emptied by hand reads as
            # out of order.
            "leaves": "SELECT l.idx + u.n - 1, coalesce(u.p, -1), l.sealed_at, "
            "substring(l.hashes FROM (32 * u.n - 31)::int FOR 32) FROM {s}.{leaves} l "
            "CROSS JOIN LATERAL unnest(l.positions) WITH ORDINALITY AS u(p, n) "
            "WHERE l.idx >= coalesce((SELECT max(idx) FROM {s}.{leaves} WHERE idx <= %s), 0) "
            "AND l.idx < %s AND l.idx + u.n - 1 >= %s ORDER BY l.idx, u.n LIMIT %s",
            "leaf_rows": "SELECT idx, position, sealed_at, leaf_hash FROM {s}.{leaves} "
            "WHERE idx >= %s ORDER BY idx LIMIT %s",
            # The leaves in the events' rows, read in windows of positions (bounded on both
            # sides, so the positions' index is read even where the table has no statistics),
            # or from an index (a whole read, for a look from anywhere).
            "bounds": "SELECT min(notification_id), max(notification_id) FROM {s}.{events}",
            "rows": "SELECT leaf_idx, notification_id, sealed_at, leaf_hash FROM {s}.{events} "
            "WHERE notification_id > %s AND notification_id <= %s AND leaf_idx IS NOT NULL "
            "ORDER BY notification_id",
            "rows_from": "SELECT leaf_idx, notification_id, sealed_at, leaf_hash "
            "FROM {s}.{events} WHERE leaf_idx >= %s ORDER BY leaf_idx LIMIT %s",
            # Each row's leaf as its hash is taken of, laid out by the server as the insert
            # does (``recorders.py``), so the client hashes one value a row; a topic too long
            # for the leaf's length field wraps here and fails its hash, rather than the read.
            "chunk": "SELECT leaf_idx, notification_id, sealed_at, leaf_hash, "
            + leaf_sql("", "notification_id", "sealed_at", wrap_length=True)
            + " FROM {s}.{events} "
            "WHERE notification_id > %s AND notification_id <= %s ORDER BY notification_id",
            "events": "SELECT notification_id, uuid_send(originator_id), originator_version, "
            "topic, state FROM {s}.{events} WHERE notification_id > %s "
            "AND notification_id <= %s ORDER BY notification_id",
            "count": "SELECT count(*) FROM {s}.{events}",
        }
        self._q = {k: sql.SQL(v).format(**ident) for k, v in q.items()}

    def _all(self, key: str, params: Sequence[Any] = ()) -> list[Any]:
        with self.conn.cursor(binary=True) as cur:
            cur.execute(self._q[key], params)
            return cur.fetchall()

    def head(self) -> Head:
        rows = self._all("mark")
        if not rows:
            return Head(0, 0, b"", 0)
        size, last, frontier = rows[0]
        if self.per_leaf:
            return Head(size, last, bytes(frontier), size, last)
        tip = self._all("tip" if self.beside else "row_tip")
        end, end_position = tip[0] if tip else (0, 0)
        return Head(end or 0, end_position or 0, bytes(frontier), size, last)

    def checkpoints(self) -> list[tuple[int, str]]:
        return [(s, n) for s, n in self._all("cp")]

    def cosignatures(self) -> list[tuple[int, str, str]]:
        return [(s, k, line) for s, k, line in self._all("co")]

    def leaves(self, from_idx: int, limit: int) -> Sequence[LeafRow]:
        if self.per_leaf:
            return self._all("leaf_rows", (from_idx, limit))
        if self.beside:
            return self._all("leaves", (from_idx, from_idx + limit, from_idx, limit))
        # Read on from where the last read ended (the usual walk from the first leaf),
        # otherwise by index.
        idx, after = self._next
        found: list[Any] = []
        if from_idx != idx:
            found = self._all("rows_from", (from_idx, limit))
        else:
            for low, high in self._windows(after, limit):
                found.extend(self._all("rows", (low, high)))
                if len(found) >= limit:
                    break
            found = found[:limit]
        if found:
            self._next = (found[-1][0] + 1, found[-1][1])
        return found

    def chunk(self, idx: int, after: int, limit: int) -> Chunk:
        if self.beside:
            return chunk_beside(self, idx, after, limit)
        for low, high in self._windows(after, limit):
            rows = self._all("chunk", (low, high))
            if rows:
                hashed = [row[4] for row in rows]
                if None in hashed:  # a row never sealed: the rows in full
                    leaves = [row[:4] for row in rows if row[0] is not None]
                    return Chunk(leaves, self.events(low, high))
                # Each row read is its leaf (index, position, sealed_at, leaf hash), the leaf
                # as hashed after it.
                return Chunk(rows, [], hashed)
        return Chunk([], [])

    def _windows(self, after: int, width: int) -> Iterator[tuple[int, int]]:
        """Windows of ``width`` positions past ``after``, to the log's last row."""
        if self._bounds is None:
            first, last = self._all("bounds")[0]
            self._bounds = (first or 0, last or 0)
        first, last = self._bounds
        low = max(after, first - 1)
        while low < last:
            yield low, low + width
            low += width

    def events(self, after: int, upto: int | None) -> Sequence[EventRow]:
        return self._all("events", (after, upto if upto is not None else 2**62))

    def count_events(self) -> int:
        return int(self._all("count")[0][0])


class SQLiteLog:
    """A log in its SQLite file; its connection may be used from another thread (the
    verifier reads ahead in one), never from two at once."""

    leaves_in_rows = False

    def __init__(self, conn: sqlite3.Connection, name: str, table: str = "stored_events") -> None:
        self.conn, self.name, self.table = conn, name, table
        self.t = SealTables(table)

    def head(self) -> Head:
        row = self.conn.execute(
            f"SELECT size, last_position, frontier FROM {self.t.head} WHERE id = 1"
        ).fetchone()
        if row is None:
            return Head(0, 0, b"", 0)
        return Head(row[0], row[1], bytes(row[2]), row[0], row[1])

    def checkpoints(self) -> list[tuple[int, str]]:
        return list(self.conn.execute(f"SELECT size, note FROM {self.t.checkpoints} ORDER BY size"))

    def cosignatures(self) -> list[tuple[int, str, str]]:
        return list(
            self.conn.execute(
                f"SELECT size, key_name, line FROM {self.t.cosignatures} ORDER BY size, key_name"
            )
        )

    def leaves(self, from_idx: int, limit: int) -> Sequence[LeafRow]:
        return self.conn.execute(
            f"SELECT idx, position, sealed_at, leaf_hash FROM {self.t.leaves} "
            "WHERE idx >= ? ORDER BY idx LIMIT ?",
            (from_idx, limit),
        ).fetchall()

    def chunk(self, idx: int, after: int, limit: int) -> Chunk:
        return chunk_beside(self, idx, after, limit)

    def events(self, after: int, upto: int | None) -> Sequence[EventRow]:
        rows = self.conn.execute(
            "SELECT rowid, originator_id, originator_version, topic, state FROM "
            f"{self.table} WHERE rowid > ? AND rowid <= ? ORDER BY rowid",
            (after, upto if upto is not None else 2**62),
        ).fetchall()
        fromhex = bytes.fromhex
        try:
            found = [(p, fromhex(o), v, t, s) for p, o, v, t, s in rows]
        except (TypeError, ValueError):
            found = []
        if len(found) != len(rows) or any(len(row[1]) != 16 for row in found):
            found = [(p, _raw_id(o), v, t, s) for p, o, v, t, s in rows]
        return found

    def count_events(self) -> int:
        return int(self.conn.execute(f"SELECT count(*) FROM {self.table}").fetchone()[0])


def _raw_id(stored: object) -> bytes:
    # A hand-edited id that is not 32 hex digits any more must be named, not crash the
    # check, and must never hash as some other id would: it becomes a value no leaf takes.
    try:
        raw = bytes.fromhex(str(stored))
    except ValueError:
        raw = b""
    return raw if len(raw) == 16 else cast(bytes, None)


@contextmanager
def open_logs(settings: Settings, only: Sequence[str] = ()) -> Iterator[list[LogSource]]:
    """Every sealed log of the installation (or those named), read in one snapshot."""
    target = settings.postgres
    if target is None:
        with _sqlite_logs(settings.data_dir, only) as files:
            yield files
        return
    with psycopg.connect(target.conninfo(), autocommit=True) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        # The functions the server applies to the rows are its own, whatever the database
        # was given besides (every table is named with its schema).
        conn.execute("SET LOCAL search_path TO pg_catalog")
        try:
            rows = conn.execute(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_name LIKE %s ORDER BY table_schema",
                ("%\\_events\\_seal",),
            ).fetchall()
            logs: list[LogSource] = []
            prefix = settings.schema_prefix
            for schema, head in rows:
                if not schema.startswith(prefix):
                    continue
                name = schema[len(prefix) :]
                if only and name not in only:
                    continue
                logs.append(PostgresLog(conn, name, schema, head.removesuffix("_seal")))
            yield logs
        finally:
            conn.execute("ROLLBACK")


@contextmanager
def _sqlite_logs(data_dir: Path, only: Sequence[str]) -> Iterator[list[LogSource]]:
    conns: list[sqlite3.Connection] = []
    logs: list[LogSource] = []
    try:
        for path in sorted(data_dir.glob("*.sqlite")):
            if only and path.stem not in only:
                continue
            conn = sqlite3.connect(
                f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
            )
            conns.append(conn)
            sealed = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                (SealTables("stored_events").leaves,),
            ).fetchone()
            if sealed is None:
                continue
            conn.execute("BEGIN")
            logs.append(SQLiteLog(conn, path.stem))
        yield logs
    finally:
        for conn in conns:
            conn.close()
