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

from services.projections.board import BREACHED, QUIET, SEGMENTS, PageRow, Position
from services.projections.derived import Derived
from services.runtime.files import private_file
from services.runtime.settings import Settings

Row = tuple[str, str | None, str | None, dict[str, Any]]  # key, province, agency, document


class Cursor(Protocol):
    def execute(self, query: str, params: Sequence[Any] = ()) -> Any: ...
    def executemany(self, query: str, params: Iterable[Sequence[Any]]) -> Any: ...
    def fetchall(self) -> list[Any]: ...


# The columns the board's pages are ordered by (``services.projections.board``), beside
# the row of each open case.
BOARD_COLUMNS = f"attention smallint NOT NULL DEFAULT {QUIET}, handovers integer NOT NULL DEFAULT 0"

# The views with tables beside their documents (``services.projections.derived``): the
# case overview keeps its open cases (the board) and the statistics' counters.
WITH_DERIVED = frozenset({"cases"})


@dataclass(frozen=True)
class Tables:
    """The table names of one view (live, or a shadow being rebuilt)."""

    docs: str
    tracking: str
    # Beside the documents, for the views in WITH_DERIVED: open cases, counters, moments.
    open: str | None = None
    counts: str | None = None
    moments: str | None = None

    @classmethod
    def of(cls, view: str, suffix: str = "") -> Tables:
        docs = f"view_{view}{suffix}"
        if view not in WITH_DERIVED:
            return cls(docs=docs, tracking=f"view_{view}_tracking{suffix}")
        return cls(
            docs=docs,
            tracking=f"view_{view}_tracking{suffix}",
            open=f"view_{view}_open{suffix}",
            counts=f"view_{view}_counts{suffix}",
            moments=f"view_{view}_moments{suffix}",
        )

    @property
    def derived(self) -> tuple[str, ...]:
        return tuple(t for t in (self.open, self.counts, self.moments) if t is not None)

    @property
    def all(self) -> tuple[str, ...]:
        return (self.docs, self.tracking, *self.derived)


_OPEN_COLUMNS = "province, case_id, received_at, review_due_on, attention, handovers, row"
_OPEN_UPDATE = (
    "province = excluded.province, received_at = excluded.received_at, "
    "review_due_on = excluded.review_due_on, attention = excluded.attention, "
    "handovers = excluded.handovers, row = excluded.row"
)


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
    def transaction(self, *, snapshot: bool = False) -> Iterator[Cursor]:
        """A transaction on this thread's connection. On PostgreSQL a connection lost to a
        restart is replaced; a failure while the database is down raises
        ``psycopg.OperationalError`` (the HTTP layer answers 503).

        ``snapshot``: a read-only transaction whose statements all see the tables as they
        were at its first (on PostgreSQL, REPEATABLE READ; on SQLite every transaction
        here is), for an answer read in several statements, such as a page and its totals.
        """
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
                if snapshot:
                    cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
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

    def create(self, tables: Tables, *, replace: bool = False, shadow: bool = False) -> bool:
        """Create a view's tables. A shadow gets its key index after the bulk load, which
        builds it in one pass instead of row by row.

        Returns True when the tables beside the documents were made (or given columns) now
        for documents already there: they are empty, or their new columns at their defaults,
        until ``ketnoi rebuild`` fills them."""
        with self.transaction() as cur:
            if self.backend == "postgres":
                cur.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            if replace:
                for table in tables.all:
                    cur.execute(f"DROP TABLE IF EXISTS {table}")
            missing = [t for t in tables.derived if not self._exists(cur, t)]
            missing += self._add_board_columns(cur, tables)
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
            self._create_derived(cur, tables)
            if not missing or replace:
                return False
            cur.execute(f"SELECT 1 FROM {tables.docs} LIMIT 1")
            return bool(cur.fetchall())

    def _exists(self, cur: Cursor, table: str) -> bool:
        if self.backend == "sqlite":
            cur.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = %s", [table])
        else:
            cur.execute(
                "SELECT 1 FROM information_schema.tables WHERE table_schema = %s "
                "AND table_name = %s",
                [self.schema, table],
            )
        return bool(cur.fetchall())

    def _create_derived(self, cur: Cursor, tables: Tables) -> None:
        """The tables beside the documents (``services.projections.derived``), each keyed
        for the question it answers: a province's open cases; a province's counters by month
        and day; a province's moments of one day (and each case's, to replace them). Instants
        and days are compared as text: bytewise on PostgreSQL too."""
        if tables.open is None or tables.counts is None or tables.moments is None:
            return
        text = 'text COLLATE "C"' if self.backend == "postgres" else "text"
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {tables.open} (province text NOT NULL, "
            "case_id text NOT NULL, received_at text, review_due_on text, row text NOT NULL, "
            f"{BOARD_COLUMNS}, PRIMARY KEY (province, case_id), UNIQUE (case_id))"
        )
        self._index_board(cur, tables.open, tables.open)
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {tables.counts} (province text NOT NULL, "
            f"level text NOT NULL, bucket {text} NOT NULL, tbl text NOT NULL, "
            "period text NOT NULL, dimension text NOT NULL, value text NOT NULL, "
            "n bigint NOT NULL, "
            "PRIMARY KEY (province, level, bucket, tbl, period, dimension, value))"
        )
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {tables.moments} (province text NOT NULL, "
            f"day {text} NOT NULL, case_id text NOT NULL, changes text NOT NULL, "
            "PRIMARY KEY (case_id, day), UNIQUE (province, day, case_id))"
        )

    def _add_board_columns(self, cur: Cursor, tables: Tables) -> list[str]:
        """An open-cases table from before the board was read a page at a time gets the
        columns its order reads (each row at rank ``QUIET`` until written again: ``ketnoi
        rebuild`` writes them all), and its rows of an unknown reception are given one the
        pages compare. Returns the table when it was changed."""
        if tables.open is None or not self._exists(cur, tables.open):
            return []
        if self.backend == "sqlite":
            cur.execute(f"PRAGMA table_info({tables.open})")
            columns = {str(row[1]) for row in cur.fetchall()}
        else:
            cur.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
                "AND table_name = %s",
                [self.schema, tables.open],
            )
            columns = {str(column) for (column,) in cur.fetchall()}
        if "attention" in columns:
            return []
        for column in BOARD_COLUMNS.split(", "):
            cur.execute(f"ALTER TABLE {tables.open} ADD COLUMN {column}")
        cur.execute(f"UPDATE {tables.open} SET received_at = '' WHERE received_at IS NULL")
        return [tables.open]

    def _index_board(self, cur: Cursor, table: str, name: str) -> None:
        """The index every page of the board is a range of: a province's rows by rank, then
        oldest reception first, then by case (bytewise, as the cursor compares them); the
        review's day and the handovers waiting in it too, so the rows of a segment and the
        province's totals are read from the index alone. Named after the table it was made
        for: a rebuilt table keeps its index under its live name (``swap``)."""
        c = ' COLLATE "C"' if self.backend == "postgres" else ""
        cur.execute(
            f"CREATE INDEX IF NOT EXISTS {name}_board ON {table} (province, attention, "
            f"received_at{c}, case_id{c}, review_due_on{c}, handovers)"
        )

    def swap(self, view: str, shadow: Tables) -> None:
        """Put a rebuilt view in place of the live one, atomically. On PostgreSQL the
        tables beside the documents are vacuumed and analysed first: the planner then sums
        a province's counters by hashing, not by sorting them, and counts a province's open
        cases from the board's index alone (an index-only scan needs the pages marked
        all-visible, which a table just filled by COPY is not: measured at 1,000,000 cases,
        the board's totals of Lao Cai took 200 ms by a scan of the whole table before, 30 to
        60 ms after)."""
        live, old = Tables.of(view), Tables.of(view, "_old")
        if self.backend == "postgres":
            with self._lock:
                for table in shadow.derived:
                    self._connection().execute(f"VACUUM (ANALYZE) {table}")
                self._connection().execute(f"ANALYZE {shadow.docs}")
        with self.transaction() as cur:
            for table in old.all:
                cur.execute(f"DROP TABLE IF EXISTS {table}")
            # A database from before a view had its tables beside it has none to set aside.
            alter = "ALTER TABLE IF EXISTS" if self.backend == "postgres" else "ALTER TABLE"
            for live_table, old_table in zip(live.all, old.all, strict=True):
                cur.execute(f"{alter} {live_table} RENAME TO {old_table}")
            for shadow_table, live_table in zip(shadow.all, live.all, strict=True):
                cur.execute(f"ALTER TABLE {shadow_table} RENAME TO {live_table}")
            for table in old.all:
                cur.execute(f"DROP TABLE IF EXISTS {table}")
            if shadow.open is not None and live.open is not None:
                # Indexes keep their names through a rename: the board's takes the live one
                # (SQLite renames none, so it is made again under its live name).
                if self.backend == "postgres":
                    cur.execute(
                        f"ALTER INDEX IF EXISTS {shadow.open}_board RENAME TO {live.open}_board"
                    )
                else:
                    cur.execute(f"DROP INDEX IF EXISTS {shadow.open}_board")
                    self._index_board(cur, live.open, live.open)

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

    def write_derived(
        self, cur: Cursor, tables: Tables, derived: Derived, *, lock_counts: bool = False
    ) -> None:
        """Apply what a batch of case documents changed beside them, inside the caller's
        transaction: counters added to (a cell back to zero goes), each changed case's
        moments replaced, open cases' board rows put and closed cases' taken out. With
        ``lock_counts`` (PostgreSQL), the counters are added last, under a transaction lock
        on them (``rewrite``'s ``shared``)."""
        if tables.open is None or tables.counts is None or tables.moments is None:
            return
        counts = [(*key, n) for key, n in derived.counts.items() if n]
        moments = [
            (province, day, case_id, changes.decode())
            for case_id, days in derived.moments.items()
            for province, day, changes in days
        ]
        opened = [
            (province, case_id, received_at, due, rank, handovers, row.decode())
            for case_id, (province, received_at, due, rank, handovers, row) in derived.open.items()
        ]
        # A changed case's moments are replaced whole; a closed case leaves the board.
        if derived.moments:
            self._delete_by_case(cur, tables.moments, sorted(derived.moments))
        if derived.closed:
            self._delete_by_case(cur, tables.open, sorted(derived.closed))
        if self.backend == "postgres":
            self._write_derived_arrays(cur, tables, counts, moments, opened, lock_counts)
            return
        if counts:
            cur.executemany(
                f"INSERT INTO {tables.counts} "
                "(province, level, bucket, tbl, period, dimension, value, n) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (province, level, bucket, tbl, period, dimension, value) "
                f"DO UPDATE SET n = {tables.counts}.n + excluded.n",
                counts,
            )
            # A cell back at zero goes (from either side: a change due later can be taken
            # off before what it follows is added).
            cur.executemany(
                f"DELETE FROM {tables.counts} WHERE province = %s AND level = %s "
                "AND bucket = %s AND tbl = %s AND period = %s AND dimension = %s "
                "AND value = %s AND n = 0",
                [row[:7] for row in counts],
            )
        if moments:
            cur.executemany(
                f"INSERT INTO {tables.moments} (province, day, case_id, changes) "
                "VALUES (%s, %s, %s, %s)",
                moments,
            )
        if opened:
            cur.executemany(
                f"INSERT INTO {tables.open} ({_OPEN_COLUMNS}) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) "
                f"ON CONFLICT (case_id) DO UPDATE SET {_OPEN_UPDATE}",
                opened,
            )

    def _write_derived_arrays(
        self,
        cur: Cursor,
        tables: Tables,
        counts: list[tuple[Any, ...]],
        moments: list[tuple[str, str, str, str]],
        opened: list[tuple[Any, ...]],
        lock_counts: bool = False,
    ) -> None:
        """``write_derived``'s rows on PostgreSQL: each table changed by one statement over
        arrays (a column each), not one statement a row: a rebuild's window changes hundreds
        of thousands of rows beside its documents. The counters come last: with
        ``lock_counts``, behind a transaction lock that other writers of the same counters
        take too."""
        if moments:
            cur.execute(
                f"INSERT INTO {tables.moments} (province, day, case_id, changes) "
                "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[])",
                [list(column) for column in zip(*moments, strict=True)],
            )
        if opened:
            cur.execute(
                f"INSERT INTO {tables.open} ({_OPEN_COLUMNS}) "
                "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], "
                "%s::int4[], %s::int4[], %s::text[]) "
                f"ON CONFLICT (case_id) DO UPDATE SET {_OPEN_UPDATE}",
                [list(column) for column in zip(*opened, strict=True)],
            )
        if not counts or tables.counts is None:
            return
        if lock_counts:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", [_lock_key(self.schema, tables.counts)])
        keys = "province, level, bucket, tbl, period, dimension, value"
        columns = [list(column) for column in zip(*counts, strict=True)]
        texts = ", ".join(["%s::text[]"] * 7)
        cur.execute(
            f"INSERT INTO {tables.counts} ({keys}, n) "
            f"SELECT * FROM unnest({texts}, %s::int8[]) "
            f"ON CONFLICT ({keys}) DO UPDATE SET n = {tables.counts}.n + excluded.n",
            columns,
        )
        # A cell back at zero goes (from either side: a change due later can be taken off
        # before what it follows is added).
        cur.execute(
            f"DELETE FROM {tables.counts} c USING unnest({texts}) "
            f"AS f({keys}) WHERE c.n = 0 AND "
            + " AND ".join(f"c.{k} = f.{k}" for k in keys.split(", ")),
            columns[:7],
        )

    def _delete_by_case(self, cur: Cursor, table: str, case_ids: Sequence[str]) -> None:
        if self.backend == "postgres":
            cur.execute(f"DELETE FROM {table} WHERE case_id = ANY(%s)", [list(case_ids)])
            return
        for start in range(0, len(case_ids), 500):
            chunk = list(case_ids[start : start + 500])
            marks = ",".join(["%s"] * len(chunk))
            cur.execute(f"DELETE FROM {table} WHERE case_id IN ({marks})", chunk)

    def board(
        self, tables: Tables, province: str, day: str, after: Position | None, limit: int
    ) -> tuple[list[PageRow], dict[str, Any]]:
        """A page of a province's board (``board_page``) and the province's totals
        (``board_totals``), both read from one snapshot: the totals count the cases the
        page was read from, whatever is written meanwhile."""
        with self.transaction(snapshot=True) as cur:
            return (
                self.board_page(cur, tables, province, day, after, limit),
                self.board_totals(cur, tables, province, day),
            )

    def board_page(
        self,
        cur: Cursor,
        tables: Tables,
        province: str,
        day: str,
        after: Position | None,
        limit: int,
    ) -> list[PageRow]:
        """Up to ``limit`` board rows of a province after ``after`` (from the first when
        None), in the board's order (``services.projections.board.SEGMENTS``) as of ``day``:
        segment by segment, each a range of the board's index read from where the last page
        stopped, until enough rows are found."""
        assert tables.open is not None
        c = ' COLLATE "C"' if self.backend == "postgres" else ""
        start, received_at, case_id = after or (0, "", "")
        found: list[PageRow] = []
        for segment in range(start, len(SEGMENTS)):
            rank, overdue = SEGMENTS[segment]
            where, params = ["province = %s", "attention = %s"], [province, rank]
            if overdue is True:
                where.append(f"review_due_on{c} < %s")
                params.append(day)
            elif overdue is False:
                where.append(f"(review_due_on IS NULL OR review_due_on{c} >= %s)")
                params.append(day)
            if segment == start and after is not None:
                where.append(f"(received_at{c}, case_id{c}) > (%s, %s)")
                params += [received_at, case_id]
            cur.execute(
                f"SELECT received_at, case_id, COALESCE(review_due_on, ''), row "
                f"FROM {tables.open} WHERE {' AND '.join(where)} "
                f"ORDER BY received_at{c}, case_id{c} LIMIT %s",
                [*params, limit - len(found)],
            )
            found += [(segment, *row) for row in cur.fetchall()]
            if len(found) >= limit:
                break
        return found

    def board_totals(self, cur: Cursor, tables: Tables, province: str, day: str) -> dict[str, Any]:
        """How many cases of a province are open, and of them how many have a deadline
        breached, a handover waiting, a review overdue on ``day``: the whole province, read
        from the board's index."""
        assert tables.open is not None
        c = ' COLLATE "C"' if self.backend == "postgres" else ""
        cur.execute(
            "SELECT count(*), "
            f"COALESCE(SUM(CASE WHEN attention = {BREACHED} THEN 1 ELSE 0 END), 0), "
            "COALESCE(SUM(CASE WHEN handovers > 0 THEN 1 ELSE 0 END), 0), "
            f"COALESCE(SUM(CASE WHEN review_due_on{c} < %s THEN 1 ELSE 0 END), 0) "
            f"FROM {tables.open} WHERE province = %s",
            [day, province],
        )
        [(total, breached, waiting, overdue)] = cur.fetchall()
        return {
            "open": int(total),
            "attention": {
                "deadlines_breached": int(breached),
                "handovers_waiting": int(waiting),
                "reviews_overdue": int(overdue),
            },
        }

    def counted(
        self, tables: Tables, province: str | None, at: str
    ) -> tuple[list[tuple[Any, ...]], list[Any]]:
        """What the statistics at instant ``at`` (``statistics.instant``) sum: the counters
        of the months before its month and of the days of its month before its day, summed
        per cell (cells at zero left out), and the moments of its day, to be summed up to
        the instant by the caller. Of one province, or of every one."""
        assert tables.counts is not None
        assert tables.moments is not None
        month, day = at[:7], at[:10]
        where, params = ("province = %s AND ", [province]) if province else ("", [])
        # One snapshot: a window's flush that moves moments into the counters between the
        # two statements would otherwise count them twice or not at all.
        with self.transaction(snapshot=True) as cur:
            cur.execute(
                "SELECT tbl, province, period, dimension, value, SUM(n) FROM ("
                f"SELECT tbl, province, period, dimension, value, n FROM {tables.counts} "
                f"WHERE {where}level = 'm' AND bucket < %s "
                "UNION ALL "
                f"SELECT tbl, province, period, dimension, value, n FROM {tables.counts} "
                f"WHERE {where}level = 'd' AND bucket >= %s AND bucket < %s"
                ") AS c GROUP BY tbl, province, period, dimension, value HAVING SUM(n) <> 0",
                [*params, month, *params, month, day],
            )
            sums = cur.fetchall()
            cur.execute(
                f"SELECT changes FROM {tables.moments} WHERE {where}day = %s", [*params, day]
            )
            moments = [change for (changes,) in cur.fetchall() for change in orjson.loads(changes)]
        return sums, moments

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

    def rewrite(
        self,
        tables: Tables,
        replaced: Sequence[str],
        rows: Iterable[Row],
        derived: Derived | None = None,
        *,
        shared: bool = False,
    ) -> None:
        """Replace the documents ``replaced`` and add the others of ``rows``, in one
        transaction (with what they change beside them): PostgreSQL deletes the old ones and
        COPYs every row in (a row whose key is still there and was not named fails the COPY,
        loudly).

        ``shared``: other processes write other documents of the same tables at the same time
        (a rebuild in shares of the cases). Their documents and board rows never meet, but
        their counters do: the counters are then added last, under a lock on them held to
        the commit, so that two writers neither deadlock nor wait on each other's
        documents."""
        if self.backend == "sqlite":
            with self.transaction() as cur:
                self.write(cur, tables, rows, {})
                if derived:
                    self.write_derived(cur, tables, derived)
            return
        conn = self._connection()
        with conn.transaction(), conn.cursor() as cur:
            if derived and not shared:
                self.write_derived(_PgCursor(cur), tables, derived)
            if replaced:
                cur.execute(f"DELETE FROM {tables.docs} WHERE key = ANY(%s)", [list(replaced)])
            cur.adapters.register_dumper(bytes, _Utf8TextDumper)
            with cur.copy(f"COPY {tables.docs} (key, province, agency, doc) FROM STDIN") as copy:
                for key, province, agency, doc in rows:
                    copy.write_row((key, province, agency, orjson.dumps(doc)))
            if derived and shared:
                self.write_derived(_PgCursor(cur), tables, derived, lock_counts=True)

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
