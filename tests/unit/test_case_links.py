"""The rules that link case work across the logs, with no I/O: a plan task's referral, the
person's choice to drop a referral's service, a family member's referral on their own consent
(and who reads their details), and the case file arranged for a newcomer."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from contracts.access_policy import Asker, CaseTies, family_member_sight
from contracts.audit import ReadBasis
from contracts.consent import Collection, CollectionMethod
from contracts.envelope import Actor, AgencyRef
from contracts.intake import Place
from contracts.plan import PlanDomain, TaskStatus, TeamMember, TeamRole
from contracts.referral import (
    FamilyConsentGiver,
    FamilyMember,
    FamilyMemberConsent,
    FamilyRelationship,
    PlannedTask,
    ReferralDeclinedByPerson,
    ReferralStatus,
    Urgency,
)
from contracts.vocabulary import (
    AgencyKind,
    ArrivalRoute,
    DataCategory,
    DeclineKind,
    Purpose,
    Role,
    ServiceType,
)
from services.intake.domain import Case
from services.intake.plan import GoalDraft, TaskDraft
from services.projections.case_file import arrange
from services.referral.application import planned_task
from services.referral.domain import CaseFile, Referral, ReferralRuleError
from services.referral.settings import ReferralSettings
from services.runtime.aggregate import CommandContext
from services.runtime.errors import InvalidRequestError
from tests.unit.test_referral_rules import HOSPITAL, SWC, T0, case_file, ctx, grant

SHELTER = AgencyRef(agency_id="dt-shelter", kind=AgencyKind.NGO)
CARE = ServiceType.MEDICAL_CARE
WRITTEN = Collection(
    method=CollectionMethod.WRITTEN_FORM,
    form_reference="F",
    language="vi",
    withdrawal_explained=True,
)


def refer(
    file: CaseFile,
    *,
    to: AgencyRef = HOSPITAL,
    service: ServiceType = CARE,
    categories: tuple[DataCategory, ...] = (DataCategory.IDENTITY,),
    task: UUID | None = None,
    family: FamilyMember | None = None,
) -> Referral:
    return Referral.create(
        ctx(2),
        file,
        from_agency=SWC,
        to_agency=to,
        service_type=service,
        urgency=Urgency.ROUTINE,
        purpose=Purpose.SERVICE_PROVISION,
        categories=categories,
        note=None,
        deadlines=ReferralSettings().deadlines_for(service),
        plan_task_id=task,
        family_member=family,
    )


def with_plan(file: CaseFile, status: TaskStatus = TaskStatus.PLANNED) -> tuple[UUID, UUID]:
    review, course = uuid4(), uuid4()
    file.note_plan(
        ctx(1),
        (
            PlannedTask(task_id=review, agency_id="dt-hospital", service_type=CARE, status=status),
            PlannedTask(task_id=course, agency_id="dt-shelter", status=TaskStatus.PLANNED),
        ),
    )
    return review, course


# -- a plan task's referral ------------------------------------------------------------------


def test_a_plan_tasks_referral_goes_to_its_agency_for_its_service() -> None:
    file = case_file()
    grant(file)
    review, course = with_plan(file)
    referral = refer(file, task=review)
    assert referral.spec.plan_task_id == review
    assert referral.status is ReferralStatus.REQUESTED  # through the consent gate
    # A task that names no service takes its agency's referral for any service.
    assert refer(file, to=SHELTER, service=ServiceType.VOCATIONAL_TRAINING, task=course)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"to": SWC.model_copy(update={"agency_id": "dt-hospital-1"})}, "to_agency"),
        ({"service": ServiceType.HEALTH_CHECK}, "service_type"),
        ({"task": UUID(int=1)}, "plan_task_id"),
    ],
)
def test_a_plan_tasks_referral_is_refused_naming_the_field(
    changes: dict[str, Any], field: str
) -> None:
    file = case_file()
    review, _ = with_plan(file)
    with pytest.raises(InvalidRequestError) as refused:
        refer(file, **{"task": review, **changes})
    assert refused.value.field == field


@pytest.mark.parametrize("status", [TaskStatus.DONE, TaskStatus.CANCELLED])
def test_a_task_done_or_cancelled_takes_no_referral(status: TaskStatus) -> None:
    file = case_file()
    review, _ = with_plan(file, status)
    with pytest.raises(ReferralRuleError):
        refer(file, task=review)


def test_the_case_file_keeps_the_plans_tasks_and_their_status_without_their_words() -> None:
    file = case_file()
    review, course = with_plan(file)
    file.collect_events()
    file.note_plan(ctx(3), tuple(file.plan_tasks.values()))
    assert file.collect_events() == []  # nothing changed, nothing noted
    file.note_task_status(ctx(3), review, TaskStatus.DONE)
    assert file.plan_tasks[review].status is TaskStatus.DONE
    assert file.plan_tasks[course].status is TaskStatus.PLANNED
    file.note_task_status(ctx(3), uuid4(), TaskStatus.DONE)  # not of this plan: nothing
    assert len(file.collect_events()) == 1


def test_a_task_carries_its_service_from_the_plan_to_the_referral_service() -> None:
    case = Case.record_reception(
        CommandContext(actor=Actor(user_id="m", agency_id="dt-swc", role=Role.CASE_MANAGER)),
        route=ArrivalRoute.RESCUED,
        received_at=datetime.now(UTC) - timedelta(hours=1),
        place=Place(province="dong-thap"),
        receiving_agency=SWC,
    )
    member = TeamMember(team_role=TeamRole.HEALTH_WORKER, agency=HOSPITAL)
    due = date.today() + timedelta(days=9)
    goals = (GoalDraft(PlanDomain.HEALTH, "Healed"),)
    ctx_now = CommandContext(actor=Actor(user_id="m", agency_id="dt-swc", role=Role.CASE_MANAGER))
    case.revise_plan(
        ctx_now, goals, (TaskDraft(0, "Review", member, due, service_type=CARE),), None
    )
    [task] = case.tasks.values()
    assert task.service_type is CARE
    # Carried over into a revision, the task keeps its id and may name another service.
    carried = TaskDraft(0, "Review", member, due, task.task_id, ServiceType.HEALTH_CHECK)
    case.revise_plan(ctx_now, goals, (carried,), "The doctor asks for a check first")
    [kept] = case.tasks.values()
    assert (kept.task_id, kept.service_type) == (task.task_id, ServiceType.HEALTH_CHECK)
    noted = planned_task(kept)
    assert noted.model_dump() == {
        "task_id": task.task_id,
        "agency_id": "dt-hospital",
        "service_type": ServiceType.HEALTH_CHECK,
        "status": TaskStatus.PLANNED,
    }


# -- the person's choice ---------------------------------------------------------------------


def test_a_service_the_person_dropped_ends_its_referral_as_their_choice() -> None:
    file = case_file()
    grant(file)
    referral = refer(file)
    referral.collect_events()
    choice = uuid4()
    assert referral.declined_by_person(ctx(5), DeclineKind.DROPPED, choice)
    [event] = referral.collect_events()
    assert isinstance(event, ReferralDeclinedByPerson)
    assert (event.choice, event.service_declined) == (DeclineKind.DROPPED, choice)
    assert referral.status is ReferralStatus.CANCELLED
    assert referral.declined_by is DeclineKind.DROPPED
    # Ended already: nothing more.
    assert not referral.declined_by_person(ctx(6), DeclineKind.REFUSED, uuid4())
    assert referral.collect_events() == []


# -- a family member's referral ------------------------------------------------------------


def family(age: int = 7, by: FamilyConsentGiver = FamilyConsentGiver.GUARDIAN, **c: Any) -> Any:
    collection = WRITTEN.model_copy(update=c)
    return FamilyMember(
        full_name="Trần Văn An",
        relationship=FamilyRelationship.CHILD,
        age=age,
        consent=FamilyMemberConsent(given_by=by, collection=collection, given_on=T0.date()),
    )


def test_a_family_member_is_referred_with_none_of_the_persons_data_and_no_wait() -> None:
    file = case_file()  # no consent of the person at all
    referral = refer(
        file, to=SHELTER, service=ServiceType.EDUCATION, categories=(), family=family()
    )
    assert referral.status is ReferralStatus.REQUESTED
    assert referral.disclosure is not None
    assert referral.disclosure.released == ()
    # The person's own data still waits for the person's consent.
    asked = refer(file, to=SHELTER, service=ServiceType.EDUCATION, family=family())
    assert asked.status is ReferralStatus.DRAFT


def test_a_referral_of_the_person_names_the_data_it_needs() -> None:
    with pytest.raises(InvalidRequestError) as refused:
        refer(case_file(), categories=())
    assert refused.value.field == "categories"


@pytest.mark.parametrize(
    ("member", "field"),
    [
        (family(7, FamilyConsentGiver.FAMILY_MEMBER), "family_member.consent.given_by"),
        (family(45, FamilyConsentGiver.GUARDIAN), "family_member.consent.given_by"),
        (
            family(45, FamilyConsentGiver.FAMILY_MEMBER, withdrawal_explained=False),
            "family_member.consent.collection.withdrawal_explained",
        ),
    ],
)
def test_a_family_members_consent_is_their_own_or_their_guardians(
    member: FamilyMember, field: str
) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        refer(case_file(), to=SHELTER, categories=(), family=member)
    assert refused.value.field == field


def asker(agency: str, role: Role) -> Asker:
    return Asker(user_id="u", agency_id=agency, province="dong-thap", roles=frozenset({role}))


@pytest.mark.parametrize(
    ("who", "sent", "basis"),
    [
        (asker("dt-swc", Role.CASE_MANAGER), True, ReadBasis.OWN_CASE),
        (asker("dt-shelter", Role.AGENCY_STAFF), True, ReadBasis.FAMILY_MEMBER_CONSENT),
        (asker("dt-shelter", Role.AGENCY_STAFF), False, None),
        (asker("dt-dolisa", Role.COORDINATOR), True, None),
        (asker("dt-police", Role.AGENCY_STAFF), True, None),
    ],
)
def test_who_reads_a_referred_family_members_details(
    who: Asker, sent: bool, basis: ReadBasis | None
) -> None:
    ties = CaseTies(
        province="dong-thap",
        holders=frozenset({"dt-swc"}),
        recipients=frozenset({"dt-shelter"}) if sent else frozenset(),
        senders=frozenset({"dt-swc"}),
    )
    seen = family_member_sight(who, ties)
    assert seen.basis is basis
    assert seen.categories == (frozenset({DataCategory.FAMILY}) if basis else frozenset())


# -- the case file -----------------------------------------------------------------------------

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def entry(n: int, kind: str, **extra: Any) -> dict[str, Any]:
    at = (NOW - timedelta(days=100 - n)).isoformat()
    return {"at": at, "type": f"org.ketnoi.{kind}", "what": kind, "seq": f"x:{n:09d}", **extra}


def test_the_case_file_is_arranged_for_a_newcomer() -> None:
    grant_kept, grant_gone, grant_lapsed = "g1", "g2", "g3"
    later = (NOW + timedelta(days=30)).isoformat()
    before = (NOW - timedelta(days=1)).isoformat()
    entries = [
        entry(1, "intake.reception_recorded"),
        entry(2, "intake.person_registered"),
        entry(3, "intake.case_manager_assigned"),
        entry(4, "intake.contact_preference_recorded"),
        entry(5, "consent.granted", grant_id=grant_kept, valid_until=before),
        entry(6, "consent.granted", grant_id=grant_gone, valid_until=later),
        entry(7, "consent.granted", grant_id=grant_lapsed, valid_until=before),
        entry(8, "consent.renewed", grant_id=grant_kept, valid_until=later),
        entry(9, "consent.withdrawn", grant_id=grant_gone),
        entry(10, "consent.refused", refusal_id="r1"),
        entry(11, "consent.refused", refusal_id="r2"),
        entry(12, "consent.refusal_lifted", refusal_id="r2"),
        entry(13, "intake.risk_assessed"),
        entry(14, "intake.reintegration_plan_revised"),
        entry(15, "intake.reintegration_plan_agreed"),
        entry(16, "intake.exit_planned"),
        entry(17, "intake.case_reopened"),
        entry(18, "intake.reintegration_plan_revised"),
        entry(19, "intake.contact_logged", against_preference=True),
        entry(20, "intake.contact_logged"),
        entry(21, "intake.contact_preference_recorded"),
        entry(22, "referral.deadline_missed"),
        entry(23, "intake.risk_assessed"),
    ]
    doc = {
        "case_id": "c",
        "entries": entries,
        "tasks": {
            "t1": {"task_id": "t1", "due_on": "2026-07-01", "status": "in_progress"},
            "t2": {"task_id": "t2", "due_on": "2026-05-01", "status": "planned"},
            "t3": {"task_id": "t3", "due_on": "2026-04-01", "status": "done"},
        },
        "referrals": {
            "r1": {"referral_id": "r1", "plan_task_id": "t1", "status": "in-progress"},
            "r2": {"referral_id": "r2", "plan_task_id": None, "status": "completed"},
        },
    }
    file = arrange(doc, NOW, NOW.date())
    kinds = [e["what"] for e in file["person"]]
    assert kinds == [
        "intake.reception_recorded",
        "intake.person_registered",
        "intake.case_manager_assigned",
        "intake.case_reopened",  # the stage it is in
        "intake.contact_preference_recorded",
    ]
    assert file["person"][-1]["seq"] == "x:000000021"  # the latest preference only
    # Renewed, not withdrawn, not lapsed; the refusal not lifted.
    assert [e.get("grant_id") or e.get("refusal_id") for e in file["consent"]] == [
        grant_kept,
        "r1",
    ]
    plan = file["plan"]
    # The current revision; its agreement was to the one before; the exit plan was of the
    # episode before the reopening.
    assert [e["seq"] for e in plan["entries"]] == ["x:000000018"]
    assert plan["agreed"] is False
    assert [t["task_id"] for t in plan["open_tasks"]] == ["t2", "t1"]
    assert [t["overdue"] for t in plan["open_tasks"]] == [True, False]
    assert [r["referral_id"] for r in plan["open_tasks"][1]["referrals"]] == ["r1"]
    assert [r["referral_id"] for r in file["referrals"]] == ["r1"]
    assert [e["seq"] for e in file["risks"]] == ["x:000000019", "x:000000022", "x:000000023"]
    assert file["history"] == entries[::-1]
