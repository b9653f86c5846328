"""Events of the referral log: referrals between agencies, handovers, and disclosures.

Three kinds of originator live here:
- a **case file**, the referral service's own copy of what intake and consent recorded about a
  case (id from ``case_file_id``), from which it decides and discloses;
- a **referral** (random id), a closed-loop request for a service, with FHIR Task status names;
- a **handover** (random id), moving responsibility for a person between agencies.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar
from uuid import UUID, uuid5

from pydantic import Field

from contracts.consent import Collection, consent_record_id
from contracts.consent_decision import Verdict
from contracts.envelope import KETNOI_NAMESPACE, Actor, AgencyId, AgencyRef, Event, Model
from contracts.personal import PERSONAL
from contracts.plan import TaskStatus
from contracts.vocabulary import DataCategories, DataCategory, DeclineKind, Purpose, ServiceType

PROVINCE_MAX_LENGTH = 60  # as intake's Place.province, which every province here comes from
# Fields one disclosure releases: a few per category (identity has about ten).
MAX_RELEASED_FIELDS = 200
# Parties to one handover: the agency handing over, the one taking over, and witnesses.
MAX_HANDOVER_PARTIES = 12
MAX_PLAN_TASKS = 60  # as a plan's (contracts.plan.MAX_TASKS)
ADULT_AGE = 18


def case_file_id_of_record(consent_record: UUID) -> UUID:
    """The case file of the case whose consent record is ``consent_record``."""
    return uuid5(KETNOI_NAMESPACE, f"referral-case-file/{consent_record}")


def case_file_id(case_id: UUID) -> UUID:
    """The id of the referral service's case file of a case (reachable from the case id and
    from its consent record's id alike)."""
    return case_file_id_of_record(consent_record_id(case_id))


class ReferralStatus(StrEnum):
    """FHIR Task status names."""

    DRAFT = "draft"  # created, waiting (see blocked_by) before it can be sent
    REQUESTED = "requested"  # sent to the recipient
    RECEIVED = "received"  # acknowledged by the recipient
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    IN_PROGRESS = "in-progress"
    ON_HOLD = "on-hold"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"


TERMINAL_STATUSES = frozenset(
    {
        ReferralStatus.REJECTED,
        ReferralStatus.COMPLETED,
        ReferralStatus.CANCELLED,
        ReferralStatus.FAILED,
    }
)


class Urgency(StrEnum):
    ROUTINE = "routine"
    URGENT = "urgent"
    EMERGENCY = "emergency"


class DeadlineKind(StrEnum):
    ACKNOWLEDGE = "acknowledge"
    FIRST_SERVICE = "first_service"


class DisclosureBasis(StrEnum):
    CONSENT = "consent"
    VITAL_INTEREST = "vital_interest"


class WithheldCategory(Model):
    category: DataCategory
    verdict: Verdict
    reason: str = Field(max_length=500)


class ReleasedField(Model):
    """One field released, and the grant that allowed it (none under a vital-interest override)."""

    category: DataCategory
    field: str = Field(max_length=80)
    grant_id: UUID | None


# -- the case file: what the referral service knows of a case ---------------------------------


class CaseFileOpened(Event):
    event_type = "org.ketnoi.referral.case_file_opened"

    case_id: UUID
    person_id: UUID
    province: str = Field(max_length=PROVINCE_MAX_LENGTH)
    # The agency that received the person holds the case (absent in files opened before the
    # access policy knew holders).
    receiving_agency_id: AgencyId | None = None


class CaseFileManagerNoted(Event):
    """The case manager's agency holds the case from now on (from intake)."""

    event_type = "org.ketnoi.referral.case_manager_noted"

    agency_id: AgencyId


class CaseFactsNoted(Event):
    """Facts of one data category as intake recorded them (replacing earlier ones)."""

    event_type = "org.ketnoi.referral.case_facts_noted"

    person_id: UUID
    category: DataCategory
    facts: Annotated[dict[str, Any], PERSONAL]


class ConsentNoted(Event):
    """A copy of one consent event, so the referral service decides on its own view."""

    event_type = "org.ketnoi.referral.consent_noted"
    # The copied event's personal fields are personal here too (contracts.personal).
    nested_events: ClassVar[dict[str, str]] = {"upstream_state": "upstream_topic"}

    person_id: UUID
    upstream_topic: str = Field(max_length=200)
    upstream_state: dict[str, Any]


class PlannedTask(Model):
    """A task of the case's reintegration plan as the referral service needs it: whose it
    is, which service it asks for, and whether it is still open."""

    task_id: UUID
    agency_id: AgencyId
    service_type: ServiceType | None = None
    status: TaskStatus


class CasePlanNoted(Event):
    """The tasks of the case's current plan (from intake), replacing the earlier ones: a
    referral may name one of them."""

    event_type = "org.ketnoi.referral.case_plan_noted"

    person_id: UUID
    tasks: tuple[PlannedTask, ...] = Field(max_length=MAX_PLAN_TASKS)


class ReferralLinked(Event):
    event_type = "org.ketnoi.referral.referral_linked"

    referral_id: UUID


# -- referrals --------------------------------------------------------------------------------


class FamilyRelationship(StrEnum):
    """How a family member referred on the person's case is related to the person."""

    PARENT = "parent"
    CHILD = "child"
    SPOUSE = "spouse"
    SIBLING = "sibling"
    GRANDPARENT = "grandparent"
    OTHER_RELATIVE = "other_relative"


class FamilyConsentGiver(StrEnum):
    FAMILY_MEMBER = "family_member"  # an adult family member, for themselves
    GUARDIAN = "guardian"  # for a family member under 18


class FamilyMemberConsent(Model):
    """The family member's own informed consent to this referral: their details go to this
    referral's recipient, for its purpose, and to no one else. Written, or verbal with a
    witness; the family member (or their guardian) was told how to withdraw it."""

    given_by: FamilyConsentGiver
    collection: Collection
    given_on: date


class FamilyMember(Model):
    """A member of the person's family referred to a service on the person's case (seed
    000). Personal data: it sits beside the case's ``person_id``, never in an id."""

    full_name: Annotated[str, PERSONAL] = Field(min_length=1, max_length=200)
    relationship: FamilyRelationship
    age: int = Field(ge=0, le=120)
    consent: FamilyMemberConsent

    @property
    def minor(self) -> bool:
        return self.age < ADULT_AGE


class ReferralCreated(Event):
    """A referral was made. ``plan_task_id``: the task of the case's plan it serves.
    ``family_member``: the referral is for a member of the person's family, on their own
    consent; ``categories`` are still the person's data it needs (it may need none)."""

    event_type = "org.ketnoi.referral.created"

    case_id: UUID
    person_id: UUID
    province: str = Field(max_length=PROVINCE_MAX_LENGTH)
    from_agency: AgencyRef
    to_agency: AgencyRef
    service_type: ServiceType
    urgency: Urgency
    purpose: Purpose
    categories: DataCategories
    note: Annotated[str | None, PERSONAL] = Field(default=None, max_length=2000)
    plan_task_id: UUID | None = None
    family_member: FamilyMember | None = None


class ReferralBlocked(Event):
    """The referral waits: the consent it needs is missing (blocked: consent)."""

    event_type = "org.ketnoi.referral.blocked"

    withheld: tuple[WithheldCategory, ...] = Field(max_length=len(DataCategory))


class DisclosureRecorded(Event):
    """Exactly what was released to the recipient, field by field, and on what basis."""

    event_type = "org.ketnoi.referral.disclosure_recorded"

    disclosure_id: UUID
    person_id: UUID
    recipient: AgencyRef
    purpose: Purpose
    basis: DisclosureBasis
    released: tuple[ReleasedField, ...] = Field(max_length=MAX_RELEASED_FIELDS)
    data: Annotated[dict[str, dict[str, Any]], PERSONAL]
    override_id: UUID | None = None
    flagged_for_review: bool = False


class ReferralDispatched(Event):
    """Sent to the recipient, with the deadlines that apply from now."""

    event_type = "org.ketnoi.referral.dispatched"

    acknowledge_by: datetime
    first_service_by: datetime


class ReferralAcknowledged(Event):
    event_type = "org.ketnoi.referral.acknowledged"


class ReferralAccepted(Event):
    event_type = "org.ketnoi.referral.accepted"

    note: Annotated[str | None, PERSONAL] = Field(default=None, max_length=2000)
    # Absent in events recorded before free text was encrypted under the person's key.
    person_id: UUID | None = None


class ReferralRejected(Event):
    event_type = "org.ketnoi.referral.rejected"

    reason: Annotated[str, PERSONAL] = Field(min_length=1, max_length=2000)
    # Absent in events recorded before free text was encrypted under the person's key.
    person_id: UUID | None = None


class ReferralStarted(Event):
    event_type = "org.ketnoi.referral.started"


class ServiceDelivery(StrEnum):
    """How much of the service was delivered, as the recipient reports at completion."""

    DELIVERED = "delivered"
    PARTIALLY_DELIVERED = "partially_delivered"
    NOT_DELIVERED = "not_delivered"


class ReferralCompleted(Event):
    event_type = "org.ketnoi.referral.completed"

    outcome: Annotated[str, PERSONAL] = Field(min_length=1, max_length=2000)
    # Absent in completions recorded before the outcome was structured.
    delivery: ServiceDelivery | None = None
    why: Annotated[str | None, PERSONAL] = Field(default=None, max_length=2000)
    # Absent in events recorded before free text was encrypted under the person's key.
    person_id: UUID | None = None


class ReferralProgressReported(Event):
    """The recipient reports how the service goes (seed 004: treatment and monitoring for
    weeks or months)."""

    event_type = "org.ketnoi.referral.progress_reported"

    note: Annotated[str, PERSONAL] = Field(min_length=1, max_length=2000)
    # Absent in events recorded before free text was encrypted under the person's key.
    person_id: UUID | None = None


class ServiceFeedbackRecorded(Event):
    """The person's own feedback on the service (seed 002), recorded by the sender."""

    event_type = "org.ketnoi.referral.service_feedback_recorded"

    satisfaction: int = Field(ge=1, le=5)
    comment: Annotated[str | None, PERSONAL] = Field(default=None, max_length=2000)
    # Absent in events recorded before free text was encrypted under the person's key.
    person_id: UUID | None = None


class ReferralCancelled(Event):
    event_type = "org.ketnoi.referral.cancelled"

    reason: Annotated[str, PERSONAL] = Field(min_length=1, max_length=2000)
    # Absent in events recorded before free text was encrypted under the person's key.
    person_id: UUID | None = None


class ReferralDeclinedByPerson(Event):
    """The person refused or dropped the service: their choice (seed 002), recorded in
    intake (``ServiceDeclined`` naming this referral, ``service_declined``). The referral
    ends (cancelled) and the recipient is told; the service stays open to them."""

    event_type = "org.ketnoi.referral.declined_by_person"

    choice: DeclineKind
    service_declined: UUID = Field(description="the intake event that recorded the choice")


class ReferralFailed(Event):
    event_type = "org.ketnoi.referral.failed"

    reason: Annotated[str, PERSONAL] = Field(min_length=1, max_length=2000)
    # Absent in events recorded before free text was encrypted under the person's key.
    person_id: UUID | None = None


class ReferralPutOnHold(Event):
    """Consent it depends on is gone; the recipient is told, and sees no data meanwhile."""

    event_type = "org.ketnoi.referral.put_on_hold"

    withheld: tuple[WithheldCategory, ...] = Field(max_length=len(DataCategory))
    resume_to: ReferralStatus


class ReferralResumed(Event):
    event_type = "org.ketnoi.referral.resumed"

    to_status: ReferralStatus


class DeadlineMissed(Event):
    """An escalation: a deadline passed without the step it asked for (appended once)."""

    event_type = "org.ketnoi.referral.deadline_missed"

    deadline: DeadlineKind
    due_at: datetime
    status: ReferralStatus


OVERRIDE_DEFAULT_HOURS = 24
OVERRIDE_MAX_HOURS = 72


class OverrideRequested(Event):
    """An emergency override (vital interest) was asked for; it needs a second approver.

    It is asked for ``needed_for_hours`` from its approval (requests recorded before the
    field existed read as the default)."""

    event_type = "org.ketnoi.referral.override_requested"

    override_id: UUID
    reason: Annotated[str, PERSONAL] = Field(min_length=10, max_length=2000)
    needed_for_hours: int = Field(
        default=OVERRIDE_DEFAULT_HOURS,
        ge=1,
        le=OVERRIDE_MAX_HOURS,
        description="how long the override is needed, from its approval",
    )
    # Absent in events recorded before free text was encrypted under the person's key.
    person_id: UUID | None = None


class OverrideApproved(Event):
    """A second person, in another role, approved the override; it is flagged for review."""

    event_type = "org.ketnoi.referral.override_approved"

    override_id: UUID


class OverrideConclusion(StrEnum):
    JUSTIFIED = "justified"  # the vital interest warranted it
    NOT_JUSTIFIED = "not_justified"  # it should not have been approved


class OverrideReviewed(Event):
    """Someone in a third role reviewed an approved override; from now on it no longer
    counts, and the referral follows the consent in force."""

    event_type = "org.ketnoi.referral.override_reviewed"

    override_id: UUID
    conclusion: OverrideConclusion
    note: Annotated[str, PERSONAL] = Field(min_length=10, max_length=2000)
    # Absent in events recorded before free text was encrypted under the person's key.
    person_id: UUID | None = None


class OverrideLapsed(Event):
    """An override reached the end it was asked for (``ended_at``) without a review; from
    then on the referral follows the consent in force. Recorded when it was noticed."""

    event_type = "org.ketnoi.referral.override_lapsed"

    override_id: UUID
    ended_at: datetime


class WithdrawalNotedDuringOverride(Event):
    """Consent the referral needs was withdrawn (or refused) while an override was in force:
    the referral stays as the override left it, and this tells the override's approver."""

    event_type = "org.ketnoi.referral.withdrawal_noted_during_override"

    override_id: UUID
    approved_by: Actor
    withheld: tuple[WithheldCategory, ...]


# -- handovers --------------------------------------------------------------------------------


class HandoverKind(StrEnum):
    RECEPTION = "reception"  # e.g. foreign authority -> border guard -> social work centre
    CASE_TRANSFER = "case_transfer"  # to another case manager or agency


class PartyRole(StrEnum):
    FROM = "from"
    TO = "to"
    WITNESS = "witness"


class HandoverParty(Model):
    agency: AgencyRef
    role: PartyRole
    capacity: str = Field(min_length=1, max_length=120)


class HandoverStarted(Event):
    event_type = "org.ketnoi.referral.handover_started"

    case_id: UUID
    province: str = Field(max_length=PROVINCE_MAX_LENGTH)
    kind: HandoverKind
    parties: tuple[HandoverParty, ...] = Field(max_length=MAX_HANDOVER_PARTIES)
    to_case_manager_id: str | None = Field(default=None, max_length=120)
    # Absent in handovers started before free text was encrypted under the person's key.
    person_id: UUID | None = None


class HandoverConfirmed(Event):
    """One party confirmed; ``waited_seconds`` since the handover started."""

    event_type = "org.ketnoi.referral.handover_confirmed"

    agency_id: AgencyId
    waited_seconds: float


class HandoverCompleted(Event):
    """Every party confirmed: responsibility has moved."""

    event_type = "org.ketnoi.referral.handover_completed"

    seconds_by_party: dict[str, float]


class HandoverCancelled(Event):
    event_type = "org.ketnoi.referral.handover_cancelled"

    reason: Annotated[str, PERSONAL] = Field(min_length=1, max_length=2000)
    # Absent in events recorded before free text was encrypted under the person's key.
    person_id: UUID | None = None


REFERRAL_EVENTS: tuple[type[Event], ...] = (
    ReferralCreated,
    ReferralBlocked,
    DisclosureRecorded,
    ReferralDispatched,
    ReferralAcknowledged,
    ReferralAccepted,
    ReferralRejected,
    ReferralStarted,
    ReferralCompleted,
    ReferralCancelled,
    ReferralDeclinedByPerson,
    ReferralFailed,
    ReferralPutOnHold,
    ReferralResumed,
    DeadlineMissed,
    ReferralProgressReported,
    ServiceFeedbackRecorded,
    OverrideRequested,
    OverrideApproved,
    OverrideReviewed,
    OverrideLapsed,
    WithdrawalNotedDuringOverride,
)
HANDOVER_EVENTS: tuple[type[Event], ...] = (
    HandoverStarted,
    HandoverConfirmed,
    HandoverCompleted,
    HandoverCancelled,
)
