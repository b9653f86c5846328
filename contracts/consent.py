"""Events of the consent log: what the person allowed, refused and withdrew, and when.

The originator is a case's consent record, whose id derives from the case id
(``consent_record_id``), so any service that knows a case can find its consent history.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Annotated
from uuid import UUID, uuid5

from pydantic import AfterValidator, Field, model_validator

from contracts.envelope import KETNOI_NAMESPACE, AgencyId, AgencyRef, Event, Model
from contracts.personal import PERSONAL, Personal
from contracts.vocabulary import (
    AgencyKind,
    CaseStage,
    DataCategories,
    Purposes,
    distinct,
)

# Recipients one consent or refusal names: agencies, kinds and groups; a handful in practice.
MAX_RECIPIENTS = 20


def consent_record_id(case_id: UUID) -> UUID:
    """The id of a case's consent record (no personal data: derived from the case id)."""
    return uuid5(KETNOI_NAMESPACE, f"consent-record/{case_id}")


class RecipientGroup(StrEnum):
    """Groups of recipients a person may name at once."""

    ANY = "any"
    # "Nothing to the government of my country": the state's authorities, as opposed to the
    # state-run services (social work centre, hospital, legal aid) that help the person.
    GOVERNMENT = "government"
    LAW_ENFORCEMENT = "law_enforcement"
    FOREIGN_AUTHORITIES = "foreign_authorities"


GROUP_KINDS: dict[RecipientGroup, frozenset[AgencyKind]] = {
    RecipientGroup.ANY: frozenset(AgencyKind),
    RecipientGroup.GOVERNMENT: frozenset(
        {
            AgencyKind.POLICE,
            AgencyKind.BORDER_GUARD,
            AgencyKind.LOCAL_AUTHORITY,
            AgencyKind.CHILD_PROTECTION_AUTHORITY,
        }
    ),
    RecipientGroup.LAW_ENFORCEMENT: frozenset({AgencyKind.POLICE, AgencyKind.BORDER_GUARD}),
    RecipientGroup.FOREIGN_AUTHORITIES: frozenset({AgencyKind.FOREIGN_AUTHORITY}),
}


class Recipient(Model):
    """To whom: exactly one of a named agency, a kind of agency, or a group."""

    agency_id: AgencyId | None = None
    kind: AgencyKind | None = None
    group: RecipientGroup | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Recipient:
        named = [v for v in (self.agency_id, self.kind, self.group) if v is not None]
        if len(named) != 1:
            msg = "name exactly one of agency_id, kind or group"
            raise ValueError(msg)
        return self

    def covers(self, agency: AgencyRef) -> bool:
        if self.agency_id is not None:
            return self.agency_id == agency.agency_id
        if self.kind is not None:
            return self.kind is agency.kind
        assert self.group is not None
        return agency.kind in GROUP_KINDS[self.group]

    @property
    def specificity(self) -> int:
        if self.agency_id is not None:
            return 3
        if self.kind is not None:
            return 2
        return 0 if self.group is RecipientGroup.ANY else 1


Recipients = Annotated[
    tuple[Recipient, ...], Field(max_length=MAX_RECIPIENTS), AfterValidator(distinct)
]


class CollectionMethod(StrEnum):
    WRITTEN_FORM = "written_form"
    VERBAL_WITH_WITNESS = "verbal_with_witness"


class Collection(Model):
    """How consent was collected: informed consent is written, or verbal with a witness."""

    method: CollectionMethod
    form_reference: str | None = Field(default=None, max_length=120)
    witness_user_id: str | None = Field(default=None, max_length=120)
    language: str = Field(pattern=r"^[a-z]{2,3}$", description="language it was explained in")
    interpreter_language: str | None = Field(default=None, pattern=r"^[a-z]{2,3}$")
    withdrawal_explained: bool = Field(
        description="the person was told how to withdraw, how data is stored and how to see it"
    )

    @model_validator(mode="after")
    def _evidence(self) -> Collection:
        if self.method is CollectionMethod.WRITTEN_FORM and not self.form_reference:
            msg = "a written consent names its form_reference"
            raise ValueError(msg)
        if self.method is CollectionMethod.VERBAL_WITH_WITNESS and not self.witness_user_id:
            msg = "a verbal consent names its witness_user_id"
            raise ValueError(msg)
        return self


class GiverKind(StrEnum):
    PERSON = "person"
    GUARDIAN = "guardian"
    CHILD_PROTECTION_AUTHORITY = "child_protection_authority"


class ConsentGiver(Model):
    """Who gave the consent: the person, or for a child their guardian or the authority."""

    kind: GiverKind
    relationship: Annotated[str | None, PERSONAL] = Field(
        default=None, max_length=80, description="e.g. mother"
    )
    agency: AgencyRef | None = None


# -- facts the consent service takes from the intake log --------------------------------------


class ConsentRecordOpened(Event):
    """A case was received; its consent record exists from now on (from intake)."""

    event_type = "org.ketnoi.consent.record_opened"

    case_id: UUID
    person_id: UUID
    province: str = Field(max_length=60)
    received_at: datetime
    # The agency that received the person holds the case (absent in records opened before
    # the access policy knew holders).
    receiving_agency_id: AgencyId | None = None


class CaseManagerNoted(Event):
    """The case manager's agency holds the case from now on (from intake)."""

    event_type = "org.ketnoi.consent.case_manager_noted"

    agency_id: AgencyId


class SubjectAgeNoted(Event):
    """The person's age as intake recorded it; ``adult_on`` is when they turn 18."""

    event_type = "org.ketnoi.consent.subject_age_noted"

    person_id: UUID
    minor: bool
    adult_on: Annotated[date | None, Personal(erased=None)]
    age_is_estimated: bool


class CaseStageNoted(Event):
    """The case's stage as intake recorded it."""

    event_type = "org.ketnoi.consent.case_stage_noted"

    stage: CaseStage


# -- the person's decisions -------------------------------------------------------------------


class ConsentGranted(Event):
    """Written, informed consent: these categories, to these recipients, for these purposes,
    for this period."""

    event_type = "org.ketnoi.consent.granted"

    grant_id: UUID
    person_id: UUID
    categories: DataCategories = Field(min_length=1)
    recipients: Recipients = Field(min_length=1)
    purposes: Purposes = Field(min_length=1)
    valid_from: datetime
    valid_until: datetime
    collection: Collection
    given_by: ConsentGiver
    child_views: Annotated[str | None, PERSONAL] = Field(default=None, max_length=4000)


class ConsentRefused(Event):
    """A deny rule that overrides every grant it covers.

    Empty ``categories`` or ``purposes`` mean all of them; ``except_purposes`` carves out
    what the person still allows (e.g. "nothing to the police beyond what the criminal case
    requires" refuses police for every purpose except criminal proceedings).
    """

    event_type = "org.ketnoi.consent.refused"

    refusal_id: UUID
    person_id: UUID
    recipients: Recipients = Field(min_length=1)
    categories: DataCategories = ()
    purposes: Purposes = ()
    except_purposes: Purposes = ()
    statement: Annotated[str | None, PERSONAL] = Field(default=None, max_length=2000)


class ConsentWithdrawn(Event):
    """A grant was withdrawn; effective at once. Any agency that hears it may record it."""

    event_type = "org.ketnoi.consent.withdrawn"

    grant_id: UUID
    person_id: UUID
    heard_by: AgencyRef
    reason: Annotated[str | None, PERSONAL] = Field(default=None, max_length=2000)


class ConsentRenewed(Event):
    """A grant's period was extended with the person's renewed consent."""

    event_type = "org.ketnoi.consent.renewed"

    grant_id: UUID
    person_id: UUID
    valid_until: datetime
    collection: Collection


class RefusalLifted(Event):
    """The person lifted a refusal they had made."""

    event_type = "org.ketnoi.consent.refusal_lifted"

    refusal_id: UUID
    person_id: UUID
    collection: Collection


CONSENT_EVENTS: tuple[type[Event], ...] = (
    ConsentRecordOpened,
    SubjectAgeNoted,
    CaseStageNoted,
    ConsentGranted,
    ConsentRefused,
    ConsentWithdrawn,
    ConsentRenewed,
    RefusalLifted,
)
