"""HTTP routes of the reintegration plan and the measures of reintegration. The case manager
of an agency holding the case makes the plan with the person; the plan's details and the
measures are the person's ``needs`` data (holders read them, and the read is recorded);
coordinators and auditors see the plan's progress (revision, agreement, task status and due
dates) only."""

from __future__ import annotations

from datetime import date, datetime
from uuid import UUID

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from contracts.access_policy import Action, sight
from contracts.consent_decision import local_date
from contracts.plan import (
    MAX_GOALS,
    MAX_TASKS,
    AgreementMethod,
    Attendee,
    ExitPlanned,
    Goal,
    PlanDomain,
    ReintegrationMeasured,
    Task,
    TaskStatus,
    TeamMember,
    TeamRole,
)
from contracts.vocabulary import CaseStage, ContactModes, DataCategory, ServiceType
from services.intake.api import AgencyId, Body, Intake, allowed
from services.intake.domain import Case
from services.intake.plan import GoalDraft, TaskDraft
from services.runtime.access import record_read, roles_for
from services.runtime.agencies import Agencies
from services.runtime.aggregate import utcnow
from services.runtime.auth import CurrentPrincipal
from services.runtime.http import IdempotencyKey, command_context

plan = APIRouter(prefix="/intake/cases/{case_id}/plan", tags=["intake: reintegration plan"])
OPEN_TASKS = (TaskStatus.PLANNED, TaskStatus.IN_PROGRESS)


class GoalCreate(Body):
    domain: PlanDomain
    goal: str = Field(min_length=1, max_length=1000)


class ResponsibleCreate(Body):
    team_role: TeamRole
    agency: AgencyId
    member_id: str | None = Field(default=None, min_length=1, max_length=120)


class TaskCreate(Body):
    goal: int = Field(ge=0, lt=MAX_GOALS, description="the index of its goal in this revision")
    action: str = Field(min_length=1, max_length=1000)
    responsible: ResponsibleCreate
    due_on: date
    task_id: UUID | None = Field(
        default=None, description="a task of the current plan carried over, keeping its status"
    )
    service_type: ServiceType | None = Field(
        default=None,
        description="the service the task asks of the responsible agency: a referral to that "
        "agency may name the task (POST /referral/cases/{case_id}/referrals, plan_task_id)",
    )


class PlanRevision(Body):
    goals: list[GoalCreate] = Field(min_length=1, max_length=MAX_GOALS)
    tasks: list[TaskCreate] = Field(default=[], max_length=MAX_TASKS)
    reason: str | None = Field(
        default=None, min_length=1, max_length=1000, description="why (from revision 2)"
    )


class AgreementCreate(Body):
    method: AgreementMethod
    person_views: str | None = Field(default=None, min_length=1, max_length=1000)


class TaskProgress(Body):
    to_status: TaskStatus
    note: str | None = Field(default=None, min_length=1, max_length=1000)


class MeasureCreate(Body):
    """Scores on IOM's Reintegration Sustainability Survey dimensions, each 0 to 1."""

    measured_at: datetime
    economic: float = Field(ge=0, le=1)
    social: float = Field(ge=0, le=1)
    psychosocial: float = Field(ge=0, le=1)


class ExitPlanCreate(Body):
    planned_exit_on: date
    follow_up_every_days: int = Field(ge=7, le=180)
    follow_up_until: date
    follow_up_modes: ContactModes = Field(min_length=1)
    how_to_come_back: str = Field(
        min_length=1, max_length=1000, description="what the person was told: whom to call"
    )


class ExitPlanPublic(BaseModel):
    planned_exit_on: date
    follow_up_every_days: int
    follow_up_until: date
    follow_up_modes: ContactModes
    how_to_come_back: str


class AttendeeCreate(Body):
    agency: AgencyId
    capacity: str = Field(min_length=1, max_length=120)


class ConferenceCreate(Body):
    held_on: date
    attendees: list[AttendeeCreate] = Field(min_length=2, max_length=30)
    decisions: list[str] = Field(min_length=1, max_length=20)
    tasks: list[TaskCreate] = Field(
        default=[], max_length=MAX_TASKS, description="tasks it creates; goal indexes the plan's"
    )


class ConferenceResult(BaseModel):
    case_id: UUID
    version: int
    stage: CaseStage
    tasks_added: list[UUID]


class ConferencePublic(BaseModel):
    held_on: date
    attendees: tuple[Attendee, ...]
    decisions: tuple[str, ...]
    tasks_added: tuple[UUID, ...]


class PlanResult(BaseModel):
    case_id: UUID
    version: int
    stage: CaseStage
    revision: int | None = None


class TaskPublic(BaseModel):
    task_id: UUID
    status: TaskStatus
    due_on: date
    overdue: bool
    goal_id: UUID | None = None
    action: str | None = None
    responsible: TeamMember | None = None
    service_type: ServiceType | None = None


class AgreementPublic(BaseModel):
    method: AgreementMethod
    at: datetime
    person_views: str | None


class RevisionPublic(BaseModel):
    revision: int
    at: datetime
    by_user: str
    reason: str | None
    goals: tuple[Goal, ...]
    tasks: tuple[Task, ...]
    agreement: AgreementPublic | None


class MeasurePublic(BaseModel):
    measured_at: datetime
    stage: CaseStage
    baseline: bool
    economic: float
    social: float
    psychosocial: float
    composite: float = Field(description="the unweighted mean of the three dimensions")
    change_from_baseline: dict[str, float] | None


class PlanPublic(BaseModel):
    case_id: UUID
    revision: int
    agreed: bool
    tasks: list[TaskPublic]
    revisions: list[RevisionPublic] | None
    measures: list[MeasurePublic] | None
    exit_planned: bool
    exit_plan: ExitPlanPublic | None
    conferences: list[ConferencePublic] | None = None
    shown: list[DataCategory]


def _measures(measures: list[ReintegrationMeasured]) -> list[MeasurePublic]:
    """Each measure with its change from the baseline: the trend of the case."""
    base = measures[0] if measures else None
    dims = ("economic", "social", "psychosocial")
    return [
        MeasurePublic(
            measured_at=m.measured_at,
            stage=m.stage,
            baseline=m.baseline,
            economic=m.economic,
            social=m.social,
            psychosocial=m.psychosocial,
            composite=round((m.economic + m.social + m.psychosocial) / 3, 4),
            change_from_baseline=None
            if m.baseline or base is None
            else {d: round(getattr(m, d) - getattr(base, d), 4) for d in dims},
        )
        for m in measures
    ]


def _exit(planned: ExitPlanned) -> ExitPlanPublic:
    return ExitPlanPublic(
        planned_exit_on=planned.planned_exit_on,
        follow_up_every_days=planned.follow_up_every_days,
        follow_up_until=planned.follow_up_until,
        follow_up_modes=planned.follow_up_modes,
        how_to_come_back=planned.how_to_come_back,
    )


def plan_public(case: Case, details: bool) -> PlanPublic:
    today = local_date(utcnow())
    tasks = [
        TaskPublic(
            task_id=t.task_id,
            status=t.status,
            due_on=t.due_on,
            overdue=t.status in OPEN_TASKS and t.due_on < today,
            goal_id=t.goal_id if details else None,
            action=t.action if details else None,
            responsible=t.responsible if details else None,
            service_type=t.service_type if details else None,
        )
        for t in case.tasks.values()
    ]
    revisions = [
        RevisionPublic(
            revision=r.revision,
            at=r.timestamp,
            by_user=r.actor.user_id,
            reason=r.reason,
            goals=r.goals,
            tasks=r.tasks,
            agreement=AgreementPublic(method=a.method, at=a.timestamp, person_views=a.person_views)
            if (a := case.agreements.get(r.revision))
            else None,
        )
        for r in case.plan_revisions
    ]
    return PlanPublic(
        case_id=case.id,
        revision=case.revision,
        agreed=case.agreed,
        tasks=tasks,
        revisions=revisions if details else None,
        measures=_measures(case.measures) if details else None,
        exit_planned=case.exit_plan is not None,
        exit_plan=_exit(case.exit_plan) if details and case.exit_plan else None,
        conferences=[
            ConferencePublic(
                held_on=c.held_on,
                attendees=c.attendees,
                decisions=c.decisions,
                tasks_added=c.tasks_added,
            )
            for c in case.conferences
        ]
        if details
        else None,
        shown=[DataCategory.NEEDS] if details else [],
    )


@plan.get("", response_model=PlanPublic, summary="Read the reintegration plan and measures")
def read_plan(
    case_id: UUID, intake: Intake, principal: CurrentPrincipal, request: Request
) -> PlanPublic:
    """The plan as it stands, its revisions and the person's agreement to each, and the
    measures with their change from the baseline: to the agencies holding the case (the read
    is recorded). Coordinators and auditors see its progress only."""
    case = intake.get_case(case_id)
    allowed(principal, Action.SEE_PROGRESS)(case)
    seen = sight(principal.asker, case.ties, (DataCategory.NEEDS,))
    record_read(
        request, principal, seen, case_id=case.id, what="intake.plan", person_id=case.person_id
    )
    return plan_public(case, DataCategory.NEEDS in seen.categories)


@plan.put("", response_model=PlanResult, summary="Make or revise the reintegration plan")
def revise_plan(
    case_id: UUID,
    body: PlanRevision,
    intake: Intake,
    principal: CurrentPrincipal,
    agencies: Agencies,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, object]:
    """The whole plan, made with the person: goals per domain, and tasks each with a member
    of the team responsible (from an agency in the directory) and a due date. Each revision
    is kept; the person agrees to it afresh."""
    action = Action.MANAGE_PLAN
    ctx = command_context(request, principal, roles_for(action), idempotency_key)
    goals = tuple(GoalDraft(g.domain, g.goal) for g in body.goals)
    tasks = tuple(
        TaskDraft(
            goal=t.goal,
            action=t.action,
            responsible=TeamMember(
                team_role=t.responsible.team_role,
                agency=agencies.resolve(t.responsible.agency, f"tasks.{n}.responsible.agency"),
                member_id=t.responsible.member_id,
            ),
            due_on=t.due_on,
            task_id=t.task_id,
            service_type=t.service_type,
        )
        for n, t in enumerate(body.tasks)
    )
    return intake.revise_plan(
        ctx, case_id, goals, tasks, body.reason, scope=allowed(principal, action)
    )


@plan.post(
    "/agreement",
    status_code=201,
    response_model=PlanResult,
    summary="Record the person's agreement to the plan as it stands",
)
def agree_plan(
    case_id: UUID,
    body: AgreementCreate,
    intake: Intake,
    principal: CurrentPrincipal,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, object]:
    action = Action.MANAGE_PLAN
    ctx = command_context(request, principal, roles_for(action), idempotency_key)
    return intake.agree_plan(
        ctx, case_id, body.method, body.person_views, scope=allowed(principal, action)
    )


@plan.post(
    "/tasks/{task_id}/progress",
    status_code=201,
    response_model=PlanResult,
    summary="Move a task of the plan on",
)
def progress_task(
    case_id: UUID,
    task_id: UUID,
    body: TaskProgress,
    intake: Intake,
    principal: CurrentPrincipal,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, object]:
    action = Action.MANAGE_PLAN
    ctx = command_context(request, principal, roles_for(action), idempotency_key)
    return intake.progress_task(
        ctx, case_id, task_id, body.to_status, body.note, scope=allowed(principal, action)
    )


@plan.post(
    "/measures",
    status_code=201,
    response_model=PlanResult,
    summary="Record a measure of reintegration (the first is the baseline)",
)
def measure(
    case_id: UUID,
    body: MeasureCreate,
    intake: Intake,
    principal: CurrentPrincipal,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, object]:
    """Economic, social and psychosocial scores (IOM's Reintegration Sustainability Survey,
    0 to 1). The baseline is taken at intake or in the crisis stage, then repeated."""
    action = Action.MANAGE_PLAN
    ctx = command_context(request, principal, roles_for(action), idempotency_key)
    return intake.measure(
        ctx,
        case_id,
        body.measured_at,
        body.economic,
        body.social,
        body.psychosocial,
        scope=allowed(principal, action),
    )


@plan.post(
    "/exit",
    status_code=201,
    response_model=PlanResult,
    summary="Plan the exit toward safe independence, and the follow-up after it",
)
def plan_exit(
    case_id: UUID,
    body: ExitPlanCreate,
    intake: Intake,
    principal: CurrentPrincipal,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, object]:
    """Needed before closing for safe independence. The follow-up contacts fall due every
    ``follow_up_every_days`` after the closure until ``follow_up_until``, in modes the person
    accepts; the coordinators' follow-up list shows those due and missed."""
    action = Action.MANAGE_CASE
    ctx = command_context(request, principal, roles_for(action), idempotency_key)
    return intake.plan_exit(
        ctx,
        case_id,
        body.planned_exit_on,
        body.follow_up_every_days,
        body.follow_up_until,
        body.follow_up_modes,
        body.how_to_come_back,
        scope=allowed(principal, action),
    )


@plan.post(
    "/conferences",
    status_code=201,
    response_model=ConferenceResult,
    summary="Record an interagency case conference and the tasks it creates",
)
def hold_conference(
    case_id: UUID,
    body: ConferenceCreate,
    intake: Intake,
    principal: CurrentPrincipal,
    agencies: Agencies,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, object]:
    """Who attended (agencies of the directory), what was decided, and the tasks it creates:
    they join the plan as a new revision, for the person to agree to."""
    action = Action.MANAGE_PLAN
    ctx = command_context(request, principal, roles_for(action), idempotency_key)
    attendees = tuple(
        Attendee(agency=agencies.resolve(a.agency, f"attendees.{n}.agency"), capacity=a.capacity)
        for n, a in enumerate(body.attendees)
    )
    tasks = tuple(
        TaskDraft(
            goal=t.goal,
            action=t.action,
            responsible=TeamMember(
                team_role=t.responsible.team_role,
                agency=agencies.resolve(t.responsible.agency, f"tasks.{n}.responsible.agency"),
                member_id=t.responsible.member_id,
            ),
            due_on=t.due_on,
            service_type=t.service_type,
        )
        for n, t in enumerate(body.tasks)
    )
    return intake.hold_conference(
        ctx,
        case_id,
        body.held_on,
        attendees,
        tuple(body.decisions),
        tasks,
        scope=allowed(principal, action),
    )
