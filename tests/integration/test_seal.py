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
from services.runtime.seal.merkle import ProofError, consistency_proof, root_of
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
    leaves: str
    position: str  # the name of the position column


def _fill(settings: Settings) -> list[int]:
    if settings.postgres is not None:
        create_schemas(settings, ("intake",))
    app = IntakeService(env=application_env(settings, "intake", create_tables=True))
    positions: list[int] = []
    try:
        batch = 1
        while len(positions) < EVENTS:
            events = [
                StoredEvent(uuid.uuid4(), 1, "org.ketnoi.test.v1", b'{"n": %d}' % i)
                for i in range(min(batch, EVENTS - len(positions)))
            ]
            positions += app.recorder.insert_events(events) or []
            batch = batch % 4 + 1
    finally:
        app.close()
    return positions


@pytest.fixture(params=["sqlite", "postgres"])
def sealed(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SealedLog]:
    if request.param == "sqlite":
        settings = Settings(
            database_url=None, data_dir=tmp_path / "data", seal_checkpoint_every=EVERY
        )
        positions = _fill(settings)
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
            "rowid",
        )
        return
    pg_settings = request.getfixturevalue("pg_settings")
    settings = pg_settings.model_copy(update={"seal_checkpoint_every": EVERY})
    positions = _fill(settings)
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
        "{s}.intake_events_leaves",
        "notification_id",
    )


def _keys(settings: Settings) -> list[Any]:
    return [seal_signer(settings).verifier]


def test_an_untouched_log_verifies_with_its_checkpoints(sealed: SealedLog) -> None:
    with sealed.tamper() as (_, log):
        report = verify_log(log, _keys(sealed.settings))
    assert report.ok, report.problems
    assert report.size == report.events == EVENTS
    assert report.checkpoints == report.checkpoints_verified >= EVENTS // EVERY


CHANGES = ["edit", "edit-topic", "edit-aggregate", "edit-seal", "delete", "insert", "swap"]


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
        with sealed.tamper() as (run, log):
            if change == "edit":
                run(
                    f"UPDATE {t} SET state = state || x'20' WHERE {col} = {p}".replace(
                        "x'20'", "'\\x20'::bytea" if col != "rowid" else "x'20'"
                    )
                )
            elif change == "edit-topic":
                run(f"UPDATE {t} SET topic = 'org.ketnoi.other.v1' WHERE {col} = {p}")
            elif change == "edit-aggregate":
                run(f"UPDATE {t} SET originator_version = 2 WHERE {col} = {p}")
            elif change == "edit-seal":
                run(f"UPDATE {e} SET sealed_at = sealed_at + 1 WHERE position = {p}")
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
        run(f"UPDATE {sealed.leaves} SET leaf_hash = {_recomputed(sealed, p)} WHERE position = {p}")
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
    seal = sealed.leaves.removesuffix("_leaves")
    _commit(
        sealed,
        [
            f"DELETE FROM {sealed.leaves}",
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


def test_writers_with_their_own_head_caches_interleaved_keep_one_tree(sealed: SealedLog) -> None:
    # Two instances of a service on the same log, as two processes would be. On PostgreSQL
    # each appends from the head it last committed, unread, once it found nobody else moved
    # it: here each then appends after the other moved it, once through group commit and
    # once through the library's insert.
    apps = {w: IntakeService(env=application_env(sealed.settings, "intake")) for w in "AB"}
    steps = "Ag Ae Ag Bg Be Bg Ag Ae Ag Be Bg Ae Bg"
    written, stale_appends, previous = 0, [], ""
    try:
        for step in steps.split():
            app = apps[step[0]]
            cache = getattr(app.recorder, "head_cache", None)
            cached = cache.get() if cache is not None else None
            if step[1] == "g":
                assert app.group_commit is not None
                app.group_commit.commit(Group([_event(written)]))
                written += 1
            else:
                app.recorder.insert_events([_event(written), _event(written + 1)])
                written += 2
            if cache is not None and cached is not None and step[0] != previous:
                # It found the head moved, wrote nothing, and appended again reading it.
                stale_appends.append(step)
                assert cache.get() is None
            previous = step[0]
    finally:
        for app in apps.values():
            app.close()
    if sealed.settings.postgres is not None:
        assert stale_appends == ["Ag", "Be", "Ae", "Bg"]
    with sealed.tamper() as (_, log):
        report = verify_log(log, _keys(sealed.settings))
        assert report.ok, report.problems
        assert report.size == report.events == EVENTS + written
        assert log.count_events() == EVENTS + written


def _event(n: int) -> StoredEvent:
    return StoredEvent(uuid.uuid4(), 1, "org.ketnoi.test.v1", b'{"n": %d}' % n)


def test_events_whose_seal_cannot_be_written_are_not_stored(sealed: SealedLog) -> None:
    seal = sealed.leaves.removesuffix("_leaves")
    _commit(sealed, [f"DELETE FROM {seal}_seal"])  # the head row is gone
    app = IntakeService(env=application_env(sealed.settings, "intake", create_tables=False))
    try:
        with pytest.raises(Exception, match="seal"):
            app.recorder.insert_events([StoredEvent(uuid.uuid4(), 1, "org.ketnoi.test.v1", b"{}")])
    finally:
        app.close()
    with sealed.tamper() as (_, log):
        assert log.count_events() == EVENTS
