"""The web app's sessions in the database: another store on the same database (another
process, or this one restarted) knows them; the stored key is a hash of the cookie's id, and
the access token is stored sealed under a key only the cookie's id gives;
expired sessions are gone, and swept as new ones open; a sign-in under way is taken once,
by any store. On SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg import sql

from services.runtime.settings import Settings
from services.runtime.web_sessions import (
    WEB,
    PostgresSessions,
    SessionStore,
    SQLiteSessions,
    migrate_sessions,
)

Opener = Callable[[Callable[[], float]], SessionStore]
Rows = Callable[[], list[tuple[str, str]]]


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(
    request: pytest.FixtureRequest, tmp_path: object
) -> Iterator[tuple[Opener, Rows, Callable[[str, str], None]]]:
    """Opens stores on one database; reads its rows (key, token) as they are stored; and sets
    a row's stored token as it is (what someone with the database could do)."""
    opened: list[SessionStore] = []
    if request.param == "sqlite":
        path = tmp_path / "data" / "web.sqlite"  # type: ignore[operator]

        def open_sqlite(clock: Callable[[], float]) -> SessionStore:
            store = SQLiteSessions(path, clock=clock)
            opened.append(store)
            return store

        def rows_sqlite() -> list[tuple[str, str]]:
            with sqlite3.connect(path) as conn:
                return list(conn.execute("SELECT id_hash, token FROM sessions"))

        def set_sqlite(key: str, token: str) -> None:
            with sqlite3.connect(path) as conn:
                conn.execute("UPDATE sessions SET token = ? WHERE id_hash = ?", (token, key))

        yield open_sqlite, rows_sqlite, set_sqlite
    else:
        settings: Settings = request.getfixturevalue("pg_settings")
        migrate_sessions(settings)
        migrate_sessions(settings)  # again: nothing changes

        def open_pg(clock: Callable[[], float]) -> SessionStore:
            store = PostgresSessions(settings, clock=clock)
            opened.append(store)
            return store

        def rows_pg() -> list[tuple[str, str]]:
            assert settings.postgres is not None
            with psycopg.connect(settings.postgres.conninfo()) as conn:
                table = sql.Identifier(settings.schema_for(WEB), "sessions")
                return list(conn.execute(sql.SQL("SELECT id_hash, token FROM {}").format(table)))

        def set_pg(key: str, token: str) -> None:
            assert settings.postgres is not None
            with psycopg.connect(settings.postgres.conninfo()) as conn:
                table = sql.Identifier(settings.schema_for(WEB), "sessions")
                conn.execute(
                    sql.SQL("UPDATE {} SET token = %s WHERE id_hash = %s").format(table),
                    (token, key),
                )

        yield open_pg, rows_pg, set_pg
    for store in opened:
        store.shut()


def test_another_store_on_the_same_database_knows_the_session(
    backend: tuple[Opener, Rows, Callable[[str, str], None]],
) -> None:
    open_store, rows, _set = backend
    clock = Clock()
    first = open_store(clock)
    session_id = first.open("token-1")
    first.note_positions(session_id, {"consent": 7, "intake": 3})
    first.note_positions(session_id, {"consent": 5, "referral": 9})
    first.shut()  # the process stops

    again = open_store(clock)
    session = again.get(session_id)
    assert session is not None
    assert session.token == "token-1"
    assert len(session.csrf) >= 32
    assert session.positions == {"consent": 7, "intake": 3, "referral": 9}
    # The cookie's id is not stored as it is, only its hash; nor is the token.
    ((stored_key, stored_token),) = rows()
    assert stored_key == _hash(session_id)
    assert "token-1" not in stored_token
    assert stored_token.startswith("v1.")
    assert again.get("another-id") is None
    assert again.get(None) is None

    again.close(session_id)
    assert again.get(session_id) is None
    assert rows() == []


def test_an_expired_session_is_gone_and_swept_as_others_open(
    backend: tuple[Opener, Rows, Callable[[str, str], None]],
) -> None:
    open_store, rows, _set = backend
    clock = Clock()
    store = open_store(clock)
    old = store.open("token-old")
    never_read = store.open("token-never-read")
    clock.now += 12 * 3600 + 1
    assert store.get(old) is None  # expired: refused, and deleted
    assert [key for key, _token in rows()] == [_hash(never_read)]
    fresh = store.open("token-new")  # opening sweeps what expired
    assert [key for key, _token in rows()] == [_hash(fresh)]
    assert store.get(never_read) is None
    assert store.get(fresh) is not None


def test_a_sign_in_under_way_is_taken_once_by_any_store(
    backend: tuple[Opener, Rows, Callable[[str, str], None]],
) -> None:
    open_store, _rows, _set = backend
    clock = Clock()
    began, answered = open_store(clock), open_store(clock)  # two processes
    attempt = {"verifier": "v" * 64, "nonce": "n" * 32, "redirect_uri": "https://x/cb"}
    state = began.open_sign_in(attempt, 600)
    assert answered.take_sign_in(state) == attempt
    assert began.take_sign_in(state) is None  # used once
    assert answered.take_sign_in("made-up-state") is None
    late = began.open_sign_in(attempt, 600)
    clock.now += 601
    assert answered.take_sign_in(late) is None  # expired


def test_a_stored_token_opens_only_with_its_own_session_id(
    backend: tuple[Opener, Rows, Callable[[str, str], None]],
) -> None:
    open_store, rows, set_token = backend
    store = open_store(Clock())
    mine, theirs = store.open("token-mine"), store.open("token-theirs")
    stored = dict(rows())
    # Their sealed token copied into my row does not open with my id: I am signed out.
    set_token(_hash(mine), stored[_hash(theirs)])
    assert store.get(mine) is None
    theirs_session = store.get(theirs)
    assert theirs_session is not None
    assert theirs_session.token == "token-theirs"
    # A row that holds its token as it is (stored before tokens were sealed) is no session.
    set_token(_hash(theirs), "token-theirs")
    assert store.get(theirs) is None
