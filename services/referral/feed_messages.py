"""Which agencies an event of the referral log concerns, and what each of them may read.

Rules (DESIGN.md, "The agency feed"):
- a referral's events go to the sending agency and, once the referral has been dispatched,
  to the recipient; the recipient never hears of a draft or blocked referral;
- a handover's events go to every party;
- personal data goes only to a referral's recipient, only as a disclosure recorded it: in the
  dispatch (the disclosure it was sent with) and in later disclosures. A referral put on hold
  shows nothing more until a new disclosure.

The state an event is judged in is the referral (or handover) rebuilt from the log up to that
event, so re-publishing any stretch of the log gives the same messages.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal
from uuid import UUID

from eventsourcing.persistence import ApplicationRecorder, Mapper

from contracts.envelope import Event
from contracts.feed import (
    CONTENT_TYPE,
    SOURCE,
    SPEC_VERSION,
    Audience,
    Disclosure,
    HandoverStatus,
    HandoverUpdate,
    ReferralUpdate,
)
from contracts.referral import (
    HANDOVER_EVENTS,
    REFERRAL_EVENTS,
    DeadlineMissed,
    DisclosureRecorded,
    HandoverCancelled,
    HandoverCompleted,
    HandoverConfirmed,
    OverrideApproved,
    OverrideRequested,
    ReferralCancelled,
    ReferralCompleted,
    ReferralDispatched,
    ReferralFailed,
    ReferralRejected,
)
from services.referral.domain import Handover, Referral
from services.runtime.aggregate import Aggregate
from services.runtime.persistence import decode_stored

FEED_EVENTS: tuple[type[Event], ...] = (*REFERRAL_EVENTS, *HANDOVER_EVENTS)
_REFERRAL_TYPES = frozenset(REFERRAL_EVENTS)
_HANDOVER_TYPES = frozenset(HANDOVER_EVENTS)

Headers = list[tuple[str, bytes]]
ReferralAudience = Literal[Audience.SENDER, Audience.RECIPIENT]


@dataclass(frozen=True)
class FeedMessage:
    """One message for one agency: key, CloudEvents headers and JSON value, all bytes."""

    agency_id: str
    event_id: UUID
    key: bytes
    headers: Headers
    value: bytes


def cloud_event_headers(event: Event, event_id: UUID) -> Headers:
    """The ``ce_*`` headers of an event's messages: ids, type and time, nothing personal."""
    return [
        ("ce_specversion", SPEC_VERSION.encode()),
        ("ce_id", str(event_id).encode()),
        ("ce_source", SOURCE.encode()),
        ("ce_type", type(event).topic().encode()),
        ("ce_time", event.timestamp.isoformat().encode()),
        ("ce_subject", str(event.originator_id).encode()),
        ("content-type", CONTENT_TYPE.encode()),
    ]


class FeedView:
    """Turns events of the referral log into feed messages.

    Keeps the referrals and handovers it has seen (up to ``cache_size``, least recently used
    first out) and rebuilds one from the log whenever its copy is not exactly one event
    behind, as after a restart or when a failed batch is read again.
    """

    def __init__(self, recorder: ApplicationRecorder, mapper: Mapper[UUID], cache_size: int):
        self.recorder = recorder
        self.mapper = mapper
        self.cache_size = cache_size
        self._cache: OrderedDict[UUID, Aggregate] = OrderedDict()
        self.rebuilt = 0

    def messages_for(self, event: Event) -> list[FeedMessage]:
        if type(event) in _REFERRAL_TYPES:
            referral = self._state_after(event, Referral)
            assert isinstance(referral, Referral)
            return _referral_messages(referral, event)
        if type(event) in _HANDOVER_TYPES:
            handover = self._state_after(event, Handover)
            assert isinstance(handover, Handover)
            return _handover_messages(handover, event)
        return []

    def _state_after(self, event: Event, kind: type[Referral] | type[Handover]) -> Aggregate:
        key = event.originator_id
        state = self._cache.pop(key, None)
        if event.originator_version == 1:
            state = kind(key)  # its first event: nothing to read
            state.apply(event)
        elif state is not None and state.version == event.originator_version - 1:
            state.apply(event)
        else:
            self.rebuilt += 1
            stored = self.recorder.select_events(key, lte=event.originator_version)
            state = kind.project(None, (decode_stored(self.mapper, s) for s in stored))
            if state is None or state.version != event.originator_version:
                msg = f"the log does not hold {key} up to version {event.originator_version}"
                raise LookupError(msg)
        self._cache[key] = state
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return state


def _referral_messages(referral: Referral, event: Event) -> list[FeedMessage]:
    spec = referral.spec
    audiences: list[tuple[str, ReferralAudience]] = [(spec.from_agency.agency_id, Audience.SENDER)]
    if referral.dispatched_at is not None:
        audiences.append((spec.to_agency.agency_id, Audience.RECIPIENT))
    event_id = event.event_id
    headers = cloud_event_headers(event, event_id)
    key = str(referral.id).encode()
    return [
        FeedMessage(
            agency_id=agency_id,
            event_id=event_id,
            key=key,
            headers=headers,
            value=referral_update(referral, event, audience).model_dump_json().encode(),
        )
        for agency_id, audience in audiences
    ]


def referral_update(referral: Referral, event: Event, audience: ReferralAudience) -> ReferralUpdate:
    """What ``audience`` may read of ``referral`` after ``event``."""
    spec = referral.spec
    reason: str | None = None
    if isinstance(event, ReferralRejected | ReferralCancelled | ReferralFailed):
        reason = event.reason
    elif isinstance(event, ReferralCompleted):
        reason = event.outcome
    disclosed: DisclosureRecorded | None = None
    if isinstance(event, DisclosureRecorded):
        disclosed = event
    elif isinstance(event, ReferralDispatched):
        disclosed = referral.disclosure
    return ReferralUpdate(
        referral_id=referral.id,
        version=event.originator_version,
        audience=audience,
        actor=event.actor,
        case_id=spec.case_id,
        province=spec.province,
        status=referral.status,
        from_agency=spec.from_agency,
        to_agency=spec.to_agency,
        service_type=spec.service_type,
        urgency=spec.urgency,
        purpose=spec.purpose,
        categories=spec.categories,
        acknowledge_by=referral.acknowledge_by,
        first_service_by=referral.first_service_by,
        reason=reason,
        withheld=referral.withheld,
        deadline=event.deadline if isinstance(event, DeadlineMissed) else None,
        due_at=event.due_at if isinstance(event, DeadlineMissed) else None,
        override_id=(
            event.override_id if isinstance(event, OverrideRequested | OverrideApproved) else None
        ),
        disclosure=(
            _disclosure(disclosed, with_data=audience is Audience.RECIPIENT)
            if disclosed is not None
            else None
        ),
    )


def _disclosure(event: DisclosureRecorded, *, with_data: bool) -> Disclosure:
    return Disclosure(
        disclosure_id=event.disclosure_id,
        basis=event.basis,
        purpose=event.purpose,
        released=event.released,
        flagged_for_review=event.flagged_for_review,
        override_id=event.override_id,
        disclosed_at=event.timestamp,
        person_id=event.person_id if with_data else None,
        data=event.data if with_data else None,
    )


def _handover_messages(handover: Handover, event: Event) -> list[FeedMessage]:
    value = handover_update(handover, event).model_dump_json().encode()
    event_id = event.event_id
    headers = cloud_event_headers(event, event_id)
    key = str(handover.id).encode()
    return [
        FeedMessage(agency_id=agency_id, event_id=event_id, key=key, headers=headers, value=value)
        for agency_id in handover.party_ids
    ]


def handover_update(handover: Handover, event: Event) -> HandoverUpdate:
    """What every party reads of ``handover`` after ``event``: nothing personal in it."""
    spec = handover.spec
    return HandoverUpdate(
        handover_id=handover.id,
        version=event.originator_version,
        audience=Audience.PARTY,
        actor=event.actor,
        case_id=spec.case_id,
        province=spec.province,
        kind=spec.kind,
        status=HandoverStatus(handover.status),
        parties=spec.parties,
        waiting_for=tuple(handover.waiting_for),
        to_case_manager_id=spec.to_case_manager_id,
        confirmed_by=event.agency_id if isinstance(event, HandoverConfirmed) else None,
        waited_seconds=event.waited_seconds if isinstance(event, HandoverConfirmed) else None,
        seconds_by_party=(event.seconds_by_party if isinstance(event, HandoverCompleted) else None),
        reason=event.reason if isinstance(event, HandoverCancelled) else None,
    )
