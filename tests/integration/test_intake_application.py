"""One application test case, run against SQLite and against PostgreSQL."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import orjson
import psycopg
import pytest
from psycopg import sql

from contracts.envelope import Actor, AgencyRef, CommandRecorded
from contracts.intake import PersonDetails, Place, ReceptionRecorded
from contracts.vocabulary import (
    AgencyKind,
    ArrivalRoute,
    CaseStage,
    ClosureReason,
    ReopeningReason,
    Role,
    Sex,
    UrgentNeed,
)
from services.cli.wiring import migrate
from services.intake.application import IntakeService
from services.intake.domain import CaseNotFoundError, CaseRuleError
from services.runtime.aggregate import CommandContext
from services.runtime.application import _replay
from services.runtime.errors import IdempotencyKeyReusedError, InvalidRequestError
from services.runtime.persistence import application_env
from services.runtime.settings import Settings

POLICE = AgencyRef(agency_id="dong-thap-police", kind=AgencyKind.POLICE)
OFFICER = Actor(user_id="officer-1", agency_id="dong-thap-police", role=Role.INTAKE_OFFICER)
MANAGER = Actor(user_id="caseworker-1", agency_id="dong-thap-swc", role=Role.CASE_MANAGER)
RECEIVED_AT = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def ctx(actor: Actor = OFFICER, key: str | None = None) -> CommandContext:
    return CommandContext(actor=actor, idempotency_key=key)


def receive(intake: IntakeService, key: str | None = None) -> dict[str, object]:
    return intake.record_reception(
        ctx(key=key),
        route=ArrivalRoute.RETURNED_FROM_ABROAD,
        received_at=RECEIVED_AT,
        place=Place(province="dong-thap"),
        receiving_agency=POLICE,
        returned_from_country="KH",
    )


class IntakeApplicationContract:
    """The behaviour every backend must show; subclasses provide ``settings``."""

    @pytest.fixture
    def intake(self, settings: Settings) -> Iterator[IntakeService]:
        migrate(settings)
        app = IntakeService(env=application_env(settings, "intake"))
        yield app
        app.close()

    def reopen_service(self, settings: Settings) -> IntakeService:
        return IntakeService(env=application_env(settings, "intake"))

    def test_a_case_survives_a_restart(self, intake: IntakeService, settings: Settings) -> None:
        case_id = UUID(str(receive(intake)["case_id"]))
        intake.register_person(
            ctx(), case_id, PersonDetails(full_name="A B", sex=Sex.FEMALE, estimated_age=17)
        )
        intake.assess_needs(ctx(), case_id, (UrgentNeed.SHELTER_TONIGHT,))
        intake.change_stage(ctx(MANAGER), case_id, CaseStage.CRISIS)
        intake.close_case(ctx(MANAGER), case_id, ClosureReason.GOALS_MET, "ok", 4)
        intake.reopen_case(ctx(MANAGER), case_id, ReopeningReason.NEW_CRISIS)

        again = self.reopen_service(settings)
        try:
            case = again.get_case(case_id)
        finally:
            again.close()
        assert case.version == 6
        assert case.stage is CaseStage.CRISIS
        assert case.minor is True
        assert [e.number for e in case.episodes] == [1, 2]
        history = intake.history(case_id)
        assert isinstance(history[0], ReceptionRecorded)
        assert history[0].returned_from_country == "KH"
        assert [e.actor.role for e in history][-1] is Role.CASE_MANAGER

    def test_unknown_case_is_not_found(self, intake: IntakeService) -> None:
        with pytest.raises(CaseNotFoundError):
            intake.get_case(uuid4())
        with pytest.raises(CaseNotFoundError):
            intake.change_stage(ctx(MANAGER), uuid4(), CaseStage.CRISIS)

    def test_a_refused_command_writes_nothing(self, intake: IntakeService) -> None:
        case_id = UUID(str(receive(intake)["case_id"]))
        with pytest.raises(CaseRuleError):
            intake.change_stage(ctx(MANAGER), case_id, CaseStage.EXTERNAL_SUPPORT)
        with pytest.raises(InvalidRequestError):
            intake.register_person(ctx(), case_id, PersonDetails(full_name="A", sex=Sex.MALE))
        assert intake.get_case(case_id).version == 1
        assert intake.recorder.max_notification_id() == 1

    def test_a_retried_command_returns_the_first_result_and_appends_nothing(
        self, intake: IntakeService
    ) -> None:
        first = receive(intake, key="reception-0001")
        before = intake.recorder.max_notification_id()
        second = receive(intake, key="reception-0001")
        assert second == first
        assert intake.recorder.max_notification_id() == before
        # One reception and one record of the command, nothing more.
        topics = [n.topic for n in intake.recorder.select_notifications(start=None, limit=10)]
        assert topics == [ReceptionRecorded.topic(), CommandRecorded.topic()]

    def test_a_commands_record_keeps_no_guessable_digest_of_its_request(
        self, intake: IntakeService
    ) -> None:
        """The record of an idempotent command keeps an HMAC of the request under the
        installation's key, not a SHA-256 anyone could match against guessed names; a retry
        still matches it, and so does a record made before (a plain digest)."""
        case_id = UUID(str(receive(intake)["case_id"]))
        details = PersonDetails(full_name="Guessable Name", sex=Sex.FEMALE, estimated_age=17)
        intake.register_person(ctx(key="person-key-1"), case_id, details)
        (record,) = [
            e
            for n in intake.recorder.select_notifications(start=None, limit=100)
            if n.topic == CommandRecorded.topic()
            for e in [intake.mapper.to_domain_event(n)]
            if isinstance(e, CommandRecorded) and e.command == "register_person"
        ]
        request = {"case_id": str(case_id), "details": details.model_dump(mode="json")}
        body = orjson.dumps(
            {"command": "register_person", "request": request}, option=orjson.OPT_SORT_KEYS
        )
        assert record.request_digest.startswith("hmac-sha256:")
        assert hashlib.sha256(body).hexdigest() not in record.request_digest
        # A retry matches it; another request under the same key does not.
        assert intake.register_person(ctx(key="person-key-1"), case_id, details) == dict(
            record.result
        )
        other = PersonDetails(full_name="Another Name", sex=Sex.FEMALE, estimated_age=17)
        with pytest.raises(IdempotencyKeyReusedError):
            intake.register_person(ctx(key="person-key-1"), case_id, other)
        # A record with a plain digest, as made before digests were keyed, still replays.
        plain = record.model_copy(update={"request_digest": hashlib.sha256(body).hexdigest()})
        keyed = record.request_digest
        assert _replay(plain, "register_person", keyed, request) == dict(record.result)
        changed = {**request, "details": other.model_dump(mode="json")}
        with pytest.raises(IdempotencyKeyReusedError):
            _replay(plain, "register_person", keyed, changed)

    def test_a_key_reused_for_another_request_is_refused(self, intake: IntakeService) -> None:
        case_id = UUID(str(receive(intake)["case_id"]))
        intake.change_stage(ctx(MANAGER, "stage-key-1"), case_id, CaseStage.CRISIS)
        with pytest.raises(IdempotencyKeyReusedError):
            intake.change_stage(ctx(MANAGER, "stage-key-1"), case_id, CaseStage.TRANSITIONAL)
        assert intake.get_case(case_id).stage is CaseStage.CRISIS

    def test_keys_are_scoped_to_the_user(self, intake: IntakeService) -> None:
        other = Actor(user_id="officer-2", agency_id="dong-thap-police", role=Role.INTAKE_OFFICER)
        first = receive(intake, key="shared-key-1")
        second = intake.record_reception(
            ctx(other, "shared-key-1"),
            route=ArrivalRoute.RETURNED_FROM_ABROAD,
            received_at=RECEIVED_AT,
            place=Place(province="dong-thap"),
            receiving_agency=POLICE,
        )
        assert first["case_id"] != second["case_id"]

    def test_concurrent_retries_append_one_case(self, intake: IntakeService) -> None:
        results: list[dict[str, object]] = []
        errors: list[BaseException] = []
        barrier = threading.Barrier(6)

        def retry() -> None:
            barrier.wait()
            try:
                results.append(receive(intake, key="racing-key-01"))
            except BaseException as exc:  # collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=retry) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert len({str(r["case_id"]) for r in results}) == 1
        receptions = [
            n
            for n in intake.recorder.select_notifications(start=None, limit=50)
            if n.topic == ReceptionRecorded.topic()
        ]
        assert len(receptions) == 1


class TestIntakeOnSQLite(IntakeApplicationContract):
    @pytest.fixture
    def settings(self, sqlite_settings: Settings) -> Settings:
        return sqlite_settings


@pytest.mark.postgres
class TestIntakeOnPostgres(IntakeApplicationContract):
    @pytest.fixture
    def settings(self, pg_settings: Settings) -> Settings:
        return pg_settings

    def test_each_service_has_its_own_schema(
        self, intake: IntakeService, settings: Settings
    ) -> None:
        receive(intake)
        assert settings.postgres is not None
        with psycopg.connect(settings.postgres.url) as conn:
            rows = conn.execute(
                sql.SQL("SELECT count(*) FROM {}.intake_events").format(
                    sql.Identifier(settings.schema_for("intake"))
                )
            ).fetchone()
        assert rows == (1,)

    def test_services_run_without_creating_tables(self, settings: Settings) -> None:
        # Before `ketnoi migrate` the tables do not exist and a service does not create them.
        assert application_env(settings, "intake")["CREATE_TABLE"] == "no"
        migrate(settings)
        migrate(settings)  # idempotent
        app = IntakeService(env=application_env(settings, "intake"))
        try:
            assert receive(app)["version"] == 1
        finally:
            app.close()
