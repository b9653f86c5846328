"""Each person's data key, wrapped by a master key, and its destruction (erasure).

One store serves every service of an installation: the table ``person_keys`` in its own
schema (``<prefix>keys``, created by ``ketnoi migrate``) on PostgreSQL, or its own file
``keys.sqlite`` under the data directory. A row holds the person's 256-bit AES key wrapped
by the master key; erasure overwrites the wrapped key with NULL and keeps the row as a
tombstone, so no new key is ever made for an erased person and nothing written for them
afterwards can be read back.

The master key sits behind ``KeyWrapper`` (wrap, unwrap): ``LocalMasterKey`` is a 256-bit
key in a file (created 0600 under the data directory in development; production refuses to
start without ``KETNOI_MASTER_KEY_FILE``). A KMS or Vault's transit engine replaces it by
implementing the same two methods.

Unwrapped keys are cached in memory, at most ``CACHE_SIZE`` of them and each for
``KETNOI_KEY_CACHE_SECONDS`` (2 s): an erasure clears this process's cache at once, and
waits that long before it records ``PersonErased``, so every other process has forgotten
the key before the read models drop the person (nothing decrypted can be written after).
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from uuid import UUID

import psycopg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from psycopg import sql
from psycopg_pool import ConnectionPool

from services.runtime.files import PRIVATE_FILE, private_dir, private_file
from services.runtime.settings import Environment, Settings, SettingsError

KEY_BYTES = 32
NONCE_BYTES = 12
# A batch of a log read at once (5,000 events) names at most as many persons: their keys,
# read ahead together (``PersonKeys.prefetch``), all stay cached while it is read.
CACHE_SIZE = 16384
_WRAP_VERSION = b"\x01"

# Keys of an application's environment (see ``key_store_env``).
STORE = "KETNOI_KEYS_STORE"  # "sqlite:<path>" or "postgres:<schema>"
CONNINFO = "KETNOI_KEYS_CONNINFO"
MASTER = "KETNOI_MASTER_KEY_FILE"
CREATE_MASTER = "KETNOI_MASTER_KEY_CREATE"
CACHE_SECONDS = "KETNOI_KEY_CACHE_SECONDS"


class KeyWrapper(Protocol):
    """What holds the master key: wraps and unwraps a person's data key."""

    def wrap(self, key_id: str, data_key: bytes) -> bytes: ...

    def unwrap(self, key_id: str, wrapped: bytes) -> bytes: ...


class KeyUnwrapError(RuntimeError):
    """A wrapped key does not open with this master key (another key, or altered)."""


class LocalMasterKey:
    """A 256-bit master key from a file; AES-GCM wraps each data key, bound to its id."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            msg = f"a master key is {KEY_BYTES} bytes"
            raise SettingsError(msg)
        self._aead = AESGCM(key)

    @classmethod
    def from_file(cls, path: Path, *, create: bool) -> LocalMasterKey:
        """Read the key (64 hex digits); created 0600 when missing only if ``create``.
        Raises SettingsError when it is missing or malformed."""
        if create and not path.exists():
            private_dir(path.parent)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
            try:
                fd = os.open(path, flags, PRIVATE_FILE)
            except FileExistsError:
                pass  # another process made it meanwhile
            else:
                with os.fdopen(fd, "w") as out:
                    out.write(secrets.token_hex(KEY_BYTES) + "\n")
        try:
            text = path.read_text().strip()
            key = bytes.fromhex(text)
        except (OSError, ValueError) as exc:
            msg = f"cannot read the master key {path}: {exc}"
            raise SettingsError(msg) from None
        return cls(key)

    def wrap(self, key_id: str, data_key: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return _WRAP_VERSION + nonce + self._aead.encrypt(nonce, data_key, _aad(key_id))

    def unwrap(self, key_id: str, wrapped: bytes) -> bytes:
        if wrapped[:1] != _WRAP_VERSION:
            raise KeyUnwrapError(f"unknown wrapping of the key of {key_id}")
        nonce, body = wrapped[1 : 1 + NONCE_BYTES], wrapped[1 + NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, body, _aad(key_id))
        except InvalidTag:
            raise KeyUnwrapError(
                f"the key of {key_id} does not open with this master key"
            ) from None


def _aad(key_id: str) -> bytes:
    return f"ketnoi-person-key/{key_id}".encode()


class PersonKeys:
    """The store of persons' data keys, with a short, bounded cache of unwrapped keys (as
    ready AES-GCM ciphers)."""

    def __init__(
        self, backend: _Backend, wrapper: KeyWrapper, *, cache_seconds: float = 2.0
    ) -> None:
        self._backend = backend
        self._wrapper = wrapper
        self.cache_seconds = cache_seconds
        # person -> (cipher, the key itself for ``derive``, when it is forgotten)
        self._cache: OrderedDict[str, tuple[AESGCM, bytes, float]] = OrderedDict()
        self._erased: set[str] = set()  # erasure is for ever: safe to remember
        self._lock = threading.Lock()

    def cipher_for_writing(self, person_id: UUID | str) -> AESGCM | None:
        """The cipher of the person's data key, made now if they have none; None once they
        are erased."""
        aead = self.cipher(person_id)
        if aead is not None or str(person_id) in self._erased:
            return aead
        wrapped = self._wrapper.wrap(str(person_id), secrets.token_bytes(KEY_BYTES))
        self._backend.insert(UUID(str(person_id)), wrapped)
        return self.cipher(person_id)

    def create_many(self, person_ids: list[UUID]) -> None:
        """Make the data keys of many new persons at once (an import of history), in one
        transaction, and keep them ready in the cache; a person who has a key keeps it."""
        made = {p: secrets.token_bytes(KEY_BYTES) for p in person_ids}
        stored = self._backend.insert_many(
            [(p, self._wrapper.wrap(str(p), key)) for p, key in made.items()]
        )
        now = time.monotonic()
        for person, key in made.items():
            if person not in stored:
                self.cipher(person)  # had a key already: read it back
                continue
            with self._lock:
                self._cache[str(person)] = (AESGCM(key), key, now + self.cache_seconds)
                while len(self._cache) > CACHE_SIZE:
                    self._cache.popitem(last=False)

    def cipher(self, person_id: UUID | str) -> AESGCM | None:
        """The cipher of the person's data key; None when they have none or were erased."""
        found = self._unwrapped(person_id)
        return found[0] if found is not None else None

    def derive(self, person_id: UUID | str, info: bytes, *, create: bool = False) -> bytes | None:
        """A 256-bit key derived from the person's data key for ``info`` (HKDF-SHA256), for
        data sealed outside the event store that erasure must reach too (the agency feed);
        None when the person was erased, or has no key and ``create`` is false (with it, the
        key is made as for writing, as for a person whose events predate encryption)."""
        if create:
            self.cipher_for_writing(person_id)
        found = self._unwrapped(person_id)
        if found is None:
            return None
        return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(
            found[1]
        )

    def prefetch(self, person_ids: Iterable[str]) -> None:
        """Unwrap ahead, in one read of the key store, the keys of the persons whose events
        are about to be read (a batch of a rebuild, a replay or the relay): one query per
        batch rather than one per person, whose keys the short cache has long forgotten when
        a long log is read. Keys already cached are not read again."""
        now = time.monotonic()
        with self._lock:
            wanted = set()
            for person in person_ids:
                if person in self._erased:
                    continue
                cached = self._cache.get(person)
                if cached is None or cached[2] <= now:
                    wanted.add(person)
        if not wanted:
            return
        found = self._backend.select_many([UUID(p) for p in wanted])
        for person, (wrapped, erased) in found.items():
            self._keep(person, wrapped, erased, now)

    def _unwrapped(self, person_id: UUID | str) -> tuple[AESGCM, bytes] | None:
        person = str(person_id)
        now = time.monotonic()
        with self._lock:
            if person in self._erased:
                return None
            cached = self._cache.get(person)
            if cached is not None and cached[2] > now:
                self._cache.move_to_end(person)
                return cached[0], cached[1]
        found, erased = self._backend.select(UUID(person))
        return self._keep(person, found, erased, now)

    def _keep(
        self, person: str, wrapped: bytes | None, erased: bool, now: float
    ) -> tuple[AESGCM, bytes] | None:
        """The key read from the store, unwrapped and cached (or the erasure remembered)."""
        if erased:
            with self._lock:
                self._erased.add(person)
                self._cache.pop(person, None)
            return None
        if wrapped is None:
            return None
        key = self._wrapper.unwrap(person, wrapped)
        aead = AESGCM(key)
        with self._lock:
            self._cache[person] = (aead, key, now + self.cache_seconds)
            self._cache.move_to_end(person)
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return aead, key

    def erase(self, person_id: UUID) -> bool:
        """Destroy the person's key (a tombstone stays); False when it was destroyed before."""
        with self._lock:
            self._cache.pop(str(person_id), None)
            self._erased.add(str(person_id))
        return self._backend.erase(person_id, datetime.now(UTC))

    def erased(self, person_id: UUID) -> bool:
        return self._backend.select(person_id)[1]

    def create_tables(self) -> None:
        self._backend.create()

    def close(self) -> None:
        self._backend.close()


# -- where the wrapped keys live -------------------------------------------------------------


class _Backend(Protocol):
    def create(self) -> None: ...

    def insert(self, person_id: UUID, wrapped: bytes) -> None: ...

    def insert_many(self, rows: list[tuple[UUID, bytes]]) -> set[UUID]:
        """Insert these keys where the person has none; returns the persons inserted."""
        ...

    def select(self, person_id: UUID) -> tuple[bytes | None, bool]: ...

    def select_many(self, person_ids: list[UUID]) -> dict[str, tuple[bytes | None, bool]]:
        """What ``select`` answers for each of these persons that has a row, in one read."""
        ...

    def erase(self, person_id: UUID, at: datetime) -> bool: ...

    def close(self) -> None: ...


_TABLE = (
    "CREATE TABLE IF NOT EXISTS person_keys (person_id {uuid} PRIMARY KEY, "
    "wrapped {blob}, created_at {time} NOT NULL, erased_at {time})"
)


class SQLiteKeys:
    """``keys.sqlite``: one file beside the services' own."""

    def __init__(self, path: Path) -> None:
        self.path = private_file(path)
        self._local = threading.local()

    @contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            # What is deleted or overwritten (an erased person's wrapped key) is zeroed.
            conn.execute("PRAGMA secure_delete=ON")
            self._local.conn = conn
        yield conn

    def create(self) -> None:
        with self._conn() as conn:
            conn.execute(_TABLE.format(uuid="TEXT", blob="BLOB", time="TEXT"))

    def insert(self, person_id: UUID, wrapped: bytes) -> None:
        with self._conn() as conn:
            conn.execute(
                "INSERT INTO person_keys (person_id, wrapped, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT (person_id) DO NOTHING",
                (str(person_id), wrapped, datetime.now(UTC).isoformat()),
            )

    def insert_many(self, rows: list[tuple[UUID, bytes]]) -> set[UUID]:
        now = datetime.now(UTC).isoformat()
        inserted = set()
        with self._conn() as conn:
            conn.execute("BEGIN IMMEDIATE")
            for person, wrapped in rows:
                done = conn.execute(
                    "INSERT INTO person_keys (person_id, wrapped, created_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (person_id) DO NOTHING",
                    (str(person), wrapped, now),
                ).rowcount
                if done:
                    inserted.add(person)
            conn.execute("COMMIT")
        return inserted

    def select(self, person_id: UUID) -> tuple[bytes | None, bool]:
        with self._conn() as conn:
            row = conn.execute(
                "SELECT wrapped, erased_at FROM person_keys WHERE person_id = ?",
                (str(person_id),),
            ).fetchone()
        if row is None:
            return None, False
        return row[0], row[1] is not None

    def select_many(self, person_ids: list[UUID]) -> dict[str, tuple[bytes | None, bool]]:
        found: dict[str, tuple[bytes | None, bool]] = {}
        with self._conn() as conn:
            for start in range(0, len(person_ids), 500):  # SQLite's bound on parameters
                chunk = [str(p) for p in person_ids[start : start + 500]]
                marks = ",".join("?" * len(chunk))
                for person, wrapped, erased_at in conn.execute(
                    "SELECT person_id, wrapped, erased_at FROM person_keys "
                    f"WHERE person_id IN ({marks})",
                    chunk,
                ):
                    found[str(person)] = (wrapped, erased_at is not None)
        return found

    def erase(self, person_id: UUID, at: datetime) -> bool:
        with self._conn() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                done = conn.execute(
                    "UPDATE person_keys SET wrapped = NULL, erased_at = ? "
                    "WHERE person_id = ? AND erased_at IS NULL",
                    (at.isoformat(), str(person_id)),
                ).rowcount
                if not done:
                    done = conn.execute(
                        "INSERT INTO person_keys (person_id, wrapped, created_at, erased_at) "
                        "VALUES (?, NULL, ?, ?) ON CONFLICT (person_id) DO NOTHING",
                        (str(person_id), at.isoformat(), at.isoformat()),
                    ).rowcount
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        # The write-ahead log still holds the page as it was: fold it into the file.
        with self._conn() as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return bool(done)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


class PostgresKeys:
    """The ``person_keys`` table in the installation's ``keys`` schema."""

    def __init__(self, conninfo: str, schema: str) -> None:
        self.schema = schema
        self._pool = ConnectionPool(
            conninfo,
            min_size=0,
            max_size=2,
            open=True,
            kwargs={"autocommit": True},
            configure=self._configure,
        )

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))

    def create(self) -> None:
        with self._pool.connection() as conn:
            conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
            )
            conn.execute(sql.SQL(_TABLE.format(uuid="uuid", blob="bytea", time="timestamptz")))

    def insert(self, person_id: UUID, wrapped: bytes) -> None:
        with self._pool.connection() as conn:
            conn.execute(
                "INSERT INTO person_keys (person_id, wrapped, created_at) VALUES (%s, %s, now()) "
                "ON CONFLICT (person_id) DO NOTHING",
                (person_id, wrapped),
            )

    def insert_many(self, rows: list[tuple[UUID, bytes]]) -> set[UUID]:
        with self._pool.connection() as conn:
            found = conn.execute(
                "INSERT INTO person_keys (person_id, wrapped, created_at) "
                "SELECT p, w, now() FROM unnest(%s::uuid[], %s::bytea[]) AS k(p, w) "
                "ON CONFLICT (person_id) DO NOTHING RETURNING person_id",
                ([p for p, _ in rows], [w for _, w in rows]),
            ).fetchall()
        return {row[0] for row in found}

    def select(self, person_id: UUID) -> tuple[bytes | None, bool]:
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT wrapped, erased_at FROM person_keys WHERE person_id = %s", (person_id,)
            ).fetchone()
        if row is None:
            return None, False
        return (bytes(row[0]) if row[0] is not None else None), row[1] is not None

    def select_many(self, person_ids: list[UUID]) -> dict[str, tuple[bytes | None, bool]]:
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT person_id, wrapped, erased_at FROM person_keys WHERE person_id = ANY(%s)",
                (person_ids,),
            ).fetchall()
        return {
            str(person): (bytes(wrapped) if wrapped is not None else None, erased is not None)
            for person, wrapped, erased in rows
        }

    def erase(self, person_id: UUID, at: datetime) -> bool:
        with self._pool.connection() as conn, conn.transaction():
            done = conn.execute(
                "UPDATE person_keys SET wrapped = NULL, erased_at = %s "
                "WHERE person_id = %s AND erased_at IS NULL",
                (at, person_id),
            ).rowcount
            if not done:
                done = conn.execute(
                    "INSERT INTO person_keys (person_id, wrapped, created_at, erased_at) "
                    "VALUES (%s, NULL, %s, %s) ON CONFLICT (person_id) DO NOTHING",
                    (person_id, at, at),
                ).rowcount
        # The old row version stays in the table's pages until vacuumed: vacuum now.
        with self._pool.connection() as conn:
            conn.execute("VACUUM person_keys")
        return bool(done)

    def close(self) -> None:
        self._pool.close()


# -- configuration ----------------------------------------------------------------------------


def key_store_env(settings: Settings) -> dict[str, str]:
    """The part of an application's environment that names the key store and master key."""
    target = settings.postgres
    env = {
        MASTER: str(settings.master_key_path()),
        CREATE_MASTER: "yes" if settings.environment is Environment.DEVELOPMENT else "no",
        CACHE_SECONDS: str(settings.key_cache_seconds),
    }
    if target is None:
        env[STORE] = f"sqlite:{settings.data_dir / 'keys.sqlite'}"
    else:
        env[STORE] = f"postgres:{settings.schema_for('keys')}"
        env[CONNINFO] = target.conninfo()
    return env


_STORES: dict[tuple[str, str], PersonKeys] = {}
_STORES_LOCK = threading.Lock()


def person_keys_from_env(env: Mapping[str, str]) -> PersonKeys | None:
    """This process's key store for an application's environment (one per store and master
    key, shared by every application of the process); None when none is configured."""
    store = env.get(STORE)
    if not store:
        return None
    ident = (store, env.get(MASTER, ""))
    with _STORES_LOCK:
        found = _STORES.get(ident)
        if found is None:
            found = _STORES[ident] = _open(env, store)
        return found


def person_keys(settings: Settings) -> PersonKeys:
    """This process's key store for ``settings``."""
    found = person_keys_from_env(key_store_env(settings))
    assert found is not None
    return found


def _open(env: Mapping[str, str], store: str) -> PersonKeys:
    kind, _, where = store.partition(":")
    backend: _Backend
    if kind == "sqlite":
        backend = SQLiteKeys(Path(where))
        backend.create()  # the embedded default: every file is made on start
    else:
        backend = PostgresKeys(env[CONNINFO], where)
    wrapper = LocalMasterKey.from_file(Path(env[MASTER]), create=env.get(CREATE_MASTER) == "yes")
    return PersonKeys(backend, wrapper, cache_seconds=float(env.get(CACHE_SECONDS) or 2.0))


def migrate_person_keys(settings: Settings) -> None:
    """Create the key store's schema and table (``ketnoi migrate``)."""
    person_keys(settings).create_tables()


def forget_stores() -> None:
    """Close every store this process opened (tests, and a process that stops)."""
    with _STORES_LOCK:
        for store in _STORES.values():
            store.close()
        _STORES.clear()
