"""The rules of case work on a case (services/intake/casework.py), with no I/O: the
assessments, exploitation and identification, the contact log and notes; and the facts each
gives the referral service, category by category."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest

from contracts.casework import (
    CaseNoteWritten,
    ContactLogged,
    EducationLivelihood,
    Exploitation,
    FamilySituation,
    LegalNeedsAssessment,
    MedicalExamination,
    MedicalExaminationRecorded,
    PsychosocialAssessment,
)
from contracts.envelope import Actor, AgencyRef
from contracts.intake import Place
from contracts.vocabulary import (
    CTDC_EXPLOITATION,
    AgencyKind,
    ArrivalRoute,
    ClosureReason,
    ContactMode,
    DataCategory,
    DeclineKind,
    ExploitationType,
    IdentificationStatus,
    LegalNeed,
    LivelihoodStatus,
    MeansOfControl,
    MentalState,
    ReturnSafety,
    Role,
    ServiceType,
    ctdc_means_of_control,
)
from services.intake.casework import CaseWorkRuleError
from services.intake.domain import Case, CaseRuleError
from services.referral.application import facts_of
from services.referral.domain import CaseFile
from services.runtime.aggregate import CommandContext
from services.runtime.errors import InvalidRequestError

NOW = datetime(2026, 3, 1, 10, 30, tzinfo=UTC)
POLICE = AgencyRef(agency_id="dong-thap-police", kind=AgencyKind.POLICE)
DOCTOR = Actor(user_id="doctor-1", agency_id="dong-thap-swc", role=Role.HEALTH_WORKER)
MANAGER = Actor(user_id="manager-1", agency_id="dong-thap-swc", role=Role.CASE_MANAGER)


def ctx(actor: Actor = MANAGER, minutes: int = 0) -> CommandContext:
    return CommandContext(actor=actor, at=NOW + timedelta(minutes=minutes))


def case() -> Case:
    c = Case.record_reception(
        ctx(),
        route=ArrivalRoute.RESCUED,
        received_at=NOW - timedelta(hours=2),
        place=Place(province="dong-thap"),
        receiving_agency=POLICE,
    )
    c.collect_events()
    return c


def exam(**overrides: Any) -> MedicalExamination:
    fields: dict[str, Any] = {
        "examined_at": NOW - timedelta(hours=1),
        "findings": "Bruised ribs; dehydration.",
        "urgent_treatment": "Rehydration",
        "follow_up_needed": True,
        "follow_up": "X-ray at the provincial hospital within a week",
    }
    fields.update(overrides)
    return MedicalExamination(**fields)


def exploitation(**overrides: Any) -> Exploitation:
    fields: dict[str, Any] = {
        "types": (ExploitationType.FORCED_LABOUR, ExploitationType.SEXUAL),
        "countries": ("KH",),
        "started_on": date(2025, 6, 1),
        "ended_on": date(2026, 2, 20),
        "means_of_control": (MeansOfControl.DEBT_BONDAGE, MeansOfControl.WITHHOLDS_DOCUMENTS),
    }
    fields.update(overrides)
    return Exploitation(**fields)


# -- the assessments ---------------------------------------------------------------------------


def test_a_medical_examination_is_recorded_whole() -> None:
    c = case()
    c.record_medical_examination(ctx(DOCTOR), exam())
    [event] = c.collect_events()
    assert isinstance(event, MedicalExaminationRecorded)
    assert event.person_id == c.person_id
    assert event.actor == DOCTOR
    assert c.medical == exam()


def test_a_follow_up_is_said_exactly_when_it_is_needed() -> None:
    c = case()
    with pytest.raises(InvalidRequestError, match="follow-up"):
        c.record_medical_examination(ctx(DOCTOR), exam(follow_up=None))
    with pytest.raises(InvalidRequestError, match="follow_up_needed"):
        c.record_medical_examination(ctx(DOCTOR), exam(follow_up_needed=False))
    c.record_medical_examination(ctx(DOCTOR), exam(follow_up_needed=False, follow_up=None))
    assert c.medical is not None
    assert not c.medical.follow_up_needed


def test_an_examination_in_the_future_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match="future"):
        case().record_medical_examination(ctx(DOCTOR), exam(examined_at=NOW + timedelta(hours=1)))


def test_an_acute_crisis_needs_psychological_support() -> None:
    c = case()
    crisis = PsychosocialAssessment(
        assessed_at=NOW,
        mental_state=MentalState.ACUTE_CRISIS,
        psychological_support_needed=False,
    )
    with pytest.raises(InvalidRequestError, match="psychological support"):
        c.assess_psychosocial(ctx(), crisis)
    self_harm = crisis.model_copy(
        update={"mental_state": MentalState.ANXIOUS, "self_harm_risk": True}
    )
    with pytest.raises(InvalidRequestError):
        c.assess_psychosocial(ctx(), self_harm)
    c.assess_psychosocial(ctx(), crisis.model_copy(update={"psychological_support_needed": True}))
    assert c.psychosocial is not None
    assert c.psychosocial.mental_state is MentalState.ACUTE_CRISIS


def test_assessments_on_a_closed_case_wait_for_its_reopening() -> None:
    c = case()
    c.close(ctx(), ClosureReason.GOALS_MET, None, None)
    family = FamilySituation(assessed_at=NOW, return_safety=ReturnSafety.SAFE)
    with pytest.raises(CaseRuleError, match="reopen"):
        c.assess_family(ctx(), family)
    with pytest.raises(CaseRuleError, match="reopen"):
        c.record_medical_examination(ctx(DOCTOR), exam())


def test_the_latest_assessment_of_each_kind_stands() -> None:
    c = case()
    c.assess_legal_needs(ctx(), LegalNeedsAssessment(assessed_at=NOW, needs=()))
    c.assess_legal_needs(
        ctx(), LegalNeedsAssessment(assessed_at=NOW, needs=(LegalNeed.CRIMINAL_CASE,))
    )
    c.assess_livelihood(
        ctx(), EducationLivelihood(assessed_at=NOW, livelihood=LivelihoodStatus.UNEMPLOYED)
    )
    assert c.legal_needs is not None
    assert c.legal_needs.needs == (LegalNeed.CRIMINAL_CASE,)
    assert c.livelihood is not None
    assert c.livelihood.livelihood is LivelihoodStatus.UNEMPLOYED


# -- exploitation and identification -----------------------------------------------------------


def test_several_types_of_exploitation_at_once() -> None:
    c = case()
    c.record_exploitation(ctx(), exploitation())
    assert c.exploitation is not None
    assert set(c.exploitation.types) == {ExploitationType.FORCED_LABOUR, ExploitationType.SEXUAL}
    with pytest.raises(CaseWorkRuleError, match="already recorded"):
        c.record_exploitation(ctx(), exploitation())


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"types": (ExploitationType.OTHER,)}, "other_type"),
        ({"other_type": "begging"}, "other_type"),
        ({"means_of_control": (MeansOfControl.OTHER,)}, "other_means"),
        ({"ended_on": date(2025, 5, 1)}, "ended_on"),
        ({"started_on": date(2026, 3, 2), "ended_on": None}, "started_on"),
    ],
)
def test_exploitation_is_refused_naming_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        case().record_exploitation(ctx(), exploitation(**overrides))
    assert refused.value.extensions["errors"][0]["field"] == field


def test_every_type_and_means_has_its_ctdc_name() -> None:
    assert set(CTDC_EXPLOITATION) == set(ExploitationType)
    assert CTDC_EXPLOITATION[ExploitationType.FORCED_LABOUR] == "isForcedLabour"
    assert ctdc_means_of_control(MeansOfControl.DEBT_BONDAGE) == "meansOfControlDebtBondage"
    names = {ctdc_means_of_control(m) for m in MeansOfControl}
    assert len(names) == len(MeansOfControl)


def test_identification_by_an_authority_names_it_and_its_date() -> None:
    c = case()
    c.record_identification(ctx(), IdentificationStatus.PRESUMED, None, None)
    with pytest.raises(InvalidRequestError, match="authority"):
        c.record_identification(ctx(), IdentificationStatus.IDENTIFIED, None, date(2026, 3, 1))
    with pytest.raises(InvalidRequestError, match="date"):
        c.record_identification(ctx(), IdentificationStatus.IDENTIFIED, POLICE, None)
    with pytest.raises(InvalidRequestError, match="future"):
        c.record_identification(ctx(), IdentificationStatus.IDENTIFIED, POLICE, date(2026, 3, 5))
    c.record_identification(ctx(), IdentificationStatus.IDENTIFIED, POLICE, date(2026, 3, 1))
    assert c.identification is not None
    assert c.identification.authority == POLICE


def test_a_presumed_victim_has_no_decision_and_a_decision_is_not_undone() -> None:
    c = case()
    with pytest.raises(InvalidRequestError):
        c.record_identification(ctx(), IdentificationStatus.PRESUMED, POLICE, None)
    c.record_identification(ctx(), IdentificationStatus.IDENTIFIED, POLICE, date(2026, 3, 1))
    with pytest.raises(CaseWorkRuleError, match="only another decision"):
        c.record_identification(ctx(), IdentificationStatus.PRESUMED, None, None)
    c.record_identification(ctx(), IdentificationStatus.NOT_IDENTIFIED, POLICE, date(2026, 3, 1))


# -- the contact log -----------------------------------------------------------------------


def test_a_contact_as_the_person_prefers_respects_their_wish() -> None:
    c = case()
    c.record_contact_preference(ctx(), (ContactMode.PHONE,), (ContactMode.HOME_VISIT,), None)
    c.collect_events()
    contact_id = c.log_contact(
        ctx(), mode=ContactMode.PHONE, occurred_at=NOW, place=None, note="Doing well", reason=None
    )
    [event] = c.collect_events()
    assert isinstance(event, ContactLogged)
    assert event.contact_id == contact_id
    assert not event.against_preference
    assert event.actor == MANAGER


def test_a_home_visit_to_a_person_who_refused_them_needs_a_reason() -> None:
    c = case()
    c.record_contact_preference(ctx(), (ContactMode.PHONE,), (ContactMode.HOME_VISIT,), None)
    with pytest.raises(CaseWorkRuleError, match="refused contact by home_visit") as refused:
        c.log_contact(
            ctx(), mode=ContactMode.HOME_VISIT, occurred_at=NOW, place="v", note=None, reason=None
        )
    assert refused.value.allowed == ["phone"]
    with pytest.raises(CaseWorkRuleError):
        c.log_contact(
            ctx(), mode=ContactMode.HOME_VISIT, occurred_at=NOW, place=None, note=None, reason=" "
        )
    c.collect_events()
    c.log_contact(
        ctx(),
        mode=ContactMode.HOME_VISIT,
        occurred_at=NOW,
        place=None,
        note=None,
        reason="Phone unreachable for 3 weeks; a risk of re-trafficking was reported.",
    )
    [event] = c.collect_events()
    assert isinstance(event, ContactLogged)
    assert event.against_preference


def test_a_reason_is_asked_only_for_a_refused_mode() -> None:
    c = case()
    with pytest.raises(InvalidRequestError, match="reason"):
        c.log_contact(
            ctx(), mode=ContactMode.PHONE, occurred_at=NOW, place=None, note=None, reason="why"
        )


def test_contacts_and_notes_go_on_after_closure() -> None:
    c = case()
    c.close(ctx(), ClosureReason.GOALS_MET, None, None)
    c.log_contact(
        ctx(), mode=ContactMode.PHONE, occurred_at=NOW, place=None, note=None, reason=None
    )
    c.write_note(ctx(), DataCategory.PSYCHOSOCIAL, "Settled in the new job.")
    assert len(c.contacts) == 1
    assert [n.about for n in c.notes] == [DataCategory.PSYCHOSOCIAL]
    assert isinstance(c.collect_events()[-1], CaseNoteWritten)


# -- the facts each gives the referral service -------------------------------------------------


def test_the_medical_examination_is_the_health_category_and_only_it() -> None:
    c = case()
    c.record_medical_examination(ctx(DOCTOR), exam())
    c.assess_psychosocial(
        ctx(),
        PsychosocialAssessment(
            assessed_at=NOW, mental_state=MentalState.STABLE, psychological_support_needed=False
        ),
    )
    medical, psychosocial = c.collect_events()
    assert facts_of(medical) == [(DataCategory.HEALTH, exam().model_dump(mode="json"))]
    [(category, facts)] = facts_of(psychosocial)
    assert category is DataCategory.PSYCHOSOCIAL
    assert "findings" not in facts


def test_a_category_gathered_from_several_events_keeps_each_ones_fields() -> None:
    c = case()
    c.assess_legal_needs(
        ctx(), LegalNeedsAssessment(assessed_at=NOW, needs=(LegalNeed.COMPENSATION,))
    )
    c.record_exploitation(ctx(), exploitation())
    c.record_identification(ctx(), IdentificationStatus.IDENTIFIED, POLICE, date(2026, 3, 1))
    c.assess_legal_needs(ctx(), LegalNeedsAssessment(assessed_at=NOW, needs=()))
    file = CaseFile(uuid4())
    for event in c.collect_events():
        for category, facts in facts_of(event):
            file.note_facts(ctx(), category, facts)
    legal = file.facts[DataCategory.LEGAL_CASE]
    assert legal["legal_needs_needs"] == []  # the later assessment replaced its own fields
    assert legal["exploitation_types"] == ["forced_labour", "sexual"]
    assert legal["identification_status"] == "identified"
    assert legal["identification_authority"] == "dong-thap-police"
    assert DataCategory.HEALTH not in file.facts


def test_a_service_refused_or_dropped_is_the_persons_choice_with_a_way_back() -> None:
    c = case()
    with pytest.raises(InvalidRequestError, match="how to come back"):
        c.record_declined(
            ctx(), ServiceType.VOCATIONAL_TRAINING, DeclineKind.DROPPED, None, None, " "
        )
    c.close(ctx(), ClosureReason.PERSON_DECLINED_FURTHER_SUPPORT, None, None)
    c.record_declined(
        ctx(),
        ServiceType.FOLLOW_UP,
        DeclineKind.REFUSED,
        None,
        "I want to be left alone for now",
        "Call 111 or the centre; we will pick up where we left off.",
    )
    [declined] = c.declined
    assert declined.choice is DeclineKind.REFUSED
    assert declined.in_their_words == "I want to be left alone for now"
