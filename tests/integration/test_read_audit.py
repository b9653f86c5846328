"""The read audit on SQLite and PostgreSQL: a read is stored when ``record`` returns,
concurrent reads share transactions, and a failed save refuses every caller of its batch."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from eventsourcing.persistence import OperationalError
from psycopg import sql
from pydantic import ValidationError
from typer.testing import CliRunner

from contracts.audit import PersonalDataRead, ReadBasis
from contracts.envelope import Actor
from contracts.personal import ERASED_TEXT
from contracts.vocabulary import DataCategory, Role
from services.cli import app as cli
from services.cli import audit as cli_audit
from services.cli.wiring import http_app, migrate, start
from services.runtime.auth import TokenService
from services.runtime.persistence import decode_stored
from services.runtime.person_keys import person_keys
from services.runtime.read_audit import (
    AUDIT,
    ReadAudit,
    ReadAuditLog,
    ReadAuditUnavailableError,
    ReadBatch,
    audit_env,
    migrate_read_audit,
)
from services.runtime.settings import Settings
from tests.support.threads import run_threads

ACTOR = Actor(user_id="cw-1", agency_id="dong-thap-swc", role=Role.CASE_MANAGER)
THREADS = 50
EVENTS_TABLE = "audit_events"  # the library names it after the application
READS_EACH = 4


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def settings(request: pytest.FixtureRequest) -> Settings:
    if request.param == "sqlite":
        chosen: Settings = request.getfixturevalue("sqlite_settings")
    else:
        chosen = request.getfixturevalue("pg_settings")
        migrate_read_audit(chosen)
    return chosen


@pytest.fixture
def audit(settings: Settings) -> Iterator[ReadAudit]:
    audit = ReadAudit(settings)
    yield audit
    audit.close()


def stored_reads(settings: Settings) -> list[PersonalDataRead]:
    """What the log holds, read through an application (and connection) of its own."""
    log = ReadAuditLog(env=audit_env(settings))
    try:
        notifications = log.recorder.select_notifications(1, 10_000)
        reads = [decode_stored(log.mapper, n) for n in notifications]
    finally:
        log.close()
    assert all(isinstance(r, PersonalDataRead) for r in reads)
    return [r for r in reads if isinstance(r, PersonalDataRead)]


def own_case_read(audit: ReadAudit, case_id: UUID, correlation_id: UUID | None = None) -> None:
    audit.record(
        actor=ACTOR,
        case_id=case_id,
        categories=[DataCategory.IDENTITY],
        basis=ReadBasis.OWN_CASE,
        what="intake.case",
        correlation_id=correlation_id,
    )


def hold_until(condition: Callable[[], bool]) -> None:
    """Wait (in the writer thread) until the other callers have queued up."""
    deadline = time.monotonic() + 60
    while not condition():
        if time.monotonic() > deadline:
            msg = "the other callers never queued up"
            raise AssertionError(msg)
        time.sleep(0.001)


def test_a_read_is_in_the_log_when_record_returns(audit: ReadAudit, settings: Settings) -> None:
    case_id, person_id, grant, correlation = uuid4(), uuid4(), uuid4(), uuid4()
    audit.record(
        actor=ACTOR,
        case_id=case_id,
        person_id=person_id,
        categories=[DataCategory.HEALTH, DataCategory.IDENTITY, DataCategory.HEALTH],
        basis=ReadBasis.GRANT,
        grant_ids=[grant],
        what="referral.referral",
        correlation_id=correlation,
    )
    [stored] = stored_reads(settings)
    assert stored.case_id == case_id
    assert stored.person_id == person_id
    assert stored.actor == ACTOR
    assert stored.categories == (DataCategory.HEALTH, DataCategory.IDENTITY)
    assert stored.basis is ReadBasis.GRANT
    assert stored.grant_ids == (grant,)
    assert stored.what == "referral.referral"
    assert stored.correlation_id == correlation
    assert stored.originator_version == 1

    other_case = uuid4()
    own_case_read(audit, other_case)
    assert [r.case_id for r in audit.reads_of_case(case_id)] == [case_id]
    assert [r.case_id for r in audit.all_reads()] == [case_id, other_case]


def test_concurrent_reads_are_all_stored_in_fewer_transactions(
    audit: ReadAudit, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    saves: list[int] = []
    recorder = audit.log.recorder
    real_insert = recorder.insert_groups

    def counting_insert(groups: Any) -> Any:
        saves.append(len(groups))
        if len(saves) == 1:
            # Hold the first transaction until every other thread waits on its first read:
            # the next batch must then take all of them at once, however threads are run.
            hold_until(lambda: len(groups) + audit.pending == THREADS)
        return real_insert(groups)

    monkeypatch.setattr(recorder, "insert_groups", counting_insert)
    case_id = uuid4()
    sent = [[uuid4() for _ in range(READS_EACH)] for _ in range(THREADS)]

    def reader(number: int) -> None:
        for correlation in sent[number]:
            own_case_read(audit, case_id, correlation)

    assert run_threads(THREADS, reader) == []
    stored = stored_reads(settings)
    expected = {c for ids in sent for c in ids}
    assert len(stored) == THREADS * READS_EACH
    assert {r.correlation_id for r in stored} == expected
    assert sum(saves) == THREADS * READS_EACH
    assert len(saves) < THREADS * READS_EACH
    assert max(saves) > 1
    if settings.postgres is not None:
        # Count the transactions the rows were really written in, not the calls.
        with psycopg.connect(settings.postgres.conninfo()) as conn:
            row = conn.execute(
                sql.SQL("SELECT count(DISTINCT xmin::text) FROM {}").format(
                    sql.Identifier(settings.schema_for(AUDIT), EVENTS_TABLE)
                )
            ).fetchone()
        assert row is not None
        assert row[0] == len(saves)


def test_a_failed_save_refuses_every_caller_and_the_next_batch_succeeds(
    audit: ReadAudit, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    callers = 10
    saves: list[int] = []
    broken = threading.Event()
    broken.set()
    recorder = audit.log.recorder
    real_insert = recorder.insert_groups

    def failing_insert(groups: Any) -> Any:
        saves.append(len(groups))
        if broken.is_set():
            if len(saves) == 1:
                hold_until(lambda: len(groups) + audit.pending == callers)
            msg = "the database is unreachable"
            raise OperationalError(msg)
        return real_insert(groups)

    monkeypatch.setattr(recorder, "insert_groups", failing_insert)
    case_id = uuid4()
    errors = run_threads(callers, lambda _: own_case_read(audit, case_id))
    assert len(errors) == callers
    assert all(isinstance(e, ReadAuditUnavailableError) for e in errors)
    assert max(saves) > 1  # a batch of several callers failed as a whole
    assert stored_reads(settings) == []

    broken.clear()
    own_case_read(audit, case_id)
    assert len(stored_reads(settings)) == 1


def counted_saves(audit: ReadAudit, monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """Each transaction of the audit log, as the number of reads of each save it held."""
    recorder = audit.log.recorder
    real_insert = recorder.insert_groups
    saves: list[list[int]] = []

    def counting_insert(groups: Any) -> Any:
        saves.append([len(g.events) for g in groups])
        return real_insert(groups)

    monkeypatch.setattr(recorder, "insert_groups", counting_insert)
    return saves


def batched_read(audit: ReadAudit, batch: ReadBatch, case_id: UUID, what: str) -> None:
    audit.record(
        actor=ACTOR,
        case_id=case_id,
        categories=[DataCategory.IDENTITY],
        basis=ReadBasis.OWN_CASE,
        what=what,
        batch=batch,
    )


def test_a_batch_of_reads_is_stored_in_one_transaction_when_flushed_and_not_before(
    audit: ReadAudit, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    saves = counted_saves(audit, monkeypatch)
    case_id = uuid4()
    batch = audit.batch()
    parts = ["intake.case", "intake.plan", "projections.timeline"]
    for what in parts:
        batched_read(audit, batch, case_id, what)
    assert batch.pending == len(parts)
    assert stored_reads(settings) == []  # added, not stored: what was read must wait
    assert saves == []

    batch.flush()
    assert [r.what for r in stored_reads(settings)] == parts
    assert saves == [[len(parts)]]  # one save of them all, in one transaction
    batch.flush()  # nothing more to store
    assert saves == [[len(parts)]]


def test_a_batch_that_cannot_be_stored_is_refused_whole(
    audit: ReadAudit, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = audit.log.recorder
    real_insert = recorder.insert_groups

    def failing_insert(_groups: Any) -> Any:
        msg = "the database is unreachable"
        raise OperationalError(msg)

    monkeypatch.setattr(recorder, "insert_groups", failing_insert)
    case_id = uuid4()
    batch = audit.batch()
    batched_read(audit, batch, case_id, "intake.case")
    batched_read(audit, batch, case_id, "intake.plan")
    with pytest.raises(ReadAuditUnavailableError):
        batch.flush()
    assert stored_reads(settings) == []
    # Refused reads are not kept for later: their data was never sent.
    assert batch.pending == 0

    monkeypatch.setattr(recorder, "insert_groups", real_insert)
    batched_read(audit, batch, case_id, "intake.case")
    batch.flush()
    assert [r.what for r in stored_reads(settings)] == ["intake.case"]


def test_the_reads_of_a_case_asked_again_hold_the_new_ones_as_a_fresh_reader_reads_them(
    audit: ReadAudit, settings: Settings
) -> None:
    case_id, person_id = uuid4(), uuid4()
    reason = "unconscious at the border post"

    def read(what: str, **fields: Any) -> None:
        audit.record(
            actor=ACTOR,
            case_id=case_id,
            person_id=person_id,
            categories=[DataCategory.IDENTITY],
            what=what,
            **{"basis": ReadBasis.OWN_CASE, **fields},
        )

    read("intake.case")
    read("intake.case.break_glass", basis=ReadBasis.BREAK_GLASS, reason=reason)
    own_case_read(audit, uuid4())  # another case's
    first = audit.reads_of_case(case_id)
    assert [r.reason for r in first] == [None, reason]

    read("projections.timeline")
    own_case_read(audit, uuid4())
    again = audit.reads_of_case(case_id)
    assert [r.what for r in again] == [
        "intake.case",
        "intake.case.break_glass",
        "projections.timeline",
    ]
    assert again[:2] == first
    # Kept between askings, the reads are those a reader that keeps nothing finds.
    assert again == [r for r in stored_reads(settings) if r.case_id == case_id]


def test_reads_of_an_erased_person_still_read_back_their_break_glass_reason_erased(
    audit: ReadAudit, settings: Settings
) -> None:
    """Erasure destroys the key a break-glass reason was sealed under: the read stays in the
    log and reads back with the reason erased, so an auditor can still list it."""
    case_id, person_id = uuid4(), uuid4()
    reason = "found unconscious by the river"
    for basis, fields in (
        (ReadBasis.OWN_CASE, {}),
        (ReadBasis.BREAK_GLASS, {"reason": reason}),
    ):
        audit.record(
            actor=ACTOR,
            case_id=case_id,
            person_id=person_id,
            categories=[DataCategory.IDENTITY],
            basis=basis,
            what="intake.case",
            **fields,
        )
    assert [r.reason for r in audit.reads_of_case(case_id)] == [None, reason]

    keys = person_keys(settings)
    assert keys.erase(person_id)

    after = ReadAudit(settings)
    try:
        assert [r.reason for r in after.reads_of_case(case_id)] == [None, ERASED_TEXT]
        listed = [r for r in after.all_reads() if r.case_id == case_id]
        assert [r.basis for r in listed] == [ReadBasis.OWN_CASE, ReadBasis.BREAK_GLASS]
        assert reason not in repr(listed)
    finally:
        after.close()


@pytest.mark.postgres
def test_a_transaction_the_database_refuses_fails_its_batch_and_the_writer_recovers(
    pg_settings: Settings,
) -> None:
    migrate_read_audit(pg_settings)
    assert pg_settings.postgres is not None
    conninfo = pg_settings.postgres.conninfo()
    schema = sql.Identifier(pg_settings.schema_for(AUDIT))
    table = sql.Identifier(pg_settings.schema_for(AUDIT), EVENTS_TABLE)
    audit = ReadAudit(pg_settings)
    try:
        own_case_read(audit, uuid4())  # the writer's connection is open and warm
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(
                sql.SQL(
                    "CREATE FUNCTION {}.refuse() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN RAISE EXCEPTION 'audit store unavailable'; END $$"
                ).format(schema)
            )
            conn.execute(
                sql.SQL(
                    "CREATE TRIGGER refuse BEFORE INSERT ON {} "
                    "FOR EACH STATEMENT EXECUTE FUNCTION {}.refuse()"
                ).format(table, schema)
            )
        refused = uuid4()
        errors = run_threads(5, lambda _: own_case_read(audit, refused))
        assert len(errors) == 5
        assert all(isinstance(e, ReadAuditUnavailableError) for e in errors)

        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP TRIGGER refuse ON {}").format(table))
        accepted = uuid4()
        own_case_read(audit, accepted)
        cases = [r.case_id for r in stored_reads(pg_settings)]
        assert refused not in cases
        assert cases[-1] == accepted
        assert len(cases) == 2
    finally:
        audit.close()


def test_a_caller_is_refused_when_the_store_hangs_and_the_read_is_kept_after(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    audit = ReadAudit(settings.model_copy(update={"read_audit_timeout_seconds": 0.05}))
    release = threading.Event()
    recorder = audit.log.recorder
    real_insert = recorder.insert_groups

    def hanging_insert(groups: Any) -> Any:
        release.wait()
        return real_insert(groups)

    monkeypatch.setattr(recorder, "insert_groups", hanging_insert)
    try:
        with pytest.raises(ReadAuditUnavailableError):
            own_case_read(audit, uuid4())
    finally:
        release.set()
        audit.close()
    # Refused to its caller, yet stored once the store answered: the record errs on the side
    # of a read that was not returned, never of data returned without its record.
    assert len(stored_reads(settings)) == 1


def test_nothing_is_recorded_without_categories_or_with_a_basis_that_does_not_fit(
    audit: ReadAudit, settings: Settings
) -> None:
    audit.record(
        actor=ACTOR, case_id=uuid4(), categories=[], basis=ReadBasis.OWN_CASE, what="intake.case"
    )
    with pytest.raises(ValidationError, match="reason is required"):
        audit.record(
            actor=ACTOR,
            case_id=uuid4(),
            categories=[DataCategory.HEALTH],
            basis=ReadBasis.BREAK_GLASS,
            what="intake.case",
        )
    assert stored_reads(settings) == []


def test_reads_are_refused_once_closed_and_what_was_pending_is_stored(
    settings: Settings,
) -> None:
    audit = ReadAudit(settings, window_ms=0)
    own_case_read(audit, uuid4())
    audit.close()
    with pytest.raises(ReadAuditUnavailableError):
        own_case_read(audit, uuid4())
    assert len(stored_reads(settings)) == 1


def test_the_platform_and_its_http_app_carry_the_read_audit(settings: Settings) -> None:
    if settings.postgres is not None:
        migrate(settings)  # the audit log's tables come with ``ketnoi migrate``
    platform = start(settings, run_followers=False)
    try:
        assert isinstance(platform.read_audit, ReadAudit)
        app = http_app(platform, TokenService(settings))
        assert app.state.read_audit is platform.read_audit
        own_case_read(app.state.read_audit, uuid4())
    finally:
        platform.close()
    assert len(stored_reads(settings)) == 1


def test_ketnoi_audit_reads_lists_reads_by_case_and_since(
    audit: ReadAudit, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KETNOI_DATABASE_URL", raising=False)
    if settings.database_url is not None:
        monkeypatch.setenv("KETNOI_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("KETNOI_SCHEMA_PREFIX", settings.schema_prefix)
    monkeypatch.setenv("KETNOI_DATA_DIR", str(settings.data_dir))
    # Logging is configured once per process, on the stderr of the moment: keep the runner's
    # stream (closed after each invocation) out of it.
    monkeypatch.setattr(cli_audit, "configure_logging", lambda *_: None)
    first, second = uuid4(), uuid4()
    own_case_read(audit, first)
    before_second = datetime.now(UTC)
    grant = uuid4()
    audit.record(
        actor=ACTOR,
        case_id=second,
        categories=[DataCategory.HEALTH],
        basis=ReadBasis.GRANT,
        grant_ids=[grant],
        what="referral.referral",
    )

    def listed(*args: str) -> list[dict[str, Any]]:
        result = CliRunner().invoke(cli, ["audit", "reads", *args])
        assert result.exit_code == 0, result.output
        return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]

    assert [r["case_id"] for r in listed()] == [str(first), str(second)]
    [only] = listed("--case", str(second))
    assert only["basis"] == "grant"
    assert only["grant_ids"] == [str(grant)]
    assert only["actor"] == ACTOR.model_dump(mode="json")
    assert only["categories"] == ["health"]
    since = (before_second - timedelta(microseconds=1)).isoformat()
    assert [r["case_id"] for r in listed("--since", since)] == [str(second)]
    assert listed("--since", (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d")) == []
