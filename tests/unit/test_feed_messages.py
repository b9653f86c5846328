"""The agency feed's messages without a broker, held to the contract models."""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.access_policy import Sight
from contracts.audit import ReadBasis
from contracts.consent import (
    Collection,
    CollectionMethod,
    ConsentGiver,
    ConsentGranted,
    ConsentWithdrawn,
    GiverKind,
    Recipient,
)
from contracts.consent_decision import Verdict
from contracts.envelope import AGENCY_ID_PATTERN, Actor, AgencyRef, Event
from contracts.feed import (
    Audience,
    CloudEventHeaders,
    DisclosedData,
    DisclosedReason,
    Disclosure,
    HandoverStatus,
    HandoverUpdate,
    ReferralUpdate,
    SealedData,
    sealed_data_aad,
    sealed_reason_aad,
)
from contracts.referral import (
    DeadlineKind,
    DeadlineMissed,
    DisclosureBasis,
    DisclosureRecorded,
    HandoverCancelled,
    HandoverCompleted,
    HandoverConfirmed,
    HandoverKind,
    HandoverParty,
    HandoverStarted,
    OverrideApproved,
    OverrideConclusion,
    OverrideLapsed,
    OverrideRequested,
    OverrideReviewed,
    PartyRole,
    ReferralAccepted,
    ReferralAcknowledged,
    ReferralBlocked,
    ReferralCancelled,
    ReferralCompleted,
    ReferralCreated,
    ReferralDispatched,
    ReferralFailed,
    ReferralPutOnHold,
    ReferralRejected,
    ReferralResumed,
    ReferralStarted,
    ReferralStatus,
    ReleasedField,
    Urgency,
    WithdrawalNotedDuringOverride,
    WithheldCategory,
)
from contracts.vocabulary import AgencyKind, DataCategory, Purpose, Role, ServiceType
from services.referral.domain import Handover, Referral
from services.referral.feed_keys import FeedKeys
from services.referral.feed_messages import (
    FEED_READ_PATH,
    FEED_READER,
    FeedMessage,
    FeedView,
    recipient_sight,
)
from services.runtime.persistence import decode_stored, new_mapper
from services.runtime.person_keys import LocalMasterKey, PersonKeys


class MemoryKeys:
    """A store of wrapped keys in memory (the real ones are tested in test_person_keys)."""

    def __init__(self) -> None:
        self.rows: dict[UUID, bytes | None] = {}

    def create(self) -> None: ...

    def insert(self, person_id: UUID, wrapped: bytes) -> None:
        self.rows.setdefault(person_id, wrapped)

    def select(self, person_id: UUID) -> tuple[bytes | None, bool]:
        if person_id not in self.rows:
            return None, False
        wrapped = self.rows[person_id]
        return wrapped, wrapped is None

    def erase(self, person_id: UUID, at: datetime) -> bool:
        erased = self.rows.get(person_id, b"") is not None
        self.rows[person_id] = None
        return erased

    def close(self) -> None: ...


def new_keys() -> FeedKeys:
    return FeedKeys(PersonKeys(MemoryKeys(), LocalMasterKey(os.urandom(32))))


KEYS = new_keys()


def opened(keys: FeedKeys, agency_id: str, value: dict[str, Any], person: UUID) -> DisclosedData:
    """The sealed part of a message, opened with the key its agency fetches (the person's,
    for the agency and the referral), as the contract describes it."""
    sealed = SealedData.model_validate(value["disclosure"]["sealed"])
    referral_id = UUID(value["referral_id"])
    assert sealed.key_id == str(referral_id)
    assert sealed.alg == "A256GCM"
    key = keys.key(person, agency_id, referral_id)
    assert key is not None
    aad = sealed_data_aad(referral_id, value["version"], value["disclosure"]["disclosure_id"])
    plain = AESGCM(key).decrypt(
        base64.b64decode(sealed.nonce), base64.b64decode(sealed.ciphertext), aad
    )
    return DisclosedData.model_validate_json(plain)


def opened_reason(keys: FeedKeys, agency_id: str, value: dict[str, Any], person: UUID) -> str:
    """The sealed reason of a message, opened with the key its agency fetches (the person's,
    for the agency and the referral or handover), as the contract describes it."""
    sealed = SealedData.model_validate(value["sealed_reason"])
    subject = UUID(value["referral_id"] if "referral_id" in value else value["handover_id"])
    assert sealed.key_id == str(subject)
    assert sealed.alg == "A256GCM"
    key = keys.key(person, agency_id, subject)
    assert key is not None
    aad = sealed_reason_aad(subject, value["version"])
    plain = AESGCM(key).decrypt(
        base64.b64decode(sealed.nonce), base64.b64decode(sealed.ciphertext), aad
    )
    return DisclosedReason.model_validate_json(plain).reason


# -- the relay's messages, held to the contract models -------------------------------------
#
# The relay writes its messages from plain values, without building the contract models.
# Here every message of random referral and handover histories is compared, byte for byte,
# with the JSON of the contract model built the plain way, field by field, from the same
# state: the model fills in any field the relay left out, and writes every value its own way.


def disclosed_by(referral: Referral, event: Event) -> DisclosureRecorded | None:
    """The disclosure a message of ``event`` carries."""
    if isinstance(event, DisclosureRecorded):
        return event
    if isinstance(event, ReferralDispatched):
        return referral.disclosure
    return None


def reason_of(event: Event) -> str | None:
    """The free text a referral's or handover's message carries, sealed."""
    if isinstance(event, ReferralRejected | ReferralCancelled | ReferralFailed):
        return event.reason
    if isinstance(event, ReferralCompleted):
        return event.outcome
    if isinstance(event, HandoverCancelled):
        return event.reason
    return None


def expected_referral_update(
    referral: Referral,
    event: Event,
    audience: Audience,
    sealed: SealedData | None = None,
    sealed_reason: SealedData | None = None,
) -> ReferralUpdate:
    """What ``audience`` may read of ``referral`` after ``event``, as the contract model;
    ``sealed`` is what the recipient's message sealed, ``sealed_reason`` what the audience's
    message sealed of the reason (both opened and checked by the caller)."""
    spec = referral.spec
    disclosed = disclosed_by(referral, event)
    return ReferralUpdate(
        referral_id=referral.id,
        version=event.originator_version,
        audience=audience,  # type: ignore[arg-type]
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
        sealed_reason=sealed_reason,
        withheld=referral.withheld,
        deadline=event.deadline if isinstance(event, DeadlineMissed) else None,
        due_at=event.due_at if isinstance(event, DeadlineMissed) else None,
        override_id=(
            event.override_id
            if isinstance(
                event,
                OverrideRequested
                | OverrideApproved
                | OverrideReviewed
                | OverrideLapsed
                | WithdrawalNotedDuringOverride,
            )
            else None
        ),
        disclosure=(
            expected_disclosure(
                disclosed, sealed=sealed if audience is Audience.RECIPIENT else None
            )
            if disclosed is not None
            else None
        ),
    )


def expected_disclosure(event: DisclosureRecorded, *, sealed: SealedData | None) -> Disclosure:
    return Disclosure(
        disclosure_id=event.disclosure_id,
        basis=event.basis,
        purpose=event.purpose,
        released=event.released,
        flagged_for_review=event.flagged_for_review,
        override_id=event.override_id,
        disclosed_at=event.timestamp,
        sealed=sealed,
    )


def expected_handover_update(
    handover: Handover, event: Event, sealed_reason: SealedData | None = None
) -> HandoverUpdate:
    """What a party reads of ``handover`` after ``event``, as the contract model;
    ``sealed_reason`` is what its message sealed (opened and checked by the caller)."""
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
        sealed_reason=sealed_reason,
    )


class NoLog:
    """The view's recorder: every history here is fed in order, so it is never read."""

    def select_events(self, *_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("the view read the log")


ANY_GRANT = UUID("00000000-0000-4000-8000-0000000000f1")


def everything(referral: Referral, at: datetime) -> Sight:
    """A release that lets the recipient read every category the referral asked for (the
    shape of the messages is what these histories test; ``recipient_sight`` is tested on
    its own below)."""
    return Sight(frozenset(DataCategory), ReadBasis.GRANT, Role.AGENCY_STAFF, (ANY_GRANT,))


def view_of(release: Any = everything, clock: Any = None, keys: FeedKeys = KEYS) -> FeedView:
    extra = {} if clock is None else {"clock": clock}
    return FeedView(NoLog(), new_mapper(), cache_size=10, release=release, keys=keys, **extra)  # type: ignore[arg-type]


def check_headers(message: FeedMessage, event: Event) -> None:
    headers = {name: value.decode() for name, value in message.headers}
    parsed = CloudEventHeaders.model_validate(headers)
    assert list(headers) == [
        "ce_specversion",
        "ce_id",
        "ce_source",
        "ce_type",
        "ce_time",
        "ce_subject",
        "content-type",
    ]
    assert parsed.ce_id == event.event_id
    assert parsed.ce_subject == event.originator_id
    assert message.key == str(event.originator_id).encode()
    assert headers["ce_type"] == type(event).topic()
    assert headers["ce_time"] == event.timestamp.isoformat()


def check_history(events: list[Event], kind: type[Referral] | type[Handover]) -> None:
    """Feed ``events`` to a FeedView as the relay reads them from the log, and hold each
    message to the contract model of the state after its event."""
    mapper = new_mapper()
    view = view_of()
    state = kind(events[0].originator_id)
    for written in events:
        event = decode_stored(mapper, mapper.to_stored_event(written))  # as stored and read
        messages = view.messages_for(event)
        state.apply(event)
        if isinstance(state, Referral):
            spec = state.spec
            audiences = [(spec.from_agency.agency_id, Audience.SENDER)]
            if state.dispatched_at is not None:  # the recipient hears from the dispatch on
                audiences.append((spec.to_agency.agency_id, Audience.RECIPIENT))
            disclosed = disclosed_by(state, event)
            expected = []
            for (agency, audience), message in zip(audiences, messages, strict=False):
                sealed = None
                # ``everything`` releases every category: the recipient reads all there is,
                # sealed under its key, and only the recipient.
                if audience is Audience.RECIPIENT and disclosed is not None and disclosed.data:
                    value = json.loads(message.value)
                    found = opened(KEYS, agency, value, disclosed.person_id)
                    assert found == DisclosedData(
                        person_id=disclosed.person_id, data=disclosed.data
                    )
                    sealed = SealedData.model_validate(value["disclosure"]["sealed"])
                sealed_reason = reason_sealed_for(agency, message, event, state.person_id)
                model = expected_referral_update(state, event, audience, sealed, sealed_reason)
                expected.append((agency, model))
        else:
            expected = [
                (
                    party,
                    expected_handover_update(
                        state, event, reason_sealed_for(party, message, event, state.person_id)
                    ),
                )
                for party, message in zip(state.party_ids, messages, strict=False)
            ]
        assert [m.agency_id for m in messages] == [agency for agency, _ in expected]
        for message, (_, model) in zip(messages, expected, strict=True):
            assert message.value == model.model_dump_json().encode()
            assert type(model).model_validate_json(message.value) == model
            check_headers(message, event)


def reason_sealed_for(
    agency: str, message: FeedMessage, event: Event, person: UUID | None
) -> SealedData | None:
    """The reason ``message`` seals for ``agency``, checked by opening it with the agency's
    own key: every audience reads it (``everything`` lets the recipient read the person's
    data), in no message is it in clear, and a person without a key has none sent."""
    reason = reason_of(event)
    value = json.loads(message.value)
    if reason is None or person is None:
        assert value["sealed_reason"] is None
        return None
    assert opened_reason(KEYS, agency, value, person) == reason
    return SealedData.model_validate(value["sealed_reason"])


# Free text anywhere (escapes, other scripts), times in other zones and to the microsecond,
# numbers of every kind in the disclosed data.
texts = st.text(min_size=1, max_size=20)
slugs = st.from_regex(AGENCY_ID_PATTERN, fullmatch=True)
zones = st.sampled_from([UTC, timezone(timedelta(hours=7)), timezone(timedelta(hours=-3.5))])
times = st.datetimes(datetime(1990, 1, 1), datetime(2200, 1, 1), timezones=zones)
actors = st.builds(Actor, user_id=texts, agency_id=slugs, role=st.sampled_from(Role))
withheld = st.lists(
    st.builds(
        WithheldCategory,
        category=st.sampled_from(DataCategory),
        verdict=st.sampled_from(Verdict),
        reason=st.text(max_size=20),
    ),
    max_size=3,
).map(tuple)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)


@dataclass
class History:
    """Events of one referral or handover, numbered as the log numbers them."""

    originator_id: UUID
    events: list[Event] = field(default_factory=list)

    def add(self, draw: Any, event_type: type[Event], **fields: Any) -> None:
        self.events.append(
            event_type(
                originator_id=self.originator_id,
                originator_version=len(self.events) + 1,
                timestamp=draw(times),
                actor=draw(actors),
                **fields,
            )
        )


def disclosure_fields(draw: Any, recipient: AgencyRef) -> dict[str, Any]:
    basis = draw(st.sampled_from(DisclosureBasis))
    return {
        "disclosure_id": draw(st.uuids()),
        "person_id": draw(st.uuids()),
        "recipient": recipient,
        "purpose": draw(st.sampled_from(Purpose)),
        "basis": basis,
        "released": tuple(
            ReleasedField(category=c, field=name, grant_id=draw(st.none() | st.uuids()))
            for c, name in draw(
                st.lists(st.tuples(st.sampled_from(DataCategory), texts), max_size=3)
            )
        ),
        "data": draw(
            st.dictionaries(
                st.sampled_from([c.value for c in DataCategory]),
                st.dictionaries(texts, json_values),
                max_size=3,
            )
        ),
        "override_id": draw(st.none() | st.uuids()),
        "flagged_for_review": basis is DisclosureBasis.VITAL_INTEREST,
    }


@st.composite
def referral_histories(draw: Any) -> list[Event]:
    """A referral's creation, then any of its later events in any order: the views apply
    each as it comes, and every state they pass through must read the same."""
    sender, recipient = (
        AgencyRef(agency_id=agency_id, kind=draw(st.sampled_from(AgencyKind)))
        for agency_id in draw(st.lists(slugs, min_size=2, max_size=2, unique=True))
    )
    history = History(draw(st.uuids()))
    history.add(
        draw,
        ReferralCreated,
        case_id=draw(st.uuids()),
        person_id=draw(st.uuids()),
        province=draw(st.text(max_size=20)),
        from_agency=sender,
        to_agency=recipient,
        service_type=draw(st.sampled_from(ServiceType)),
        urgency=draw(st.sampled_from(Urgency)),
        purpose=draw(st.sampled_from(Purpose)),
        categories=tuple(draw(st.lists(st.sampled_from(DataCategory), max_size=3))),
        note=draw(st.none() | texts),
    )
    # Mostly one override, so its request, approval, review and lapse meet.
    override_ids = st.sampled_from([draw(st.uuids())]) | st.uuids()
    later: dict[type[Event], Any] = {
        ReferralBlocked: lambda: {"withheld": draw(withheld)},
        DisclosureRecorded: lambda: disclosure_fields(draw, recipient),
        ReferralDispatched: lambda: {
            "acknowledge_by": draw(times),
            "first_service_by": draw(times),
        },
        ReferralAcknowledged: dict,
        ReferralAccepted: lambda: {"note": draw(st.none() | texts)},
        ReferralRejected: lambda: {"reason": draw(texts)},
        ReferralStarted: dict,
        ReferralCompleted: lambda: {"outcome": draw(texts)},
        ReferralCancelled: lambda: {"reason": draw(texts)},
        ReferralFailed: lambda: {"reason": draw(texts)},
        ReferralPutOnHold: lambda: {
            "withheld": draw(withheld),
            "resume_to": draw(st.sampled_from(ReferralStatus)),
        },
        ReferralResumed: lambda: {"to_status": draw(st.sampled_from(ReferralStatus))},
        DeadlineMissed: lambda: {
            "deadline": draw(st.sampled_from(DeadlineKind)),
            "due_at": draw(times),
            "status": draw(st.sampled_from(ReferralStatus)),
        },
        OverrideRequested: lambda: {
            "override_id": draw(override_ids),
            "reason": draw(st.text(min_size=10, max_size=30)),
            "needed_for_hours": draw(st.integers(1, 72)),
        },
        OverrideApproved: lambda: {"override_id": draw(override_ids)},
        OverrideReviewed: lambda: {
            "override_id": draw(override_ids),
            "conclusion": draw(st.sampled_from(OverrideConclusion)),
            "note": draw(st.text(min_size=10, max_size=30)),
        },
        OverrideLapsed: lambda: {"override_id": draw(override_ids), "ended_at": draw(times)},
        WithdrawalNotedDuringOverride: lambda: {
            "override_id": draw(override_ids),
            "approved_by": draw(actors),
            "withheld": draw(withheld),
        },
    }
    for event_type in draw(st.lists(st.sampled_from(list(later)), max_size=12)):
        history.add(draw, event_type, **later[event_type]())
    return history.events


@st.composite
def handover_histories(draw: Any) -> list[Event]:
    ids = draw(st.lists(slugs, min_size=2, max_size=4, unique=True))
    parties = tuple(
        HandoverParty(
            agency=AgencyRef(agency_id=agency_id, kind=draw(st.sampled_from(AgencyKind))),
            role=draw(st.sampled_from(PartyRole)),
            capacity=draw(texts),
        )
        for agency_id in ids
    )
    history = History(draw(st.uuids()))
    history.add(
        draw,
        HandoverStarted,
        case_id=draw(st.uuids()),
        province=draw(st.text(max_size=20)),
        kind=draw(st.sampled_from(HandoverKind)),
        parties=parties,
        person_id=draw(st.none() | st.uuids()),
        to_case_manager_id=draw(st.none() | texts),
    )
    seconds = st.floats(min_value=0, max_value=1e9, allow_nan=False)
    for step in draw(st.lists(st.sampled_from(["confirm", "complete", "cancel"]), max_size=6)):
        if step == "confirm":
            agency_id = draw(st.sampled_from(ids) | slugs)
            history.add(draw, HandoverConfirmed, agency_id=agency_id, waited_seconds=draw(seconds))
        elif step == "complete":
            by_party = draw(st.dictionaries(st.sampled_from(ids), seconds))
            history.add(draw, HandoverCompleted, seconds_by_party=by_party)
        else:
            history.add(draw, HandoverCancelled, reason=draw(texts))
    return history.events


PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(referral_histories())
def test_referral_messages_are_the_contract_models_json(events: list[Event]) -> None:
    check_history(events, Referral)


@PROPERTY
@given(handover_histories())
def test_handover_messages_are_the_contract_models_json(events: list[Event]) -> None:
    check_history(events, Handover)


def test_only_the_recipient_reads_the_disclosed_data() -> None:
    """The rule itself, on one plain history: created, disclosed, dispatched, answered."""
    now = datetime(2026, 3, 1, 8, 30, tzinfo=UTC)
    swc = AgencyRef(agency_id="dt-swc", kind=AgencyKind.SOCIAL_WORK_CENTRE)
    hospital = AgencyRef(agency_id="dt-hospital", kind=AgencyKind.HOSPITAL)
    actor = Actor(user_id="cw-1", agency_id="dt-swc", role=Role.CASE_MANAGER)
    referral_id = UUID("00000000-0000-4000-8000-000000000001")
    envelope = {"originator_id": referral_id, "timestamp": now, "actor": actor}
    events: list[Event] = [
        ReferralCreated(
            originator_version=1,
            case_id=UUID("00000000-0000-4000-8000-000000000002"),
            person_id=UUID("00000000-0000-4000-8000-000000000003"),
            province="dong-thap",
            from_agency=swc,
            to_agency=hospital,
            service_type=ServiceType.MEDICAL_CARE,
            urgency=Urgency.URGENT,
            purpose=Purpose.SERVICE_PROVISION,
            categories=(DataCategory.IDENTITY,),
            note="No home visits.",
            **envelope,
        ),
        DisclosureRecorded(
            originator_version=2,
            disclosure_id=UUID("00000000-0000-4000-8000-000000000004"),
            person_id=UUID("00000000-0000-4000-8000-000000000003"),
            recipient=hospital,
            purpose=Purpose.SERVICE_PROVISION,
            basis=DisclosureBasis.CONSENT,
            released=(
                ReleasedField(category=DataCategory.IDENTITY, field="full_name", grant_id=None),
            ),
            data={"identity": {"full_name": "Lê Thị Mai"}},
            **envelope,
        ),
        ReferralDispatched(
            originator_version=3,
            acknowledge_by=now + timedelta(hours=4),
            first_service_by=now + timedelta(days=1),
            **envelope,
        ),
        ReferralAcknowledged(originator_version=4, **envelope),
    ]
    check_history(events, Referral)
    view = view_of()
    read = [[(m.agency_id, json.loads(m.value)) for m in view.messages_for(e)] for e in events]
    assert [[agency for agency, _ in messages] for messages in read] == [
        ["dt-swc"],
        ["dt-swc"],  # the recipient never hears of a referral not yet dispatched
        ["dt-swc", "dt-hospital"],
        ["dt-swc", "dt-hospital"],
    ]
    (_, disclosed), (_, dispatched_to_swc), (_, dispatched_to_hospital) = (
        read[1][0],
        read[2][0],
        read[2][1],
    )
    assert disclosed["disclosure"]["sealed"] is None
    assert dispatched_to_swc["disclosure"]["sealed"] is None
    assert dispatched_to_hospital["audience"] == "recipient"
    person = UUID("00000000-0000-4000-8000-000000000003")
    found = opened(KEYS, "dt-hospital", dispatched_to_hospital, person)
    assert found == DisclosedData(person_id=person, data={"identity": {"full_name": "Lê Thị Mai"}})
    assert all(update["disclosure"] is None for _, update in read[3])
    assert all("No home visits" not in json.dumps(update) for m in read for _, update in m)
    # The name is on no topic in clear: only the hospital's key opens it.
    again = view_of()
    messages = [m for e in events for m in again.messages_for(e)]
    assert all("Lê Thị Mai".encode() not in m.value for m in messages)
    assert all(b"00000000-0000-4000-8000-000000000003" not in m.value for m in messages)


def test_erasing_the_person_leaves_what_was_published_unreadable() -> None:
    """The key is the person's for one recipient and one referral: another agency's key or
    another referral's does not open it, and once the person's key is destroyed no key can
    be had and nothing more is sealed for them."""
    keys = new_keys()
    events = dispatched_referral((DataCategory.IDENTITY, DataCategory.CONTACT))
    first = view_of(keys=keys)
    before = [m for e in events for m in first.messages_for(e)]
    (dispatch,) = [json.loads(m.value) for m in before if m.agency_id == "dt-hospital"]
    assert opened(keys, "dt-hospital", dispatch, PERSON).data["identity"] == {
        "full_name": "Lê Thị Mai"
    }
    referral_id = UUID(dispatch["referral_id"])
    theirs = keys.key(PERSON, "dt-hospital", referral_id)
    assert theirs is not None
    assert keys.key(PERSON, "dt-swc", referral_id) not in (None, theirs)
    assert keys.key(PERSON, "dt-hospital", CASE) not in (None, theirs)
    # Published again, the same event writes the same bytes (subscribers de-duplicate).
    second = view_of(keys=keys)
    assert [m.value for e in events for m in second.messages_for(e)] == [m.value for m in before]

    assert keys.keys.erase(PERSON)
    assert keys.key(PERSON, "dt-hospital", referral_id) is None
    view = view_of(keys=keys)
    after = [json.loads(m.value) for e in events for m in view.messages_for(e)]
    assert all(not (v["disclosure"] or {}).get("sealed") for v in after)
    assert view.take_reads() == []  # nothing sent, nothing read


# -- what the recipient may read when a message is published ----------------------------------

CASE = UUID("00000000-0000-4000-8000-0000000000c1")
PERSON = UUID("00000000-0000-4000-8000-0000000000c2")
GRANT = UUID("00000000-0000-4000-8000-0000000000c3")
T0 = datetime(2026, 3, 1, 8, 30, tzinfo=UTC)
SWC = AgencyRef(agency_id="dt-swc", kind=AgencyKind.SOCIAL_WORK_CENTRE)
HOSPITAL = AgencyRef(agency_id="dt-hospital", kind=AgencyKind.HOSPITAL)
CASE_MANAGER = Actor(user_id="cw-1", agency_id="dt-swc", role=Role.CASE_MANAGER)


def consent_to_hospital(*, withdrawn_at: datetime | None = None) -> list[Event]:
    """A grant of identity and health data to the hospital for a month, perhaps withdrawn."""
    record = UUID("00000000-0000-4000-8000-0000000000c4")
    events: list[Event] = [
        ConsentGranted(
            originator_id=record,
            originator_version=1,
            timestamp=T0,
            actor=CASE_MANAGER,
            grant_id=GRANT,
            person_id=PERSON,
            categories=(DataCategory.IDENTITY, DataCategory.HEALTH),
            recipients=(Recipient(agency_id="dt-hospital"),),
            purposes=(Purpose.SERVICE_PROVISION,),
            valid_from=T0,
            valid_until=T0 + timedelta(days=30),
            collection=Collection(
                method=CollectionMethod.WRITTEN_FORM,
                form_reference="form-07",
                language="vi",
                withdrawal_explained=True,
            ),
            given_by=ConsentGiver(kind=GiverKind.PERSON),
        )
    ]
    if withdrawn_at is not None:
        events.append(
            ConsentWithdrawn(
                originator_id=record,
                originator_version=2,
                timestamp=withdrawn_at,
                actor=CASE_MANAGER,
                grant_id=GRANT,
                person_id=PERSON,
                heard_by=SWC,
            )
        )
    return events


def dispatched_referral(categories: tuple[DataCategory, ...]) -> list[Event]:
    referral_id = UUID("00000000-0000-4000-8000-0000000000c5")
    envelope = {"originator_id": referral_id, "timestamp": T0, "actor": CASE_MANAGER}
    return [
        ReferralCreated(
            originator_version=1,
            case_id=CASE,
            person_id=PERSON,
            province="dong-thap",
            from_agency=SWC,
            to_agency=HOSPITAL,
            service_type=ServiceType.MEDICAL_CARE,
            urgency=Urgency.URGENT,
            purpose=Purpose.SERVICE_PROVISION,
            categories=categories,
            **envelope,
        ),
        DisclosureRecorded(
            originator_version=2,
            disclosure_id=UUID("00000000-0000-4000-8000-0000000000c6"),
            person_id=PERSON,
            recipient=HOSPITAL,
            purpose=Purpose.SERVICE_PROVISION,
            basis=DisclosureBasis.CONSENT,
            released=(
                ReleasedField(category=DataCategory.IDENTITY, field="full_name", grant_id=GRANT),
                ReleasedField(category=DataCategory.CONTACT, field="phone", grant_id=GRANT),
            ),
            data={
                "identity": {"full_name": "Lê Thị Mai"},
                "contact": {"phone": "0900 000 000"},
            },
            **envelope,
        ),
        ReferralDispatched(
            originator_version=3,
            acknowledge_by=T0 + timedelta(hours=4),
            first_service_by=T0 + timedelta(days=1),
            **envelope,
        ),
    ]


def referral_after(events: list[Event]) -> Referral:
    referral = Referral(events[0].originator_id)
    for event in events:
        referral.apply(event)
    return referral


def test_the_recipient_reads_what_the_consent_in_force_permits() -> None:
    referral = referral_after(dispatched_referral((DataCategory.IDENTITY, DataCategory.CONTACT)))
    seen = recipient_sight(referral, consent_to_hospital(), T0 + timedelta(hours=1))
    # Contact was never granted to the hospital: identity only, on the grant.
    assert seen.categories == {DataCategory.IDENTITY}
    assert seen.basis is ReadBasis.GRANT
    assert seen.grant_ids == (GRANT,)
    assert DataCategory.CONTACT in seen.withheld


def test_after_a_withdrawal_or_past_its_end_the_grant_releases_nothing() -> None:
    referral = referral_after(dispatched_referral((DataCategory.IDENTITY,)))
    withdrawn = consent_to_hospital(withdrawn_at=T0 + timedelta(hours=2))
    assert recipient_sight(referral, withdrawn, T0 + timedelta(hours=1)).categories
    assert not recipient_sight(referral, withdrawn, T0 + timedelta(hours=3)).categories
    expired = T0 + timedelta(days=31)
    assert not recipient_sight(referral, consent_to_hospital(), expired).categories
    assert not recipient_sight(referral, [], T0 + timedelta(hours=1)).categories


def test_a_message_carries_only_the_data_the_consent_permits_when_it_is_built() -> None:
    """The dispatch built before the withdrawal carries the name and records the read; built
    after it (a relay behind, or re-publishing with ``--reset``) it carries nothing."""
    events = dispatched_referral((DataCategory.IDENTITY, DataCategory.CONTACT))
    withdrawn_at = T0 + timedelta(hours=2)
    consent = consent_to_hospital(withdrawn_at=withdrawn_at)
    for built_at, expected in [
        (T0 + timedelta(hours=1), {"identity": {"full_name": "Lê Thị Mai"}}),
        (withdrawn_at + timedelta(seconds=1), None),
    ]:
        view = view_of(
            release=lambda referral, at: recipient_sight(referral, consent, at),
            clock=lambda at=built_at: at,
        )
        messages = [m for e in events for m in view.messages_for(e)]
        to_hospital = [json.loads(m.value) for m in messages if m.agency_id == "dt-hospital"]
        (dispatch,) = to_hospital
        if expected is None:
            assert dispatch["disclosure"]["sealed"] is None
        else:
            assert opened(KEYS, "dt-hospital", dispatch, PERSON).data == expected
        # What was disclosed stays on the record, whatever the recipient may read now.
        assert [r["field"] for r in dispatch["disclosure"]["released"]] == ["full_name", "phone"]
        assert all(b"0900" not in m.value for m in messages)
        reads = view.take_reads()
        if expected is None:
            assert reads == []
            continue
        (read,) = reads
        assert read.actor.user_id == FEED_READER
        assert read.actor.agency_id == "dt-hospital"
        assert read.what == FEED_READ_PATH
        assert read.case_id == CASE
        assert read.categories == (DataCategory.IDENTITY,)
        assert read.basis is ReadBasis.GRANT
        assert read.grant_ids == (GRANT,)
        assert read.timestamp == built_at
        assert view.take_reads() == []


def rejected_referral() -> list[Event]:
    """The referral sent to the hospital, then rejected with a reason that names the person."""
    dispatched = dispatched_referral((DataCategory.IDENTITY,))
    return [
        *dispatched,
        ReferralRejected(
            originator_id=dispatched[0].originator_id,
            originator_version=len(dispatched) + 1,
            timestamp=T0 + timedelta(hours=3),
            actor=Actor(user_id="nurse-1", agency_id="dt-hospital", role=Role.AGENCY_STAFF),
            reason="Lê Thị Mai needs a paediatric ward; call 0900 111 222.",
            person_id=PERSON,
        ),
    ]


def test_a_reason_travels_sealed_for_each_audience_under_its_own_key() -> None:
    """The sender and the recipient each open the rejection's reason with their own key; the
    other's key does not open it, and in no message is it in clear. The recipient's reason is
    a read of the person's data, recorded like a disclosure's."""
    events = rejected_referral()
    view = view_of(
        release=lambda referral, at: recipient_sight(referral, consent_to_hospital(), at),
        clock=lambda: T0 + timedelta(hours=3),
    )
    for event in events[:-1]:
        view.messages_for(event)
    view.take_reads()
    messages = view.messages_for(events[-1])
    assert [m.agency_id for m in messages] == ["dt-swc", "dt-hospital"]
    assert all(b"0900" not in m.value and b"Mai" not in m.value for m in messages)
    to_swc, to_hospital = (json.loads(m.value) for m in messages)
    assert "reason" not in to_swc
    reason = "Lê Thị Mai needs a paediatric ward; call 0900 111 222."
    assert opened_reason(KEYS, "dt-swc", to_swc, PERSON) == reason
    assert opened_reason(KEYS, "dt-hospital", to_hospital, PERSON) == reason
    assert to_swc["sealed_reason"]["ciphertext"] != to_hospital["sealed_reason"]["ciphertext"]
    swapped = {**to_swc, "sealed_reason": to_hospital["sealed_reason"]}
    with pytest.raises(InvalidTag):
        opened_reason(KEYS, "dt-swc", swapped, PERSON)
    # Bound to its message: the same part under another version opens nothing.
    with pytest.raises(InvalidTag):
        opened_reason(KEYS, "dt-swc", {**to_swc, "version": to_swc["version"] - 1}, PERSON)
    (read,) = view.take_reads()
    assert read.actor.agency_id == "dt-hospital"
    assert read.what == FEED_READ_PATH
    assert read.categories == (DataCategory.IDENTITY,)
    assert read.basis is ReadBasis.GRANT
    # Published again, the same bytes.
    again = view_of(
        release=lambda referral, at: recipient_sight(referral, consent_to_hospital(), at),
        clock=lambda: T0 + timedelta(hours=3),
    )
    assert [m.value for e in events for m in again.messages_for(e)][-2:] == [
        m.value for m in messages
    ]


def test_a_recipient_that_may_read_nothing_now_gets_no_reason_and_the_sender_still_does() -> None:
    events = rejected_referral()
    withdrawn = consent_to_hospital(withdrawn_at=T0 + timedelta(hours=2))
    view = view_of(
        release=lambda referral, at: recipient_sight(referral, withdrawn, at),
        clock=lambda: T0 + timedelta(hours=3),
    )
    messages = [m for e in events for m in view.messages_for(e)][-2:]
    to_swc, to_hospital = (json.loads(m.value) for m in messages)
    assert to_hospital["audience"] == "recipient"
    assert to_hospital["sealed_reason"] is None
    assert opened_reason(KEYS, "dt-swc", to_swc, PERSON).startswith("Lê Thị Mai")
    assert view.take_reads() == []


def test_after_erasure_no_reason_is_sent_to_anyone() -> None:
    keys = new_keys()
    events = rejected_referral()
    first = view_of(keys=keys)
    before = [m for e in events for m in first.messages_for(e)][-2:]
    assert all(json.loads(m.value)["sealed_reason"] for m in before)
    assert keys.keys.erase(PERSON)
    second = view_of(keys=keys)
    after = [m for e in events for m in second.messages_for(e)][-2:]
    assert [json.loads(m.value)["sealed_reason"] for m in after] == [None, None]
    assert all(b"Mai" not in m.value for m in after)


def test_a_handovers_cancellation_reason_is_sealed_for_each_party() -> None:
    handover_id = UUID("00000000-0000-4000-8000-0000000000d1")
    police = AgencyRef(agency_id="dt-police", kind=AgencyKind.POLICE)
    envelope = {"originator_id": handover_id, "timestamp": T0, "actor": CASE_MANAGER}
    reason = "Lê Thị Mai was taken to hospital before the handover."
    events: list[Event] = [
        HandoverStarted(
            originator_version=1,
            case_id=CASE,
            person_id=PERSON,
            province="dong-thap",
            kind=HandoverKind.RECEPTION,
            parties=(
                HandoverParty(agency=police, role=PartyRole.FROM, capacity="officer"),
                HandoverParty(agency=SWC, role=PartyRole.TO, capacity="social worker"),
            ),
            **envelope,
        ),
        HandoverCancelled(originator_version=2, reason=reason, person_id=PERSON, **envelope),
    ]
    view = view_of()
    view.messages_for(events[0])
    messages = view.messages_for(events[1])
    assert [m.agency_id for m in messages] == ["dt-police", "dt-swc"]
    assert all(b"Mai" not in m.value for m in messages)
    for message in messages:
        value = json.loads(message.value)
        assert "reason" not in value
        assert opened_reason(KEYS, message.agency_id, value, PERSON) == reason
    assert messages[0].value != messages[1].value
