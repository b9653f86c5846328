"""The reintegration plan and the measures (services/intake/plan.py), with no I/O."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest

from contracts.envelope import Actor, AgencyRef
from contracts.intake import PersonDetails, Place
from contracts.plan import (
    AgreementMethod,
    PlanDomain,
    ReintegrationPlanRevised,
    TaskStatus,
    TeamMember,
    TeamRole,
)
from contracts.vocabulary import (
    AgencyKind,
    ArrivalRoute,
    CaseStage,
    ClosureReason,
    ContactMode,
    ReopeningReason,
    Role,
    Sex,
)
from services.intake.domain import Case, CaseRuleError
from services.intake.plan import GoalDraft, PlanRuleError, TaskDraft
from services.projections.followups import schedule
from services.projections.statistics import progress, raw_counts
from services.runtime.aggregate import CommandContext
from services.runtime.errors import InvalidRequestError

NOW = datetime(2026, 3, 1, 10, 30, tzinfo=UTC)
MANAGER = Actor(user_id="manager-1", agency_id="na-swc", role=Role.CASE_MANAGER)
POLICE = AgencyRef(agency_id="na-police", kind=AgencyKind.POLICE)
TRAINER = TeamMember(
    team_role=TeamRole.TRAINER,
    agency=AgencyRef(agency_id="na-vtc", kind=AgencyKind.VOCATIONAL_TRAINING_CENTRE),
)
GOALS = (
    GoalDraft(PlanDomain.INCOME, "A job after a garment course"),
    GoalDraft(PlanDomain.HEALTH, "Treatment of the injuries completed"),
)


def ctx(days: int = 0) -> CommandContext:
    return CommandContext(actor=MANAGER, at=NOW + timedelta(days=days))


def case(age: int = 24) -> Case:
    c = Case.record_reception(
        ctx(),
        route=ArrivalRoute.RETURNED_FROM_ABROAD,
        received_at=NOW - timedelta(hours=2),
        place=Place(province="nghe-an"),
        receiving_agency=POLICE,
    )
    c.register_person(ctx(), PersonDetails(full_name="P", sex=Sex.FEMALE, estimated_age=age))
    c.collect_events()
    return c


def task(goal: int = 0, **overrides: Any) -> TaskDraft:
    fields: dict[str, Any] = {
        "goal": goal,
        "action": "Enrol in the garment course",
        "responsible": TRAINER,
        "due_on": date(2026, 4, 1),
    }
    fields.update(overrides)
    return TaskDraft(**fields)


def test_a_plan_is_made_with_goals_and_tasks_and_revised_as_history() -> None:
    c = case()
    assert c.revise_plan(ctx(), GOALS, (task(), task(1, action="Hospital review")), None) == 1
    [first] = c.collect_events()
    assert isinstance(first, ReintegrationPlanRevised)
    assert [t.goal_id for t in first.tasks] == [g.goal_id for g in first.goals]
    kept = first.tasks[0].task_id
    c.agree_plan(ctx(), AgreementMethod.SIGNED, "I want to sew")
    c.progress_task(ctx(), kept, TaskStatus.IN_PROGRESS, None)
    with pytest.raises(InvalidRequestError, match="why"):
        c.revise_plan(ctx(), GOALS[:1], (task(task_id=kept),), None)
    assert c.revise_plan(ctx(), GOALS[:1], (task(task_id=kept),), "Health goal met") == 2
    assert len(c.plan_revisions) == 2  # the first revision stays on the record
    assert list(c.tasks) == [kept]
    assert c.tasks[kept].status is TaskStatus.IN_PROGRESS  # carried over with its status
    assert not c.agreed  # the person agrees to the new revision afresh


def test_a_revision_names_its_own_goals_and_current_tasks() -> None:
    c = case()
    with pytest.raises(InvalidRequestError, match="goal"):
        c.revise_plan(ctx(), (), (), None)
    with pytest.raises(InvalidRequestError) as refused:
        c.revise_plan(ctx(), GOALS, (task(goal=2),), None)
    assert refused.value.extensions["errors"][0]["field"] == "tasks.0.goal"
    with pytest.raises(InvalidRequestError, match="current plan"):
        c.revise_plan(ctx(), GOALS, (task(task_id=uuid4()),), None)
    with pytest.raises(InvalidRequestError, match="future"):
        c.revise_plan(ctx(), GOALS, (task(due_on=date(2026, 2, 1)),), None)


def test_work_starts_only_on_a_plan_the_person_agreed_to() -> None:
    c = case()
    c.revise_plan(ctx(), GOALS, (task(),), None)
    [task_id] = c.tasks
    with pytest.raises(PlanRuleError, match="agreement") as refused:
        c.progress_task(ctx(), task_id, TaskStatus.IN_PROGRESS, None)
    assert refused.value.allowed == ["agreement"]
    c.agree_plan(ctx(), AgreementMethod.ORAL_WITNESSED, None)
    with pytest.raises(PlanRuleError, match="already agreed"):
        c.agree_plan(ctx(), AgreementMethod.SIGNED, None)
    c.progress_task(ctx(), task_id, TaskStatus.DONE, "Completed the course")
    with pytest.raises(PlanRuleError, match="nothing more"):
        c.progress_task(ctx(), task_id, TaskStatus.IN_PROGRESS, None)


def test_a_minors_plan_is_signed_by_the_guardian_with_the_childs_views() -> None:
    c = case(age=16)
    c.revise_plan(ctx(), GOALS, (), None)
    with pytest.raises(InvalidRequestError, match="guardian"):
        c.agree_plan(ctx(), AgreementMethod.SIGNED, "I want to go back to school")
    with pytest.raises(InvalidRequestError, match="guardian"):
        c.agree_plan(ctx(), AgreementMethod.GUARDIAN_SIGNED, None)
    c.agree_plan(ctx(), AgreementMethod.GUARDIAN_SIGNED, "I want to go back to school")
    assert c.agreed
    adult = case()
    adult.revise_plan(ctx(), GOALS, (), None)
    with pytest.raises(InvalidRequestError, match="adult"):
        adult.agree_plan(ctx(), AgreementMethod.GUARDIAN_SIGNED, "v")


def test_no_agreement_without_a_plan_and_no_plan_on_a_closed_case() -> None:
    c = case()
    with pytest.raises(PlanRuleError, match="no plan"):
        c.agree_plan(ctx(), AgreementMethod.SIGNED, None)
    c.close(ctx(), ClosureReason.GOALS_MET, None, None)
    with pytest.raises(CaseRuleError, match="reopen"):
        c.revise_plan(ctx(), GOALS, (), None)


def test_the_baseline_is_taken_at_intake_or_crisis_then_repeated() -> None:
    c = case()
    c.change_stage(ctx(), CaseStage.TRANSITIONAL, None)
    with pytest.raises(PlanRuleError, match="baseline"):
        c.measure(ctx(), NOW, 0.2, 0.3, 0.1)
    c = case()
    c.measure(ctx(), NOW, 0.2, 0.3, 0.1)
    c.change_stage(ctx(), CaseStage.TRANSITIONAL, None)
    c.measure(ctx(30), NOW + timedelta(days=30), 0.4, 0.5, 0.3)
    c.close(ctx(60), ClosureReason.GOALS_MET, None, None)
    c.measure(ctx(90), NOW + timedelta(days=90), 0.7, 0.6, 0.6)  # follow-up after exit
    assert [m.baseline for m in c.measures] == [True, False, False]
    assert [m.stage for m in c.measures] == [
        CaseStage.RECEPTION,
        CaseStage.TRANSITIONAL,
        CaseStage.CLOSED,
    ]
    with pytest.raises(InvalidRequestError):
        c.measure(ctx(), NOW + timedelta(days=1), 0.5, 0.5, 0.5)  # in the future


def test_progress_per_dimension_is_counted_against_the_baseline() -> None:
    assert progress(0.2) == "improved"
    assert progress(0.01) == "unchanged"
    assert progress(-0.1) == "declined"
    doc = {
        "case_id": str(uuid4()),
        "province": "nghe-an",
        "received_at": "2026-03-01T10:00:00+00:00",
        "referrals": {},
        "measures": {
            "baseline": {"economic": 0.2, "social": 0.5, "psychosocial": 0.4},
            "latest": {"economic": 0.6, "social": 0.5, "psychosocial": 0.3},
        },
    }
    counts = raw_counts([{**doc, "consent": _needs_for_statistics()}], NOW)
    key = ("reintegration", "nghe-an", "2026-03")
    assert counts[(*key, "economic", "improved")] == 1
    assert counts[(*key, "social", "unchanged")] == 1
    assert counts[(*key, "psychosocial", "declined")] == 1
    # Without the needs category permitted for statistics, the measures do not count.
    counts = raw_counts([{**doc, "consent": _needs_for_statistics(("identity",))}], NOW)
    assert counts[("cases", "nghe-an", "2026-03", "all", "all")] == 1
    assert not [k for k in counts if k[0] == "reintegration"]


def _needs_for_statistics(categories: tuple[str, ...] = ("identity", "needs")) -> list[Any]:
    grant = {
        "timestamp": (NOW - timedelta(days=1)).isoformat(),
        "actor": MANAGER.model_dump(mode="json"),
        "grant_id": str(uuid4()),
        "person_id": str(uuid4()),
        "categories": list(categories),
        "recipients": [{"group": "any"}],
        "purposes": ["statistics"],
        "valid_from": (NOW - timedelta(days=1)).isoformat(),
        "valid_until": (NOW + timedelta(days=365)).isoformat(),
        "collection": {
            "method": "written_form",
            "form_reference": "F",
            "language": "vi",
            "withdrawal_explained": True,
        },
        "given_by": {"kind": "person"},
    }
    return [["org.ketnoi.consent.granted", grant]]


def test_re_trafficking_counts_the_cases_reopened_for_it() -> None:
    docs = [
        {
            "case_id": str(uuid4()),
            "province": "nghe-an",
            "received_at": "2026-03-01T10:00:00+00:00",
            "referrals": {},
            "reopenings": 1,
            "re_trafficked": 1 if n % 2 else 0,
            "consent": _needs_for_statistics(),
        }
        for n in range(4)
    ]
    counts = raw_counts(docs, NOW)
    assert counts[("reopenings", "nghe-an", "2026-03", "reopened", "yes")] == 4
    assert counts[("re_trafficking", "nghe-an", "2026-03", "re_trafficked", "yes")] == 2


# -- the exit and the follow-up after it ---------------------------------------------------------


def test_an_exit_toward_safe_independence_is_planned_first() -> None:
    c = case()
    c.record_contact_preference(ctx(), (ContactMode.PHONE,), (ContactMode.HOME_VISIT,), None)
    exit_on, until = date(2026, 6, 1), date(2026, 12, 1)
    with pytest.raises(PlanRuleError, match="stable"):
        c.plan_exit(ctx(), exit_on, 30, until, (ContactMode.PHONE,), "Call the centre")
    c.change_stage(ctx(), CaseStage.TRANSITIONAL, None)
    with pytest.raises(CaseRuleError, match="planned first") as refused:
        c.close(ctx(), ClosureReason.SAFE_INDEPENDENCE, None, None)
    assert refused.value.allowed == ["exit_plan"]
    with pytest.raises(InvalidRequestError, match="home_visit"):
        c.plan_exit(ctx(), exit_on, 30, until, (ContactMode.HOME_VISIT,), "Call the centre")
    with pytest.raises(InvalidRequestError, match="ends after"):
        c.plan_exit(ctx(), exit_on, 30, exit_on, (ContactMode.PHONE,), "Call the centre")
    c.plan_exit(ctx(), exit_on, 30, until, (ContactMode.PHONE,), "Call the centre")
    c.close(ctx(), ClosureReason.SAFE_INDEPENDENCE, "Thank you", 5)
    c.reopen(ctx(), ReopeningReason.NEW_CRISIS, CaseStage.CRISIS, None)
    assert c.exit_plan is None  # the new episode plans its own exit


def test_follow_up_contacts_fall_due_and_are_made_or_missed() -> None:
    closed = datetime(2026, 6, 1, tzinfo=UTC)
    contacts = [closed + timedelta(days=28), closed + timedelta(days=95)]
    due = schedule(closed, 30, date(2026, 10, 15), contacts, closed + timedelta(days=121))
    assert [(f.due_at - closed).days for f in due] == [30, 60, 90, 120]
    assert [f.status for f in due] == ["made", "missed", "made", "due"]
    early = schedule(closed, 30, date(2026, 10, 15), [], closed + timedelta(days=1))
    assert {f.status for f in early} == {"upcoming"}
