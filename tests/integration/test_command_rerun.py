"""A command that loses a race to another writer runs again on fresh state (SQLite, PostgreSQL).

The other writer here is what it usually is in practice: the referral service's own follower,
noting a consent on the case file between a command's load and its save.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from contracts.consent import (
    Collection,
    CollectionMethod,
    ConsentGiver,
    GiverKind,
    Recipient,
)
from contracts.envelope import Actor, AgencyRef
from contracts.intake import PersonDetails, Place
from contracts.referral import ReferralAccepted, Urgency, case_file_id
from contracts.vocabulary import (
    AgencyKind,
    ArrivalRoute,
    CaseStage,
    DataCategory,
    Purpose,
    Role,
    ServiceType,
    Sex,
    UrgentNeed,
)
from services.cli.wiring import Platform, migrate, start
from services.referral.application import ReferralService
from services.runtime.aggregate import CommandContext
from services.runtime.application import ServiceApplication
from services.runtime.errors import ConcurrentChangeError, RuleViolationError
from services.runtime.follower import Follower, open_upstream
from services.runtime.persistence import application_env
from services.runtime.settings import CommandRetry, Settings, SettingsError
from tests.support.agencies import register_agencies

OFFICER = Actor(user_id="officer-1", agency_id="dt-police", role=Role.INTAKE_OFFICER)
MANAGER = Actor(user_id="cw-1", agency_id="dt-swc", role=Role.CASE_MANAGER)
POLICE = AgencyRef(agency_id="dt-police", kind=AgencyKind.POLICE)
SWC = AgencyRef(agency_id="dt-swc", kind=AgencyKind.SOCIAL_WORK_CENTRE)
HOSPITAL = "dt-hospital"
WRITTEN = Collection(
    method=CollectionMethod.WRITTEN_FORM,
    form_reference="F",
    language="vi",
    withdrawal_explained=True,
)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def settings(request: pytest.FixtureRequest) -> Settings:
    name = "sqlite_settings" if request.param == "sqlite" else "pg_settings"
    value: Settings = request.getfixturevalue(name)
    return value


@pytest.fixture
def platform(settings: Settings) -> Iterator[Platform]:
    migrate(settings)
    register_agencies(settings, ("dt-police", "dt-swc", "dt-hospital"))
    running = start(settings, ("intake", "consent", "referral"), run_followers=False)
    yield running
    running.close()


def add_case(platform: Platform) -> UUID:
    ctx = CommandContext(actor=OFFICER)
    case_id = UUID(
        str(
            platform.intake.record_reception(
                ctx,
                route=ArrivalRoute.RESCUED,
                received_at=datetime.now(UTC) - timedelta(hours=1),
                place=Place(province="dong-thap"),
                receiving_agency=POLICE,
            )["case_id"]
        )
    )
    platform.intake.register_person(
        ctx, case_id, PersonDetails(full_name="Person Name", sex=Sex.FEMALE, estimated_age=24)
    )
    platform.intake.assess_needs(ctx, case_id, (UrgentNeed.SHELTER_TONIGHT,))
    platform.catch_up()
    return case_id


def grant(platform: Platform, case_id: UUID) -> UUID:
    result = platform.consent.grant(
        CommandContext(actor=MANAGER),
        case_id,
        categories=(DataCategory.IDENTITY,),
        recipients=(Recipient(kind=AgencyKind.HOSPITAL),),
        purposes=(Purpose.SERVICE_PROVISION,),
        valid_from=datetime.now(UTC) - timedelta(days=1),
        valid_until=datetime.now(UTC) + timedelta(days=30),
        collection=WRITTEN,
        given_by=ConsentGiver(kind=GiverKind.PERSON),
    )
    return UUID(str(result["grant_id"]))


def refer(platform: Platform, case_id: UUID, key: str | None = None) -> dict[str, Any]:
    return platform.referral.create_referral(
        CommandContext(actor=MANAGER, idempotency_key=key),
        case_id,
        from_agency=SWC,
        to_agency_id=HOSPITAL,
        service_type=ServiceType.HEALTH_CHECK,
        urgency=Urgency.URGENT,
        purpose=Purpose.SERVICE_PROVISION,
        categories=(DataCategory.IDENTITY,),
    )


def before_saves(
    monkeypatch: pytest.MonkeyPatch, app: ServiceApplication, meanwhile: Callable[[int], None]
) -> list[int]:
    """Run ``meanwhile(n)`` before the n-th save of ``app``'s commands (between the command's
    load and its save); returns the list of save attempts made."""
    original = app.save
    attempts: list[int] = []

    def save(*objs: Any, **kwargs: Any) -> Any:
        attempts.append(len(attempts) + 1)
        meanwhile(len(attempts))
        return original(*objs, **kwargs)

    monkeypatch.setattr(app, "save", save)
    return attempts


def consent_noted_by_follower(platform: Platform, case_id: UUID) -> None:
    """A consent is granted and the referral follower notes it on the case file."""
    grant(platform, case_id)
    assert platform.followers["referral"].catch_up() == 1


def case_file_events(platform: Platform, case_id: UUID) -> list[str]:
    return [type(e).__name__ for e in platform.referral.history(case_file_id(case_id))]


def test_a_command_that_loses_to_the_follower_runs_again_on_fresh_state(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    case_id = add_case(platform)
    before = case_file_events(platform, case_id)
    grant(platform, case_id)  # the follower has not noted it yet when the command loads
    follower = platform.followers["referral"]
    attempts = before_saves(
        monkeypatch, platform.referral, lambda n: follower.catch_up() if n == 1 else None
    )

    result = refer(platform, case_id)

    assert attempts == [1, 2]
    # The re-run saw the consent the follower noted meanwhile, so the referral went out.
    assert result["status"] == "requested"
    assert result["blocked_by"] == []
    # The follower's note, then the command's own change: nothing lost, nothing twice.
    assert case_file_events(platform, case_id)[len(before) :] == ["ConsentNoted", "ReferralLinked"]
    assert platform.referral.get_case_file(case_id).referral_ids == [
        UUID(str(result["referral_id"]))
    ]


def test_an_idempotent_command_runs_again_and_records_its_result_once(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    case_id = add_case(platform)
    attempts = before_saves(
        monkeypatch,
        platform.referral,
        lambda n: consent_noted_by_follower(platform, case_id) if n == 1 else None,
    )
    first = refer(platform, case_id, key="refer-once-0001")
    again = refer(platform, case_id, key="refer-once-0001")

    assert attempts == [1, 2]  # the retry with the same key saved nothing
    assert again == first
    assert len(platform.referral.get_case_file(case_id).referral_ids) == 1


def test_a_concurrent_request_with_the_same_key_is_replayed_not_run_again(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    case_id = add_case(platform)
    results: list[dict[str, Any]] = []

    def same_request_wins(n: int) -> None:
        if n == 1:  # the other request with this key runs to the end first
            results.append(refer(platform, case_id, key="refer-race-0001"))

    attempts = before_saves(monkeypatch, platform.referral, same_request_wins)
    mine = refer(platform, case_id, key="refer-race-0001")

    assert attempts == [1, 2]  # ours, then the winner's; ours was never run again
    assert mine == results[0]
    assert len(platform.referral.get_case_file(case_id).referral_ids) == 1


def test_a_request_with_the_same_key_that_won_before_the_rules_ran_is_replayed(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A double tap: this request looked for its key's record before the other one saved;
    the other's events then trip this one's rules (the case is already in that stage), yet
    the answer is the other's result, not a rule violation."""
    intake = platform.intake
    case_id = add_case(platform)
    ctx = CommandContext(actor=MANAGER, idempotency_key="stage-race-0001")
    looked_up = intake._recorded
    winner: list[dict[str, Any]] = []
    raced: list[bool] = []

    def recorded(record_id: UUID) -> Any:
        found = looked_up(record_id)
        if not raced:  # ours found nothing; the other request then runs to its end
            raced.append(True)
            winner.append(intake.change_stage(ctx, case_id, CaseStage.CRISIS, "tonight"))
        return found

    monkeypatch.setattr(intake, "_recorded", recorded)
    mine = intake.change_stage(ctx, case_id, CaseStage.CRISIS, "tonight")

    assert mine == winner[0]
    assert [type(e).__name__ for e in intake.history(case_id)].count("StageChanged") == 1


def test_a_writer_that_always_interferes_gets_409_after_the_attempts(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform.referral.command_retry = CommandRetry(attempts=3, pause_ms=0)
    case_id = add_case(platform)
    before = case_file_events(platform, case_id)
    attempts = before_saves(
        monkeypatch, platform.referral, lambda _n: consent_noted_by_follower(platform, case_id)
    )

    with pytest.raises(ConcurrentChangeError) as refused:
        refer(platform, case_id)

    assert refused.value.status == 409
    assert attempts == [1, 2, 3]
    # Nothing of the command was written; only the follower's three notes.
    assert platform.referral.get_case_file(case_id).referral_ids == []
    assert case_file_events(platform, case_id)[len(before) :] == ["ConsentNoted"] * 3


def test_two_people_accepting_the_same_referral_one_gets_a_rule_violation(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    case_id = add_case(platform)
    grant(platform, case_id)
    platform.catch_up()
    referral_id = UUID(str(refer(platform, case_id)["referral_id"]))
    nurse = Actor(user_id="nurse-1", agency_id="dt-hospital", role=Role.AGENCY_STAFF)
    doctor = Actor(user_id="doctor-1", agency_id="dt-hospital", role=Role.AGENCY_STAFF)
    platform.referral.answer(CommandContext(actor=nurse), referral_id, "acknowledge")
    won: list[dict[str, Any]] = []

    def doctor_accepts_first(n: int) -> None:
        if n == 1:
            won.append(
                platform.referral.answer(CommandContext(actor=doctor), referral_id, "accept")
            )

    attempts = before_saves(monkeypatch, platform.referral, doctor_accepts_first)
    with pytest.raises(RuleViolationError) as refused:
        platform.referral.answer(CommandContext(actor=nurse), referral_id, "accept")

    assert refused.value.status == 409
    assert refused.value.allowed == ["start", "fail", "cancel"]
    assert won[0]["status"] == "accepted"
    # The nurse's first save lost (2 attempts: hers, the doctor's); her re-run met the rule.
    assert attempts == [1, 2]
    accepted = [
        e for e in platform.referral.history(referral_id) if isinstance(e, ReferralAccepted)
    ]
    assert [e.actor.user_id for e in accepted] == ["doctor-1"]


def test_a_rerun_reads_past_a_stale_aggregate_cache(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a cache that is not fast-forwarded, another process's write leaves it stale."""
    migrate(settings)
    register_agencies(settings, ("dt-police", "dt-swc", "dt-hospital"))
    monkeypatch.setenv("AGGREGATE_CACHE_MAXSIZE", "100")
    monkeypatch.setenv("AGGREGATE_CACHE_FASTFORWARD", "n")
    platform = start(settings, ("intake", "consent", "referral"), run_followers=False)
    monkeypatch.delenv("AGGREGATE_CACHE_MAXSIZE")
    monkeypatch.delenv("AGGREGATE_CACHE_FASTFORWARD")
    # The same service in "another process": its own application and follower, no cache.
    other = ReferralService(env=application_env(settings, "referral"))
    upstreams = [open_upstream(settings, name, types) for name, types in other.follows.items()]
    other_follower = Follower(other, upstreams, settings=settings)
    try:
        assert platform.referral.repository.cache is not None
        case_id = add_case(platform)
        platform.referral.get_case_file(case_id)  # now in the cache

        grant(platform, case_id)

        def other_process_notes_consent(n: int) -> None:
            if n == 1:
                assert other_follower.catch_up() == 1

        attempts = before_saves(monkeypatch, platform.referral, other_process_notes_consent)
        result = refer(platform, case_id)

        assert attempts == [1, 2]
        assert result["status"] == "requested"
        assert UUID(str(result["referral_id"])) in other.get_case_file(case_id).referral_ids
    finally:
        other.close()
        for upstream in upstreams:
            datastore = getattr(upstream.recorder, "datastore", None)
            if datastore is not None:
                datastore.close()
        platform.close()


def test_the_attempts_are_configured_by_environment(sqlite_settings: Settings) -> None:
    env = application_env(sqlite_settings, "referral")
    app = ReferralService(env={**env, "KETNOI_COMMAND_ATTEMPTS": "2"})
    try:
        assert app.command_retry.attempts == 2
    finally:
        app.close()
    assert CommandRetry.from_env({}).attempts == Settings().command_attempts == 5
    with pytest.raises(SettingsError, match="KETNOI_COMMAND_ATTEMPTS"):
        CommandRetry.from_env({"KETNOI_COMMAND_ATTEMPTS": "0"})
