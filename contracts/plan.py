"""Events of the intake log for the reintegration plan, made with the person (seed 000:
"designed by the case manager together with the beneficiary"), and the measures of where the
person stands (seed 002: "where is the person when they start using support?").

A plan is a sequence of revisions, each whole (goals per domain, tasks with who is
responsible, due dates), kept as history; the person's agreement is to one revision. Task
progress is recorded between revisions. The measures use the dimensions of IOM's
Reintegration Sustainability Survey (economic, social, psychosocial, each scored 0 to 1).
The plan and the measures are the person's ``needs`` data.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Annotated
from uuid import UUID

from pydantic import Field

from contracts.envelope import AgencyRef, Event, Model
from contracts.personal import ERASED_TEXT, PERSONAL, Personal
from contracts.vocabulary import CaseStage, ContactModes, ServiceType

MAX_GOALS = 24  # a few per domain
MAX_TASKS = 60


class PlanDomain(StrEnum):
    """Domains of a reintegration plan (issue: safety, health, housing, income, education,
    legal, family, community)."""

    SAFETY = "safety"
    HEALTH = "health"
    HOUSING = "housing"
    INCOME = "income"
    EDUCATION = "education"
    LEGAL = "legal"
    FAMILY = "family"
    COMMUNITY = "community"


class TeamRole(StrEnum):
    """Members of the case's multidisciplinary team."""

    SOCIAL_WORKER = "social_worker"
    PSYCHOLOGIST = "psychologist"
    HEALTH_WORKER = "health_worker"
    LAWYER = "lawyer"
    TRAINER = "trainer"
    EMPLOYER = "employer"
    TEACHER = "teacher"
    OTHER = "other"


class TaskStatus(StrEnum):
    PLANNED = "planned"
    IN_PROGRESS = "in_progress"
    DONE = "done"
    CANCELLED = "cancelled"


class AgreementMethod(StrEnum):
    SIGNED = "signed"
    ORAL_WITNESSED = "oral_witnessed"
    GUARDIAN_SIGNED = "guardian_signed"  # a minor's plan, with the child's own views


Text = Annotated[str, Field(min_length=1, max_length=1000)]
PersonalText = Annotated[Text, PERSONAL]  # encrypted under the person's key


class Goal(Model):
    goal_id: UUID
    domain: PlanDomain
    goal: PersonalText


class TeamMember(Model):
    """Who is responsible for a task: a member of the team, from an agency."""

    team_role: TeamRole
    agency: AgencyRef
    member_id: str | None = Field(default=None, min_length=1, max_length=120)


class Task(Model):
    """A task of the plan. ``service_type``: the service it asks of the responsible member's
    agency, for which a referral to that agency may be made (naming the task)."""

    task_id: UUID
    goal_id: UUID
    action: PersonalText
    responsible: TeamMember
    due_on: date
    status: TaskStatus = TaskStatus.PLANNED
    service_type: ServiceType | None = None


class ReintegrationPlanRevised(Event):
    """A revision of the plan, whole; the first is revision 1. Tasks carried over keep their
    ids and status."""

    event_type = "org.ketnoi.intake.reintegration_plan_revised"

    person_id: UUID
    revision: int = Field(ge=1)
    goals: tuple[Goal, ...] = Field(min_length=1, max_length=MAX_GOALS)
    tasks: tuple[Task, ...] = Field(default=(), max_length=MAX_TASKS)
    reason: PersonalText | None = None


class ReintegrationPlanAgreed(Event):
    """The person agreed to a revision of their plan (or, for a minor, the guardian, with the
    child's own views)."""

    event_type = "org.ketnoi.intake.reintegration_plan_agreed"

    person_id: UUID
    revision: int = Field(ge=1)
    method: AgreementMethod
    person_views: PersonalText | None = None


class PlanTaskProgressed(Event):
    event_type = "org.ketnoi.intake.plan_task_progressed"

    person_id: UUID
    task_id: UUID
    from_status: TaskStatus
    to_status: TaskStatus
    note: PersonalText | None = None


Score = Annotated[float, Field(ge=0, le=1)]


class ReintegrationMeasured(Event):
    """A measure on IOM's Reintegration Sustainability Survey dimensions. The first of a case
    is its baseline."""

    event_type = "org.ketnoi.intake.reintegration_measured"

    person_id: UUID
    measured_at: datetime
    stage: CaseStage
    economic: Score
    social: Score
    psychosocial: Score
    baseline: bool


class ExitPlanned(Event):
    """A planned exit toward safe independence (seed 002): when, the follow-up after it (how
    often, until when, in which of the modes the person accepts), and how the person was told
    to come back if they need support again."""

    event_type = "org.ketnoi.intake.exit_planned"

    person_id: UUID
    planned_exit_on: date
    follow_up_every_days: int = Field(ge=7, le=180)
    follow_up_until: date
    follow_up_modes: ContactModes = Field(min_length=1)
    how_to_come_back: PersonalText


class Attendee(Model):
    agency: AgencyRef
    capacity: Annotated[str, Field(min_length=1, max_length=120)]


class CaseConferenceHeld(Event):
    """An interagency case conference (seeds 002, 003): who attended, what was decided, and
    the tasks it added to the plan (in the revision it made)."""

    event_type = "org.ketnoi.intake.case_conference_held"

    person_id: UUID
    held_on: date
    attendees: tuple[Attendee, ...] = Field(min_length=2, max_length=30)
    decisions: Annotated[tuple[Text, ...], Personal(erased=(ERASED_TEXT,))] = Field(
        min_length=1, max_length=20
    )
    tasks_added: tuple[UUID, ...] = Field(default=(), max_length=MAX_TASKS)


PLAN_EVENTS: tuple[type[Event], ...] = (
    ReintegrationPlanRevised,
    ReintegrationPlanAgreed,
    PlanTaskProgressed,
    ReintegrationMeasured,
    ExitPlanned,
    CaseConferenceHeld,
)

__all__ = [
    "PLAN_EVENTS",
    "AgreementMethod",
    "Attendee",
    "CaseConferenceHeld",
    "ExitPlanned",
    "Goal",
    "PlanDomain",
    "PlanTaskProgressed",
    "ReintegrationMeasured",
    "ReintegrationPlanAgreed",
    "ReintegrationPlanRevised",
    "Task",
    "TaskStatus",
    "TeamMember",
    "TeamRole",
]
