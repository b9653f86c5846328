"""The lawfulness check, event by event: disclosures and reads judged at their own instant
against the consent, intake and referral events that preceded them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest

from contracts.access_policy import Asker, CaseTies, sight
from contracts.audit import PersonalDataRead, ReadBasis
from contracts.consent import (
    Collection,
    CollectionMethod,
    ConsentGiver,
    ConsentGranted,
    ConsentRefused,
    ConsentWithdrawn,
    GiverKind,
    Recipient,
    consent_record_id,
)
from contracts.consent_decision import decide
from contracts.envelope import Actor, AgencyRef, Event
from contracts.intake import CaseManagerAssigned, Place, ReceptionRecorded
from contracts.referral import (
    DisclosureBasis,
    DisclosureRecorded,
    FamilyConsentGiver,
    FamilyMember,
    FamilyMemberConsent,
    FamilyRelationship,
    OverrideApproved,
    ReferralCreated,
    ReferralDispatched,
    ReleasedField,
    Urgency,
)
from contracts.vocabulary import (
    AgencyKind,
    ArrivalRoute,
    DataCategory,
    Purpose,
    Role,
    ServiceType,
)
from services.projections.lawfulness import (
    Finding,
    FindingKind,
    Lawfulness,
    check_all,
    check_disclosure,
    check_read,
    ledger_of,
)

T0 = datetime(2026, 3, 1, 13, 0, tzinfo=UTC)
CASE = UUID("0b8f2c3e-5d7a-4e1b-9c2d-3f4a5b6c7d8e")
PERSON = UUID("1c9a3d4f-6e8b-4f2c-8d3e-4a5b6c7d8e9f")
RECORD = consent_record_id(CASE)
REFERRAL = UUID("5ade7182-ac2f-4d60-a172-8e9fa0b1c2d3")
CARE = UUID("3ebc5f60-8a0d-4b4e-8f50-6c7d8e9fa0b1")  # identity and health, to hospitals
CRIMINAL = UUID("9c2d3f4a-5b6c-4d7e-8f9a-0b1c2d3e4f5a")  # identity, to the police, criminal case
OVERRIDE = UUID("4fcd6071-9b1e-4c5f-9061-7d8e9fa0b1c2")
POLICE = AgencyRef(agency_id="dt-police", kind=AgencyKind.POLICE)
SWC = AgencyRef(agency_id="dt-swc", kind=AgencyKind.SOCIAL_WORK_CENTRE)
HOSPITAL = AgencyRef(agency_id="dt-hospital", kind=AgencyKind.HOSPITAL)
OFFICER = Actor(user_id="officer-1", agency_id=POLICE.agency_id, role=Role.INTAKE_OFFICER)
MANAGER = Actor(user_id="cw-1", agency_id=SWC.agency_id, role=Role.CASE_MANAGER)
COORDINATOR = Actor(user_id="coord-1", agency_id="dt-dolisa", role=Role.COORDINATOR)
WRITTEN = Collection(
    method=CollectionMethod.WRITTEN_FORM,
    form_reference="F-1",
    language="vi",
    withdrawal_explained=True,
)
NAME = "Nguyễn Thị Lan"  # a personal value: it must never reach a finding


def minutes(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


def staff(agency: AgencyRef, role: Role = Role.AGENCY_STAFF) -> Actor:
    return Actor(user_id=f"{agency.agency_id}-1", agency_id=agency.agency_id, role=role)


def grant(
    grant_id: UUID,
    version: int,
    at: float,
    categories: tuple[DataCategory, ...],
    recipients: tuple[Recipient, ...],
    purposes: tuple[Purpose, ...] = (Purpose.SERVICE_PROVISION,),
) -> ConsentGranted:
    return ConsentGranted(
        originator_id=RECORD,
        originator_version=version,
        timestamp=minutes(at),
        actor=MANAGER,
        grant_id=grant_id,
        person_id=PERSON,
        categories=categories,
        recipients=recipients,
        purposes=purposes,
        valid_from=T0,
        valid_until=T0 + timedelta(days=365),
        collection=WRITTEN,
        given_by=ConsentGiver(kind=GiverKind.PERSON),
    )


def withdrawn(grant_id: UUID, version: int, at: float) -> ConsentWithdrawn:
    return ConsentWithdrawn(
        originator_id=RECORD,
        originator_version=version,
        timestamp=minutes(at),
        actor=MANAGER,
        grant_id=grant_id,
        person_id=PERSON,
        heard_by=SWC,
    )


def refused(version: int, at: float, recipient: Recipient) -> ConsentRefused:
    return ConsentRefused(
        originator_id=RECORD,
        originator_version=version,
        timestamp=minutes(at),
        actor=MANAGER,
        refusal_id=uuid4(),
        person_id=PERSON,
        recipients=(recipient,),
    )


def history() -> list[Event]:
    """Received by the police; a case manager of the social work centre from minute 30;
    identity and health may go to hospitals (CARE) and identity to the police for the
    criminal case (CRIMINAL)."""
    return [
        ReceptionRecorded(
            originator_id=CASE,
            originator_version=1,
            timestamp=T0,
            actor=OFFICER,
            person_id=PERSON,
            route=ArrivalRoute.RESCUED,
            received_at=T0,
            place=Place(province="dong-thap"),
            receiving_agency=POLICE,
        ),
        CaseManagerAssigned(
            originator_id=CASE,
            originator_version=2,
            timestamp=minutes(30),
            actor=MANAGER,
            case_manager_id="cw-1",
            agency=SWC,
        ),
        grant(
            CARE,
            1,
            10,
            (DataCategory.IDENTITY, DataCategory.HEALTH),
            (Recipient(kind=AgencyKind.HOSPITAL),),
        ),
        grant(
            CRIMINAL,
            2,
            11,
            (DataCategory.IDENTITY,),
            (Recipient(agency_id=POLICE.agency_id),),
            (Purpose.CRIMINAL_PROCEEDINGS,),
        ),
    ]


def referral(
    to: AgencyRef = HOSPITAL,
    at: float = 40,
    purpose: Purpose = Purpose.SERVICE_PROVISION,
    referral_id: UUID = REFERRAL,
) -> list[Event]:
    """A referral created and sent at minute ``at``."""
    common = {"originator_id": referral_id, "actor": MANAGER, "timestamp": minutes(at)}
    return [
        ReferralCreated(
            originator_version=1,
            case_id=CASE,
            person_id=PERSON,
            province="dong-thap",
            from_agency=SWC,
            to_agency=to,
            service_type=ServiceType.HEALTH_CHECK,
            urgency=Urgency.URGENT,
            purpose=purpose,
            categories=(DataCategory.IDENTITY, DataCategory.HEALTH),
            **common,
        ),
        ReferralDispatched(
            originator_version=2, acknowledge_by=minutes(at), first_service_by=minutes(at), **common
        ),
    ]


def disclosure(
    at: float,
    released: dict[DataCategory, UUID | None],
    *,
    version: int = 3,
    to: AgencyRef = HOSPITAL,
    purpose: Purpose = Purpose.SERVICE_PROVISION,
    basis: DisclosureBasis = DisclosureBasis.CONSENT,
    override_id: UUID | None = None,
) -> DisclosureRecorded:
    return DisclosureRecorded(
        originator_id=REFERRAL,
        originator_version=version,
        timestamp=minutes(at),
        actor=MANAGER,
        disclosure_id=uuid4(),
        person_id=PERSON,
        recipient=to,
        purpose=purpose,
        basis=basis,
        released=tuple(
            ReleasedField(category=c, field="full_name" if c == "identity" else "notes", grant_id=g)
            for c, g in released.items()
        ),
        data={c.value: {"full_name": NAME} for c in released},
        override_id=override_id,
        flagged_for_review=basis is DisclosureBasis.VITAL_INTEREST,
    )


def approved(at: float, version: int, referral_id: UUID = REFERRAL) -> OverrideApproved:
    return OverrideApproved(
        originator_id=referral_id,
        originator_version=version,
        timestamp=minutes(at),
        actor=COORDINATOR,
        override_id=OVERRIDE,
    )


def judge(events: list[Event], event: DisclosureRecorded) -> Finding:
    finding = check_disclosure(ledger_of([*events, event]), event)
    assert finding.kind is FindingKind.DISCLOSURE
    assert finding.id == event.disclosure_id
    assert NAME not in finding.why
    return finding


# -- disclosures ------------------------------------------------------------------------------


def test_a_disclosure_under_a_grant_in_force_is_lawful() -> None:
    found = judge(
        [*history(), *referral()],
        disclosure(40, {DataCategory.IDENTITY: CARE, DataCategory.HEALTH: CARE}),
    )
    assert found.verdict is Lawfulness.LAWFUL
    assert found.case_id == CASE
    assert found.at == minutes(40)
    assert str(CARE) in found.why
    assert "identity" in found.why
    assert "health" in found.why


def test_a_disclosure_after_the_grant_was_withdrawn_is_unlawful() -> None:
    events = [*history(), withdrawn(CARE, 3, 35), *referral()]
    found = judge(events, disclosure(40, {DataCategory.IDENTITY: CARE}))
    assert found.verdict is Lawfulness.UNLAWFUL
    assert "withdrawn" in found.why
    assert str(CARE) in found.why


def test_a_withdrawal_after_the_disclosure_does_not_make_it_unlawful() -> None:
    events = [*history(), *referral(), withdrawn(CARE, 3, 50)]
    found = judge(events, disclosure(40, {DataCategory.IDENTITY: CARE}))
    assert found.verdict is Lawfulness.LAWFUL


def test_a_disclosure_before_its_grant_was_recorded_is_unlawful() -> None:
    found = judge([*history(), *referral(at=5)], disclosure(5, {DataCategory.IDENTITY: CARE}))
    assert found.verdict is Lawfulness.UNLAWFUL


def test_a_disclosure_to_a_refused_recipient_is_unlawful() -> None:
    events = [*history(), refused(3, 20, Recipient(agency_id=HOSPITAL.agency_id)), *referral()]
    found = judge(events, disclosure(40, {DataCategory.IDENTITY: CARE}))
    assert found.verdict is Lawfulness.UNLAWFUL
    assert "refused" in found.why


def test_a_disclosure_citing_the_wrong_grant_is_unlawful() -> None:
    # CARE would have allowed it; the disclosure names CRIMINAL, which covers the police only.
    found = judge([*history(), *referral()], disclosure(40, {DataCategory.IDENTITY: CRIMINAL}))
    assert found.verdict is Lawfulness.UNLAWFUL
    assert str(CRIMINAL) in found.why


def test_a_disclosure_of_a_category_beyond_its_grant_is_unlawful() -> None:
    events = [*history(), *referral(to=POLICE, purpose=Purpose.CRIMINAL_PROCEEDINGS)]
    found = judge(
        events,
        disclosure(
            40,
            {DataCategory.IDENTITY: CRIMINAL, DataCategory.HEALTH: CRIMINAL},
            to=POLICE,
            purpose=Purpose.CRIMINAL_PROCEEDINGS,
        ),
    )
    assert found.verdict is Lawfulness.UNLAWFUL
    assert "health" in found.why
    assert "identity" not in found.why.split(":", 1)[1]


def test_a_disclosure_to_another_recipient_or_purpose_than_its_referral_is_unlawful() -> None:
    # CARE covers every hospital; the referral goes to one, the release names another.
    other = AgencyRef(agency_id="dt-other-hospital", kind=AgencyKind.HOSPITAL)
    found = judge(
        [*history(), *referral()], disclosure(40, {DataCategory.IDENTITY: CARE}, to=other)
    )
    assert found.verdict is Lawfulness.UNLAWFUL
    assert "its referral goes to dt-hospital" in found.why
    coordination = disclosure(40, {DataCategory.IDENTITY: CARE}, purpose=Purpose.CASE_COORDINATION)
    found = judge([*history(), *referral()], coordination)
    assert found.verdict is Lawfulness.UNLAWFUL
    assert "for service_provision" in found.why.split("but", 1)[1]


def test_a_consent_disclosure_that_names_no_grant_is_unlawful() -> None:
    found = judge([*history(), *referral()], disclosure(40, {DataCategory.IDENTITY: None}))
    assert found.verdict is Lawfulness.UNLAWFUL
    assert "without naming a grant" in found.why


def test_a_disclosure_of_no_known_referral_is_unlawful() -> None:
    found = judge(history(), disclosure(40, {DataCategory.IDENTITY: CARE}))
    assert found.verdict is Lawfulness.UNLAWFUL
    assert found.case_id is None


def test_a_vital_interest_disclosure_without_approval_is_unlawful() -> None:
    vital = disclosure(
        40,
        {DataCategory.HEALTH: None},
        basis=DisclosureBasis.VITAL_INTEREST,
        override_id=OVERRIDE,
    )
    assert judge([*history(), *referral()], vital).verdict is Lawfulness.UNLAWFUL
    # An approval of the same override that comes after the disclosure does not cover it.
    later = [*history(), *referral(), vital, approved(41, 4)]
    assert check_disclosure(ledger_of(later), vital).verdict is Lawfulness.UNLAWFUL
    # Nor does one on another referral.
    elsewhere = [*history(), *referral(), *referral(referral_id=uuid4()), vital]
    other = elsewhere[-2].originator_id
    elsewhere.insert(-1, approved(39, 3, other))
    assert check_disclosure(ledger_of(elsewhere), vital).verdict is Lawfulness.UNLAWFUL


def test_a_vital_interest_disclosure_after_approval_is_flagged_for_review() -> None:
    vital = disclosure(
        40,
        {DataCategory.HEALTH: None},
        version=4,
        basis=DisclosureBasis.VITAL_INTEREST,
        override_id=OVERRIDE,
    )
    found = judge([*history(), *referral(), approved(40, 3)], vital)
    assert found.verdict is Lawfulness.FLAGGED
    assert str(OVERRIDE) in found.why
    assert "coordinator" in found.why


# -- reads ------------------------------------------------------------------------------------


def read(
    basis: ReadBasis,
    at: float,
    reader: Actor,
    categories: tuple[DataCategory, ...] = (DataCategory.IDENTITY,),
    *,
    grant_ids: tuple[UUID, ...] = (),
    override_id: UUID | None = None,
    reason: str | None = None,
    what: str = "referral.referral",
) -> PersonalDataRead:
    return PersonalDataRead(
        originator_id=uuid4(),
        originator_version=1,
        timestamp=minutes(at),
        actor=reader,
        case_id=CASE,
        person_id=PERSON,
        categories=categories,
        basis=basis,
        grant_ids=grant_ids,
        override_id=override_id,
        reason=reason,
        what=what,
    )


def verdict(events: list[Event], event: PersonalDataRead) -> Lawfulness:
    finding = check_read(ledger_of(events), event)
    assert finding.kind is FindingKind.READ
    assert finding.id == event.originator_id
    assert finding.case_id == CASE
    return finding.verdict


BOTH = (DataCategory.IDENTITY, DataCategory.HEALTH)


def test_a_recipient_reading_under_the_grants_in_force_is_lawful() -> None:
    events = [*history(), *referral()]
    lawful = read(ReadBasis.GRANT, 45, staff(HOSPITAL), BOTH, grant_ids=(CARE,))
    assert verdict(events, lawful) is Lawfulness.LAWFUL


def test_grant_reads_that_no_grant_covered_are_unlawful() -> None:
    events = [*history(), *referral()]
    hospital = staff(HOSPITAL)
    # Before the referral was sent to it.
    assert verdict(events, read(ReadBasis.GRANT, 39, hospital, grant_ids=(CARE,))) is (
        Lawfulness.UNLAWFUL
    )
    # An agency no referral was sent to.
    assert verdict(events, read(ReadBasis.GRANT, 45, staff(POLICE), grant_ids=(CRIMINAL,))) is (
        Lawfulness.UNLAWFUL
    )
    # Under a grant that does not cover the recipient.
    assert verdict(events, read(ReadBasis.GRANT, 45, hospital, grant_ids=(CRIMINAL,))) is (
        Lawfulness.UNLAWFUL
    )
    # A category beyond the grants.
    beyond = read(
        ReadBasis.GRANT, 45, hospital, (DataCategory.IDENTITY, DataCategory.RISK), grant_ids=(CARE,)
    )
    assert verdict(events, beyond) is Lawfulness.UNLAWFUL
    # After the withdrawal, whatever the referral's status.
    later = [*events, withdrawn(CARE, 3, 50)]
    assert verdict(later, read(ReadBasis.GRANT, 49, hospital, grant_ids=(CARE,))) is (
        Lawfulness.LAWFUL
    )
    finding = check_read(ledger_of(later), read(ReadBasis.GRANT, 51, hospital, grant_ids=(CARE,)))
    assert finding.verdict is Lawfulness.UNLAWFUL
    assert "withdrawn" in finding.why


def test_a_read_the_access_policy_allowed_is_lawful() -> None:
    """The check and the policy agree: what ``sight`` lets a recipient read, recorded as the
    services record it, passes."""
    events = [*history(), *referral()]
    hospital = staff(HOSPITAL)
    asker = Asker(hospital.user_id, HOSPITAL.agency_id, "dong-thap", frozenset({hospital.role}))
    at = minutes(45)
    seen = sight(
        asker,
        CaseTies(province="dong-thap", recipients=frozenset({HOSPITAL.agency_id})),
        BOTH,
        consent=decide(
            events, recipient=HOSPITAL, purpose=Purpose.SERVICE_PROVISION, categories=BOTH, at=at
        ),
    )
    assert seen.basis is ReadBasis.GRANT
    categories = tuple(sorted(seen.categories))
    recorded = read(ReadBasis.GRANT, 45, hospital, categories, grant_ids=seen.grant_ids)
    assert verdict(events, recorded) is Lawfulness.LAWFUL


def test_own_case_reads_need_the_agency_to_hold_the_case_then() -> None:
    events = history()
    assert verdict(events, read(ReadBasis.OWN_CASE, 5, OFFICER, what="intake.case")) is (
        Lawfulness.LAWFUL
    )
    # The case manager's agency holds the case from the assignment on, not before.
    assert verdict(events, read(ReadBasis.OWN_CASE, 31, MANAGER, what="intake.case")) is (
        Lawfulness.LAWFUL
    )
    assert verdict(events, read(ReadBasis.OWN_CASE, 29, MANAGER, what="intake.case")) is (
        Lawfulness.UNLAWFUL
    )
    stranger = staff(HOSPITAL, Role.CASE_MANAGER)
    assert verdict(events, read(ReadBasis.OWN_CASE, 31, stranger, what="intake.case")) is (
        Lawfulness.UNLAWFUL
    )
    # Once the case passes to another case manager's agency, the former one holds it no more.
    other_swc = AgencyRef(agency_id="dt-swc-2", kind=AgencyKind.SOCIAL_WORK_CENTRE)
    moved = CaseManagerAssigned(
        originator_id=CASE,
        originator_version=3,
        timestamp=minutes(60),
        actor=MANAGER,
        case_manager_id="cw-2",
        agency=other_swc,
    )
    later = [*events, moved]
    assert verdict(later, read(ReadBasis.OWN_CASE, 59, MANAGER, what="intake.case")) is (
        Lawfulness.LAWFUL
    )
    assert verdict(later, read(ReadBasis.OWN_CASE, 61, MANAGER, what="intake.case")) is (
        Lawfulness.UNLAWFUL
    )


def test_override_reads_need_an_approved_override_to_the_readers_agency() -> None:
    events = [*history(), *referral(), approved(42, 3)]
    hospital = staff(HOSPITAL)
    assert verdict(events, read(ReadBasis.OVERRIDE, 45, hospital, override_id=OVERRIDE)) is (
        Lawfulness.LAWFUL
    )
    # Before the approval.
    assert verdict(events, read(ReadBasis.OVERRIDE, 41, hospital, override_id=OVERRIDE)) is (
        Lawfulness.UNLAWFUL
    )
    # Another override id, or another agency than the referral's recipient.
    assert verdict(events, read(ReadBasis.OVERRIDE, 45, hospital, override_id=uuid4())) is (
        Lawfulness.UNLAWFUL
    )
    assert verdict(events, read(ReadBasis.OVERRIDE, 45, staff(POLICE), override_id=OVERRIDE)) is (
        Lawfulness.UNLAWFUL
    )
    # Requested but never approved.
    unapproved = [*history(), *referral()]
    assert verdict(unapproved, read(ReadBasis.OVERRIDE, 45, hospital, override_id=OVERRIDE)) is (
        Lawfulness.UNLAWFUL
    )


@pytest.mark.parametrize(
    ("basis", "reason", "expected"),
    [
        (ReadBasis.BREAK_GLASS, "unconscious at the border post", "unconscious at the border"),
        (ReadBasis.AUDIT, None, "projections.replay"),
    ],
)
def test_emergency_and_audit_reads_are_flagged_for_review(
    basis: ReadBasis, reason: str | None, expected: str
) -> None:
    event = read(basis, 45, COORDINATOR, reason=reason, what="projections.replay")
    finding = check_read(ledger_of(history()), event)
    assert finding.verdict is Lawfulness.FLAGGED
    assert expected in finding.why
    assert COORDINATOR.agency_id in finding.why


def test_check_all_counts_what_it_checked_since_an_instant() -> None:
    good = disclosure(40, {DataCategory.IDENTITY: CARE})
    bad = disclosure(55, {DataCategory.IDENTITY: CARE}, version=4)
    events = [*history(), *referral(), good, withdrawn(CARE, 3, 50), bad]
    reads = [
        read(ReadBasis.GRANT, 45, staff(HOSPITAL), grant_ids=(CARE,)),
        read(ReadBasis.BREAK_GLASS, 56, COORDINATOR, reason="no answer from the shelter"),
        read(ReadBasis.OWN_CASE, 57, staff(HOSPITAL, Role.CASE_MANAGER)),
    ]
    report = check_all(ledger_of(events), reads)
    assert report.summary == "2 disclosures, 3 reads checked: 2 unlawful, 1 flagged for review"
    assert [f.verdict for f in report.findings] == [
        Lawfulness.LAWFUL,
        Lawfulness.UNLAWFUL,
        Lawfulness.LAWFUL,
        Lawfulness.FLAGGED,
        Lawfulness.UNLAWFUL,
    ]
    assert all(NAME not in str(f.as_json()) for f in report.findings)
    since = check_all(ledger_of(events), reads, since=minutes(50))
    # Only what came after is listed, judged on the whole history before it.
    assert (since.disclosures, since.reads) == (1, 2)
    assert since.findings[0].id == bad.disclosure_id
    assert since.count(Lawfulness.UNLAWFUL) == 2


def test_a_family_members_details_are_read_on_their_consent_by_a_family_referrals_recipient() -> (
    None
):
    family = FamilyMember(
        full_name="Trần Văn An",
        relationship=FamilyRelationship.CHILD,
        age=7,
        consent=FamilyMemberConsent(
            given_by=FamilyConsentGiver.GUARDIAN, collection=WRITTEN, given_on=T0.date()
        ),
    )
    created, dispatched = referral()
    assert isinstance(created, ReferralCreated)
    for_family = created.model_copy(update={"family_member": family})
    events = [*history(), for_family, dispatched]
    hospital = staff(HOSPITAL)
    details = (DataCategory.FAMILY,)
    on_consent = ReadBasis.FAMILY_MEMBER_CONSENT
    assert verdict(events, read(on_consent, 45, hospital, details)) is Lawfulness.LAWFUL
    # Before it was sent; by another agency; beyond the family member's details; or on a
    # referral of the person alone.
    assert verdict(events, read(on_consent, 35, hospital, details)) is Lawfulness.UNLAWFUL
    assert verdict(events, read(on_consent, 45, staff(POLICE), details)) is Lawfulness.UNLAWFUL
    both = (DataCategory.FAMILY, DataCategory.IDENTITY)
    assert verdict(events, read(on_consent, 45, hospital, both)) is Lawfulness.UNLAWFUL
    person_only = [*history(), *referral()]
    assert verdict(person_only, read(on_consent, 45, hospital, details)) is Lawfulness.UNLAWFUL
