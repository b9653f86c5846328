"""Events of forgetting a person: the request, the erasure itself, and the retention proposal.

The originator of the intake events here is the case. Erasure destroys the person's data key
(``contracts.personal``): every personal field of every event about them, in every log, then
reads as its erased value, while the logs and their seal stay whole. None of these events
holds personal data: ids, the agencies and people who acted, and a reason from a closed list.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from uuid import UUID

from pydantic import Field

from contracts.envelope import Actor, AgencyId, Event


class ErasureReason(StrEnum):
    """Why a person's data is erased."""

    PERSON_REQUEST = "person_request"  # the person asked to be forgotten
    RETENTION_ENDED = "retention_ended"  # the retention period after closure ran out
    LEGAL_OBLIGATION = "legal_obligation"  # a court or the law requires it


class ErasureRequested(Event):
    """Someone asked for the person's data to be erased; a second person must approve."""

    event_type = "org.ketnoi.intake.erasure_requested"

    request_id: UUID
    reason: ErasureReason


class PersonErased(Event):
    """The person's data key was destroyed: nothing personal about them reads any more.

    ``requested_by`` asked, the envelope's ``actor`` approved (another person)."""

    event_type = "org.ketnoi.intake.person_erased"

    person_id: UUID
    request_id: UUID
    reason: ErasureReason
    requested_by: Actor


class ErasureProposed(Event):
    """The case has been closed for the retention period: its agency is asked to erase it."""

    event_type = "org.ketnoi.intake.erasure_proposed"

    closed_at: datetime
    retention_days: int = Field(ge=1)


class CaseFileErased(Event):
    """The referral service's record of an erasure (from intake): the agencies that its feed
    told about the case, each told on its topic to erase what it holds of the person."""

    event_type = "org.ketnoi.referral.person_erased"

    case_id: UUID
    person_id: UUID
    referral_ids: tuple[UUID, ...] = Field(default=(), max_length=1000)
    notify: tuple[AgencyId, ...] = Field(default=(), max_length=200)


ERASURE_EVENTS: tuple[type[Event], ...] = (ErasureRequested, PersonErased, ErasureProposed)

__all__ = [
    "ERASURE_EVENTS",
    "CaseFileErased",
    "ErasureProposed",
    "ErasureReason",
    "ErasureRequested",
    "PersonErased",
]
