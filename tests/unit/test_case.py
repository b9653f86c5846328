"""The Case's rules, with no I/O."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from contracts.envelope import Actor, AgencyRef
from contracts.intake import (
    CaseClosed,
    CaseReopened,
    PersonDetails,
    PersonRegistered,
    Place,
    ReceptionRecorded,
    StageChanged,
)
from contracts.vocabulary import (
    AgencyKind,
    ArrivalRoute,
    CaseStage,
    ClosureReason,
    ContactMode,
    ReopeningReason,
    Role,
    Sex,
)
from services.intake.domain import STAGE_TRANSITIONS, Case, CaseRuleError, age_on
from services.runtime.aggregate import CommandContext
from services.runtime.errors import InvalidRequestError

NOW = datetime(2026, 3, 1, 10, 30, tzinfo=UTC)  # 17:30 in Vietnam, the same day
POLICE = AgencyRef(agency_id="dong-thap-police", kind=AgencyKind.POLICE)
SWC = AgencyRef(agency_id="dong-thap-social-work-centre", kind=AgencyKind.SOCIAL_WORK_CENTRE)
OFFICER = Actor(user_id="officer-1", agency_id="dong-thap-police", role=Role.INTAKE_OFFICER)


def ctx(minutes: int = 0) -> CommandContext:
    return CommandContext(actor=OFFICER, at=NOW + timedelta(minutes=minutes))


def received(**overrides: object) -> Case:
    fields: dict[str, object] = {
        "route": ArrivalRoute.RESCUED,
        "received_at": NOW - timedelta(hours=1),
        "place": Place(province="dong-thap"),
        "receiving_agency": POLICE,
    }
    fields.update(overrides)
    return Case.record_reception(ctx(), **fields)  # type: ignore[arg-type]


def adult(**overrides: object) -> PersonDetails:
    fields: dict[str, object] = {"full_name": "Test Person", "sex": Sex.FEMALE, "estimated_age": 24}
    fields.update(overrides)
    return PersonDetails(**fields)  # type: ignore[arg-type]


def test_reception_opens_a_case_in_reception_stage_with_one_event() -> None:
    case = received()
    events = case.collect_events()
    assert [type(e) for e in events] == [ReceptionRecorded]
    assert events[0].originator_id == case.id
    assert events[0].originator_version == 1
    assert events[0].actor == OFFICER
    assert case.stage is CaseStage.RECEPTION
    assert case.province == "dong-thap"
    assert case.person_id != case.id  # the person's id is their own, not the case's


def test_a_reception_in_the_future_is_refused() -> None:
    with pytest.raises(InvalidRequestError) as err:
        received(received_at=NOW + timedelta(hours=2))
    assert err.value.field == "received_at"


def test_a_border_handover_names_a_foreign_authority() -> None:
    with pytest.raises(InvalidRequestError) as err:
        received(route=ArrivalRoute.BORDER_HANDOVER)
    assert err.value.field == "handed_over_by"
    with pytest.raises(InvalidRequestError):
        received(route=ArrivalRoute.BORDER_HANDOVER, handed_over_by=POLICE)
    foreign = AgencyRef(agency_id="cn-border-authority", kind=AgencyKind.FOREIGN_AUTHORITY)
    assert received(route=ArrivalRoute.BORDER_HANDOVER, handed_over_by=foreign).reception


@pytest.mark.parametrize(
    ("born", "minor"),
    [(date(2009, 3, 2), True), (date(2008, 3, 1), False), (date(2008, 3, 2), True)],
)
def test_minor_is_judged_at_the_reception_date(born: date, minor: bool) -> None:
    # Received on 2026-03-01: born 2008-03-01 turned 18 that day.
    case = received()
    case.register_person(ctx(), adult(estimated_age=None, date_of_birth=born))
    assert case.minor is minor


def test_estimated_age_under_18_is_a_minor() -> None:
    case = received()
    case.register_person(ctx(), adult(estimated_age=16))
    assert case.minor is True


def test_person_needs_an_age_or_birth_date() -> None:
    case = received()
    with pytest.raises(InvalidRequestError) as err:
        case.register_person(ctx(), adult(estimated_age=None))
    assert err.value.field == "details.date_of_birth"
    assert case.collect_events()[-1].__class__ is ReceptionRecorded  # nothing half-written


def test_registering_twice_is_refused_and_correction_is_allowed() -> None:
    case = received()
    case.register_person(ctx(), adult())
    with pytest.raises(CaseRuleError) as err:
        case.register_person(ctx(), adult())
    assert err.value.allowed == ["correct_person_details"]
    case.correct_person_details(ctx(), adult(full_name="Corrected Name"))
    assert case.person is not None
    assert case.person.full_name == "Corrected Name"


def test_stage_changes_follow_the_transition_table() -> None:
    case = received()
    with pytest.raises(CaseRuleError) as err:
        case.change_stage(ctx(), CaseStage.EXTERNAL_SUPPORT, None)
    assert set(err.value.allowed) == {"crisis", "transitional", "close"}
    case.change_stage(ctx(), CaseStage.CRISIS, None)
    case.change_stage(ctx(), CaseStage.TRANSITIONAL, None)
    case.change_stage(ctx(), CaseStage.EXTERNAL_SUPPORT, None)
    case.change_stage(ctx(), CaseStage.CRISIS, "crises recur")
    assert case.stage is CaseStage.CRISIS
    changes = [e for e in case.collect_events() if isinstance(e, StageChanged)]
    assert [(c.from_stage, c.to_stage) for c in changes] == [
        (CaseStage.RECEPTION, CaseStage.CRISIS),
        (CaseStage.CRISIS, CaseStage.TRANSITIONAL),
        (CaseStage.TRANSITIONAL, CaseStage.EXTERNAL_SUPPORT),
        (CaseStage.EXTERNAL_SUPPORT, CaseStage.CRISIS),
    ]


@pytest.mark.parametrize("stage", list(STAGE_TRANSITIONS))
def test_closed_is_never_reached_by_a_stage_change(stage: CaseStage) -> None:
    assert CaseStage.CLOSED not in STAGE_TRANSITIONS[stage]


def test_closing_and_reopening_keeps_one_record_with_episodes() -> None:
    case = received()
    case.register_person(ctx(), adult())
    case.close(ctx(10), ClosureReason.GOALS_MET, "Thank you", 5)
    assert case.stage is CaseStage.CLOSED
    with pytest.raises(CaseRuleError) as err:
        case.assess_needs(ctx(), (), None)
    assert err.value.allowed == ["reopen"]
    with pytest.raises(CaseRuleError):
        case.change_stage(ctx(), CaseStage.CRISIS, None)
    with pytest.raises(CaseRuleError):
        case.close(ctx(), ClosureReason.OTHER, None, None)
    case.reopen(ctx(20), ReopeningReason.NEW_CRISIS, CaseStage.CRISIS, None)
    assert case.stage is CaseStage.CRISIS
    assert [e.number for e in case.episodes] == [1, 2]
    assert case.episodes[0].closure_reason is ClosureReason.GOALS_MET
    assert case.episodes[0].closed_at == NOW + timedelta(minutes=10)
    assert case.episodes[1].reopening_reason is ReopeningReason.NEW_CRISIS
    kinds = [type(e) for e in case.collect_events()]
    assert kinds[-2:] == [CaseClosed, CaseReopened]


def test_reopening_an_open_case_is_refused() -> None:
    case = received()
    with pytest.raises(CaseRuleError) as err:
        case.reopen(ctx(), ReopeningReason.NEW_CRISIS, CaseStage.CRISIS, None)
    assert "close" in err.value.allowed


def test_contact_preference_cannot_both_prefer_and_refuse_a_mode() -> None:
    case = received()
    with pytest.raises(InvalidRequestError) as err:
        case.record_contact_preference(
            ctx(), (ContactMode.PHONE, ContactMode.HOME_VISIT), (ContactMode.HOME_VISIT,), None
        )
    assert err.value.field == "refused"


def test_assigning_the_same_case_manager_twice_is_refused() -> None:
    case = received()
    case.assign_case_manager(ctx(), "caseworker-1", SWC)
    with pytest.raises(CaseRuleError):
        case.assign_case_manager(ctx(), "caseworker-1", SWC)
    case.assign_case_manager(ctx(), "caseworker-2", SWC)
    assert case.case_manager is not None
    assert case.case_manager.case_manager_id == "caseworker-2"


def test_project_rebuilds_the_same_state_from_events() -> None:
    case = received()
    case.register_person(ctx(), adult(estimated_age=15))
    case.change_stage(ctx(), CaseStage.CRISIS, None)
    events = case.collect_events()
    rebuilt = Case.project(None, events)
    assert rebuilt is not None
    assert (rebuilt.id, rebuilt.version, rebuilt.stage, rebuilt.minor, rebuilt.person) == (
        case.id,
        3,
        CaseStage.CRISIS,
        True,
        case.person,
    )
    assert isinstance(events[1], PersonRegistered)


def test_age_on_counts_birthdays() -> None:
    assert age_on(date(2010, 6, 15), date(2026, 6, 14)) == 15
    assert age_on(date(2010, 6, 15), date(2026, 6, 15)) == 16
