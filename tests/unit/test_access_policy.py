"""The access policy (contracts/access_policy.py): properties over every principal, tie and
consent decision, and the cases the domain names."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID, uuid4

from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.access_policy import (
    ALL_CATEGORIES,
    RULES,
    Action,
    Asker,
    CaseTies,
    Tie,
    permits,
    sight,
    ties_of,
)
from contracts.audit import ReadBasis
from contracts.consent_decision import CategoryDecision, ConsentDecision, Verdict
from contracts.envelope import AgencyRef
from contracts.vocabulary import AgencyKind, DataCategory, Purpose, Role

AGENCIES = ("police-a", "police-b", "swc", "hospital", "legal-aid", "ministry")
PROVINCES = ("dong-thap", "lao-cai", "*")
AT = datetime(2026, 11, 20, 22, 0, tzinfo=UTC)

agencies = st.sampled_from(AGENCIES)
agency_sets = st.frozensets(agencies, max_size=3)
askers = st.builds(
    Asker,
    user_id=st.just("u1"),
    agency_id=agencies,
    province=st.sampled_from(PROVINCES),
    roles=st.frozensets(st.sampled_from(Role), min_size=1, max_size=3),
)
cases = st.builds(
    CaseTies,
    province=st.sampled_from(PROVINCES[:2]),
    holders=agency_sets,
    recipients=agency_sets,
    senders=agency_sets,
    handover_parties=agency_sets,
)
categories = st.frozensets(st.sampled_from(DataCategory), min_size=1)


@st.composite
def decisions(draw: st.DrawFn, agency_id: str) -> ConsentDecision:
    """A consent decision for ``agency_id``: each category permitted (by some grant) or not."""
    verdicts = draw(
        st.dictionaries(st.sampled_from(DataCategory), st.sampled_from(Verdict), min_size=1)
    )
    grants = [uuid4() for _ in range(3)]
    return ConsentDecision(
        recipient=AgencyRef(agency_id=agency_id, kind=AgencyKind.HOSPITAL),
        purpose=Purpose.SERVICE_PROVISION,
        at=AT,
        categories=tuple(
            CategoryDecision(
                category=category,
                verdict=verdict,
                grant_id=draw(st.sampled_from(grants)) if verdict is Verdict.PERMITTED else None,
                reason="r",
            )
            for category, verdict in verdicts.items()
        ),
    )


@settings(max_examples=600)
@given(askers, cases, st.sampled_from(Action))
def test_an_allowed_action_needs_an_allowed_role_and_tie(
    asker: Asker, case: CaseTies, action: Action
) -> None:
    permission = permits(asker, case, action)
    rule = RULES[action]
    ties = ties_of(asker, case)
    if permission.allowed:
        assert permission.role in asker.roles
        assert permission.role in rule.roles
        assert rule.ties is None or ties & rule.ties
        assert permission.visible
    else:
        assert permission.role is None
        assert not (asker.roles & rule.roles) or (rule.ties is not None and not ties & rule.ties)
    # Refused for the roles alone (answered 403 whatever the case) exactly when no role fits.
    assert permission.by_role == (not asker.roles & rule.roles)
    # A case the principal has no tie to does not exist for them.
    assert permission.visible == (bool(ties) or (permission.allowed and rule.ties is None))


@settings(max_examples=600)
@given(askers, cases, categories, st.data())
def test_a_read_shows_only_what_a_tie_and_the_consent_in_force_allow(
    asker: Asker, case: CaseTies, wanted: frozenset[DataCategory], data: st.DataObject
) -> None:
    consent = data.draw(decisions(asker.agency_id) | st.none())
    seen = sight(asker, case, wanted, consent=consent)
    ties = ties_of(asker, case)
    assert seen.categories <= wanted
    if not seen.categories:
        return
    assert seen.role in asker.roles
    assert seen.role in RULES[Action.READ_PERSONAL].roles
    if Tie.HOLDER in ties:
        assert seen.basis is ReadBasis.OWN_CASE
        assert seen.categories == wanted
        return
    # Anyone else who sees anything is the recipient, and only under a grant in force.
    assert Tie.RECIPIENT in ties
    assert consent is not None
    assert seen.basis is ReadBasis.GRANT
    assert seen.categories <= set(consent.permitted)
    granted = {c.grant_id for c in consent.categories if c.category in seen.categories}
    assert set(seen.grant_ids) == granted


@settings(max_examples=400)
@given(askers, cases, categories, st.data())
def test_coordinators_auditors_and_strangers_never_read_the_person(
    asker: Asker, case: CaseTies, wanted: frozenset[DataCategory], data: st.DataObject
) -> None:
    ties = ties_of(asker, case)
    if ties & {Tie.HOLDER, Tie.RECIPIENT}:
        return
    consent = data.draw(decisions(asker.agency_id))
    assert not sight(asker, case, wanted, consent=consent).categories


@settings(max_examples=300)
@given(askers, cases, st.sampled_from(["", "   ", "a real emergency, the hospital asks"]))
def test_breaking_the_glass_needs_a_reason_a_role_and_a_tie(
    asker: Asker, case: CaseTies, reason: str
) -> None:
    seen = sight(asker, case, ALL_CATEGORIES, break_glass_reason=reason)
    if not seen.categories:
        return
    assert reason.strip()
    assert seen.basis is ReadBasis.BREAK_GLASS
    assert seen.role in (Role.INTAKE_OFFICER, Role.CASE_MANAGER, Role.COORDINATOR)
    assert ties_of(asker, case) & RULES[Action.BREAK_GLASS].ties  # type: ignore[operator]


def test_withdrawal_is_for_whoever_meets_the_person_anywhere_not_auditors_or_admins() -> None:
    case = CaseTies(province="dong-thap", holders=frozenset({"swc"}))
    for role in (Role.INTAKE_OFFICER, Role.CASE_MANAGER, Role.AGENCY_STAFF):
        elsewhere = Asker("u", "police-b", "lao-cai", frozenset({role}))
        assert permits(elsewhere, case, Action.WITHDRAW_CONSENT).allowed
    for role in (Role.AUDITOR, Role.ADMIN, Role.COORDINATOR):
        national = Asker("u", "ministry", "*", frozenset({role}))
        assert not permits(national, case, Action.WITHDRAW_CONSENT).allowed


def test_another_police_station_in_the_province_sees_nothing_of_the_case() -> None:
    case = CaseTies(province="dong-thap", holders=frozenset({"swc", "police-a"}))
    other = Asker("u", "police-b", "dong-thap", frozenset({Role.INTAKE_OFFICER}))
    for action in Action:
        permission = permits(other, case, action)
        if action in (Action.RECORD_RECEPTION, Action.WITHDRAW_CONSENT):
            assert permission.allowed
        else:
            assert not permission.allowed
            assert not permission.visible
    assert not sight(other, case).categories


def test_the_coordinator_sees_progress_not_the_person() -> None:
    case = CaseTies(province="dong-thap", holders=frozenset({"swc"}))
    coordinator = Asker("u", "dolisa", "dong-thap", frozenset({Role.COORDINATOR}))
    assert permits(coordinator, case, Action.SEE_PROGRESS).allowed
    assert not permits(coordinator, case, Action.READ_PERSONAL).allowed
    assert not sight(coordinator, case).categories
    elsewhere = Asker("u", "dolisa-lc", "lao-cai", frozenset({Role.COORDINATOR}))
    assert not permits(elsewhere, case, Action.SEE_PROGRESS).visible


def test_a_refused_recipient_reads_nothing_though_another_kind_is_granted() -> None:
    """The police, refused, read nothing even where a grant to hospitals exists."""
    grant = UUID(int=7)
    police = AgencyRef(agency_id="police-a", kind=AgencyKind.POLICE)
    consent = ConsentDecision(
        recipient=police,
        purpose=Purpose.SERVICE_PROVISION,
        at=AT,
        categories=(
            CategoryDecision(
                category=DataCategory.IDENTITY,
                verdict=Verdict.REFUSED,
                refusal_id=grant,
                reason="refused",
            ),
        ),
    )
    case = CaseTies(province="dong-thap", recipients=frozenset({"police-a"}))
    staff = Asker("u", "police-a", "dong-thap", frozenset({Role.AGENCY_STAFF}))
    seen = sight(staff, case, {DataCategory.IDENTITY}, consent=consent)
    assert not seen.categories
    assert seen.withheld == {DataCategory.IDENTITY: "refused"}


def test_an_override_in_force_shows_the_recipient_what_the_referral_asked() -> None:
    case = CaseTies(province="dong-thap", recipients=frozenset({"hospital"}))
    staff = Asker("u", "hospital", "dong-thap", frozenset({Role.AGENCY_STAFF}))
    override = uuid4()
    wanted = {DataCategory.IDENTITY, DataCategory.HEALTH}
    seen = sight(staff, case, wanted, override_id=override)
    assert seen.categories == wanted
    assert seen.basis is ReadBasis.OVERRIDE
    assert seen.override_id == override


def test_each_assessment_is_made_by_the_role_whose_work_it_is() -> None:
    held = CaseTies(province="dong-thap", holders=frozenset({"swc"}))

    def may(role: Role, action: Action, agency: str = "swc") -> bool:
        asker = Asker("u", agency, "dong-thap", frozenset({role}))
        return permits(asker, held, action).allowed

    assert may(Role.HEALTH_WORKER, Action.RECORD_MEDICAL_EXAMINATION)
    assert not may(Role.CASE_MANAGER, Action.RECORD_MEDICAL_EXAMINATION)
    assert not may(Role.INTAKE_OFFICER, Action.RECORD_MEDICAL_EXAMINATION)
    assert not may(Role.HEALTH_WORKER, Action.RECORD_MEDICAL_EXAMINATION, agency="hospital")
    assert may(Role.HEALTH_WORKER, Action.RECORD_PSYCHOSOCIAL_ASSESSMENT)
    assert may(Role.CASE_MANAGER, Action.RECORD_PSYCHOSOCIAL_ASSESSMENT)
    assert may(Role.CASE_MANAGER, Action.RECORD_ASSESSMENT)
    assert not may(Role.HEALTH_WORKER, Action.RECORD_ASSESSMENT)
    assert not may(Role.INTAKE_OFFICER, Action.RECORD_ASSESSMENT)
    for role in (Role.INTAKE_OFFICER, Role.CASE_MANAGER, Role.HEALTH_WORKER):
        assert may(role, Action.RECORD_CONTACT)
    for role in (Role.COORDINATOR, Role.AUDITOR, Role.AGENCY_STAFF, Role.ADMIN):
        assert not may(role, Action.RECORD_CONTACT)
        assert not may(role, Action.RECORD_MEDICAL_EXAMINATION)


def test_a_health_worker_reads_a_referral_as_far_as_consent_allows() -> None:
    case = CaseTies(province="dong-thap", recipients=frozenset({"hospital"}))
    asker = Asker("doctor", "hospital", "dong-thap", frozenset({Role.HEALTH_WORKER}))
    grant = uuid4()
    decision = ConsentDecision(
        recipient=AgencyRef(agency_id="hospital", kind=AgencyKind.HOSPITAL),
        purpose=Purpose.SERVICE_PROVISION,
        at=AT,
        categories=(
            CategoryDecision(
                category=DataCategory.HEALTH, verdict=Verdict.PERMITTED, grant_id=grant, reason="r"
            ),
            CategoryDecision(
                category=DataCategory.PSYCHOSOCIAL,
                verdict=Verdict.NOT_GRANTED,
                grant_id=None,
                reason="r",
            ),
        ),
    )
    seen = sight(asker, case, {DataCategory.HEALTH, DataCategory.PSYCHOSOCIAL}, consent=decision)
    assert seen.categories == {DataCategory.HEALTH}
    assert seen.basis is ReadBasis.GRANT
    assert seen.grant_ids == (grant,)
