"""Read-model storage: one table of JSON documents per view, and the view's tracking positions,
written together in one transaction; on PostgreSQL (the projections schema) or SQLite.

A view's documents are keyed; ``province`` and ``agency`` are columns so queries can filter
without reading every document. Rebuilding fills shadow tables and swaps them in by renaming,
inside one transaction, so readers are never interrupted.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson
import psycopg
from psycopg import sql
from psycopg.adapt import Dumper

from services.runtime.files import private_file
from services.runtime.settings import Settings

Row = tuple[str, str | None, str | None, dict[str, Any]]  # key, province, agency, document


class Cursor(Protocol):
    def execute(self, query: str, params: Sequence[Any] = ()) -> Any: ...
    def executemany(self, query: str, params: Iterable[Sequence[Any]]) -> Any: ...
    def fetchall(self) -> list[Any]: ...


@dataclass(frozen=True)
class Tables:
    """The table names of one view (live, or a shadow being rebuilt)."""

    docs: str
    tracking: str

    @classmethod
    def of(cls, view: str, suffix: str = "") -> Tables:
        return cls(docs=f"view_{view}{suffix}", tracking=f"view_{view}_tracking{suffix}")


class ViewStore:
    """Documents and tracking positions of every view, on one database."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        target = settings.postgres
        self._lock = threading.RLock()
        if target is None:
            self.backend = "sqlite"
            self._sqlite_path: Path = private_file(settings.data_dir / "projections.sqlite")
            self._local = threading.local()
        else:
            self.backend = "postgres"
            self.schema = settings.schema_for("projections")
            self._conninfo = target.conninfo()
            self._local = threading.local()

    # -- connections --------------------------------------------------------------------

    def _connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self.backend == "postgres" and (conn.closed or conn.broken):
            # The server went away (a restart, a network cut): the use that found out failed;
            # this one connects again rather than failing for ever.
            conn = self._local.conn = None
        if conn is None:
            if self.backend == "sqlite":
                conn = sqlite3.connect(
                    self._sqlite_path, timeout=30, isolation_level=None, check_same_thread=False
                )
                conn.execute("PRAGMA journal_mode=WAL")
                # Deleted and replaced documents are overwritten, not left in free pages:
                # an erased person's documents leave nothing behind in the file.
                conn.execute("PRAGMA secure_delete=ON")
            else:
                conn = psycopg.connect(self._conninfo, autocommit=True)
                conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _drop(self) -> None:
        """Forget this thread's connection after a failure: the next use connects again."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with suppress(psycopg.Error):
                conn.close()

    def _begin(self) -> tuple[Any, psycopg.Transaction]:
        """A PostgreSQL transaction begun on this thread's connection.

        A connection that went stale while idle (the server restarted) fails at BEGIN,
        before anything was sent that matters: it is replaced once by a fresh one.
        """
        for attempt in (1, 2):
            conn = self._connection()
            tx = conn.transaction()
            try:
                tx.__enter__()
            except psycopg.OperationalError:
                self._drop()
                if attempt == 2:
                    raise
                continue
            return conn, tx
        raise AssertionError("unreachable")

    @contextmanager
    def transaction(self) -> Iterator[Cursor]:
        """A transaction on this thread's connection. On PostgreSQL a connection lost to a
        restart is replaced; a failure while the database is down raises
        ``psycopg.OperationalError`` (the HTTP layer answers 503)."""
        if self.backend == "sqlite":
            conn = self._connection()
            cur = conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteCursor(cur)
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")
            return
        conn, tx = self._begin()
        try:
            with conn.cursor() as cur:
                yield _PgCursor(cur)
        except BaseException as exc:
            with suppress(psycopg.Error):
                tx.__exit__(type(exc), exc, exc.__traceback__)
            if isinstance(exc, psycopg.OperationalError) or conn.closed:
                self._drop()
            raise
        try:
            tx.__exit__(None, None, None)
        except psycopg.OperationalError:
            self._drop()
            raise

    # -- schema -------------------------------------------------------------------------

    def create(self, tables: Tables, *, replace: bool = False, shadow: bool = False) -> None:
        """Create a view's tables. A shadow gets its key index after the bulk load, which
        builds it in one pass instead of row by row."""
        with self.transaction() as cur:
            if self.backend == "postgres":
                cur.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            if replace:
                cur.execute(f"DROP TABLE IF EXISTS {tables.docs}")
                cur.execute(f"DROP TABLE IF EXISTS {tables.tracking}")
            key = "key text" if shadow and self.backend == "postgres" else "key text PRIMARY KEY"
            # Large documents are compressed out of line; lz4 costs a fraction of pglz.
            doc = "doc text COMPRESSION lz4" if self.backend == "postgres" else "doc text"
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {tables.docs} ({key}, "
                f"province text, agency text, {doc} NOT NULL)"
            )
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {tables.tracking} "
                "(upstream text PRIMARY KEY, position bigint NOT NULL)"
            )

    def swap(self, view: str, shadow: Tables) -> None:
        """Put a rebuilt view in place of the live one, atomically."""
        live, old = Tables.of(view), Tables.of(view, "_old")
        with self.transaction() as cur:
            for table in (old.docs, old.tracking):
                cur.execute(f"DROP TABLE IF EXISTS {table}")
            cur.execute(f"ALTER TABLE {live.docs} RENAME TO {old.docs}")
            cur.execute(f"ALTER TABLE {live.tracking} RENAME TO {old.tracking}")
            cur.execute(f"ALTER TABLE {shadow.docs} RENAME TO {live.docs}")
            cur.execute(f"ALTER TABLE {shadow.tracking} RENAME TO {live.tracking}")
            for table in (old.docs, old.tracking):
                cur.execute(f"DROP TABLE {table}")

    @contextmanager
    def view_lock(self, view: str) -> Iterator[None]:
        """Only one writer per view at a time, across processes (and threads)."""
        with self._lock:
            if self.backend == "sqlite":
                yield
                return
            key = _lock_key(self.schema, view)
            conn = self._connection()
            try:
                conn.execute("SELECT pg_advisory_lock(%s)", (key,))
            except psycopg.OperationalError:
                self._drop()  # stale after a restart: the next round connects again
                raise
            try:
                yield
            finally:
                # A lock held by a lost connection went with it.
                if not conn.closed:
                    try:
                        conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
                    except psycopg.OperationalError:
                        self._drop()

    # -- reading and writing ----------------------------------------------------------

    def positions(self, tables: Tables) -> dict[str, int]:
        with self.transaction() as cur:
            cur.execute(f"SELECT upstream, position FROM {tables.tracking}")
            return {str(u): int(p) for u, p in cur.fetchall()}

    def load(self, tables: Tables, keys: Sequence[str]) -> dict[str, Row]:
        found: dict[str, Row] = {}
        if self.backend == "postgres" and len(keys) > 1:
            with self.transaction() as cur:
                cur.execute(
                    f"SELECT key, province, agency, doc FROM {tables.docs} WHERE key = ANY(%s)",
                    [list(keys)],
                )
                for key, province, agency, doc in cur.fetchall():
                    found[key] = (key, province, agency, _doc(doc))
            return found
        with self.transaction() as cur:
            for start in range(0, len(keys), 500):
                chunk = list(keys[start : start + 500])
                marks = ",".join(["%s"] * len(chunk))
                cur.execute(
                    f"SELECT key, province, agency, doc FROM {tables.docs} WHERE key IN ({marks})",
                    chunk,
                )
                for key, province, agency, doc in cur.fetchall():
                    found[key] = (key, province, agency, _doc(doc))
        return found

    def query(
        self,
        tables: Tables,
        *,
        province: str | None = None,
        agency: str | None = None,
        key_prefix: str | None = None,
    ) -> list[Row]:
        where, params = [], []
        if province is not None:
            where.append("province = %s")
            params.append(province)
        if agency is not None:
            where.append("agency = %s")
            params.append(agency)
        if key_prefix is not None:
            where.append("key LIKE %s")
            params.append(key_prefix.replace("%", "") + "%")
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        with self.transaction() as cur:
            cur.execute(
                f"SELECT key, province, agency, doc FROM {tables.docs}{clause} ORDER BY key",
                params,
            )
            return [(k, p, a, _doc(d)) for k, p, a, d in cur.fetchall()]

    def write(
        self,
        cur: Cursor,
        tables: Tables,
        rows: Iterable[Row],
        positions: dict[str, int],
    ) -> None:
        """Upsert documents and set tracking positions, inside the caller's transaction."""
        payload = [
            (key, province, agency, orjson.dumps(doc).decode())
            for key, province, agency, doc in rows
        ]
        if payload:
            cur.executemany(
                f"INSERT INTO {tables.docs} (key, province, agency, doc) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (key) DO UPDATE SET "
                "province = excluded.province, agency = excluded.agency, doc = excluded.doc",
                payload,
            )
        if positions:
            cur.executemany(
                f"INSERT INTO {tables.tracking} (upstream, position) VALUES (%s, %s) "
                "ON CONFLICT (upstream) DO UPDATE SET position = excluded.position",
                list(positions.items()),
            )

    def delete_cases(self, cur: Cursor, tables: Tables, case_ids: Sequence[str]) -> None:
        """Delete every document of these cases (an erased person's), in the caller's
        transaction. SQLite overwrites what it deletes (``secure_delete``)."""
        for start in range(0, len(case_ids), 500):
            chunk = list(case_ids[start : start + 500])
            marks = ",".join(["%s"] * len(chunk))
            if self.backend == "postgres":
                where = f"(doc::jsonb)->>'case_id' IN ({marks})"
            else:
                where = f"json_extract(doc, '$.case_id') IN ({marks})"
            cur.execute(f"DELETE FROM {tables.docs} WHERE {where}", chunk)

    def forget_deleted(self, tables: Tables) -> None:
        """After deleting an erased person's documents: on SQLite, fold the write-ahead log
        into the file (its frames still hold the pages as they were before); on PostgreSQL,
        vacuum the table, so the deleted rows go from its pages."""
        with self._lock:
            conn = self._connection()
            if self.backend == "sqlite":
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            else:
                conn.execute(f"VACUUM {tables.docs}")

    def bulk_load(self, tables: Tables, rows: Iterable[Row]) -> None:
        """Fill empty (shadow) tables fast: COPY on PostgreSQL."""
        if self.backend == "sqlite":
            with self.transaction() as cur:
                self.write(cur, tables, rows, {})
            return
        conn = self._connection()
        with conn.transaction(), conn.cursor() as cur:
            # orjson's bytes are UTF-8 text already: COPY them as they are, rather than
            # decoding each document to str for psycopg to encode it back.
            cur.adapters.register_dumper(bytes, _Utf8TextDumper)
            with cur.copy(f"COPY {tables.docs} (key, province, agency, doc) FROM STDIN") as copy:
                for key, province, agency, doc in rows:
                    copy.write_row((key, province, agency, orjson.dumps(doc)))
        with conn.transaction():
            conn.execute(f"ALTER TABLE {tables.docs} ADD PRIMARY KEY (key)")

    def rewrite(self, tables: Tables, replaced: Sequence[str], rows: Iterable[Row]) -> None:
        """Replace the documents ``replaced`` and add the others of ``rows``, in one
        transaction: PostgreSQL deletes the old ones and COPYs every row in (a row whose key
        is still there and was not named fails the COPY, loudly)."""
        if self.backend == "sqlite":
            with self.transaction() as cur:
                self.write(cur, tables, rows, {})
            return
        conn = self._connection()
        with conn.transaction(), conn.cursor() as cur:
            if replaced:
                cur.execute(f"DELETE FROM {tables.docs} WHERE key = ANY(%s)", [list(replaced)])
            cur.adapters.register_dumper(bytes, _Utf8TextDumper)
            with cur.copy(f"COPY {tables.docs} (key, province, agency, doc) FROM STDIN") as copy:
                for key, province, agency, doc in rows:
                    copy.write_row((key, province, agency, orjson.dumps(doc)))

    def count(self, tables: Tables) -> int:
        with self.transaction() as cur:
            cur.execute(f"SELECT count(*) FROM {tables.docs}")
            return int(cur.fetchall()[0][0])


class _Utf8TextDumper(Dumper):
    """Bytes that are UTF-8 text, sent as ``text`` (COPY still escapes them)."""

    oid = psycopg.adapters.types["text"].oid

    def dump(self, obj: Any) -> bytes:
        return bytes(obj)


def _doc(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    loaded: dict[str, Any] = orjson.loads(value)
    return loaded


def _lock_key(schema: str, view: str) -> int:
    # A stable 63-bit key per (schema, view) for pg_advisory_lock.
    import hashlib

    digest = hashlib.sha256(f"{schema}/{view}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF


class _SqliteCursor:
    def __init__(self, cur: sqlite3.Cursor) -> None:
        self.cur = cur

    def execute(self, query: str, params: Sequence[Any] = ()) -> Any:
        return self.cur.execute(query.replace("%s", "?"), tuple(params))

    def executemany(self, query: str, params: Iterable[Sequence[Any]]) -> Any:
        return self.cur.executemany(query.replace("%s", "?"), [tuple(p) for p in params])

    def fetchall(self) -> list[Any]:
        return self.cur.fetchall()


class _PgCursor:
    def __init__(self, cur: psycopg.Cursor[Any]) -> None:
        self.cur = cur

    def execute(self, query: str, params: Sequence[Any] = ()) -> Any:
        return self.cur.execute(query, tuple(params))

    def executemany(self, query: str, params: Iterable[Sequence[Any]]) -> Any:
        return self.cur.executemany(query, [tuple(p) for p in params])

    def fetchall(self) -> list[Any]:
        return self.cur.fetchall()
