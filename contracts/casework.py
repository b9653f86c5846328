"""Events of the intake log that case work adds to a case: the comprehensive assessments,
the exploitation and identification, and the contact log with its notes.

The originator of every event here is a case (as in ``contracts.intake``). Every event holds
``person_id`` beside the personal fields. Each assessment is the source of one data category
(``CATEGORY_OF``): what consent and the access policy decide on.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated
from uuid import UUID

from pydantic import Field

from contracts.envelope import AgencyRef, Event, Model
from contracts.intake import COUNTRY_PATTERN
from contracts.personal import PERSONAL
from contracts.vocabulary import (
    CaseStage,
    ContactMode,
    DataCategory,
    DeclineKind,
    EducationLevel,
    ExploitationTypes,
    IdentificationStatus,
    LegalNeeds,
    LivelihoodStatus,
    MeansOfControlList,
    MentalState,
    ReturnSafety,
    ReviewDecisions,
    ServiceType,
)

Country = Annotated[str, Field(pattern=COUNTRY_PATTERN)]
Text = Annotated[str, Field(min_length=1, max_length=4000)]
ShortText = Annotated[str, Field(min_length=1, max_length=1000)]
# The same, the person's data: encrypted under their key (contracts.personal).
PersonalText = Annotated[Text, PERSONAL]
PersonalShortText = Annotated[ShortText, PERSONAL]


# -- the comprehensive assessments -----------------------------------------------------------


class MedicalExamination(Model):
    """A medical examination by a health worker (seed 004: "conduct medical examinations")."""

    examined_at: datetime
    findings: PersonalText
    urgent_treatment: PersonalShortText | None = None
    follow_up_needed: bool
    follow_up: PersonalShortText | None = Field(
        default=None, description="what follow-up, where and when: needed when follow_up_needed"
    )


class MedicalExaminationRecorded(Event):
    """A medical examination was recorded: the source of the ``health`` category."""

    event_type = "org.ketnoi.intake.medical_examination_recorded"

    person_id: UUID
    examination: MedicalExamination


class PsychosocialAssessment(Model):
    """The initial mental state and psychosocial needs (seed 004: "assess the initial mental
    state"; a psychologist within 24 hours)."""

    assessed_at: datetime
    mental_state: MentalState
    psychological_support_needed: bool
    self_harm_risk: bool = False
    observations: PersonalText | None = None


class PsychosocialAssessed(Event):
    """The source of the ``psychosocial`` category."""

    event_type = "org.ketnoi.intake.psychosocial_assessed"

    person_id: UUID
    assessment: PsychosocialAssessment


class FamilySituation(Model):
    """The family and the return home: whether it is safe, and what the person wishes."""

    assessed_at: datetime
    return_safety: ReturnSafety
    wishes_to_return_home: Annotated[bool | None, PERSONAL] = None
    family_aware_of_return: Annotated[bool | None, PERSONAL] = None
    dependants: Annotated[int, PERSONAL] = Field(default=0, ge=0, le=30)
    notes: PersonalText | None = None


class FamilySituationAssessed(Event):
    """The source of the ``family`` category."""

    event_type = "org.ketnoi.intake.family_situation_assessed"

    person_id: UUID
    situation: FamilySituation


class LegalNeedsAssessment(Model):
    """Legal needs (seed 002: "legal needs assessment and support plan"): none found is an
    answer too (an empty ``needs``)."""

    assessed_at: datetime
    needs: LegalNeeds = ()
    notes: PersonalText | None = None


class LegalNeedsAssessed(Event):
    """A source of the ``legal_case`` category."""

    event_type = "org.ketnoi.intake.legal_needs_assessed"

    person_id: UUID
    assessment: LegalNeedsAssessment


class EducationLivelihood(Model):
    """Education and livelihood: where the person starts from, and what they wish for."""

    assessed_at: datetime
    education_level: Annotated[EducationLevel | None, PERSONAL] = None
    livelihood: LivelihoodStatus
    skills: Annotated[tuple[Annotated[str, Field(min_length=1, max_length=80)], ...], PERSONAL] = (
        Field(default=(), max_length=20)
    )
    wishes: PersonalShortText | None = Field(
        default=None, description="the person's own wishes: a course, a job, school"
    )


class EducationLivelihoodAssessed(Event):
    """A source of the ``needs`` category (the comprehensive needs assessment)."""

    event_type = "org.ketnoi.intake.education_livelihood_assessed"

    person_id: UUID
    assessment: EducationLivelihood


# -- exploitation and identification ----------------------------------------------------------


class Exploitation(Model):
    """What was done to the person, where and for how long, and how they were controlled.
    The words map onto the CTDC's variables (``contracts.vocabulary.CTDC_EXPLOITATION``,
    ``ctdc_means_of_control``); ``countries`` is the CTDC's CountryOfExploitation."""

    types: ExploitationTypes
    other_type: PersonalShortText | None = None
    countries: Annotated[tuple[Country, ...], PERSONAL] = Field(default=(), max_length=10)
    place: PersonalShortText | None = None
    started_on: Annotated[date | None, PERSONAL] = None
    ended_on: Annotated[date | None, PERSONAL] = None
    duration_months: Annotated[int | None, PERSONAL] = Field(default=None, ge=0, le=600)
    means_of_control: MeansOfControlList = ()
    other_means: PersonalShortText | None = None


class ExploitationRecorded(Event):
    """A source of the ``legal_case`` category; the whole set replaces the previous one."""

    event_type = "org.ketnoi.intake.exploitation_recorded"

    person_id: UUID
    exploitation: Exploitation


class IdentificationRecorded(Event):
    """Whether the person is a presumed or an identified victim, by which authority and when.
    A source of the ``legal_case`` category."""

    event_type = "org.ketnoi.intake.identification_recorded"

    person_id: UUID
    status: IdentificationStatus
    authority: AgencyRef | None = None
    decided_on: Annotated[date | None, PERSONAL] = None


# -- the contact log and case notes ---------------------------------------------------------


class ContactLogged(Event):
    """A contact with the person (a call, a message, a meeting, a visit), by the actor.
    ``against_preference``: the mode is one the person refused; then ``reason`` says why."""

    event_type = "org.ketnoi.intake.contact_logged"

    person_id: UUID
    contact_id: UUID
    mode: ContactMode
    occurred_at: datetime
    place: PersonalShortText | None = None
    note: PersonalText | None = None
    against_preference: bool = False
    reason: PersonalShortText | None = None


class CaseNoteWritten(Event):
    """A case note; ``about`` is the category of the person's data it tells, which decides
    who may read it."""

    event_type = "org.ketnoi.intake.case_note_written"

    person_id: UUID
    note_id: UUID
    about: DataCategory
    text: PersonalText


class ServiceDeclined(Event):
    """The person refused a service, or dropped one they had started: their choice (seed
    002: services are voluntary), recorded with what they were told about coming back."""

    event_type = "org.ketnoi.intake.service_declined"

    person_id: UUID
    service_type: ServiceType
    choice: DeclineKind
    referral_id: UUID | None = None
    in_their_words: PersonalShortText | None = Field(
        default=None, description="the person's reason, if they chose to give one"
    )
    how_to_come_back: PersonalShortText


# How often a case is reviewed in each stage, in days: often while the person is in crisis,
# less as they stabilise. The next review falls due this long after the last one (or after
# the reception, before any).
REVIEW_INTERVAL_DAYS: dict[CaseStage, int] = {
    CaseStage.RECEPTION: 3,
    CaseStage.CRISIS: 7,
    CaseStage.TRANSITIONAL: 30,
    CaseStage.EXTERNAL_SUPPORT: 90,
}


class CaseReviewed(Event):
    """A supervisor reviewed the case with its case manager and signed the review off: what
    they found, what they decided, and when the next review is due."""

    event_type = "org.ketnoi.intake.case_reviewed"

    person_id: UUID
    stage: CaseStage
    case_manager_id: str | None = Field(default=None, max_length=120)
    findings: PersonalText
    decisions: ReviewDecisions
    next_review_on: date


CASEWORK_EVENTS: tuple[type[Event], ...] = (
    MedicalExaminationRecorded,
    PsychosocialAssessed,
    FamilySituationAssessed,
    LegalNeedsAssessed,
    EducationLivelihoodAssessed,
    ExploitationRecorded,
    IdentificationRecorded,
    ContactLogged,
    CaseNoteWritten,
    ServiceDeclined,
    CaseReviewed,
)

# The category of the person's data each event tells (a note tells its own ``about``).
CATEGORY_OF: dict[type[Event], DataCategory] = {
    MedicalExaminationRecorded: DataCategory.HEALTH,
    PsychosocialAssessed: DataCategory.PSYCHOSOCIAL,
    FamilySituationAssessed: DataCategory.FAMILY,
    LegalNeedsAssessed: DataCategory.LEGAL_CASE,
    EducationLivelihoodAssessed: DataCategory.NEEDS,
    ExploitationRecorded: DataCategory.LEGAL_CASE,
    IdentificationRecorded: DataCategory.LEGAL_CASE,
    ContactLogged: DataCategory.CONTACT,
    ServiceDeclined: DataCategory.NEEDS,
    CaseReviewed: DataCategory.NEEDS,
}

__all__ = [
    "CASEWORK_EVENTS",
    "CATEGORY_OF",
    "REVIEW_INTERVAL_DAYS",
    "CaseNoteWritten",
    "CaseReviewed",
    "ContactLogged",
    "EducationLivelihood",
    "EducationLivelihoodAssessed",
    "Exploitation",
    "ExploitationRecorded",
    "FamilySituation",
    "FamilySituationAssessed",
    "IdentificationRecorded",
    "LegalNeedsAssessed",
    "LegalNeedsAssessment",
    "MedicalExamination",
    "MedicalExaminationRecorded",
    "PsychosocialAssessed",
    "PsychosocialAssessment",
    "ServiceDeclined",
]
