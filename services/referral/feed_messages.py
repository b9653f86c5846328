"""Which agencies an event of the referral log concerns, and what each of them may read.

Rules (DESIGN.md, "The agency feed"):
- a referral's events go to the sending agency and, once the referral has been dispatched,
  to the recipient; the recipient never hears of a draft or blocked referral;
- a handover's events go to every party;
- personal data goes only to a referral's recipient, only as a disclosure recorded it: in the
  dispatch (the disclosure it was sent with) and in later disclosures. A referral put on hold
  shows nothing more until a new disclosure;
- and only as far as the access policy lets the recipient read it at the instant the message
  is published (``recipient_sight``: the consent in force then, or an emergency override in
  force then). A disclosure re-published after a withdrawal, an expiry or the person's 18th
  birthday carries none of the data it no longer covers. Every message that carries data is
  a read of the person's data, recorded in the read audit before it is sent;
- the free text of a closing step (a rejection's, cancellation's or failure's reason, a
  completion's outcome, a handover's cancellation reason) goes sealed to every agency the
  message goes to: a referral's sender (its key is released to it while it holds the case),
  a handover's parties, and a referral's recipient only while the access policy lets it read
  the person's data at the instant the message is published, as for a disclosure (and
  recorded as a read the same way);
- the data and the reasons travel sealed, under a key derived from the person's data key for
  the agency whose topic carries the message and the referral or handover (``feed_keys``), so
  erasing the person makes every message about them unreadable, those published before the
  erasure included. Nothing of them travels in clear: a message whose person has no key (or
  is erased) carries no reason at all.

The state an event is judged in is the referral (or handover) rebuilt from the log up to that
event, so re-publishing any stretch of the log gives the same messages, but for the data the
consent in force at the time of publishing no longer releases.

Messages are written straight from the event and that state, as plain values serialised with
orjson, byte for byte as the contract models of ``contracts.feed`` would write them: their
fields in declaration order, nested models as their fields, UTC times with ``Z``. Building the
models for every message took about a third of the relay's time; the tests hold every kind of
message to them instead (``tests/unit/test_feed_subscriber.py``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, NamedTuple
from uuid import UUID

import orjson
from eventsourcing.persistence import ApplicationRecorder, Mapper
from pydantic import BaseModel

from contracts.access_policy import Asker, CaseTies, Sight, sight
from contracts.audit import PersonalDataRead
from contracts.consent_decision import decide
from contracts.envelope import Actor, Event
from contracts.erasure import CaseFileErased
from contracts.feed import CONTENT_TYPE, SOURCE, SPEC_VERSION, Audience, HandoverStatus
from contracts.referral import (
    HANDOVER_EVENTS,
    REFERRAL_EVENTS,
    DeadlineMissed,
    DisclosureRecorded,
    HandoverCancelled,
    HandoverCompleted,
    HandoverConfirmed,
    OverrideApproved,
    OverrideLapsed,
    OverrideRequested,
    OverrideReviewed,
    ReferralCancelled,
    ReferralCompleted,
    ReferralCreated,
    ReferralDeclinedByPerson,
    ReferralDispatched,
    ReferralFailed,
    ReferralRejected,
    WithdrawalNotedDuringOverride,
)
from contracts.vocabulary import DataCategory, Role
from services.referral.domain import Handover, Referral
from services.referral.feed_keys import FeedKeys
from services.runtime.aggregate import Aggregate, utcnow
from services.runtime.persistence import decode_all, decode_stored, select_events_of
from services.runtime.read_audit import personal_data_read

FEED_EVENTS: tuple[type[Event], ...] = (*REFERRAL_EVENTS, *HANDOVER_EVENTS, CaseFileErased)
# What each event of the log is an event of.
_KIND: dict[type[Event], type[Referral] | type[Handover]] = {
    **dict.fromkeys(REFERRAL_EVENTS, Referral),
    **dict.fromkeys(HANDOVER_EVENTS, Handover),
}
# The headers every message shares, and the ce_type header of each event type, made once.
_SPEC_VERSION = ("ce_specversion", SPEC_VERSION.encode())
_SOURCE = ("ce_source", SOURCE.encode())
_CONTENT_TYPE = ("content-type", CONTENT_TYPE.encode())
_CE_TYPES = {event_type: ("ce_type", event_type.topic().encode()) for event_type in FEED_EVENTS}

Headers = list[tuple[str, bytes]]

# Who reads a message in the read audit: the recipient agency's feed, as its agency staff.
FEED_READER = "ketnoi-feed"
FEED_READ_PATH = "referral.feed"
FEED_ROLE = Role.AGENCY_STAFF

# What the recipient of a referral may read of its data at an instant (``recipient_sight``
# with the consent log read at its head, in the relay).
Release = Callable[[Referral, datetime], Sight]


def recipient_sight(referral: Referral, consent_events: Sequence[Event], at: datetime) -> Sight:
    """What the access policy lets the referral's recipient read of its data at ``at``.

    ``consent_events`` are the case's consent record as its log holds it; the decision is the
    one every read takes (``contracts.consent_decision.decide``), and an emergency override
    counts while it is in force at ``at``.
    """
    spec = referral.spec
    agency_id = spec.to_agency.agency_id
    asker = Asker(
        user_id=FEED_READER,
        agency_id=agency_id,
        province=spec.province,
        roles=frozenset({FEED_ROLE}),
    )
    ties = CaseTies(province=spec.province, recipients=frozenset({agency_id}))
    decision = decide(
        consent_events,
        recipient=spec.to_agency,
        purpose=spec.purpose,
        categories=spec.categories,
        at=at,
    )
    return sight(
        asker,
        ties,
        spec.categories,
        consent=decision,
        override_id=referral.override_in_force_at(at),
    )


class FeedMessage(NamedTuple):
    """One message for one agency: key, CloudEvents headers and JSON value, all bytes."""

    agency_id: str
    key: bytes
    headers: Headers
    value: bytes


def cloud_event_headers(event: Event, subject: bytes) -> Headers:
    """The ``ce_*`` headers of an event's messages: ids, type and time, nothing personal.

    ``subject`` is the referral's or handover's id, as the key carries it. One list serves
    every message of the event.
    """
    return [
        _SPEC_VERSION,
        ("ce_id", str(event.event_id).encode()),
        _SOURCE,
        _CE_TYPES[type(event)],
        ("ce_time", event.timestamp.isoformat().encode()),
        ("ce_subject", subject),
        _CONTENT_TYPE,
    ]


class FeedView:
    """Turns events of the referral log into feed messages.

    Keeps the referrals and handovers it has seen (up to ``cache_size``, least recently used
    first out) and rebuilds one from the log whenever its copy is not exactly one event
    behind, as after a restart or when a failed batch is read again.

    ``release`` says what a recipient may read of a referral's data at an instant; the data
    a message carries is decided when it is built (``clock``), sealed with ``keys``, and each
    such read waits in ``reads`` until the relay records it (``take_reads``).
    """

    def __init__(
        self,
        recorder: ApplicationRecorder,
        mapper: Mapper[UUID],
        cache_size: int,
        *,
        release: Release,
        keys: FeedKeys,
        clock: Callable[[], datetime] = utcnow,
    ):
        self.recorder = recorder
        self.mapper = mapper
        self.cache_size = cache_size
        self.release = release
        self.keys = keys
        self.clock = clock
        self._cache: OrderedDict[UUID, Aggregate] = OrderedDict()
        self.rebuilt = 0
        self.reads: list[PersonalDataRead] = []

    def take_reads(self) -> list[PersonalDataRead]:
        """The reads of personal data the messages built since the last call carry."""
        reads, self.reads = self.reads, []
        return reads

    def prepare(self, events: Sequence[Event]) -> set[UUID]:
        """Read ahead what building ``events``' messages in order will need, and return the
        cases whose consent their recipients' messages may be judged against.

        The referrals and handovers the view does not hold one event behind their first
        event here (after a restart, or beyond the cache) are rebuilt from one read of the
        log, not one read each. The cases returned are those of a dispatch, a disclosure or
        a closing step with a reason: the relay reads their consent records in one query
        (``ConsentAtHead.prefetch``). What is read ahead is only a head start:
        ``messages_for`` still checks each state and reads what it lacks.
        """
        behind: dict[UUID, tuple[type[Referral] | type[Handover], int]] = {}
        seen: set[UUID] = set()
        for event in events:
            kind = _KIND.get(type(event))
            key, version = event.originator_id, event.originator_version
            if kind is None or key in seen:
                continue
            seen.add(key)
            held = self._cache.get(key)
            if version > 1 and (held is None or held.version != version - 1):
                behind[key] = (kind, version - 1)
        if behind:
            self._rebuild_all(behind)
        created: dict[UUID, UUID] = {}  # the referrals created in this batch: their cases
        cases: set[UUID] = set()
        for event in events:
            key = event.originator_id
            if isinstance(event, ReferralCreated):
                created[key] = event.case_id
            elif _KIND.get(type(event)) is Referral and _may_release(event):
                held = self._cache.get(key)
                case_id = created.get(key) or (
                    held.spec.case_id if isinstance(held, Referral) else None
                )
                if case_id is not None:
                    cases.add(case_id)
        return cases

    def _rebuild_all(self, behind: dict[UUID, tuple[type[Referral] | type[Handover], int]]) -> None:
        """Rebuild each of ``behind`` up to its version, from one read of the log (and one
        of its persons' keys)."""
        upto = {
            key: [s for s in stored if s.originator_version <= behind[key][1]]
            for key, stored in select_events_of(self.recorder, list(behind)).items()
        }
        decoded = iter(decode_all(self.mapper, [s for stored in upto.values() for s in stored]))
        for key, stored in upto.items():
            kind, version = behind[key]
            state = kind.project(None, [next(decoded) for _ in stored])
            if state is not None and state.version == version:
                self.rebuilt += 1
                self._keep(key, state)
            # Otherwise messages_for reads it again and says what the log lacks.

    def messages_for(self, event: Event) -> list[FeedMessage]:
        if isinstance(event, CaseFileErased):
            for referral_id in event.referral_ids:  # their disclosures read as erased now
                self._cache.pop(referral_id, None)
            return erasure_messages(event)
        kind = _KIND.get(type(event))
        if kind is Referral:
            referral = self._state_after(event, Referral)
            assert isinstance(referral, Referral)
            return self._referral_messages(referral, event)
        if kind is Handover:
            handover = self._state_after(event, Handover)
            assert isinstance(handover, Handover)
            return self._handover_messages(handover, event)
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
        self._keep(key, state)
        return state

    def _keep(self, key: UUID, state: Aggregate) -> None:
        self._cache[key] = state
        self._cache.move_to_end(key)
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _referral_messages(self, referral: Referral, event: Event) -> list[FeedMessage]:
        spec = referral.spec
        key = str(referral.id).encode()
        headers = cloud_event_headers(event, key)
        update = referral_update(referral, event)
        disclosed = _disclosed(referral, event)
        reason = closing_reason(event)
        person_id = _person_of(event, referral.person_id) if reason is not None else None
        # The sender reads what was disclosed, never the data; the recipient the data too,
        # as far as it may read it now. Each reads the reason under its own key.
        update["audience"] = Audience.SENDER
        update["disclosure"] = disclosure(disclosed)
        sender = spec.from_agency.agency_id
        if reason is not None and person_id is not None:
            update["sealed_reason"] = self.keys.seal_reason(
                person_id=person_id,
                agency_id=sender,
                subject_id=referral.id,
                version=event.originator_version,
                reason=reason,
            )
        to_sender = to_json(update)
        messages = [FeedMessage(sender, key, headers, to_sender)]
        if referral.dispatched_at is not None:
            if disclosed is None and reason is None:
                # The same update but for its audience, which comes before any sealed part.
                to_recipient = to_sender.replace(_TO_SENDER, _TO_RECIPIENT, 1)
            else:
                update["audience"] = Audience.RECIPIENT
                update["disclosure"] = (
                    self._released(referral, disclosed) if disclosed is not None else None
                )
                update["sealed_reason"] = (
                    self._reason_to_recipient(referral, event, person_id, reason)
                    if reason is not None and person_id is not None
                    else None
                )
                to_recipient = to_json(update)
            messages.append(FeedMessage(spec.to_agency.agency_id, key, headers, to_recipient))
        return messages

    def _reason_to_recipient(
        self, referral: Referral, event: Event, person_id: UUID, reason: str
    ) -> dict[str, Any] | None:
        """The reason sealed for the referral's recipient, if it may read any of the
        person's data now (the read recorded); None otherwise."""
        at = self.clock()
        seen = self.release(referral, at)
        if not seen.categories:
            return None
        sealed = self.keys.seal_reason(
            person_id=person_id,
            agency_id=referral.spec.to_agency.agency_id,
            subject_id=referral.id,
            version=event.originator_version,
            reason=reason,
        )
        if sealed is not None:
            self._record(referral, seen, person_id, seen.categories, at)
        return sealed

    def _handover_messages(self, handover: Handover, event: Event) -> list[FeedMessage]:
        key = str(handover.id).encode()
        headers = cloud_event_headers(event, key)
        update = handover_update(handover, event)
        person_id = _person_of(event, handover.person_id)
        if not isinstance(event, HandoverCancelled) or person_id is None:
            value = to_json(update)
            return [FeedMessage(agency_id, key, headers, value) for agency_id in handover.party_ids]
        # Each party reads the reason under its own key.
        messages = []
        for agency_id in handover.party_ids:
            update["sealed_reason"] = self.keys.seal_reason(
                person_id=person_id,
                agency_id=agency_id,
                subject_id=handover.id,
                version=event.originator_version,
                reason=event.reason,
            )
            messages.append(FeedMessage(agency_id, key, headers, to_json(update)))
        return messages

    def _released(self, referral: Referral, disclosed: DisclosureRecorded) -> dict[str, Any]:
        """The disclosure as its recipient may read it now, its data sealed; the read
        recorded if it shows any data."""
        at = self.clock()
        seen = self.release(referral, at)
        allowed = {category.value for category in seen.categories}
        data = {name: facts for name, facts in disclosed.data.items() if name in allowed}
        values = disclosure(disclosed)
        assert values is not None
        if not data:
            return values
        sealed = self.keys.seal(
            person_id=disclosed.person_id,
            agency_id=referral.spec.to_agency.agency_id,
            referral_id=referral.id,
            version=referral.version,
            disclosure_id=disclosed.disclosure_id,
            data=data,
        )
        if sealed is None:  # erased since the event was read: nothing of theirs to send
            return values
        values["sealed"] = sealed
        categories = frozenset(DataCategory(name) for name in data)
        self._record(referral, seen, disclosed.person_id, categories, at)
        return values

    def _record(
        self,
        referral: Referral,
        seen: Sight,
        person_id: UUID,
        categories: frozenset[DataCategory],
        at: datetime,
    ) -> None:
        """Keep the recipient's read that a message carries, for the relay to record."""
        assert seen.basis is not None
        assert seen.role is not None
        read = personal_data_read(
            actor=Actor(
                user_id=FEED_READER, agency_id=referral.spec.to_agency.agency_id, role=seen.role
            ),
            case_id=referral.spec.case_id,
            categories=sorted(categories),
            basis=seen.basis,
            what=FEED_READ_PATH,
            person_id=person_id,
            grant_ids=seen.grant_ids,
            override_id=seen.override_id,
            at=at,
        )
        assert read is not None
        self.reads.append(read)


# -- the values, as the contract models write them ------------------------------------------


def _fields(value: object) -> dict[str, Any]:
    """orjson's fallback for the contract models nested in an update (Actor, AgencyRef,
    WithheldCategory, ...): their fields, in declaration order, as pydantic writes them
    (a model that writes itself otherwise, with an alias say, fails the tests)."""
    if isinstance(value, BaseModel):
        return value.__dict__
    msg = f"cannot write {type(value).__name__} in a feed message"
    raise TypeError(msg)


def to_json(values: dict[str, Any]) -> bytes:
    """The JSON of an update's values, as its contract model's ``model_dump_json`` writes it."""
    return orjson.dumps(values, default=_fields, option=orjson.OPT_UTC_Z)


_TO_SENDER = b',"audience":"sender",'
_TO_RECIPIENT = b',"audience":"recipient",'
_CLOSING = (ReferralRejected, ReferralCancelled, ReferralFailed)
_OVERRIDE = (
    OverrideRequested,
    OverrideApproved,
    OverrideReviewed,
    OverrideLapsed,
    WithdrawalNotedDuringOverride,
)


def closing_reason(event: Event) -> str | None:
    """The free text a referral's event gives its readers: why it was rejected, cancelled,
    failed or declined, or its outcome. It travels sealed only."""
    if isinstance(event, _CLOSING):
        return event.reason
    if isinstance(event, ReferralDeclinedByPerson):
        return f"The person {event.choice.value} the service: their choice."
    if isinstance(event, ReferralCompleted):
        return event.outcome
    return None


def _person_of(event: Event, fallback: UUID | None) -> UUID | None:
    """The person whose key seals an event's reason: the one the event names (its free text
    is encrypted under their key in the log), else the referral's or handover's."""
    named: UUID | None = getattr(event, "person_id", None)
    return named if named is not None else fallback


def referral_update(referral: Referral, event: Event) -> dict[str, Any]:
    """The values of a ``ReferralUpdate`` of ``referral`` after ``event``, in the model's
    order; ``audience``, ``sealed_reason`` and ``disclosure`` are left for each audience to
    fill in."""
    spec = referral.spec
    missed = event if isinstance(event, DeadlineMissed) else None
    return {
        "referral_id": referral.id,
        "version": event.originator_version,
        "audience": None,
        "actor": event.actor,
        "case_id": spec.case_id,
        "province": spec.province,
        "status": referral.status,
        "from_agency": spec.from_agency,
        "to_agency": spec.to_agency,
        "service_type": spec.service_type,
        "urgency": spec.urgency,
        "purpose": spec.purpose,
        "categories": spec.categories,
        "acknowledge_by": referral.acknowledge_by,
        "first_service_by": referral.first_service_by,
        "sealed_reason": None,
        "withheld": referral.withheld,
        "deadline": missed.deadline if missed is not None else None,
        "due_at": missed.due_at if missed is not None else None,
        "override_id": event.override_id if isinstance(event, _OVERRIDE) else None,
        "disclosure": None,
    }


def _may_release(event: Event) -> bool:
    """Whether a referral's event may carry data or a reason to its recipient, judged
    against the consent in force (``release``)."""
    return isinstance(event, DisclosureRecorded | ReferralDispatched) or (
        closing_reason(event) is not None
    )


def _disclosed(referral: Referral, event: Event) -> DisclosureRecorded | None:
    """The disclosure a referral message carries: the one just recorded, or on the
    dispatch the one it was sent with."""
    if isinstance(event, DisclosureRecorded):
        return event
    if isinstance(event, ReferralDispatched):
        return referral.disclosure
    return None


def disclosure(event: DisclosureRecorded | None) -> dict[str, Any] | None:
    """The values of a ``Disclosure`` without its sealed data (the recipient's alone)."""
    if event is None:
        return None
    return {
        "disclosure_id": event.disclosure_id,
        "basis": event.basis,
        "purpose": event.purpose,
        "released": event.released,
        "flagged_for_review": event.flagged_for_review,
        "override_id": event.override_id,
        "disclosed_at": event.timestamp,
        "sealed": None,
    }


def handover_update(handover: Handover, event: Event) -> dict[str, Any]:
    """The values of the ``HandoverUpdate`` every party reads of ``handover`` after
    ``event``, in the model's order: nothing personal in it (``sealed_reason`` is left for
    each party)."""
    spec = handover.spec
    confirmed = event if isinstance(event, HandoverConfirmed) else None
    return {
        "handover_id": handover.id,
        "version": event.originator_version,
        "audience": Audience.PARTY,
        "actor": event.actor,
        "case_id": spec.case_id,
        "province": spec.province,
        "kind": spec.kind,
        "status": HandoverStatus(handover.status),
        "parties": spec.parties,
        "waiting_for": handover.waiting_for,
        "to_case_manager_id": spec.to_case_manager_id,
        "confirmed_by": confirmed.agency_id if confirmed is not None else None,
        "waited_seconds": confirmed.waited_seconds if confirmed is not None else None,
        "seconds_by_party": (
            event.seconds_by_party if isinstance(event, HandoverCompleted) else None
        ),
        "sealed_reason": None,
    }


def erasure_messages(event: CaseFileErased) -> list[FeedMessage]:
    """An ``ErasureNotice`` to every agency the feed told about the case."""
    key = str(event.case_id).encode()
    headers = cloud_event_headers(event, key)
    value = to_json(
        {
            "case_id": event.case_id,
            "person_id": event.person_id,
            "referral_ids": event.referral_ids,
            "erased_at": event.timestamp,
        }
    )
    return [FeedMessage(agency_id, key, headers, value) for agency_id in event.notify]
