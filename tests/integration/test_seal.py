"""The seal over a log, on SQLite and PostgreSQL: any single change to a stored row is found
and named; checkpoints are signed, co-signed, exported and prove an event's inclusion."""

from __future__ import annotations

import base64
import json
import sqlite3
import stat
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from eventsourcing.persistence import StoredEvent
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg import sql

from contracts.envelope import event_id_of
from services.intake.application import IntakeService
from services.runtime.group_commit import Group
from services.runtime.persistence import application_env, create_schemas
from services.runtime.seal.keys import policy_from_env, seal_signer
from services.runtime.seal.merkle import Frontier, ProofError, consistency_proof, root_of
from services.runtime.seal.note import Checkpoint, Signer, parse_note
from services.runtime.seal.operations import (
    SealOperationError,
    checkpoint_all,
    cosign,
    export_checkpoints,
    prove,
    prove_consistency,
)
from services.runtime.seal.proof import check_consistency, check_proof
from services.runtime.seal.recorders import SealError
from services.runtime.seal.sources import LogSource, PostgresLog, SQLiteLog, open_logs
from services.runtime.seal.verify import verify_log
from services.runtime.settings import Environment, Settings, SettingsError

EVENTS = 30
EVERY = 7


@dataclass
class SealedLog:
    """A sealed intake log of EVENTS events, and how to change its rows by hand."""

    settings: Settings
    positions: list[int]
    # Opens a transaction on the log's tables: (run SQL, the log as a checker reads it).
    tamper: Callable[[], AbstractContextManager[tuple[Callable[[str], None], LogSource]]]
    events: str  # the events table, qualified
    leaves: str  # the table that holds the leaves (on PostgreSQL the events' own)
    seal: str  # the prefix of the seal's tables (``<seal>_seal``, ``<seal>_checkpoints``)
    unseal: str  # SQL: every leaf forgotten, as in a database from before the seal
    position: str  # the name of the position column
    # SQL: the leaves row that holds the leaf of a position; its leaf hash set to a literal.
    leaf_of: Callable[[int], str]
    set_leaf_hash: Callable[[int, str], str]


def _fill(settings: Settings) -> list[list[int]]:
    """EVENTS events in transactions of 1 to 4; the positions of each transaction."""
    if settings.postgres is not None:
        create_schemas(settings, ("intake",))
    app = IntakeService(env=application_env(settings, "intake", create_tables=True))
    transactions: list[list[int]] = []
    try:
        batch, written = 1, 0
        while written < EVENTS:
            events = [
                StoredEvent(uuid.uuid4(), 1, "org.ketnoi.test.v1", b'{"n": %d}' % i)
                for i in range(min(batch, EVENTS - written))
            ]
            transactions.append(list(app.recorder.insert_events(events) or []))
            written += len(events)
            batch = batch % 4 + 1
    finally:
        app.close()
    return transactions


@pytest.fixture(params=["sqlite", "postgres"])
def sealed(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SealedLog]:
    if request.param == "sqlite":
        settings = Settings(
            database_url=None, data_dir=tmp_path / "data", seal_checkpoint_every=EVERY
        )
        positions = [p for tx in _fill(settings) for p in tx]
        path = settings.data_dir / "intake.sqlite"

        @contextmanager
        def sqlite_tamper() -> Iterator[tuple[Callable[[str], None], LogSource]]:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            conn.execute("BEGIN")
            try:
                yield (lambda q: conn.execute(q) and None), SQLiteLog(conn, "intake")
            finally:
                conn.execute("ROLLBACK")
                conn.close()

        yield SealedLog(
            settings,
            positions,
            sqlite_tamper,
            "stored_events",
            "stored_events_leaves",
            "stored_events",
            "DELETE FROM stored_events_leaves",
            "rowid",
            lambda p: f"position = {p}",
            lambda p, h: f"UPDATE stored_events_leaves SET leaf_hash = {h} WHERE position = {p}",
        )
        return
    pg_settings = request.getfixturevalue("pg_settings")
    settings = pg_settings.model_copy(update={"seal_checkpoint_every": EVERY})
    positions = [p for tx in _fill(settings) for p in tx]
    schema = settings.schema_for("intake")

    @contextmanager
    def pg_tamper() -> Iterator[tuple[Callable[[str], None], LogSource]]:
        with psycopg.connect(settings.database_url or "") as conn:  # one transaction
            try:
                yield (
                    (lambda q: conn.execute(sql.SQL(q).format(s=sql.Identifier(schema))) and None),
                    PostgresLog(conn, "intake", schema, "intake_events"),
                )
            finally:
                conn.rollback()

    yield SealedLog(
        settings,
        positions,
        pg_tamper,
        "{s}.intake_events",
        "{s}.intake_events",
        "{s}.intake_events",
        "UPDATE {s}.intake_events SET leaf_idx = NULL, sealed_at = NULL, leaf_hash = NULL",
        "notification_id",
        lambda p: f"notification_id = {p}",
        lambda p, h: f"UPDATE {{s}}.intake_events SET leaf_hash = {h} WHERE notification_id = {p}",
    )


def _keys(settings: Settings) -> list[Any]:
    return [seal_signer(settings).verifier]


def test_an_untouched_log_verifies_with_its_checkpoints(sealed: SealedLog) -> None:
    with sealed.tamper() as (_, log):
        report = verify_log(log, _keys(sealed.settings))
        # Leaves read from any index, also inside a transaction's row, are the same leaves.
        whole = [tuple(leaf) for leaf in log.leaves(0, EVENTS)]
        assert [leaf[0] for leaf in whole] == list(range(EVENTS))
        for start in range(EVENTS):
            assert [tuple(leaf) for leaf in log.leaves(start, 4)] == whole[start : start + 4]
    assert report.ok, report.problems
    assert report.size == report.events == EVENTS
    assert report.checkpoints == report.checkpoints_verified >= EVENTS // EVERY


CHANGES = [
    "edit",
    "edit-topic",
    "edit-long-topic",
    "edit-aggregate",
    "edit-seal",
    "delete",
    "insert",
    "swap",
]


def test_any_single_change_of_a_row_is_found_and_named(sealed: SealedLog) -> None:
    positions = sealed.positions
    t, e, col = sealed.events, sealed.leaves, sealed.position

    @settings(max_examples=14, deadline=None)
    @given(
        change=st.sampled_from(CHANGES),
        at=st.integers(min_value=0, max_value=EVENTS - 1),
        to=st.integers(min_value=0, max_value=EVENTS - 1),
    )
    def check(change: str, at: int, to: int) -> None:
        p = positions[at]
        expected_kind, expected_at = "edited", p
        if change == "delete":
            # A row is held by the checkpoint that covers it: the last rows are covered by the
            # next one (signed every N events, every T seconds and as a serving process stops;
            # on PostgreSQL a deleted row takes its leaf with it).
            checkpoint_all(sealed.settings)
        with sealed.tamper() as (run, log):
            if change == "edit":
                run(
                    f"UPDATE {t} SET state = state || x'20' WHERE {col} = {p}".replace(
                        "x'20'", "'\\x20'::bytea" if col != "rowid" else "x'20'"
                    )
                )
            elif change == "edit-topic":
                run(f"UPDATE {t} SET topic = 'org.ketnoi.other.v1' WHERE {col} = {p}")
            elif change == "edit-long-topic":  # longer than the leaf's length field holds
                long = "hex(zeroblob(35000))" if col == "rowid" else "repeat('0', 70000)"
                run(f"UPDATE {t} SET topic = {long} WHERE {col} = {p}")
            elif change == "edit-aggregate":
                run(f"UPDATE {t} SET originator_version = 2 WHERE {col} = {p}")
            elif change == "edit-seal":
                run(f"UPDATE {e} SET sealed_at = sealed_at + 1 WHERE {sealed.leaf_of(p)}")
            elif change == "delete":
                run(f"DELETE FROM {t} WHERE {col} = {p}")
                expected_kind = "deleted"
            elif change == "insert":
                new = positions[-1] + 1
                oid = f"'{uuid.uuid4().hex}'" if col == "rowid" else "gen_random_uuid()"
                run(
                    f"INSERT INTO {t} (originator_id, originator_version, topic, state, {col}) "
                    f"VALUES ({oid}, 1, 'org.ketnoi.test.v1', {_blob(col)}, {new})"
                )
                expected_kind, expected_at = "inserted", new
            else:  # swap two rows: each now sits at the other's position
                q = positions[to] if to != at else positions[(at + 1) % EVENTS]
                lo, hi = sorted((p, q))
                run(f"UPDATE {t} SET {col} = -1 WHERE {col} = {lo}")
                run(f"UPDATE {t} SET {col} = {lo} WHERE {col} = {hi}")
                run(f"UPDATE {t} SET {col} = {hi} WHERE {col} = -1")
                expected_kind, expected_at = "reordered", lo
            report = verify_log(log, _keys(sealed.settings))
        assert not report.ok
        first = report.problems[0]
        assert (first.log, first.kind, first.position) == ("intake", expected_kind, expected_at)

    check()


@pytest.mark.parametrize("sealed", ["postgres"], indirect=True)
@pytest.mark.parametrize(
    ("at", "index"),
    [
        (0, "leaf_idx + 1"),
        (4, "leaf_idx + 10"),
        (9, "1000000000000"),
        (9, "leaf_idx - 1"),
        (EVENTS - 1, "-5"),
        (EVENTS - 1, "1000000000000"),
    ],
)
def test_a_rows_index_in_the_tree_edited_is_named_and_the_check_ends(
    sealed: SealedLog, at: int, index: str
) -> None:
    """Where the leaves are kept in the events' rows, a row's index in the tree is a column
    of its own: an edit of it names that row, and is not read as rows deleted."""
    p = sealed.positions[at]
    with sealed.tamper() as (run, log):
        run(f"UPDATE {sealed.events} SET leaf_idx = {index} WHERE notification_id = {p}")
        report = verify_log(log, _keys(sealed.settings))
    rows = [(problem.kind, problem.position) for problem in report.problems if problem.position]
    assert rows == [("edited", p)], report.problems
    assert "index was edited" in report.problems[0].detail
    # The tree is still the one the checkpoints signed.
    assert report.checkpoints == report.checkpoints_verified > 0
    if at == EVENTS - 1:  # the seal's tip is read from the last row
        assert [problem.kind for problem in report.problems[1:]] == ["seal"]


@pytest.mark.parametrize("sealed", ["postgres"], indirect=True)
def test_several_rows_changed_at_once_are_each_named(sealed: SealedLog) -> None:
    p = sealed.positions
    with sealed.tamper() as (run, log):
        space = "'\\x20'::bytea"
        run(f"UPDATE {sealed.events} SET state = state || {space} WHERE notification_id = {p[3]}")
        run(f"UPDATE {sealed.events} SET leaf_idx = leaf_idx + 7 WHERE notification_id = {p[11]}")
        run(f"UPDATE {sealed.events} SET originator_version = 9 WHERE notification_id = {p[20]}")
        report = verify_log(log, _keys(sealed.settings))
    rows = [(problem.kind, problem.position) for problem in report.problems if problem.position]
    assert rows == [("edited", p[3]), ("edited", p[11]), ("edited", p[20])], report.problems
    assert [problem.detail.endswith("edited") for problem in report.problems[:3]] == [
        True,
        False,
        True,
    ]


def _blob(col: str) -> str:
    return "x'7b7d'" if col == "rowid" else "'\\x7b7d'::bytea"


def test_rows_rewritten_with_their_leaves_are_caught_by_the_signed_checkpoints(
    sealed: SealedLog,
) -> None:
    # Whoever edits a row and recomputes its leaf hash and the head still cannot sign.
    p = sealed.positions[3]
    with sealed.tamper() as (run, log):
        where = f"{sealed.position} = {p}"
        run(f"UPDATE {sealed.events} SET topic = 'org.ketnoi.other.v1' WHERE {where}")
        run(sealed.set_leaf_hash(p, _recomputed(sealed, p)))
        report = verify_log(log, _keys(sealed.settings))
    kinds = {problem.kind for problem in report.problems}
    assert "checkpoint" in kinds
    assert any("does not match the rows" in problem.detail for problem in report.problems)
    assert not any(problem.kind == "edited" for problem in report.problems)


def _recomputed(sealed: SealedLog, position: int) -> str:
    from services.runtime.seal.leaves import leaf_hashes

    with sealed.tamper() as (_, log):
        (row,) = list(log.events(position - 1, position))
        (leaf,) = [leaf for leaf in log.leaves(0, EVENTS) if leaf[1] == position]
    _, oid, v, _, state = row
    (h,) = leaf_hashes([(position, leaf[2], oid, v, "org.ketnoi.other.v1", state)])
    return f"x'{h.hex()}'" if sealed.position == "rowid" else f"'\\x{h.hex()}'::bytea"


def test_a_checkpoint_signed_by_another_key_is_refused(sealed: SealedLog) -> None:
    other = Signer(sealed.settings.seal_origin, Ed25519PrivateKey.generate())
    with sealed.tamper() as (_, log):
        report = verify_log(log, [other.verifier])
    assert not report.ok
    assert all(p.kind == "checkpoint" for p in report.problems)
    assert "not signed by a trusted key" in report.problems[0].detail


def test_checkpoints_are_signed_every_n_events_and_on_demand(sealed: SealedLog) -> None:
    with open_logs(sealed.settings) as logs:
        (log,) = [log for log in logs if log.name == "intake"]
        sizes = [size for size, _ in log.checkpoints()]
    # Each batch that crosses a multiple of EVERY is checkpointed at its new size.
    assert len(sizes) == EVENTS // EVERY
    assert all(b - a <= EVERY + 3 for a, b in zip([0, *sizes], sizes, strict=False))
    done = checkpoint_all(sealed.settings)
    assert done["intake"] == (None if sizes[-1] == EVENTS else EVENTS)
    assert checkpoint_all(sealed.settings)["intake"] is None  # nothing new since
    with open_logs(sealed.settings) as logs:
        (log,) = [log for log in logs if log.name == "intake"]
        note = parse_note(log.checkpoints()[-1][1])
    assert note.checkpoint.size == EVENTS
    assert note.checkpoint.origin == "ketnoi.localhost/intake"


def test_an_event_is_proven_against_a_published_checkpoint(sealed: SealedLog) -> None:
    checkpoint_all(sealed.settings)
    with sealed.tamper() as (_, log):
        _, oid, version, _, state = log.events(sealed.positions[11] - 1, sealed.positions[11])[0]
    event_id = event_id_of(uuid.UUID(bytes=oid), version)
    proof = json.loads(json.dumps(prove(sealed.settings, event_id).as_json()))
    assert proof["leaf_index"] == 11
    keys = _keys(sealed.settings)
    check_proof(proof, keys, state)
    with pytest.raises(ProofError, match="stored bytes"):
        check_proof(proof, keys, state + b" ")
    with pytest.raises(ProofError, match="trusted key"):
        check_proof(proof, [Signer("x", Ed25519PrivateKey.generate()).verifier], state)
    proof["leaf_index"] = 12
    with pytest.raises(ProofError):
        check_proof(proof, keys)
    with pytest.raises(SealOperationError):
        prove(sealed.settings, uuid.uuid4())


def test_every_later_checkpoint_is_proven_to_extend_every_earlier_one(sealed: SealedLog) -> None:
    checkpoint_all(sealed.settings)
    with open_logs(sealed.settings) as logs:
        (log,) = [log for log in logs if log.name == "intake"]
        sizes = [size for size, _ in log.checkpoints()]
    keys = _keys(sealed.settings)
    assert len(sizes) >= 4
    for i, old in enumerate(sizes):
        for new in sizes[i:]:
            proof = json.loads(
                json.dumps(prove_consistency(sealed.settings, "intake", old, new).as_json())
            )
            assert check_consistency(proof, keys) == (old, new)
    latest = prove_consistency(sealed.settings, "intake", sizes[0]).as_json()
    assert check_consistency(latest, keys) == (sizes[0], sizes[-1])
    with pytest.raises(ProofError, match="trusted key"):
        check_consistency(latest, [Signer("x", Ed25519PrivateKey.generate()).verifier])
    with pytest.raises(ProofError, match="larger"):
        check_consistency(
            {
                **latest,
                "old_checkpoint": latest["new_checkpoint"],
                "new_checkpoint": latest["old_checkpoint"],
            },
            keys,
        )
    with pytest.raises(SealOperationError, match="no checkpoint of size"):
        prove_consistency(sealed.settings, "intake", sizes[0] + 1)
    with pytest.raises(SealOperationError, match="no log named"):
        prove_consistency(sealed.settings, "nowhere", sizes[0])


def test_a_history_rewritten_and_signed_again_is_not_consistent_with_what_was_published(
    sealed: SealedLog,
) -> None:
    # Even the holder of the signing key cannot rewrite a row before a published
    # checkpoint: the new checkpoint fails its consistency proof against the published one.
    checkpoint_all(sealed.settings)
    with sealed.tamper() as (_, log):
        published_size, published = log.checkpoints()[0]
        hashes = [bytes(leaf[3]) for leaf in log.leaves(0, EVENTS)]
    signer = seal_signer(sealed.settings)
    origin = parse_note(published).checkpoint.origin
    rewritten = list(hashes)
    rewritten[1] = bytes(32)
    forged = Checkpoint(origin, EVENTS, root_of(rewritten)).sign(signer)
    proof = {
        "log": "intake",
        "old_checkpoint": published,
        "new_checkpoint": forged,
        "consistency_path": [
            base64.b64encode(h).decode()
            for h in consistency_proof(rewritten, published_size, EVENTS)
        ],
    }
    with pytest.raises(ProofError, match="not consistent"):
        check_consistency(proof, _keys(sealed.settings))
    honest = Checkpoint(origin, EVENTS, root_of(hashes)).sign(signer)
    proof["new_checkpoint"] = honest
    proof["consistency_path"] = [
        base64.b64encode(h).decode() for h in consistency_proof(hashes, published_size, EVENTS)
    ]
    assert check_consistency(proof, _keys(sealed.settings)) == (published_size, EVENTS)


def test_a_witness_cosigns_only_a_log_that_verifies(sealed: SealedLog, tmp_path: Path) -> None:
    witness = Signer("witness.example", Ed25519PrivateKey.generate())
    keys = _keys(sealed.settings)
    signed = cosign(sealed.settings, witness, keys, ["intake"])
    assert signed["intake"] is not None
    with sealed.tamper() as (_, log):
        report = verify_log(log, keys, [witness.verifier])
    assert report.ok
    assert report.cosignatures_verified == 1
    files = export_checkpoints(sealed.settings, tmp_path / "published")
    latest = (tmp_path / "published" / "intake" / "checkpoint").read_text()
    assert latest in [path.read_text() for path in files]
    note = parse_note(latest)
    assert note.signed_by(keys[0])
    assert note.signed_by(witness.verifier)


def test_events_stored_before_the_seal_are_sealed_when_tables_are_created(
    sealed: SealedLog,
) -> None:
    # An older database: its events have no leaves, no head, no checkpoints.
    seal = sealed.seal
    _commit(
        sealed,
        [
            sealed.unseal,
            f"DELETE FROM {seal}_checkpoints",
            f"UPDATE {seal}_seal SET size = 0, last_position = 0, frontier = {_empty(sealed)}",
        ],
    )
    with sealed.tamper() as (_, log):
        assert verify_log(log, _keys(sealed.settings)).problems[0].kind == "inserted"
    # What ketnoi migrate does: open each log with its tables.
    IntakeService(env=application_env(sealed.settings, "intake", create_tables=True)).close()
    checkpoint_all(sealed.settings)
    with sealed.tamper() as (_, log):
        report = verify_log(log, _keys(sealed.settings))
    assert report.ok, report.problems
    assert report.size == EVENTS
    assert report.checkpoints_verified == 1


def _commit(sealed: SealedLog, statements: list[str]) -> None:
    if sealed.settings.postgres is None:
        conn = sqlite3.connect(sealed.settings.data_dir / "intake.sqlite")
        with conn:
            for statement in statements:
                conn.execute(statement)
        conn.close()
        return
    schema = sql.Identifier(sealed.settings.schema_for("intake"))
    with psycopg.connect(sealed.settings.database_url or "") as conn:
        for statement in statements:
            conn.execute(sql.SQL(statement).format(s=schema))


def _empty(sealed: SealedLog) -> str:
    return "x''" if sealed.position == "rowid" else "''::bytea"


def test_production_refuses_to_start_without_a_seal_key(tmp_path: Path) -> None:
    public = tmp_path / "idp.pem"
    public.write_text("unused")
    master = tmp_path / "master-key"
    master.write_text("00" * 32)
    base: dict[str, Any] = {
        "environment": Environment.PRODUCTION,
        "database_url": "postgresql://ketnoi@127.0.0.1/ketnoi",
        "auth_public_key_file": public,
        "master_key_file": master,
    }
    with pytest.raises(ValueError, match="KETNOI_SEAL_SIGNING_KEY_FILE"):
        Settings(**base)
    missing = tmp_path / "absent.pem"
    settings = Settings(**base, seal_signing_key_file=missing)
    # Production never creates a key: a missing file stops the log from opening.
    with pytest.raises(SettingsError, match="cannot read the seal's signing key"):
        policy_from_env(application_env(settings, "intake"))
    assert not missing.exists()


def test_development_creates_a_key_readable_by_its_owner_only(tmp_path: Path) -> None:
    settings = Settings(database_url=None, data_dir=tmp_path / "data")
    signer = seal_signer(settings)
    mode = stat.S_IMODE(settings.seal_key_path().stat().st_mode)
    assert mode == 0o600
    assert seal_signer(settings).verifier == signer.verifier


def test_concurrent_writers_of_one_log_keep_one_tree(sealed: SealedLog) -> None:
    # Several processes' recorders append at once: the store's lock orders them, and the
    # seal follows that order in each writer's own transaction.
    writers = [IntakeService(env=application_env(sealed.settings, "intake")) for _ in range(3)]
    errors: list[BaseException] = []

    def write(app: IntakeService) -> None:
        try:
            for i in range(12):
                events = [
                    StoredEvent(uuid.uuid4(), 1, "org.ketnoi.test.v1", b'{"w": %d}' % i)
                    for _ in range(i % 3 + 1)
                ]
                app.recorder.insert_events(events)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(app,)) for app in writers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for app in writers:
        app.close()
    assert not errors, errors
    checkpoint_all(sealed.settings)
    with sealed.tamper() as (_, log):
        report = verify_log(log, _keys(sealed.settings))
    assert report.ok, report.problems
    assert report.size == report.events == EVENTS + 3 * 24
    assert report.checkpoints == report.checkpoints_verified


def test_writers_of_one_log_interleaved_keep_one_tree(sealed: SealedLog) -> None:
    # Two instances of a service on the same log, as two processes would be: each appends
    # after the other moved the tree, through group commit and through the library's insert.
    apps = {w: IntakeService(env=application_env(sealed.settings, "intake")) for w in "AB"}
    steps = "Ag Ae Ag Bg Be Bg Ag Ae Ag Be Bg Ae Bg"
    written = 0
    try:
        for step in steps.split():
            app = apps[step[0]]
            if step[1] == "g":
                assert app.group_commit is not None
                app.group_commit.commit(Group([_event(written)]))
                written += 1
            else:
                app.recorder.insert_events([_event(written), _event(written + 1)])
                written += 2
    finally:
        for app in apps.values():
            app.close()
    checkpoint_all(sealed.settings)
    with sealed.tamper() as (_, log):
        report = verify_log(log, _keys(sealed.settings))
        assert report.ok, report.problems
        assert report.size == report.events == EVENTS + written
        assert report.checkpoints == report.checkpoints_verified
        assert log.count_events() == EVENTS + written


def _event(n: int) -> StoredEvent:
    return StoredEvent(uuid.uuid4(), 1, "org.ketnoi.test.v1", b'{"n": %d}' % n)


def test_events_whose_seal_cannot_be_written_are_not_stored(sealed: SealedLog) -> None:
    _commit(sealed, [f"DELETE FROM {sealed.seal}_seal"])  # the head row (the mark) is gone
    app = IntakeService(env=application_env(sealed.settings, "intake", create_tables=False))
    try:
        with pytest.raises(Exception, match="seal"):
            # Enough to cross a checkpoint's interval, where PostgreSQL moves the mark.
            app.recorder.insert_events([_event(n) for n in range(EVERY)])
    finally:
        app.close()
    with sealed.tamper() as (_, log):
        assert log.count_events() == EVENTS


@pytest.mark.postgres
def test_a_log_without_the_seals_columns_refuses_events(pg_settings: Settings) -> None:
    settings = pg_settings.model_copy(update={"seal_checkpoint_every": EVERY})
    _fill(settings)
    s = sql.Identifier(settings.schema_for("intake"))
    with psycopg.connect(settings.database_url or "") as conn:
        conn.execute(sql.SQL("ALTER TABLE {s}.intake_events DROP COLUMN leaf_hash").format(s=s))
    app = IntakeService(env=application_env(settings, "intake", create_tables=False))
    try:
        with pytest.raises(SealError, match="run ketnoi migrate"):
            app.recorder.insert_events([_event(1)])
    finally:
        app.close()
    with psycopg.connect(settings.database_url or "") as conn:
        count = conn.execute(sql.SQL("SELECT count(*) FROM {s}.intake_events").format(s=s))
        assert count.fetchone() == (EVENTS,)


OLD_FORMATS = ["one row per leaf", "one row per transaction"]


def _seal_beside(
    conn: psycopg.Connection[Any], schema: str, old: str, transactions: list[list[int]]
) -> list[Any]:
    """Move a log's leaves out of its rows into a table beside them, as an older version kept
    them; returns the leaves."""
    s = sql.Identifier(schema)
    leaves = list(PostgresLog(conn, "intake", schema, "intake_events").leaves(0, EVENTS))
    statements = [
        "UPDATE {s}.intake_events SET leaf_idx = NULL, sealed_at = NULL, leaf_hash = NULL",
        "CREATE TABLE {s}.intake_events_leaves (idx bigint PRIMARY KEY, "
        + (
            "position bigint NOT NULL, sealed_at bigint NOT NULL, leaf_hash bytea NOT NULL)"
            if old == OLD_FORMATS[0]
            else "positions bigint[] NOT NULL, sealed_at bigint NOT NULL, hashes bytea NOT NULL)"
        ),
    ]
    for statement in statements:
        conn.execute(sql.SQL(statement).format(s=s))
    insert = sql.SQL("INSERT INTO {s}.intake_events_leaves VALUES (%s, %s, %s, %s)").format(s=s)
    with conn.cursor() as cur:
        if old == OLD_FORMATS[0]:
            cur.executemany(insert, [(idx, p, at, bytes(h)) for idx, p, at, h in leaves])
        else:
            start = 0
            for positions in transactions:
                held = leaves[start : start + len(positions)]
                hashes = b"".join(bytes(leaf[3]) for leaf in held)
                cur.execute(insert, (start, positions, held[0][2], hashes))
                start += len(positions)
    return leaves


@pytest.mark.postgres
@pytest.mark.parametrize("old", OLD_FORMATS)
def test_a_log_sealed_in_a_table_beside_is_converted_on_migrate_and_still_verifies(
    pg_settings: Settings, old: str
) -> None:
    # A database sealed before the leaves were kept in the events' rows: in a table beside,
    # one row per leaf or one per transaction, the seal's head at the tree's end.
    settings = pg_settings.model_copy(update={"seal_checkpoint_every": EVERY})
    transactions = _fill(settings)
    schema = settings.schema_for("intake")
    s = sql.Identifier(schema)
    with psycopg.connect(settings.database_url or "") as conn:
        leaves = _seal_beside(conn, schema, old, transactions)
        frontier = Frontier()
        frontier.extend([bytes(leaf[3]) for leaf in leaves])
        conn.execute(
            sql.SQL(
                "UPDATE {s}.intake_events_seal SET size = %s, last_position = %s, frontier = %s"
            ).format(s=s),
            (EVENTS, transactions[-1][-1], frontier.to_bytes()),
        )

    def check(expected_size: int) -> None:
        with psycopg.connect(settings.database_url or "") as conn:
            log = PostgresLog(conn, "intake", schema, "intake_events")
            report = verify_log(log, _keys(settings))
            assert report.ok, report.problems
            assert report.size == report.events == expected_size
            assert report.checkpoints == report.checkpoints_verified >= EVENTS // EVERY
            beside.append(log.beside)

    beside: list[bool] = []
    check(EVENTS)  # the old format verifies as it is (a dump not yet migrated)
    app = IntakeService(env=application_env(settings, "intake", create_tables=True))
    try:
        check(EVENTS)  # converted by ketnoi migrate: the same tree, its checkpoints hold
        for n in range(1, 5):
            app.recorder.insert_events([_event(n) for _ in range(n)])
        assert app.group_commit is not None
        app.group_commit.commit(Group([_event(0)]))
    finally:
        app.close()
    checkpoint_all(settings)
    check(EVENTS + 11)
    assert beside == [True, False, False]
    with psycopg.connect(settings.database_url or "") as conn:
        # A converted row edited by hand is still named.
        p = transactions[2][0]
        conn.execute(
            sql.SQL(
                "UPDATE {s}.intake_events SET topic = 'x.v1' WHERE notification_id = %s"
            ).format(s=s),
            (p,),
        )
        report = verify_log(PostgresLog(conn, "intake", schema, "intake_events"), _keys(settings))
        conn.rollback()
    first = report.problems[0]
    assert (first.kind, first.position) == ("edited", p)


@pytest.mark.postgres
def test_a_log_whose_old_seal_names_a_missing_row_is_not_converted(pg_settings: Settings) -> None:
    settings = pg_settings.model_copy(update={"seal_checkpoint_every": EVERY})
    transactions = _fill(settings)
    schema = settings.schema_for("intake")
    s = sql.Identifier(schema)
    with psycopg.connect(settings.database_url or "") as conn:
        _seal_beside(conn, schema, OLD_FORMATS[0], transactions)
        conn.execute(
            sql.SQL("DELETE FROM {s}.intake_events WHERE notification_id = %s").format(s=s),
            (transactions[1][0],),
        )
    with pytest.raises(Exception, match="of which 1 are missing from the log"):
        IntakeService(env=application_env(settings, "intake", create_tables=True)).close()
    with psycopg.connect(settings.database_url or "") as conn:
        unsealed = conn.execute(
            sql.SQL("SELECT count(*) FROM {s}.intake_events WHERE leaf_hash IS NULL").format(s=s)
        ).fetchone()
        kept = conn.execute(
            sql.SQL("SELECT count(*) FROM {s}.intake_events_leaves").format(s=s)
        ).fetchone()
    assert unsealed == (EVENTS - 1,)
    assert kept == (EVENTS,)
