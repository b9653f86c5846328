"""The agency feed's messages: what an agency reads on its Kafka topic.

Every message is a CloudEvent in Kafka's binary mode: the attributes travel as ``ce_*``
headers (:class:`CloudEventHeaders`), the key is the referral's (or handover's) id, and the
value is the JSON of a :class:`ReferralUpdate` or a :class:`HandoverUpdate`. ``ce_id`` is the
event's stable id (``Event.event_id``), the same however often the event is re-published, so
subscribers de-duplicate by it.

An update holds only what the agency may see: ids, statuses, the service asked for and
deadlines in clear; nothing personal in clear. The person's data travels only sealed
(:class:`SealedData`), in two places:

- ``disclosure.sealed``: the person's id and the released data (:class:`DisclosedData`
  once opened), to the recipient of a referral only, exactly as the disclosure recorded it;
- ``sealed_reason``: the free text of a closing step (:class:`DisclosedReason` once opened):
  why a referral was rejected, cancelled, failed or declined, a completion's outcome, a
  handover's cancellation reason. Each agency whose topic carries the message gets it sealed
  under its own key: a referral's sender and (once it was sent, as far as the consent in
  force lets it read the person's data) its recipient, a handover's parties.

Free-text notes and the reasons given for an emergency override stay out (they tend to
describe the person); read them through the referral API. Nothing personal ever goes into
keys or headers.

A sealed part is encrypted with AES-256-GCM under a key derived from the person's own data
key for the agency whose topic carries it and for the referral (or handover). The agency
fetches that key (:class:`FeedKey`) from ``GET /referral/feed/keys/{key_id}``, the key id
being the referral's (or handover's) id: a read of the person's data like any other (the
access policy decides, the read audit records it). Once the person is erased their key is
destroyed: the API answers 410 and every message ever published about them, before the
erasure too, stays ciphertext for good.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal
from uuid import UUID

from pydantic import ConfigDict, Field

from contracts.envelope import Actor, AgencyId, AgencyRef, Model
from contracts.referral import (
    MAX_HANDOVER_PARTIES,
    MAX_RELEASED_FIELDS,
    PROVINCE_MAX_LENGTH,
    DeadlineKind,
    DisclosureBasis,
    HandoverKind,
    HandoverParty,
    ReferralStatus,
    ReleasedField,
    Urgency,
    WithheldCategory,
)
from contracts.vocabulary import DataCategory, Purpose, ServiceType

SPEC_VERSION = "1.0"
SOURCE = "/ketnoi/referral"
CONTENT_TYPE = "application/json"
SEAL_ALGORITHM = "A256GCM"
FEED_KEY_PATH = "/referral/feed/keys/{key_id}"


class Audience(StrEnum):
    """Why a message is on this agency's topic."""

    SENDER = "sender"  # the agency that referred the person
    RECIPIENT = "recipient"  # the agency the referral was sent to
    PARTY = "party"  # a party to a handover (from, to or witness)


class HandoverStatus(StrEnum):
    OPEN = "open"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class CloudEventHeaders(Model):
    """The Kafka headers of every feed message (CloudEvents 1.0, Kafka binary mode).

    Header values are UTF-8 bytes on the wire; none holds personal data. Other headers
    (tracing, say) may travel beside them.
    """

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    ce_specversion: Literal["1.0"]
    ce_id: UUID = Field(description="the event's stable id: de-duplicate by it")
    ce_source: Literal["/ketnoi/referral"]
    ce_type: str = Field(
        pattern=r"^org\.ketnoi\.referral\.[a-z_]+\.v[1-9][0-9]*$",
        description="the event's type and version, e.g. org.ketnoi.referral.dispatched.v1",
    )
    ce_time: datetime = Field(description="when the event happened (RFC 3339)")
    ce_subject: UUID = Field(
        description="the referral's or handover's id (a case's, for an erasure); also the key"
    )
    content_type: Literal["application/json"] = Field(alias="content-type")


REASON_PART = "reason"


def sealed_data_aad(referral_id: UUID | str, version: int, disclosure_id: UUID | str) -> bytes:
    """The associated data of a disclosure's sealed part: ``<referral_id>/<version>/
    <disclosure_id>`` in UTF-8, all three as the message's value holds them, so a sealed part
    opens only in the message it was written for."""
    return f"{referral_id}/{version}/{disclosure_id}".encode()


def sealed_reason_aad(subject_id: UUID | str, version: int) -> bytes:
    """The associated data of a message's sealed reason: ``<id>/<version>/reason`` in UTF-8,
    the id being the referral's (``referral_id``) or the handover's (``handover_id``) and the
    version the message's, so a sealed reason opens only in the message it was written for
    (and never as a disclosure)."""
    return f"{subject_id}/{version}/{REASON_PART}".encode()


class SealedData(Model):
    """A part of a message holding the person's data, encrypted: AES-256-GCM under the key
    ``key_id`` names, of the JSON of a :class:`DisclosedData` (``disclosure.sealed``, with
    ``sealed_data_aad`` of the message as associated data) or of a :class:`DisclosedReason`
    (``sealed_reason``, with ``sealed_reason_aad``). Fetch the key from ``GET
    /referral/feed/keys/{key_id}`` with your agency's credentials: each agency gets its own."""

    key_id: str = Field(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="which key opens it: opaque, nothing personal",
    )
    alg: Literal["A256GCM"] = Field(description="AES-256-GCM with a 96-bit nonce")
    nonce: str = Field(max_length=24, description="the 12-byte nonce, base64")
    ciphertext: str = Field(
        max_length=2_000_000, description="the ciphertext with its 16-byte tag at the end, base64"
    )


class DisclosedData(Model):
    """What a :class:`SealedData` holds, once opened."""

    person_id: UUID
    data: dict[str, dict[str, Any]] = Field(
        description="the released fields by data category, as far as the recipient may read "
        "them when the message was published"
    )


class DisclosedReason(Model):
    """What a ``sealed_reason`` holds, once opened: free text that may describe the person."""

    reason: str = Field(
        max_length=2000,
        description="on a referral: why it was rejected, cancelled, failed or declined, or its "
        "outcome; on a handover: why it was cancelled",
    )


class FeedKey(Model):
    """The answer of ``GET /referral/feed/keys/{key_id}``: the key that opens what your
    agency's topic carries sealed about one referral (or handover), its sealed disclosures
    and reasons. Each agency gets its own key for the same key id. Keep it no longer than you
    keep the data it opens; after the person's erasure it is gone (410)."""

    key_id: str
    alg: Literal["A256GCM"]
    key: str = Field(description="the 256-bit key, base64")


class Disclosure(Model):
    """A disclosure to the recipient: what was released, on what basis, and (to the
    recipient only) the released data itself, sealed."""

    disclosure_id: UUID
    basis: DisclosureBasis
    purpose: Purpose
    released: tuple[ReleasedField, ...] = Field(max_length=MAX_RELEASED_FIELDS)
    flagged_for_review: bool = False
    override_id: UUID | None = None
    disclosed_at: datetime
    sealed: SealedData | None = Field(
        default=None,
        description="recipient only: the person's id and the released data, encrypted",
    )


class ReferralUpdate(Model):
    """The data of a referral message: the referral as it stands after the event."""

    referral_id: UUID
    version: int = Field(ge=1, description="the event's position in the referral's history")
    audience: Literal[Audience.SENDER, Audience.RECIPIENT]
    actor: Actor
    case_id: UUID
    province: str = Field(max_length=PROVINCE_MAX_LENGTH)
    status: ReferralStatus
    from_agency: AgencyRef
    to_agency: AgencyRef
    service_type: ServiceType
    urgency: Urgency
    purpose: Purpose
    categories: tuple[DataCategory, ...] = Field(max_length=len(DataCategory))
    acknowledge_by: datetime | None = None
    first_service_by: datetime | None = None
    sealed_reason: SealedData | None = Field(
        default=None,
        description="why it was rejected, cancelled, failed or declined, or its outcome "
        "(a DisclosedReason), sealed for this audience; none to a recipient whose consent in "
        "force lets it read none of the person's data, and none once the person is erased",
    )
    withheld: tuple[WithheldCategory, ...] = Field(
        default=(),
        max_length=len(DataCategory),
        description="the categories consent does not allow now (blocked, on hold)",
    )
    deadline: DeadlineKind | None = None
    due_at: datetime | None = None
    override_id: UUID | None = None
    disclosure: Disclosure | None = Field(
        default=None,
        description=(
            "on disclosure_recorded, and on dispatched to the recipient: the disclosure "
            "in force; data only for the recipient"
        ),
    )


class HandoverUpdate(Model):
    """The data of a handover message: the handover as it stands after the event."""

    handover_id: UUID
    version: int = Field(ge=1)
    audience: Literal[Audience.PARTY]
    actor: Actor
    case_id: UUID
    province: str = Field(max_length=PROVINCE_MAX_LENGTH)
    kind: HandoverKind
    status: HandoverStatus
    parties: tuple[HandoverParty, ...] = Field(max_length=MAX_HANDOVER_PARTIES)
    waiting_for: tuple[AgencyId, ...] = Field(
        max_length=MAX_HANDOVER_PARTIES, description="agency ids yet to confirm"
    )
    to_case_manager_id: str | None = Field(default=None, max_length=120)
    confirmed_by: AgencyId | None = Field(default=None, description="on handover_confirmed")
    waited_seconds: float | None = None
    seconds_by_party: dict[AgencyId, float] | None = Field(
        default=None, max_length=MAX_HANDOVER_PARTIES, description="on handover_completed"
    )
    sealed_reason: SealedData | None = Field(
        default=None,
        description="on handover_cancelled: why (a DisclosedReason), sealed for this party; "
        "none once the person is erased",
    )


class ErasureNotice(Model):
    """The person of a case was erased in Ketnoi: erase what you hold of them (their
    disclosures, and anything you recorded from them). Keyed by the case's id."""

    case_id: UUID
    person_id: UUID
    referral_ids: tuple[UUID, ...] = Field(
        default=(), max_length=1000, description="the case's referrals, yours among them"
    )
    erased_at: datetime
