"""Where the web app keeps its sessions: in the database the platform already uses, so that
any process serving the pages knows every session, and a restart ends none.

A row per session, keyed by a SHA-256 of the session's id (the cookie's random value is
never stored as it is): the user's access token, sealed under a key derived from the session's
id (AES-GCM; so the table alone, a backup or a dump of it, lets nobody act as the user), the
session's CSRF token, when it expires,
and the positions in the logs its commands reached (``Ketnoi-Position``, kept so that the
next page waits for them). Beside them, the sign-ins under way through the identity
provider (by a hash of their ``state``: the PKCE verifier, the nonce, where to come back),
each taken once, so the provider's answer may come back to any process. On PostgreSQL the
tables ``sessions`` and ``sign_ins`` in the schema ``web`` (created by ``ketnoi migrate``);
in the embedded default a SQLite file of its own under the data directory. Expired rows are
deleted as new ones are made.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson
import psycopg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from psycopg import sql
from psycopg_pool import ConnectionPool

from services.runtime.files import private_file
from services.runtime.positions import Positions, merged
from services.runtime.settings import Settings

WEB = "web"  # the schema on PostgreSQL, the file's name in the embedded default
LIFETIME_SECONDS = 12 * 3600
# Expired sessions are swept at most this often, as sessions open.
SWEEP_SECONDS = 60.0


@dataclass(frozen=True)
class Session:
    token: str
    csrf: str
    expires: float  # seconds since the epoch
    positions: Positions = field(default_factory=dict)


class SessionStore(Protocol):
    """Session id -> its session, for as long as it lives."""

    def open(self, token: str) -> str:
        """A new session for this access token; returns its id (the cookie's value)."""
        ...

    def get(self, session_id: str | None) -> Session | None:
        """The session, or None when there is none or it has expired."""
        ...

    def close(self, session_id: str | None) -> None: ...

    def note_positions(self, session_id: str, positions: Mapping[str, int]) -> None:
        """Merge positions reached by the session's commands (each log at its highest)."""
        ...

    def open_sign_in(self, attempt: Mapping[str, str], lifetime_seconds: float) -> str:
        """Keep a sign-in under way; returns its ``state`` (a new random value)."""
        ...

    def take_sign_in(self, state: str) -> dict[str, str] | None:
        """The sign-in under way with this ``state``, once; None when there is none (taken
        already, never made, or expired)."""
        ...

    def shut(self) -> None:
        """Release the store's connections."""
        ...


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def _new(token: str, lifetime: float, now: float) -> tuple[str, Session]:
    return secrets.token_urlsafe(32), Session(token, secrets.token_urlsafe(32), now + lifetime)


_SEALED = "v1."  # a stored token's prefix: sealed as below
_TOKEN_INFO = b"ketnoi web session token"


def _cipher(session_id: str) -> AESGCM:
    """The session's own key, derived from its id: only the cookie's holder has it."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_TOKEN_INFO)
    return AESGCM(hkdf.derive(session_id.encode()))


def _seal_token(session_id: str, token: str) -> str:
    """The access token as stored: ``v1.`` and the base64url of a random nonce and the
    AES-GCM ciphertext, bound to the row's key."""
    nonce = secrets.token_bytes(12)
    sealed = _cipher(session_id).encrypt(nonce, token.encode(), _key(session_id).encode())
    return _SEALED + base64.urlsafe_b64encode(nonce + sealed).decode()


def _open_token(session_id: str, stored: str) -> str | None:
    """The access token of a stored row, or None when it does not open (a row stored as it
    was before tokens were sealed, or altered): the session is then ended."""
    if not stored.startswith(_SEALED):
        return None
    raw = base64.urlsafe_b64decode(stored[len(_SEALED) :])
    try:
        token = _cipher(session_id).decrypt(raw[:12], raw[12:], _key(session_id).encode())
    except (InvalidTag, ValueError):
        return None
    return token.decode()


class _Tabled:
    """What the database stores share: sweeping expired sessions now and then."""

    lifetime_seconds: float
    clock: Callable[[], float]
    _swept: float = 0.0

    def _due_sweep(self, now: float) -> bool:
        if now - self._swept < SWEEP_SECONDS:
            return False
        self._swept = now
        return True


def _session(session_id: str, row: Any) -> Session | None:
    stored, csrf, expires, positions = row
    token = _open_token(session_id, stored)
    if token is None:
        return None
    if isinstance(positions, str | bytes):
        positions = orjson.loads(positions)
    return Session(token, csrf, float(expires), {str(k): int(v) for k, v in positions.items()})


def _attempt(row: Any, now: float) -> dict[str, str] | None:
    if row is None or float(row[1]) < now:
        return None
    attempt = orjson.loads(row[0]) if isinstance(row[0], str | bytes) else row[0]
    return {str(k): str(v) for k, v in attempt.items()}


class SQLiteSessions(_Tabled):
    """Sessions in ``web.sqlite`` under the data directory (the embedded default)."""

    def __init__(
        self,
        path: Path,
        lifetime_seconds: float = LIFETIME_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.lifetime_seconds, self.clock = lifetime_seconds, clock
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(
            private_file(path), timeout=30, isolation_level=None, check_same_thread=False
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS sessions (id_hash TEXT PRIMARY KEY, token TEXT NOT NULL,"
            " csrf TEXT NOT NULL, expires REAL NOT NULL, positions TEXT NOT NULL DEFAULT '{}')"
        )
        self._conn.execute("CREATE INDEX IF NOT EXISTS sessions_expires ON sessions (expires)")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS sign_ins (state_hash TEXT PRIMARY KEY,"
            " attempt TEXT NOT NULL, expires REAL NOT NULL)"
        )

    def open(self, token: str) -> str:
        now = self.clock()
        session_id, session = _new(token, self.lifetime_seconds, now)
        with self._lock:
            if self._due_sweep(now):
                self._conn.execute("DELETE FROM sessions WHERE expires < ?", (now,))
            self._conn.execute(
                "INSERT INTO sessions (id_hash, token, csrf, expires) VALUES (?, ?, ?, ?)",
                (
                    _key(session_id),
                    _seal_token(session_id, session.token),
                    session.csrf,
                    session.expires,
                ),
            )
        return session_id

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        with self._lock:
            row = self._conn.execute(
                "SELECT token, csrf, expires, positions FROM sessions WHERE id_hash = ?",
                (_key(session_id),),
            ).fetchone()
        if row is None:
            return None
        session = _session(session_id, row)
        if session is None or session.expires < self.clock():
            self.close(session_id)
            return None
        return session

    def close(self, session_id: str | None) -> None:
        if session_id:
            with self._lock:
                self._conn.execute("DELETE FROM sessions WHERE id_hash = ?", (_key(session_id),))

    def note_positions(self, session_id: str, positions: Mapping[str, int]) -> None:
        key = _key(session_id)
        with self._lock:
            # Read and written in one transaction: another process may write it too.
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                row = self._conn.execute(
                    "SELECT positions FROM sessions WHERE id_hash = ?", (key,)
                ).fetchone()
                if row is not None:
                    highest = merged(orjson.loads(row[0]), positions)
                    self._conn.execute(
                        "UPDATE sessions SET positions = ? WHERE id_hash = ?",
                        (orjson.dumps(highest).decode(), key),
                    )
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def open_sign_in(self, attempt: Mapping[str, str], lifetime_seconds: float) -> str:
        state, now = secrets.token_urlsafe(24), self.clock()
        with self._lock:
            self._conn.execute("DELETE FROM sign_ins WHERE expires < ?", (now,))
            self._conn.execute(
                "INSERT INTO sign_ins (state_hash, attempt, expires) VALUES (?, ?, ?)",
                (_key(state), orjson.dumps(dict(attempt)).decode(), now + lifetime_seconds),
            )
        return state

    def take_sign_in(self, state: str) -> dict[str, str] | None:
        with self._lock:
            row = self._conn.execute(
                "DELETE FROM sign_ins WHERE state_hash = ? RETURNING attempt, expires",
                (_key(state),),
            ).fetchone()
        return _attempt(row, self.clock())

    def shut(self) -> None:
        with self._lock:
            self._conn.close()


class PostgresSessions(_Tabled):
    """Sessions in the table ``sessions`` of the schema ``web`` (made by ``ketnoi migrate``),
    through a small pool: a page asks once for its session."""

    def __init__(
        self,
        settings: Settings,
        lifetime_seconds: float = LIFETIME_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        target = settings.postgres
        assert target is not None
        self.lifetime_seconds, self.clock = lifetime_seconds, clock
        self._table = sql.Identifier(settings.schema_for(WEB), "sessions")
        self._sign_ins = sql.Identifier(settings.schema_for(WEB), "sign_ins")
        self._pool = ConnectionPool(
            target.conninfo(),
            min_size=1,
            max_size=max(2, min(settings.pg_pool_size, 4)),
            kwargs={"autocommit": True},
            timeout=settings.pg_connect_timeout,
            check=ConnectionPool.check_connection,  # a server restart leaves dead ones
            name="web-sessions",
            open=True,
        )

    def open(self, token: str) -> str:
        now = self.clock()
        session_id, session = _new(token, self.lifetime_seconds, now)
        with self._pool.connection() as conn:
            if self._due_sweep(now):
                conn.execute(
                    sql.SQL("DELETE FROM {} WHERE expires < %s").format(self._table), (now,)
                )
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (id_hash, token, csrf, expires) VALUES (%s, %s, %s, %s)"
                ).format(self._table),
                (
                    _key(session_id),
                    _seal_token(session_id, session.token),
                    session.csrf,
                    session.expires,
                ),
            )
        return session_id

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        with self._pool.connection() as conn:
            row = conn.execute(
                sql.SQL("SELECT token, csrf, expires, positions FROM {} WHERE id_hash = %s").format(
                    self._table
                ),
                (_key(session_id),),
            ).fetchone()
        if row is None:
            return None
        session = _session(session_id, row)
        if session is None or session.expires < self.clock():
            self.close(session_id)
            return None
        return session

    def close(self, session_id: str | None) -> None:
        if session_id:
            with self._pool.connection() as conn:
                conn.execute(
                    sql.SQL("DELETE FROM {} WHERE id_hash = %s").format(self._table),
                    (_key(session_id),),
                )

    def note_positions(self, session_id: str, positions: Mapping[str, int]) -> None:
        # Each log at its highest position, merged in the row itself: two pages of one
        # session writing at once both count.
        with self._pool.connection() as conn:
            conn.execute(
                sql.SQL(
                    "UPDATE {} SET positions = (SELECT coalesce(jsonb_object_agg(k, m), "
                    "'{{}}'::jsonb) FROM (SELECT k, max(v::bigint) AS m FROM ("
                    "SELECT key AS k, value AS v FROM jsonb_each_text(positions) UNION ALL "
                    "SELECT key, value FROM jsonb_each_text(%s::jsonb)) AS both_ GROUP BY k) "
                    "AS highest) WHERE id_hash = %s"
                ).format(self._table),
                (orjson.dumps(dict(positions)).decode(), _key(session_id)),
            )

    def open_sign_in(self, attempt: Mapping[str, str], lifetime_seconds: float) -> str:
        state, now = secrets.token_urlsafe(24), self.clock()
        with self._pool.connection() as conn:
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE expires < %s").format(self._sign_ins), (now,)
            )
            conn.execute(
                sql.SQL("INSERT INTO {} (state_hash, attempt, expires) VALUES (%s, %s, %s)").format(
                    self._sign_ins
                ),
                (_key(state), orjson.dumps(dict(attempt)).decode(), now + lifetime_seconds),
            )
        return state

    def take_sign_in(self, state: str) -> dict[str, str] | None:
        # Deleted as it is read: of two answers with one state, one finds it.
        with self._pool.connection() as conn:
            row = conn.execute(
                sql.SQL("DELETE FROM {} WHERE state_hash = %s RETURNING attempt, expires").format(
                    self._sign_ins
                ),
                (_key(state),),
            ).fetchone()
        return _attempt(row, self.clock())

    def shut(self) -> None:
        self._pool.close()


def migrate_sessions(settings: Settings) -> None:
    """Create the sessions' schema and table on PostgreSQL; safe to run again. (The
    embedded default's file makes its table as it opens.)"""
    target = settings.postgres
    if target is None:
        return
    schema = sql.Identifier(settings.schema_for(WEB))
    with psycopg.connect(target.conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {}.sessions (id_hash text PRIMARY KEY, "
                "token text NOT NULL, csrf text NOT NULL, expires double precision NOT NULL, "
                "positions jsonb NOT NULL DEFAULT '{{}}'::jsonb)"
            ).format(schema)
        )
        conn.execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS sessions_expires ON {}.sessions (expires)").format(
                schema
            )
        )
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {}.sign_ins (state_hash text PRIMARY KEY, "
                "attempt jsonb NOT NULL, expires double precision NOT NULL)"
            ).format(schema)
        )


def open_sessions(settings: Settings) -> SessionStore:
    """The sessions of this installation: PostgreSQL's table, or the embedded SQLite file."""
    if settings.postgres is not None:
        return PostgresSessions(settings)
    return SQLiteSessions(settings.data_dir / f"{WEB}.sqlite")
