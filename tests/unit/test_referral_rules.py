"""Referral and handover state machines, and consent-bound disclosure, with no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest

from contracts.consent import (
    Collection,
    CollectionMethod,
    ConsentGiver,
    ConsentGranted,
    ConsentRefused,
    ConsentWithdrawn,
    GiverKind,
    Recipient,
    RecipientGroup,
)
from contracts.consent_decision import Verdict
from contracts.envelope import Actor, AgencyRef, Event
from contracts.referral import (
    DeadlineKind,
    DeadlineMissed,
    DisclosureBasis,
    DisclosureRecorded,
    HandoverCompleted,
    HandoverKind,
    HandoverParty,
    PartyRole,
    ReferralStatus,
    ServiceDelivery,
    Urgency,
)
from contracts.vocabulary import AgencyKind, DataCategory, Purpose, Role, ServiceType
from services.referral.domain import (
    TRANSITIONS,
    CaseFile,
    Handover,
    HandoverRuleError,
    Referral,
    ReferralRuleError,
    next_steps,
)
from services.referral.settings import DEFAULT_DEADLINES, ReferralSettings
from services.runtime.aggregate import CommandContext
from services.runtime.errors import InvalidRequestError, PermissionDeniedError

T0 = datetime(2026, 3, 1, 21, 0, tzinfo=UTC)
SWC = AgencyRef(agency_id="dt-swc", kind=AgencyKind.SOCIAL_WORK_CENTRE)
HOSPITAL = AgencyRef(agency_id="dt-hospital", kind=AgencyKind.HOSPITAL)
POLICE = AgencyRef(agency_id="dt-police", kind=AgencyKind.POLICE)
MANAGER = Actor(user_id="cw-1", agency_id="dt-swc", role=Role.CASE_MANAGER)
COORDINATOR = Actor(user_id="coord-1", agency_id="dt-dolisa", role=Role.COORDINATOR)
STAFF = Actor(user_id="nurse-1", agency_id="dt-hospital", role=Role.AGENCY_STAFF)
WRITTEN = Collection(
    method=CollectionMethod.WRITTEN_FORM,
    form_reference="F",
    language="vi",
    withdrawal_explained=True,
)
PSYCH = ServiceType.PSYCHOLOGICAL_FIRST_AID
S = ReferralStatus


def ctx(minutes: float = 0, actor: Actor = MANAGER) -> CommandContext:
    return CommandContext(actor=actor, at=T0 + timedelta(minutes=minutes))


def case_file() -> CaseFile:
    file = CaseFile.open(ctx(), uuid4(), uuid4(), "dong-thap")
    file.note_facts(ctx(), DataCategory.IDENTITY, {"full_name": "A B", "sex": "female"})
    file.note_facts(ctx(), DataCategory.NEEDS, {"urgent_needs": ["medical_check"]})
    return file


def consent(file: CaseFile, event_type: type[Event], minutes: float, **fields: object) -> Event:
    event = event_type(
        originator_id=uuid4(),
        originator_version=1,
        timestamp=T0 + timedelta(minutes=minutes),
        actor=MANAGER,
        person_id=file.person_id,
        **fields,
    )
    file.note_consent(ctx(minutes), event)
    return event


def grant(file: CaseFile, minutes: float = 1, **changes: object) -> UUID:
    fields: dict[str, object] = {
        "grant_id": uuid4(),
        "categories": (DataCategory.IDENTITY, DataCategory.NEEDS),
        "recipients": (Recipient(kind=AgencyKind.HOSPITAL),),
        "purposes": (Purpose.SERVICE_PROVISION,),
        "valid_from": T0,
        "valid_until": T0 + timedelta(days=365),
        "collection": WRITTEN,
        "given_by": ConsentGiver(kind=GiverKind.PERSON),
    }
    fields.update(changes)
    consent(file, ConsentGranted, minutes, **fields)
    return fields["grant_id"]  # type: ignore[return-value]


def refer(
    file: CaseFile,
    minutes: float = 2,
    to: AgencyRef = HOSPITAL,
    categories: tuple[DataCategory, ...] = (DataCategory.IDENTITY,),
) -> Referral:
    return Referral.create(
        ctx(minutes),
        file,
        from_agency=SWC,
        to_agency=to,
        service_type=PSYCH,
        urgency=Urgency.URGENT,
        purpose=Purpose.SERVICE_PROVISION,
        categories=categories,
        note=None,
        deadlines=DEFAULT_DEADLINES[PSYCH],
    )


def test_with_consent_a_referral_is_sent_with_a_disclosure_naming_every_field() -> None:
    file = case_file()
    grant_id = grant(file)
    referral = refer(file, categories=(DataCategory.IDENTITY, DataCategory.NEEDS))
    assert referral.status is S.REQUESTED
    disclosure = referral.disclosure
    assert disclosure is not None
    assert disclosure.basis is DisclosureBasis.CONSENT
    assert {(f.category, f.field, f.grant_id) for f in disclosure.released} == {
        (DataCategory.IDENTITY, "full_name", grant_id),
        (DataCategory.IDENTITY, "sex", grant_id),
        (DataCategory.NEEDS, "urgent_needs", grant_id),
    }
    assert disclosure.data == {
        "identity": {"full_name": "A B", "sex": "female"},
        "needs": {"urgent_needs": ["medical_check"]},
    }
    # psychological first aid: acknowledge within 2 hours, first service within 24.
    assert referral.acknowledge_by == T0 + timedelta(minutes=2, hours=2)
    assert referral.first_service_by == T0 + timedelta(minutes=2, hours=24)


def test_without_consent_it_waits_blocked_and_discloses_nothing() -> None:
    file = case_file()
    grant(file, categories=(DataCategory.NEEDS,))
    referral = refer(file, categories=(DataCategory.IDENTITY, DataCategory.NEEDS))
    assert referral.status is S.DRAFT
    assert [(w.category, w.verdict) for w in referral.withheld] == [
        (DataCategory.IDENTITY, Verdict.NOT_GRANTED)
    ]
    assert referral.disclosure is None
    # Consent arrives: the referral goes out, disclosing both categories.
    grant(file, minutes=5)
    referral.reconsider(ctx(5), file, DEFAULT_DEADLINES[PSYCH])
    assert referral.status is S.REQUESTED
    assert referral.disclosure is not None
    assert set(referral.disclosure.data) == {"identity", "needs"}


def test_refused_recipient_is_never_sent_anything() -> None:
    file = case_file()
    grant(file, recipients=(Recipient(group=RecipientGroup.ANY),))
    consent(
        file,
        ConsentRefused,
        2,
        refusal_id=uuid4(),
        recipients=(Recipient(kind=AgencyKind.POLICE),),
        except_purposes=(Purpose.CRIMINAL_PROCEEDINGS,),
    )
    to_police = refer(file, minutes=3, to=POLICE)
    assert to_police.status is S.DRAFT
    assert to_police.withheld[0].verdict is Verdict.REFUSED
    assert refer(file, minutes=3).status is S.REQUESTED


def test_withdrawal_holds_the_referral_and_renewed_consent_resumes_it() -> None:
    file = case_file()
    grant_id = grant(file)
    referral = refer(file)
    referral.answer(ctx(3, STAFF), "acknowledge")
    referral.answer(ctx(4, STAFF), "accept")
    consent(file, ConsentWithdrawn, 5, grant_id=grant_id, heard_by=HOSPITAL)
    referral.reconsider(ctx(5), file, DEFAULT_DEADLINES[PSYCH])
    assert referral.status is S.ON_HOLD
    assert referral.withheld[0].verdict is Verdict.WITHDRAWN
    with pytest.raises(ReferralRuleError):
        referral.answer(ctx(6, STAFF), "start")
    new_grant = grant(file, minutes=7)
    referral.reconsider(ctx(7), file, DEFAULT_DEADLINES[PSYCH])
    assert referral.status is S.ACCEPTED  # back where it was
    assert referral.disclosure is not None
    assert {f.grant_id for f in referral.disclosure.released} == {new_grant}
    assert len(referral.disclosures) == 2


def test_the_closed_loop_and_what_each_state_allows() -> None:
    file = case_file()
    grant(file)
    referral = refer(file)
    with pytest.raises(ReferralRuleError) as err:
        referral.answer(ctx(3, STAFF), "start")
    assert err.value.allowed == ["acknowledge", "reject", "cancel"]
    assert "Allowed next steps: acknowledge, reject, cancel" in err.value.detail
    for action in ("acknowledge", "accept", "start"):
        referral.answer(ctx(3, STAFF), action)
    with pytest.raises(InvalidRequestError):
        referral.answer(ctx(4, STAFF), "complete")  # an outcome is required
    referral.answer(ctx(4, STAFF), "complete", "Seen by the psychologist")
    assert referral.status is S.COMPLETED
    assert next_steps(S.COMPLETED) == []
    assert [s for _, _, s in referral.history] == [
        S.DRAFT,
        S.REQUESTED,
        S.RECEIVED,
        S.ACCEPTED,
        S.IN_PROGRESS,
        S.COMPLETED,
    ]


@pytest.mark.parametrize("action", list(TRANSITIONS))
def test_terminal_states_allow_nothing(action: str) -> None:
    file = case_file()
    grant(file)
    referral = refer(file)
    referral.answer(ctx(3, STAFF), "reject", "No capacity tonight")
    with pytest.raises(ReferralRuleError):
        referral.answer(ctx(4, STAFF), action, "text")


def test_a_missed_deadline_escalates_once() -> None:
    file = case_file()
    grant(file)
    referral = refer(file)
    assert referral.acknowledge_by is not None
    late = referral.acknowledge_by + timedelta(minutes=1)
    assert referral.escalate(ctx(0), late) == [DeadlineKind.ACKNOWLEDGE]
    assert referral.escalate(ctx(0), late) == []
    much_later = referral.first_service_by + timedelta(minutes=1)  # type: ignore[operator]
    assert referral.escalate(ctx(0), much_later) == [DeadlineKind.FIRST_SERVICE]
    escalations = [e for e in referral.collect_events() if isinstance(e, DeadlineMissed)]
    assert [e.deadline for e in escalations] == [
        DeadlineKind.ACKNOWLEDGE,
        DeadlineKind.FIRST_SERVICE,
    ]


def test_acknowledged_in_time_never_escalates_for_acknowledgement() -> None:
    file = case_file()
    grant(file)
    referral = refer(file)
    referral.answer(ctx(10, STAFF), "acknowledge")
    late = referral.acknowledge_by + timedelta(hours=1)  # type: ignore[operator]
    assert referral.escalate(ctx(0), late) == []


def test_override_needs_a_second_approver_in_another_role() -> None:
    file = case_file()
    referral = refer(file)  # no consent at all
    override_id = referral.request_override(ctx(3), "Unconscious, needs surgery now")
    with pytest.raises(PermissionDeniedError):
        referral.approve_override(ctx(4), override_id, file, DEFAULT_DEADLINES[PSYCH])
    other_manager = Actor(user_id="cw-2", agency_id="dt-swc", role=Role.CASE_MANAGER)
    with pytest.raises(PermissionDeniedError):
        referral.approve_override(
            ctx(4, other_manager), override_id, file, DEFAULT_DEADLINES[PSYCH]
        )
    referral.approve_override(ctx(4, COORDINATOR), override_id, file, DEFAULT_DEADLINES[PSYCH])
    assert referral.status is S.REQUESTED
    disclosure = referral.disclosure
    assert disclosure is not None
    assert disclosure.basis is DisclosureBasis.VITAL_INTEREST
    assert disclosure.flagged_for_review is True
    assert disclosure.override_id == override_id
    assert all(f.grant_id is None for f in disclosure.released)
    # A later consent change does not undo an override in force.
    referral.reconsider(ctx(5), file, DEFAULT_DEADLINES[PSYCH])
    assert referral.status is S.REQUESTED


def test_an_agency_does_not_refer_to_itself() -> None:
    from services.runtime.errors import RuleViolationError

    with pytest.raises(RuleViolationError):
        refer(case_file(), to=SWC)


def test_deadlines_are_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "KETNOI_REFERRAL_DEADLINES",
        '{"legal_aid": {"acknowledge": "PT12H", "first_service": "P2D"}}',
    )
    settings = ReferralSettings()
    assert settings.deadlines_for(ServiceType.LEGAL_AID).first_service == timedelta(days=2)
    assert settings.deadlines_for(PSYCH) == DEFAULT_DEADLINES[PSYCH]


# -- handovers --------------------------------------------------------------------------------

FOREIGN = AgencyRef(agency_id="cn-border", kind=AgencyKind.FOREIGN_AUTHORITY)
BORDER = AgencyRef(agency_id="lc-border-guard", kind=AgencyKind.BORDER_GUARD)
LC_POLICE = AgencyRef(agency_id="lc-police", kind=AgencyKind.POLICE)


def lao_cai_handover() -> Handover:
    return Handover.start(
        ctx(),
        case_file(),
        kind=HandoverKind.RECEPTION,
        parties=(
            HandoverParty(agency=FOREIGN, role=PartyRole.FROM, capacity="liaison officer"),
            HandoverParty(agency=BORDER, role=PartyRole.TO, capacity="border guard"),
            HandoverParty(agency=LC_POLICE, role=PartyRole.WITNESS, capacity="police officer"),
        ),
    )


def test_a_handover_completes_when_every_party_has_confirmed() -> None:
    handover = lao_cai_handover()
    handover.confirm_by(ctx(5), "cn-border")
    handover.confirm_by(ctx(20), "lc-border-guard")
    assert handover.status == "open"
    assert handover.waiting_for == ["lc-police"]
    with pytest.raises(HandoverRuleError, match="waiting for: lc-police"):
        handover.confirm_by(ctx(21), "lc-border-guard")
    with pytest.raises(PermissionDeniedError):
        handover.confirm_by(ctx(21), "someone-else")
    handover.confirm_by(ctx(45), "lc-police")
    assert handover.status == "completed"
    completed = [e for e in handover.collect_events() if isinstance(e, HandoverCompleted)]
    assert completed[0].seconds_by_party == {
        "cn-border": 300.0,
        "lc-border-guard": 1200.0,
        "lc-police": 2700.0,
    }


def test_a_handover_needs_one_giver_and_one_receiver() -> None:
    with pytest.raises(InvalidRequestError):
        Handover.start(
            ctx(),
            case_file(),
            kind=HandoverKind.RECEPTION,
            parties=(
                HandoverParty(agency=FOREIGN, role=PartyRole.FROM, capacity="x"),
                HandoverParty(agency=BORDER, role=PartyRole.FROM, capacity="y"),
            ),
        )
    with pytest.raises(InvalidRequestError) as err:
        Handover.start(
            ctx(),
            case_file(),
            kind=HandoverKind.CASE_TRANSFER,
            parties=(
                HandoverParty(agency=SWC, role=PartyRole.FROM, capacity="x"),
                HandoverParty(agency=HOSPITAL, role=PartyRole.TO, capacity="y"),
            ),
        )
    assert err.value.field == "to_case_manager_id"


def test_disclosure_event_carries_the_person_id() -> None:
    file = case_file()
    grant(file)
    referral = refer(file)
    disclosures = [e for e in referral.collect_events() if isinstance(e, DisclosureRecorded)]
    assert disclosures[0].person_id == file.person_id


# -- progress, the structured outcome, the person's feedback ---------------------------------


def test_progress_is_reported_while_the_service_goes_on() -> None:
    file = case_file()
    grant(file)
    referral = refer(file)
    with pytest.raises(ReferralRuleError, match="accepted or started"):
        referral.report_progress(ctx(3, STAFF), "Seen today")
    referral.answer(ctx(3, STAFF), "acknowledge")
    referral.answer(ctx(4, STAFF), "accept")
    referral.report_progress(ctx(5, STAFF), "First session held")
    referral.answer(ctx(6, STAFF), "start")
    referral.report_progress(ctx(60 * 24 * 14, STAFF), "Two weeks of treatment; improving")
    assert [p.note for p in referral.progress_reports] == [
        "First session held",
        "Two weeks of treatment; improving",
    ]
    assert referral.status is S.IN_PROGRESS  # a report moves nothing


def test_a_completion_says_how_much_was_delivered_and_why_not_all() -> None:
    file = case_file()
    grant(file)
    referral = refer(file)
    for n, step in enumerate(("acknowledge", "accept", "start")):
        referral.answer(ctx(3 + n, STAFF), step)
    with pytest.raises(ReferralRuleError, match="started"):
        refer(file).record_feedback(ctx(7), 4, None)
    referral.record_feedback(ctx(7), 3, "The sessions are far from home")
    with pytest.raises(InvalidRequestError, match="why"):
        referral.answer(
            ctx(8, STAFF), "complete", "Three of six sessions", ServiceDelivery.PARTIALLY_DELIVERED
        )
    referral.answer(
        ctx(8, STAFF),
        "complete",
        "Three of six sessions",
        ServiceDelivery.PARTIALLY_DELIVERED,
        "She moved back to her village",
    )
    assert referral.delivery is ServiceDelivery.PARTIALLY_DELIVERED
    assert [f.satisfaction for f in referral.feedback] == [3]
    other = refer(file)
    for n, step in enumerate(("acknowledge", "accept", "start")):
        other.answer(ctx(3 + n, STAFF), step)
    other.answer(ctx(9, STAFF), "complete", "Done")
    assert other.delivery is ServiceDelivery.DELIVERED  # the default
