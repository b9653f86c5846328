"""The consent service following intake, on SQLite and on PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from uuid import UUID

import pytest

from contracts.consent import (
    Collection,
    CollectionMethod,
    ConsentGiver,
    ConsentRecordOpened,
    GiverKind,
    Recipient,
    consent_record_id,
)
from contracts.consent_decision import Verdict
from contracts.envelope import Actor, AgencyRef
from contracts.intake import PersonDetails, Place
from contracts.vocabulary import (
    AgencyKind,
    ArrivalRoute,
    CaseStage,
    DataCategory,
    Purpose,
    Role,
    Sex,
)
from services.cli.wiring import Platform, migrate, start
from services.consent.domain import ConsentRecordNotFoundError, ConsentRuleError
from services.runtime.aggregate import CommandContext
from services.runtime.errors import InvalidRequestError
from services.runtime.persistence import decode_stored
from services.runtime.settings import Settings

OFFICER = Actor(user_id="officer-1", agency_id="dong-thap-police", role=Role.INTAKE_OFFICER)
MANAGER = Actor(user_id="caseworker-1", agency_id="dong-thap-swc", role=Role.CASE_MANAGER)
SWC = AgencyRef(agency_id="dong-thap-swc", kind=AgencyKind.SOCIAL_WORK_CENTRE)
HOSPITAL = AgencyRef(agency_id="dong-thap-hospital", kind=AgencyKind.HOSPITAL)
POLICE = AgencyRef(agency_id="dong-thap-police", kind=AgencyKind.POLICE)
RECEIVED_AT = datetime(2026, 3, 1, 21, 0, tzinfo=UTC)
WRITTEN = Collection(
    method=CollectionMethod.WRITTEN_FORM,
    form_reference="F-1",
    language="vi",
    withdrawal_explained=True,
)
PERSON = ConsentGiver(kind=GiverKind.PERSON)


def ctx(actor: Actor = MANAGER, at: datetime | None = None) -> CommandContext:
    return CommandContext(actor=actor, at=at or datetime.now(UTC))


def received(platform: Platform) -> UUID:
    """A reception in Dong Thap, without waiting for any follower."""
    result = platform.intake.record_reception(
        ctx(OFFICER),
        route=ArrivalRoute.RESCUED,
        received_at=RECEIVED_AT,
        place=Place(province="dong-thap"),
        receiving_agency=POLICE,
    )
    return UUID(str(result["case_id"]))


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


class ConsentContract:
    @pytest.fixture
    def platform(self, settings: Settings) -> Iterator[Platform]:
        migrate(settings)
        platform = start(settings, ("intake", "consent"), run_followers=False)
        yield platform
        platform.close()

    def receive(self, platform: Platform, *, age: int | None = 30) -> UUID:
        case_id = received(platform)
        if age is not None:
            platform.intake.register_person(
                ctx(OFFICER),
                case_id,
                PersonDetails(full_name="A B", sex=Sex.FEMALE, estimated_age=age),
            )
        platform.catch_up()
        return case_id

    def grant(self, platform: Platform, case_id: UUID, **changes: object) -> UUID:
        fields: dict[str, object] = {
            "categories": (DataCategory.IDENTITY, DataCategory.HEALTH),
            "recipients": (Recipient(agency_id=SWC.agency_id), Recipient(kind=AgencyKind.HOSPITAL)),
            "purposes": (Purpose.SERVICE_PROVISION,),
            "valid_from": RECEIVED_AT,
            "valid_until": datetime.now(UTC) + timedelta(days=365),
            "collection": WRITTEN,
            "given_by": PERSON,
        }
        fields.update(changes)
        result = platform.consent.grant(ctx(), case_id, **fields)  # type: ignore[arg-type]
        return UUID(str(result["grant_id"]))

    def test_a_reception_opens_a_consent_record(self, platform: Platform) -> None:
        case_id = self.receive(platform, age=16)
        record = platform.consent.get_record(case_id)
        assert record.province == "dong-thap"
        assert isinstance(record.history[0], ConsentRecordOpened)
        assert record.history[0].caused_by is not None  # points at the intake event
        assert record.minor is True
        # Estimated 16 at the reception, 2026-03-02 in Vietnam (21:00 UTC the day before):
        # an adult from 2028-03-02.
        assert record.adult_on == date(2028, 3, 2)
        assert record.age_is_estimated is True

    def test_stage_changes_reach_the_consent_record(self, platform: Platform) -> None:
        case_id = self.receive(platform)
        platform.intake.change_stage(ctx(), case_id, CaseStage.CRISIS)
        platform.catch_up()
        assert platform.consent.get_record(case_id).stage is CaseStage.CRISIS

    def test_following_is_exactly_once(self, platform: Platform) -> None:
        case_id = self.receive(platform)
        assert platform.catch_up() == 0
        version = platform.consent.get_record(case_id).version
        # Processing an already tracked notification again is refused and changes nothing.
        upstream = platform.followers["consent"].upstreams[0]
        first = upstream.recorder.select_notifications(start=1, limit=1)[0]
        event = decode_stored(upstream.mapper, first)
        assert platform.consent.process("intake", first.id, event) is False
        assert platform.consent.get_record(case_id).version == version

    def test_grant_decide_withdraw(self, platform: Platform) -> None:
        case_id = self.receive(platform)
        grant_id = self.grant(platform, case_id)
        decision = platform.consent.decide(
            case_id,
            recipient=HOSPITAL,
            purpose=Purpose.SERVICE_PROVISION,
            categories=(DataCategory.HEALTH, DataCategory.LEGAL_CASE),
        )
        assert decision.permitted == (DataCategory.HEALTH,)
        assert decision.categories[0].grant_id == grant_id
        assert decision.categories[1].verdict is Verdict.NOT_GRANTED
        platform.consent.withdraw(ctx(OFFICER), case_id, grant_id, heard_by=POLICE)
        after = platform.consent.decide(
            case_id,
            recipient=HOSPITAL,
            purpose=Purpose.SERVICE_PROVISION,
            categories=(DataCategory.HEALTH,),
        )
        assert after.categories[0].verdict is Verdict.WITHDRAWN
        with pytest.raises(ConsentRuleError, match="already withdrawn"):
            platform.consent.withdraw(ctx(OFFICER), case_id, grant_id, heard_by=POLICE)

    def test_refusal_overrides_a_grant(self, platform: Platform) -> None:
        case_id = self.receive(platform)
        self.grant(
            platform,
            case_id,
            recipients=(Recipient(kind=AgencyKind.POLICE),),
            purposes=(Purpose.SERVICE_PROVISION, Purpose.CRIMINAL_PROCEEDINGS),
        )
        platform.consent.refuse(
            ctx(),
            case_id,
            recipients=(Recipient(kind=AgencyKind.POLICE),),
            except_purposes=(Purpose.CRIMINAL_PROCEEDINGS,),
        )

        def verdict(purpose: Purpose) -> Verdict:
            return (
                platform.consent.decide(
                    case_id, recipient=POLICE, purpose=purpose, categories=(DataCategory.IDENTITY,)
                )
                .categories[0]
                .verdict
            )

        assert verdict(Purpose.SERVICE_PROVISION) is Verdict.REFUSED
        assert verdict(Purpose.CRIMINAL_PROCEEDINGS) is Verdict.PERMITTED

    def test_minors_consent_through_a_guardian_with_their_views(self, platform: Platform) -> None:
        case_id = self.receive(platform, age=16)
        with pytest.raises(InvalidRequestError) as err:
            self.grant(platform, case_id)
        assert err.value.field == "given_by.kind"
        guardian = ConsentGiver(kind=GiverKind.GUARDIAN, relationship="mother")
        with pytest.raises(InvalidRequestError) as err:
            self.grant(platform, case_id, given_by=guardian)
        assert err.value.field == "child_views"
        self.grant(
            platform,
            case_id,
            given_by=guardian,
            child_views="wants school",
            valid_until=datetime(2030, 1, 1, tzinfo=UTC),
        )
        record = platform.consent.get_record(case_id)
        assert record.version == 3  # opened, age noted, granted: nothing half-written
        # On his 18th birthday the guardian's grant stops counting.
        assert record.adult_on is not None
        birthday = datetime(2028, 3, 2, 12, tzinfo=UTC)
        before, after = (
            platform.consent.decide(
                case_id,
                recipient=HOSPITAL,
                purpose=Purpose.SERVICE_PROVISION,
                categories=(DataCategory.HEALTH,),
                at=at,
            )
            .categories[0]
            .verdict
            for at in (birthday - timedelta(days=1), birthday)
        )
        assert (before, after) == (Verdict.PERMITTED, Verdict.OWN_CONSENT_NEEDED)

    def test_no_grant_before_the_age_is_known(self, platform: Platform) -> None:
        case_id = self.receive(platform, age=None)
        with pytest.raises(ConsentRuleError, match="age is not known"):
            self.grant(platform, case_id)
        # A refusal is always accepted: restricting sharing is always safe.
        platform.consent.refuse(ctx(), case_id, recipients=(Recipient(kind=AgencyKind.POLICE),))

    def test_period_and_renewal_rules(self, platform: Platform) -> None:
        case_id = self.receive(platform)
        with pytest.raises(InvalidRequestError) as err:
            self.grant(platform, case_id, valid_until=RECEIVED_AT - timedelta(days=1))
        assert err.value.field == "valid_until"
        grant_id = self.grant(platform, case_id)
        record = platform.consent.get_record(case_id)
        later = record.valid_until(grant_id) + timedelta(days=30)
        platform.consent.renew(ctx(), case_id, grant_id, valid_until=later, collection=WRITTEN)
        assert platform.consent.get_record(case_id).valid_until(grant_id) == later
        with pytest.raises(InvalidRequestError):
            platform.consent.renew(ctx(), case_id, grant_id, valid_until=later, collection=WRITTEN)

    def test_unknown_case(self, platform: Platform) -> None:
        with pytest.raises(ConsentRecordNotFoundError):
            platform.consent.get_record(UUID(int=7))

    def test_record_id_derives_from_the_case(self, platform: Platform) -> None:
        case_id = self.receive(platform)
        assert platform.consent.get_record(case_id).id == consent_record_id(case_id)


class TestConsentOnSQLite(ConsentContract):
    @pytest.fixture
    def settings(self, sqlite_settings: Settings) -> Settings:
        return sqlite_settings

    def test_an_in_process_save_prompts_the_follower(self, settings: Settings) -> None:
        migrate(settings)
        # A poll far longer than the test: only the in-process prompt can wake the follower.
        platform = start(settings, ("intake", "consent"), poll_interval=60)
        try:
            case_id = received(platform)
            wait_for(lambda: platform.consent.recorder.max_tracking_id("intake") is not None)
            assert platform.consent.get_record(case_id).province == "dong-thap"
        finally:
            platform.close()


@pytest.mark.postgres
class TestConsentOnPostgres(ConsentContract):
    @pytest.fixture
    def settings(self, pg_settings: Settings) -> Settings:
        return pg_settings

    def test_notify_wakes_a_follower_in_another_process_shape(self, settings: Settings) -> None:
        """Intake and consent as separate platforms (as separate processes would be): only
        PostgreSQL NOTIFY can wake the consent follower before its long poll."""
        migrate(settings)
        intake = start(settings, ("intake",))
        consent = start(settings, ("consent",), poll_interval=60)
        try:
            time.sleep(0.5)  # let the follower LISTEN
            case_id = received(intake)
            wait_for(lambda: consent.consent.recorder.max_tracking_id("intake") is not None)
            assert consent.consent.get_record(case_id).province == "dong-thap"
        finally:
            consent.close()
            intake.close()

    def test_a_lost_notification_never_stalls_the_follower(
        self, settings: Settings, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from services.runtime.follower import Follower

        monkeypatch.setattr(Follower, "_listen", lambda self: None)  # every NOTIFY is lost
        migrate(settings)
        intake = start(settings, ("intake",))
        consent = start(settings, ("consent",), poll_interval=0.3)
        try:
            case_id = received(intake)
            wait_for(lambda: consent.consent.recorder.max_tracking_id("intake") is not None)
            assert consent.consent.get_record(case_id).province == "dong-thap"
        finally:
            consent.close()
            intake.close()
