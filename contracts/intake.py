"""Events of the intake log: the life of a case from reception to closure and reopening.

The originator of every event here is a case. Fields that hold personal data sit only in
events that also carry ``person_id`` and are marked ``PERSONAL`` (``contracts.personal``): the
event store encrypts them under that person's key.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated
from uuid import UUID, uuid5

from pydantic import Field

from contracts.envelope import KETNOI_NAMESPACE, AgencyRef, Event, Model
from contracts.personal import PERSONAL, Personal
from contracts.vocabulary import (
    ArrivalRoute,
    CaseStage,
    ClosureReason,
    ContactModes,
    IdentityDocumentStatus,
    ReopeningReason,
    RiskLevel,
    RiskSubjects,
    Sex,
    UrgentNeeds,
)

PROVINCE_PATTERN = r"^[a-z][a-z0-9-]*$"
COUNTRY_PATTERN = r"^[A-Z]{2}$"  # ISO 3166-1 alpha-2
LANGUAGE_PATTERN = r"^[a-z]{2,3}$"  # ISO 639
# Agencies present at one reception or handover: police, border guard, social workers,
# local officers, a psychologist, an interpreter... never dozens.
MAX_PARTIES_PRESENT = 30

LanguageCode = Annotated[str, Field(pattern=LANGUAGE_PATTERN)]


class Place(Model):
    """Where the reception happened. ``province`` scopes who may see the case."""

    province: str = Field(min_length=2, max_length=60, pattern=PROVINCE_PATTERN)
    district: str | None = Field(default=None, max_length=80)
    location: Annotated[str | None, PERSONAL] = Field(default=None, max_length=200)


class PartyPresent(Model):
    """An agency present at a reception or handover, and in what capacity."""

    agency: AgencyRef
    capacity: str = Field(min_length=1, max_length=120)


class ReceptionRecorded(Event):
    """A person was received (tiếp nhận); the case begins here."""

    event_type = "org.ketnoi.intake.reception_recorded"

    person_id: UUID
    route: ArrivalRoute
    received_at: datetime
    place: Place
    receiving_agency: AgencyRef
    handed_over_by: AgencyRef | None = None
    returned_from_country: Annotated[str | None, PERSONAL] = Field(
        default=None, pattern=COUNTRY_PATTERN
    )
    present: tuple[PartyPresent, ...] = Field(default=(), max_length=MAX_PARTIES_PRESENT)


class PersonDetails(Model):
    """Who the person is, as far as they choose to tell."""

    full_name: Annotated[str, PERSONAL] = Field(min_length=1, max_length=200)
    sex: Annotated[Sex, Personal(erased=Sex.NOT_STATED)]
    date_of_birth: Annotated[date | None, PERSONAL] = None
    estimated_age: Annotated[int | None, PERSONAL] = Field(default=None, ge=0, le=120)
    nationality: Annotated[str | None, PERSONAL] = Field(default=None, pattern=COUNTRY_PATTERN)
    languages: Annotated[tuple[LanguageCode, ...], PERSONAL] = Field(default=(), max_length=10)
    identity_document_status: Annotated[IdentityDocumentStatus, PERSONAL] = (
        IdentityDocumentStatus.UNKNOWN
    )


class PersonRegistered(Event):
    """The person's details were recorded; ``minor`` is judged at the reception date."""

    event_type = "org.ketnoi.intake.person_registered"

    person_id: UUID
    details: PersonDetails
    minor: bool


class PersonDetailsCorrected(Event):
    """The person's details were corrected; the whole set replaces the previous one."""

    event_type = "org.ketnoi.intake.person_details_corrected"

    person_id: UUID
    details: PersonDetails
    minor: bool


class RapidNeedsAssessed(Event):
    """The rapid needs assessment made on the spot."""

    event_type = "org.ketnoi.intake.rapid_needs_assessed"

    person_id: UUID
    needs: UrgentNeeds
    notes: Annotated[str | None, PERSONAL] = Field(default=None, max_length=2000)


class RiskAssessed(Event):
    """A risk assessment, with a plan to manage the risk."""

    event_type = "org.ketnoi.intake.risk_assessed"

    person_id: UUID
    level: RiskLevel
    at_risk: RiskSubjects
    management_plan: Annotated[str, PERSONAL] = Field(min_length=1, max_length=4000)


class ContactPreferenceRecorded(Event):
    """How the person wants to be contacted, and how not; every agency must respect it."""

    event_type = "org.ketnoi.intake.contact_preference_recorded"

    person_id: UUID
    preferred: ContactModes
    refused: ContactModes = ()
    note: Annotated[str | None, PERSONAL] = Field(default=None, max_length=1000)


class CaseManagerAssigned(Event):
    """A social worker now owns the case: assigned, or named by a completed case transfer
    (``handover_id``, a handover of the referral log)."""

    event_type = "org.ketnoi.intake.case_manager_assigned"

    case_manager_id: str = Field(min_length=1, max_length=120)
    agency: AgencyRef
    handover_id: UUID | None = Field(
        default=None, description="the completed case transfer that made the assignment"
    )


class StageChanged(Event):
    """The case moved to another stage."""

    event_type = "org.ketnoi.intake.stage_changed"

    from_stage: CaseStage
    to_stage: CaseStage
    reason: Annotated[str | None, PERSONAL] = Field(default=None, max_length=1000)
    # Absent in changes recorded before the reason was encrypted under the person's key.
    person_id: UUID | None = None


class CaseClosed(Event):
    """The case was closed, with the reason and the person's own feedback."""

    event_type = "org.ketnoi.intake.case_closed"

    person_id: UUID
    from_stage: CaseStage
    reason: ClosureReason
    feedback: Annotated[str | None, PERSONAL] = Field(default=None, max_length=4000)
    satisfaction: int | None = Field(default=None, ge=1, le=5)


class CaseReopened(Event):
    """A closed case was reopened as a new episode of the same continuous record."""

    event_type = "org.ketnoi.intake.case_reopened"

    episode: int = Field(ge=2)
    reason: ReopeningReason
    to_stage: CaseStage
    note: Annotated[str | None, PERSONAL] = Field(default=None, max_length=1000)
    # Absent in reopenings recorded before the note was encrypted under the person's key.
    person_id: UUID | None = None


def transfer_id(handover_id: UUID) -> UUID:
    """The id of intake's note of a case transfer (derived from the handover's id)."""
    return uuid5(KETNOI_NAMESPACE, f"intake-transfer/{handover_id}")


class CaseTransferAwaited(Event):
    """A case transfer started in the referral log (``HandoverStarted`` of kind
    ``case_transfer``): when every party has confirmed it, the case manager it names takes
    the case over. The originator is the transfer (``transfer_id``), not the case; nothing
    here is personal data."""

    event_type = "org.ketnoi.intake.case_transfer_awaited"

    case_id: UUID
    handover_id: UUID
    to_agency: AgencyRef
    to_case_manager_id: str = Field(min_length=1, max_length=120)


# Events of the intake log whose originator is not a case.
TRANSFER_EVENTS: tuple[type[Event], ...] = (CaseTransferAwaited,)

INTAKE_EVENTS: tuple[type[Event], ...] = (
    ReceptionRecorded,
    PersonRegistered,
    PersonDetailsCorrected,
    RapidNeedsAssessed,
    RiskAssessed,
    ContactPreferenceRecorded,
    CaseManagerAssigned,
    StageChanged,
    CaseClosed,
    CaseReopened,
)

__all__ = [
    "INTAKE_EVENTS",
    "TRANSFER_EVENTS",
    "CaseClosed",
    "CaseManagerAssigned",
    "CaseReopened",
    "CaseTransferAwaited",
    "ContactPreferenceRecorded",
    "PartyPresent",
    "PersonDetails",
    "PersonDetailsCorrected",
    "PersonRegistered",
    "Place",
    "RapidNeedsAssessed",
    "ReceptionRecorded",
    "RiskAssessed",
    "StageChanged",
    "transfer_id",
]
