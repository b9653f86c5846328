"""Group commit on SQLite and PostgreSQL: concurrent commands share a transaction, a
conflicting one fails alone and runs again, idempotency records replay, a failed batch writes
nothing and refuses every caller, and the seal verifies after batched writes."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import psycopg
import pytest
from eventsourcing.persistence import OperationalError
from psycopg import sql

from contracts.envelope import Actor, AgencyRef
from contracts.intake import Place
from contracts.vocabulary import AgencyKind, ArrivalRoute, Role, UrgentNeed
from services.cli.wiring import migrate
from services.intake.application import IntakeService
from services.runtime.aggregate import CommandContext
from services.runtime.group_commit import Group
from services.runtime.persistence import application_env
from services.runtime.seal.keys import seal_signer
from services.runtime.seal.sources import open_logs
from services.runtime.seal.verify import verify_log
from services.runtime.settings import GroupCommitSettings, Settings, SettingsError
from tests.support.threads import run_threads

OFFICER = Actor(user_id="officer-1", agency_id="dt-police", role=Role.INTAKE_OFFICER)
POLICE = AgencyRef(agency_id="dt-police", kind=AgencyKind.POLICE)
THREADS = 12
RECEIVED_AT = datetime(2026, 1, 15, 9, 30, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def settings(request: pytest.FixtureRequest) -> Settings:
    name = "sqlite_settings" if request.param == "sqlite" else "pg_settings"
    value: Settings = request.getfixturevalue(name)
    migrate(value)
    return value


@pytest.fixture
def intake(settings: Settings) -> Iterator[IntakeService]:
    app = IntakeService(env=application_env(settings, "intake"))
    yield app
    app.close()


def receive(intake: IntakeService, key: str | None = None) -> dict[str, Any]:
    return intake.record_reception(
        CommandContext(actor=OFFICER, idempotency_key=key),
        route=ArrivalRoute.RESCUED,
        received_at=RECEIVED_AT,
        place=Place(province="dong-thap"),
        receiving_agency=POLICE,
    )


def batches(
    monkeypatch: pytest.MonkeyPatch,
    intake: IntakeService,
    first: int,
    meanwhile: Callable[[], None] | None = None,
    fail: Callable[[int], BaseException | None] | None = None,
) -> list[int]:
    """The sizes of the batches written from now on. The first waits until ``first`` saves
    are queued (however the threads are run), then ``meanwhile`` runs before it is written;
    later batches take what is queued. ``fail(n)`` may return an exception for the n-th batch
    to raise once its events are inserted, before its commit."""
    committer = intake.group_commit
    assert committer is not None
    committer.window, committer.max_batch = 60.0, first
    recorder = intake.recorder
    real_insert = recorder.insert_groups
    real_seal = recorder._write_seal  # type: ignore[union-attr]
    sizes: list[int] = []

    def insert(groups: Sequence[Group]) -> Any:
        sizes.append(len(groups))
        if len(sizes) == 1:
            committer.window = 0.0
            if meanwhile is not None:
                meanwhile()
        return real_insert(groups)

    def write_seal(*args: Any) -> Any:
        failure = fail(len(sizes)) if fail is not None else None
        if failure is not None:
            raise failure
        return real_seal(*args)

    monkeypatch.setattr(recorder, "insert_groups", insert)
    monkeypatch.setattr(recorder, "_write_seal", write_seal)
    return sizes


def transactions(settings: Settings, case_ids: Sequence[UUID]) -> int | None:
    """In how many transactions these cases' events were written (PostgreSQL only)."""
    if settings.postgres is None:
        return None
    with psycopg.connect(settings.postgres.conninfo()) as conn:
        row = conn.execute(
            sql.SQL(
                "SELECT count(DISTINCT xmin::text) FROM {} WHERE originator_id = ANY(%s)"
            ).format(sql.Identifier(settings.schema_for("intake"), "intake_events")),
            (list(case_ids),),
        ).fetchone()
    assert row is not None
    return int(row[0])


def assert_sealed(settings: Settings, events: int) -> None:
    with open_logs(settings, ("intake",)) as logs:
        (log,) = logs
        report = verify_log(log, [seal_signer(settings).verifier])
    assert report.ok, report.problems
    assert report.size == report.events == events


def stored_events(intake: IntakeService) -> int:
    return intake.recorder.max_notification_id() or 0


def test_concurrent_commands_on_different_aggregates_share_one_transaction(
    intake: IntakeService, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    receive(intake)  # the store's connection is open and warm
    sizes = batches(monkeypatch, intake, first=THREADS)
    results: list[dict[str, Any]] = []

    errors = run_threads(THREADS, lambda _: results.append(receive(intake)))

    assert errors == []
    assert sizes == [THREADS]
    case_ids = [UUID(str(r["case_id"])) for r in results]
    assert len(set(case_ids)) == THREADS
    # Each caller's own case is durable and whole when its call returns.
    assert {intake.get_case(case_id).version for case_id in case_ids} == {1}
    assert transactions(settings, case_ids) in (None, 1)
    assert_sealed(settings, THREADS + 1)


def test_a_conflicting_command_fails_alone_and_runs_again_the_others_are_durable(
    intake: IntakeService, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    case_id = UUID(str(receive(intake)["case_id"]))
    # "Another process": the same service with a store of its own.
    other = IntakeService(env=application_env(settings, "intake"))
    saves: list[str] = []
    real_save = intake.save

    def save(*objs: Any, **kwargs: Any) -> Any:
        saves.append(threading.current_thread().name)
        return real_save(*objs, **kwargs)

    def other_process_changes_the_case() -> None:
        # The queued command loaded the case before this, and saves after it.
        other.assess_needs(CommandContext(actor=OFFICER), case_id, (UrgentNeed.FOOD,))

    monkeypatch.setattr(intake, "save", save)
    sizes = batches(monkeypatch, intake, first=THREADS, meanwhile=other_process_changes_the_case)
    results: dict[int, dict[str, Any]] = {}

    def work(number: int) -> None:
        if number == 0:
            results[number] = intake.assess_needs(
                CommandContext(actor=OFFICER), case_id, (UrgentNeed.SHELTER_TONIGHT,)
            )
        else:
            results[number] = receive(intake)

    try:
        errors = run_threads(THREADS, work)
    finally:
        other.close()

    assert errors == []
    # The first batch wrote every reception; the assessment that lost its race to the other
    # process was left out of it, ran again, and went in a batch of its own.
    assert sizes == [THREADS, 1]
    assert len(saves) == THREADS + 1
    case = intake.get_case(case_id)
    assert case.version == 3
    assert results[0]["version"] == 3
    assert [type(e).__name__ for e in intake.history(case_id)] == [
        "ReceptionRecorded",
        "RapidNeedsAssessed",
        "RapidNeedsAssessed",
    ]
    received = [UUID(str(results[n]["case_id"])) for n in range(1, THREADS)]
    assert {intake.get_case(c).version for c in received} == {1}
    assert_sealed(settings, THREADS + 2)


def test_two_commands_on_one_aggregate_in_one_batch_the_second_runs_again(
    intake: IntakeService, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    case_id = UUID(str(receive(intake)["case_id"]))
    sizes = batches(monkeypatch, intake, first=3)
    needs = [(UrgentNeed.FOOD,), (UrgentNeed.SHELTER_TONIGHT,), (UrgentNeed.MEDICAL_CHECK,)]

    errors = run_threads(
        3, lambda n: intake.assess_needs(CommandContext(actor=OFFICER), case_id, needs[n])
    )

    assert errors == []
    # Each loaded version 1 and they met in one batch: the first was written, the others
    # ran again, in later batches.
    assert sizes[0] == 3
    assert len(sizes) >= 3
    assert intake.get_case(case_id).version == 4
    assert_sealed(settings, 4)


def test_idempotency_records_replay_and_one_key_in_one_batch_runs_once(
    intake: IntakeService, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    receive(intake)
    sizes = batches(monkeypatch, intake, first=THREADS)
    keys = [f"reception-{n % (THREADS // 2):04d}" for n in range(THREADS)]  # each key twice
    results: dict[int, dict[str, Any]] = {}

    errors = run_threads(THREADS, lambda n: results.__setitem__(n, receive(intake, keys[n])))

    assert errors == []
    assert sizes == [THREADS]  # the second request of each key was refused, then replayed
    by_key: dict[str, set[str]] = {}
    for n, result in results.items():
        by_key.setdefault(keys[n], set()).add(str(result["case_id"]))
    # Both requests with a key got the one case it opened.
    assert all(len(cases) == 1 for cases in by_key.values())
    written = stored_events(intake)
    # A case and a record of its command for each key, after the first reception.
    assert_sealed(settings, 1 + 2 * len(by_key))

    again = {key: receive(intake, key) for key in by_key}
    assert {key: {str(r["case_id"])} for key, r in again.items()} == by_key
    assert stored_events(intake) == written


@pytest.mark.postgres
def test_a_commit_whose_answer_is_lost_is_answered_as_written_not_run_again(
    pg_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection drops after the server committed but before the answer arrived: the
    attempt after it finds the batch's own events and answers them, so the reception is
    recorded once (without an Idempotency-Key, running it again would make a second case)."""
    migrate(pg_settings)
    intake = IntakeService(env=application_env(pg_settings, "intake"))
    try:
        start = stored_events(intake)
        receive(intake)
        per_reception = stored_events(intake) - start
        recorder = intake.recorder
        real = recorder._insert_groups  # type: ignore[attr-defined]
        attempts: list[bool] = []

        def insert(groups: Sequence[Group], *, look_for_own: bool) -> Any:
            attempts.append(look_for_own)
            outcome = real(groups, look_for_own=look_for_own)
            if len(attempts) == 1:
                raise OperationalError("server closed the connection unexpectedly")
            return outcome

        monkeypatch.setattr(recorder, "_insert_groups", insert)
        before = stored_events(intake)
        answer = receive(intake)
        assert attempts == [False, True]
        assert stored_events(intake) == before + per_reception
        assert intake.get_case(UUID(str(answer["case_id"]))).version == 1
        assert_sealed(pg_settings, stored_events(intake))
    finally:
        intake.close()


def test_a_batch_that_fails_writes_nothing_and_every_caller_gets_the_error(
    intake: IntakeService, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    receive(intake)
    before = stored_events(intake)
    sizes = batches(
        monkeypatch,
        intake,
        first=THREADS,
        fail=lambda n: RuntimeError("the disk is full") if n == 1 else None,
    )

    errors = run_threads(THREADS, lambda _: receive(intake) and None)

    # The batch failed after its insert, before its commit.
    assert sizes == [THREADS]
    assert len(errors) == THREADS
    assert all(isinstance(e, RuntimeError) and "disk is full" in str(e) for e in errors)
    assert stored_events(intake) == before
    assert_sealed(settings, 1)

    receive(intake)  # the next batch is written as usual
    assert_sealed(settings, 2)


def test_the_window_and_batch_size_are_configured_by_environment(
    sqlite_settings: Settings,
) -> None:
    env = application_env(sqlite_settings, "intake")
    app = IntakeService(
        env={**env, "KETNOI_GROUP_COMMIT_WINDOW_MS": "3", "KETNOI_GROUP_COMMIT_MAX_BATCH": "7"}
    )
    try:
        assert app.group_commit is not None
        assert app.group_commit.window == 0.003
        assert app.group_commit.max_batch == 7
    finally:
        app.close()
    assert GroupCommitSettings.from_env({}).max_batch == Settings().group_commit_max_batch
    with pytest.raises(SettingsError, match="KETNOI_GROUP_COMMIT_MAX_BATCH"):
        GroupCommitSettings.from_env({"KETNOI_GROUP_COMMIT_MAX_BATCH": "0"})
