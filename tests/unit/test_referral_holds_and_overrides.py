"""Deadlines wait while a referral is on hold for consent, and an emergency override ends:
at the end it was asked for, or when it is reviewed. No I/O."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.popo import POPOApplicationRecorder
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.consent import ConsentWithdrawn, Recipient, RecipientGroup
from contracts.consent_decision import Verdict
from contracts.envelope import Actor
from contracts.referral import (
    DeadlineKind,
    DeadlineMissed,
    DisclosureBasis,
    DisclosureRecorded,
    OverrideConclusion,
    OverrideLapsed,
    OverrideRequested,
    OverrideReviewed,
    ReferralPutOnHold,
    WithdrawalNotedDuringOverride,
)
from contracts.vocabulary import AgencyKind, DataCategory, Role
from services.projections.views import Docs, Fact, QueueView
from services.referral.domain import CaseFile, Referral, ReferralRuleError
from services.referral.index import ReferralIndex
from services.referral.settings import DEFAULT_DEADLINES
from services.runtime.errors import InvalidRequestError, NotFoundError, PermissionDeniedError
from services.runtime.persistence import new_mapper
from tests.unit.test_referral_rules import (
    COORDINATOR,
    HOSPITAL,
    MANAGER,
    PSYCH,
    STAFF,
    T0,
    S,
    case_file,
    consent,
    ctx,
    grant,
    refer,
)

AUDITOR = Actor(user_id="audit-1", agency_id="dt-inspectorate", role=Role.AUDITOR)
DEADLINES = DEFAULT_DEADLINES[PSYCH]  # acknowledge within 2 hours, first service within 24
H = 60  # minutes


def withdraw(file: CaseFile, grant_id: UUID, minutes: float) -> None:
    consent(file, ConsentWithdrawn, minutes, grant_id=grant_id, heard_by=HOSPITAL)


def events_of(referral: Referral, event_type: type[Any]) -> list[Any]:
    return [e for e in referral.collect_events() if isinstance(e, event_type)]


# -- deadlines pause while on hold -------------------------------------------------------------


def held_for_three_hours() -> tuple[Referral, CaseFile]:
    """Sent at minute 2 (acknowledge by 2:02), on hold from 0:30 to 3:30."""
    file = case_file()
    grant_id = grant(file)
    referral = refer(file)
    withdraw(file, grant_id, 30)
    referral.reconsider(ctx(30), file, DEADLINES)
    assert referral.status is S.ON_HOLD
    # Past the original due time while on hold: nobody can act, so nothing is escalated.
    assert referral.escalate(ctx(2 * H + 3), T0 + timedelta(minutes=2 * H + 3)) == []
    grant(file, minutes=3 * H + 30)
    referral.reconsider(ctx(3 * H + 30), file, DEADLINES)
    assert referral.status is S.REQUESTED
    return referral, file


def test_a_hold_moves_the_deadlines_later_by_its_length() -> None:
    referral, _ = held_for_three_hours()
    original = T0 + timedelta(minutes=2 + 2 * H)
    assert referral.acknowledge_by == original + timedelta(hours=3)
    assert referral.first_service_by == T0 + timedelta(minutes=2, hours=24 + 3)
    # No escalation until the original due time plus the three hours on hold...
    assert referral.escalate(ctx(0), original + timedelta(hours=3)) == []
    # ...then exactly one.
    later = original + timedelta(hours=3, seconds=1)
    assert referral.escalate(ctx(0), later) == [DeadlineKind.ACKNOWLEDGE]
    assert referral.escalate(ctx(0), later + timedelta(hours=1)) == []
    missed = events_of(referral, DeadlineMissed)
    assert [(e.deadline, e.due_at) for e in missed] == [
        (DeadlineKind.ACKNOWLEDGE, original + timedelta(hours=3))
    ]


def test_a_replay_gives_the_same_due_times() -> None:
    referral, _ = held_for_three_hours()
    replayed = Referral.project(None, referral.collect_events())
    assert replayed is not None
    assert replayed.due == referral.due
    assert replayed.missed_deadlines(T0 + timedelta(hours=5, minutes=3)) == (
        referral.missed_deadlines(T0 + timedelta(hours=5, minutes=3))
    )


def test_only_the_deadlines_still_owed_move() -> None:
    file = case_file()
    grant_id = grant(file)
    referral = refer(file)
    referral.answer(ctx(10, STAFF), "acknowledge")  # acknowledgement is no longer owed
    withdraw(file, grant_id, 20)
    referral.reconsider(ctx(20), file, DEADLINES)
    grant(file, minutes=80)
    referral.reconsider(ctx(80), file, DEADLINES)
    assert referral.status is S.RECEIVED
    assert referral.acknowledge_by == T0 + timedelta(minutes=2 + 2 * H)  # unmoved
    assert referral.first_service_by == T0 + timedelta(minutes=2 + 60, hours=24)


def queue_of(log: list[Any], referral_id: UUID) -> dict[str, Any]:
    """The projections' queue document of a referral, fed its events as the log holds them."""
    view = QueueView()
    handled = set(view.handles["referral"])
    docs = Docs(lambda _key: None)
    for event in log:
        if type(event) in handled:
            data = event.model_dump(mode="json")
            fact = Fact(
                event.event_type,
                str(event.originator_id),
                event.originator_version,
                data["timestamp"],
                data,
            )
            view.apply(docs, "referral", fact)
    return docs.rows["ref:" + str(referral_id)][2]


def instant(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


def index_of(log: list[Any]) -> ReferralIndex:
    """The referral index, fed a referral's events as the log holds them."""
    recorder = POPOApplicationRecorder()
    mapper = new_mapper()
    recorder.insert_events([mapper.to_stored_event(e) for e in log])
    return ReferralIndex(recorder)


@settings(max_examples=60, deadline=None)
@given(
    holds=st.lists(st.tuples(st.integers(1, 6 * H), st.integers(0, 12 * H)), max_size=4),
    acknowledge_after=st.none() | st.integers(0, 8 * H),
    checks=st.lists(st.integers(0, 72 * H), min_size=1, max_size=6),
)
def test_the_index_and_the_aggregate_agree_on_what_is_due(
    holds: list[tuple[int, int]], acknowledge_after: int | None, checks: list[int]
) -> None:
    """Random holds (a gap, then a length), maybe an acknowledgement, and deadline checks
    at random instants: the index finds exactly the referrals the aggregate escalates, with
    the same due times as the aggregate and the agency's queue, and nothing is escalated
    while the referral is on hold."""
    file = case_file()
    grant_id = grant(file)
    referral = refer(file)
    log = referral.collect_events()
    minutes = 2
    steps: list[tuple[int, str]] = []
    for gap, length in holds:
        steps += [(minutes + gap, "hold"), (minutes + gap + length, "resume")]
        minutes += gap + length
    if acknowledge_after is not None:
        steps.append((2 + acknowledge_after, "acknowledge"))
    steps += [(at, "check") for at in checks]
    for at, step in sorted(steps, key=lambda s: s[0]):
        now = T0 + timedelta(minutes=at)
        if step == "hold" and referral.status is not S.ON_HOLD:
            withdraw(file, grant_id, at)
            referral.reconsider(ctx(at), file, DEADLINES)
        elif step == "resume" and referral.status is S.ON_HOLD:
            grant_id = grant(file, minutes=at)
            referral.reconsider(ctx(at), file, DEADLINES)
        elif step == "acknowledge" and referral.status is S.REQUESTED:
            referral.answer(ctx(at, STAFF), "acknowledge")
        elif step == "check":
            log += referral.collect_events()
            index = index_of(log)
            index.refresh()
            replayed = Referral.project(None, log)
            assert replayed is not None
            assert index.referrals[referral.id].due == replayed.due == referral.due
            # The agency's queue shows the same due times.
            queued = queue_of(log, referral.id)
            assert instant(queued["acknowledge_by"]) == referral.acknowledge_by
            assert instant(queued["first_service_by"]) == referral.first_service_by
            due = referral.missed_deadlines(now)
            assert (referral.id in index.with_deadlines_due(now)) == bool(due)
            if referral.status is S.ON_HOLD:
                assert due == []
            assert referral.escalate(ctx(at), now) == [kind for kind, _ in due]
        log += referral.collect_events()


# -- the emergency override ends -------------------------------------------------------------


def overridden(needed_for_hours: int = 6) -> tuple[Referral, CaseFile, UUID]:
    """A referral with no consent at all, sent under an override approved at minute 4."""
    file = case_file()
    referral = refer(file)
    assert referral.status is S.DRAFT
    override_id = referral.request_override(
        ctx(3), "Unconscious, needs surgery now", needed_for_hours
    )
    referral.approve_override(ctx(4, COORDINATOR), override_id, file, DEADLINES)
    assert referral.status is S.REQUESTED
    return referral, file, override_id


def test_an_override_lasts_until_the_end_asked_for() -> None:
    referral, _, override_id = overridden(needed_for_hours=6)
    approved = T0 + timedelta(minutes=4)
    assert referral.override_in_force_at(approved - timedelta(seconds=1)) is None
    assert referral.override_in_force_at(approved) == override_id
    assert referral.override_in_force_at(approved + timedelta(hours=6, seconds=-1)) == override_id
    assert referral.override_in_force_at(approved + timedelta(hours=6)) is None
    assert referral.override_ended_by(approved + timedelta(hours=6)) == override_id


def test_an_override_is_needed_for_a_bounded_time_a_day_by_default() -> None:
    file = case_file()
    referral = refer(file)
    for hours in (0, 73):
        with pytest.raises(InvalidRequestError) as err:
            referral.request_override(ctx(3), "Unconscious, needs surgery now", hours)
        assert err.value.field == "needed_for_hours"
    override_id = referral.request_override(ctx(3), "Unconscious, needs surgery now")
    referral.approve_override(ctx(4, COORDINATOR), override_id, file, DEADLINES)
    approved = T0 + timedelta(minutes=4)
    assert referral.override_in_force_at(approved + timedelta(hours=23)) == override_id
    assert referral.override_in_force_at(approved + timedelta(hours=24)) is None
    # A request recorded before the field existed reads as a day.
    old = OverrideRequested.model_validate(
        {
            "originator_id": uuid4(),
            "originator_version": 2,
            "timestamp": T0,
            "actor": MANAGER,
            "override_id": uuid4(),
            "reason": "Unconscious, needs surgery now",
        }
    )
    assert old.needed_for_hours == 24


def test_after_its_end_the_next_consent_change_makes_the_referral_follow_consent() -> None:
    referral, file, override_id = overridden(needed_for_hours=6)
    referral.collect_events()
    # Seven hours on, an unrelated grant: the referral is reconsidered, and there is no
    # consent for it, so it goes on hold; the lapse is on record first.
    grant(file, minutes=7 * H, recipients=(Recipient(kind=AgencyKind.SCHOOL),))
    referral.reconsider(ctx(7 * H), file, DEADLINES)
    assert referral.status is S.ON_HOLD
    events = referral.collect_events()
    assert [type(e) for e in events] == [OverrideLapsed, ReferralPutOnHold]
    lapse = events[0]
    assert isinstance(lapse, OverrideLapsed)
    assert lapse.override_id == override_id
    assert lapse.ended_at == T0 + timedelta(minutes=4, hours=6)
    assert referral.override_in_force is None
    assert referral.override_ended_by(T0 + timedelta(hours=8)) is None  # on record now


def test_after_its_end_consent_given_meanwhile_becomes_the_basis() -> None:
    referral, file, _ = overridden(needed_for_hours=6)
    grant_id = grant(file, minutes=60)
    referral.reconsider(ctx(60), file, DEADLINES)  # in force: nothing changes
    assert referral.disclosure is not None
    assert referral.disclosure.basis is DisclosureBasis.VITAL_INTEREST
    referral.collect_events()
    referral.reconsider(ctx(7 * H), file, DEADLINES)
    assert referral.status is S.REQUESTED
    assert referral.disclosure.basis is DisclosureBasis.CONSENT
    assert {f.grant_id for f in referral.disclosure.released} == {grant_id}
    assert [type(e) for e in referral.collect_events()] == [OverrideLapsed, DisclosureRecorded]


def test_a_consent_change_read_late_does_not_undo_an_override_approved_after_it() -> None:
    file = case_file()
    grant_id = grant(file)
    referral = refer(file)
    withdraw(file, grant_id, 10)
    referral.reconsider(ctx(10), file, DEADLINES)
    override_id = referral.request_override(ctx(11), "Unconscious, needs surgery now")
    referral.approve_override(ctx(12, COORDINATOR), override_id, file, DEADLINES)
    assert referral.status is S.REQUESTED
    # A refusal recorded at minute 11, read only now: the override approved at 12 stands.
    withdraw(file, grant(file, minutes=11), 11)
    referral.reconsider(ctx(11), file, DEADLINES)
    assert referral.status is S.REQUESTED


def test_a_review_by_a_third_role_ends_the_override() -> None:
    referral, file, override_id = overridden(needed_for_hours=24)
    other_manager = Actor(user_id="cw-2", agency_id="dt-swc", role=Role.CASE_MANAGER)
    other_coordinator = Actor(user_id="coord-2", agency_id="dt-dolisa", role=Role.COORDINATOR)
    for who in (MANAGER, COORDINATOR, other_manager, other_coordinator):
        with pytest.raises(PermissionDeniedError):
            referral.review_override(
                ctx(60, who),
                override_id,
                OverrideConclusion.JUSTIFIED,
                "Surgery was urgent",
                file,
                DEADLINES,
            )
    with pytest.raises(NotFoundError):
        referral.review_override(
            ctx(60, AUDITOR),
            uuid4(),
            OverrideConclusion.JUSTIFIED,
            "Surgery was urgent",
            file,
            DEADLINES,
        )
    with pytest.raises(InvalidRequestError):
        referral.review_override(
            ctx(60, AUDITOR), override_id, OverrideConclusion.JUSTIFIED, "ok", file, DEADLINES
        )
    referral.collect_events()
    referral.review_override(
        ctx(60, AUDITOR),
        override_id,
        OverrideConclusion.NOT_JUSTIFIED,
        "Consent could have been asked for",
        file,
        DEADLINES,
    )
    # From the review on, the referral follows the consent in force: there is none.
    assert referral.status is S.ON_HOLD
    events = referral.collect_events()
    assert [type(e) for e in events] == [OverrideReviewed, ReferralPutOnHold]
    review = events[0]
    assert isinstance(review, OverrideReviewed)
    assert review.conclusion is OverrideConclusion.NOT_JUSTIFIED
    assert referral.override_in_force_at(T0 + timedelta(minutes=59)) == override_id
    assert referral.override_in_force_at(T0 + timedelta(minutes=60)) is None
    assert referral.override_in_force is None
    with pytest.raises(ReferralRuleError):
        referral.review_override(
            ctx(61, AUDITOR),
            override_id,
            OverrideConclusion.JUSTIFIED,
            "Second look at it",
            file,
            DEADLINES,
        )
    # On hold again, a new override may be asked for and approved.
    again = referral.request_override(ctx(62), "Still unconscious, second surgery")
    referral.approve_override(ctx(63, COORDINATOR), again, file, DEADLINES)
    assert referral.status is S.REQUESTED
    assert referral.override_in_force_at(T0 + timedelta(minutes=63)) == again


def test_a_withdrawal_during_an_override_is_noted_for_its_approver() -> None:
    file = case_file()
    grant_id = grant(file, categories=(DataCategory.IDENTITY,))
    referral = refer(file, categories=(DataCategory.IDENTITY, DataCategory.NEEDS))
    assert referral.status is S.DRAFT  # needs: not granted
    override_id = referral.request_override(ctx(3), "Unconscious, needs surgery now", 6)
    referral.approve_override(ctx(4, COORDINATOR), override_id, file, DEADLINES)
    referral.collect_events()
    # A consent change that withholds nothing new is not news for the approver.
    grant(
        file,
        minutes=20,
        recipients=(Recipient(group=RecipientGroup.ANY),),
        categories=(DataCategory.CONTACT,),
    )
    referral.reconsider(ctx(20), file, DEADLINES)
    assert referral.collect_events() == []
    # The identity grant is withdrawn while the override is in force.
    withdraw(file, grant_id, 30)
    referral.reconsider(ctx(30), file, DEADLINES)
    assert referral.status is S.REQUESTED  # the override still stands
    noted = events_of(referral, WithdrawalNotedDuringOverride)
    assert len(noted) == 1
    assert noted[0].override_id == override_id
    assert noted[0].approved_by == COORDINATOR
    assert (DataCategory.IDENTITY, Verdict.WITHDRAWN) in {
        (w.category, w.verdict) for w in noted[0].withheld
    }
    assert referral.withdrawals_noted == noted
    # Told once: the same consent read again adds nothing.
    referral.reconsider(ctx(31), file, DEADLINES)
    assert referral.collect_events() == []
    # Once the override has ended, the withdrawal takes effect.
    referral.reconsider(ctx(6 * H + 5), file, DEADLINES)
    assert referral.status is S.ON_HOLD
