"""The reintegration plan of a case, made with the person, and the measures of where they
stand. The rules live here; ``Case`` inherits them (through ``CaseWork``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from uuid import UUID, uuid4

from contracts.consent_decision import local_date
from contracts.intake import ContactPreferenceRecorded
from contracts.plan import (
    AgreementMethod,
    Attendee,
    CaseConferenceHeld,
    ExitPlanned,
    Goal,
    PlanDomain,
    PlanTaskProgressed,
    ReintegrationMeasured,
    ReintegrationPlanAgreed,
    ReintegrationPlanRevised,
    Task,
    TaskStatus,
    TeamMember,
)
from contracts.vocabulary import CaseStage, ContactMode, ServiceType
from services.runtime.aggregate import Aggregate, CommandContext, applies
from services.runtime.errors import InvalidRequestError, RuleViolationError

# Where a task may go from where it is; done and cancelled are the end.
TASK_STEPS: dict[TaskStatus, tuple[TaskStatus, ...]] = {
    TaskStatus.PLANNED: (TaskStatus.IN_PROGRESS, TaskStatus.DONE, TaskStatus.CANCELLED),
    TaskStatus.IN_PROGRESS: (TaskStatus.DONE, TaskStatus.CANCELLED),
    TaskStatus.DONE: (),
    TaskStatus.CANCELLED: (),
}
# The baseline is taken where support starts (seed 002): at intake or in the crisis stage.
BASELINE_STAGES = (CaseStage.RECEPTION, CaseStage.CRISIS)
# The exit is planned once the person is stable (seed 002, stages 2 and 3).
EXIT_PLANNING_STAGES = (CaseStage.TRANSITIONAL, CaseStage.EXTERNAL_SUPPORT)


class PlanRuleError(RuleViolationError):
    """A change to the plan or its measures that the rules forbid as asked."""


@dataclass(frozen=True)
class GoalDraft:
    domain: PlanDomain
    goal: str


@dataclass(frozen=True)
class TaskDraft:
    """A task as a revision asks for it: ``goal`` indexes the revision's goals; ``task_id``
    names a task of the current plan that carries over (keeping its status)."""

    goal: int
    action: str
    responsible: TeamMember
    due_on: date
    task_id: UUID | None = None
    service_type: ServiceType | None = None


class Planning(Aggregate):
    """The plan part of a case. ``Case`` provides the person, stage, minority and whether
    the case is open."""

    person_id: UUID
    stage: CaseStage
    minor: bool | None
    contact: ContactPreferenceRecorded | None

    def __init__(self, aggregate_id: UUID) -> None:
        super().__init__(aggregate_id)
        self.plan_revisions: list[ReintegrationPlanRevised] = []
        self.agreements: dict[int, ReintegrationPlanAgreed] = {}
        self.tasks: dict[UUID, Task] = {}
        self.measures: list[ReintegrationMeasured] = []
        self.exit_plan: ExitPlanned | None = None  # of the current episode
        self.conferences: list[CaseConferenceHeld] = []

    def check_open(self, doing: str) -> None:
        raise NotImplementedError

    @property
    def revision(self) -> int:
        return len(self.plan_revisions)

    @property
    def agreed(self) -> bool:
        """True when the person agreed to the plan as it stands."""
        return self.revision > 0 and self.revision in self.agreements

    # -- revisions and agreement -------------------------------------------------------------

    def revise_plan(
        self,
        ctx: CommandContext,
        goals: tuple[GoalDraft, ...],
        tasks: tuple[TaskDraft, ...],
        reason: str | None,
    ) -> int:
        """Make the plan's next revision, whole; returns its number. Raises
        InvalidRequestError naming the field at fault."""
        self.check_open("revise the reintegration plan")
        if not goals:
            raise InvalidRequestError("goals", "A plan has at least one goal.")
        if self.revision and reason is None:
            raise InvalidRequestError("reason", "Say why the plan is revised.")
        made = tuple(Goal(goal_id=uuid4(), domain=g.domain, goal=g.goal) for g in goals)
        today = local_date(ctx.at)
        planned: list[Task] = []
        seen: set[UUID] = set()
        for n, draft in enumerate(tasks):
            if not 0 <= draft.goal < len(made):
                raise InvalidRequestError(f"tasks.{n}.goal", "Name a goal of this revision.")
            status = TaskStatus.PLANNED
            task_id = draft.task_id
            if task_id is not None:
                kept = self.tasks.get(task_id)
                if kept is None or task_id in seen:
                    raise InvalidRequestError(
                        f"tasks.{n}.task_id", "Name a task of the current plan, once."
                    )
                status = kept.status
            elif draft.due_on < today:
                raise InvalidRequestError(f"tasks.{n}.due_on", "A new task is due in the future.")
            task_id = task_id or uuid4()
            seen.add(task_id)
            planned.append(
                Task(
                    task_id=task_id,
                    goal_id=made[draft.goal].goal_id,
                    action=draft.action,
                    responsible=draft.responsible,
                    due_on=draft.due_on,
                    status=status,
                    service_type=draft.service_type,
                )
            )
        self.trigger(
            ctx,
            ReintegrationPlanRevised,
            person_id=self.person_id,
            revision=self.revision + 1,
            goals=made,
            tasks=tuple(planned),
            reason=reason,
        )
        return self.revision

    @applies(ReintegrationPlanRevised)
    def _plan_revised(self, event: ReintegrationPlanRevised) -> None:
        self.plan_revisions.append(event)
        self.tasks = {t.task_id: t for t in event.tasks}

    def agree_plan(
        self, ctx: CommandContext, method: AgreementMethod, person_views: str | None
    ) -> None:
        """The person agrees to the plan as it stands. A minor's plan is signed by the
        guardian with the child's own views recorded."""
        self.check_open("record agreement to the plan")
        if not self.revision:
            raise PlanRuleError("There is no plan yet; make it with the person first.")
        if self.agreed:
            raise PlanRuleError(f"The person already agreed to revision {self.revision}.")
        if self.minor and (method is not AgreementMethod.GUARDIAN_SIGNED or not person_views):
            raise InvalidRequestError(
                "method",
                "A minor's plan is signed by the guardian (guardian_signed), with the child's "
                "own views in person_views.",
            )
        if not self.minor and method is AgreementMethod.GUARDIAN_SIGNED:
            raise InvalidRequestError("method", "An adult agrees to their own plan.")
        self.trigger(
            ctx,
            ReintegrationPlanAgreed,
            person_id=self.person_id,
            revision=self.revision,
            method=method,
            person_views=person_views,
        )

    @applies(ReintegrationPlanAgreed)
    def _plan_agreed(self, event: ReintegrationPlanAgreed) -> None:
        self.agreements[event.revision] = event

    def progress_task(
        self, ctx: CommandContext, task_id: UUID, to_status: TaskStatus, note: str | None
    ) -> None:
        """Move a task of the current plan on. Work starts only on a plan the person agreed
        to. Raises InvalidRequestError for an unknown task, PlanRuleError for a step the
        task's status does not allow."""
        self.check_open("record progress on the plan")
        task = self.tasks.get(task_id)
        if task is None:
            raise InvalidRequestError("task_id", "No such task in the current plan.")
        steps = TASK_STEPS[task.status]
        if to_status not in steps:
            raise PlanRuleError(
                f"A task {task.status.value} can move to: "
                + (", ".join(s.value for s in steps) or "nothing more")
                + ".",
                allowed=[s.value for s in steps],
            )
        if to_status is not TaskStatus.CANCELLED and not self.agreed:
            raise PlanRuleError(
                "The person has not agreed to the plan as it stands: record their agreement "
                "before the work starts.",
                allowed=["agreement"],
            )
        self.trigger(
            ctx,
            PlanTaskProgressed,
            person_id=self.person_id,
            task_id=task_id,
            from_status=task.status,
            to_status=to_status,
            note=note,
        )

    @applies(PlanTaskProgressed)
    def _task_progressed(self, event: PlanTaskProgressed) -> None:
        task = self.tasks[event.task_id]
        self.tasks[event.task_id] = task.model_copy(update={"status": event.to_status})

    # -- measures ----------------------------------------------------------------------------

    def measure(
        self,
        ctx: CommandContext,
        measured_at: datetime,
        economic: float,
        social: float,
        psychosocial: float,
    ) -> None:
        """A measure on the three dimensions; the first is the baseline, taken at intake or
        in the crisis stage. Later measures go on after closure (follow-up after exit)."""
        if measured_at.tzinfo is None or measured_at > ctx.at:
            raise InvalidRequestError("measured_at", "Give a past measured_at with its zone.")
        baseline = not self.measures
        if baseline and self.stage not in BASELINE_STAGES:
            raise PlanRuleError(
                "The first measure is the baseline: take it at intake or in the crisis stage "
                f"(this case is in stage {self.stage.value}).",
            )
        self.trigger(
            ctx,
            ReintegrationMeasured,
            person_id=self.person_id,
            measured_at=measured_at,
            stage=self.stage,
            economic=economic,
            social=social,
            psychosocial=psychosocial,
            baseline=baseline,
        )

    @applies(ReintegrationMeasured)
    def _measured(self, event: ReintegrationMeasured) -> None:
        self.measures.append(event)

    # -- the exit --------------------------------------------------------------------------

    def plan_exit(
        self,
        ctx: CommandContext,
        planned_exit_on: date,
        every_days: int,
        until: date,
        modes: tuple[ContactMode, ...],
        how_to_come_back: str,
    ) -> None:
        """Plan the exit and the follow-up after it. Raises PlanRuleError outside the
        transitional and external support stages, InvalidRequestError for a follow-up in a
        mode the person refused or ending before the exit."""
        self.check_open("plan the exit")
        if self.stage not in EXIT_PLANNING_STAGES:
            raise PlanRuleError(
                "The exit is planned once the person is stable: in stage transitional or "
                f"external_support (this case is in {self.stage.value}).",
                allowed=["change_stage"],
            )
        refused = set(modes) & set(self.contact.refused if self.contact else ())
        if refused:
            names = ", ".join(sorted(m.value for m in refused))
            raise InvalidRequestError(
                "follow_up_modes", f"The person refused to be contacted by: {names}."
            )
        if planned_exit_on < local_date(ctx.at):
            raise InvalidRequestError("planned_exit_on", "The exit is planned for the future.")
        if until <= planned_exit_on:
            raise InvalidRequestError("follow_up_until", "The follow-up ends after the exit.")
        self.trigger(
            ctx,
            ExitPlanned,
            person_id=self.person_id,
            planned_exit_on=planned_exit_on,
            follow_up_every_days=every_days,
            follow_up_until=until,
            follow_up_modes=modes,
            how_to_come_back=how_to_come_back,
        )

    @applies(ExitPlanned)
    def _exit_planned(self, event: ExitPlanned) -> None:
        self.exit_plan = event

    # -- case conferences --------------------------------------------------------------------

    def hold_conference(
        self,
        ctx: CommandContext,
        held_on: date,
        attendees: tuple[Attendee, ...],
        decisions: tuple[str, ...],
        tasks: tuple[TaskDraft, ...],
    ) -> tuple[UUID, ...]:
        """Record an interagency case conference; the tasks it creates join the plan as a
        new revision (``goal`` indexes the current plan's goals). Returns the tasks' ids.
        Raises InvalidRequestError for a conference of one agency, in the future, or with
        tasks and no plan to hold them."""
        self.check_open("record a case conference")
        if len({a.agency.agency_id for a in attendees}) < 2:
            raise InvalidRequestError("attendees", "A case conference brings agencies together.")
        if held_on > local_date(ctx.at):
            raise InvalidRequestError("held_on", "held_on is in the future.")
        current = self.plan_revisions[-1] if self.plan_revisions else None
        if tasks and current is None:
            raise InvalidRequestError("tasks", "Make the plan first; the tasks join it.")
        added: list[Task] = []
        for n, draft in enumerate(tasks):
            assert current is not None
            if not 0 <= draft.goal < len(current.goals):
                raise InvalidRequestError(f"tasks.{n}.goal", "Name a goal of the current plan.")
            if draft.due_on < local_date(ctx.at):
                raise InvalidRequestError(f"tasks.{n}.due_on", "A new task is due in the future.")
            added.append(
                Task(
                    task_id=uuid4(),
                    goal_id=current.goals[draft.goal].goal_id,
                    action=draft.action,
                    responsible=draft.responsible,
                    due_on=draft.due_on,
                    service_type=draft.service_type,
                )
            )
        self.trigger(
            ctx,
            CaseConferenceHeld,
            person_id=self.person_id,
            held_on=held_on,
            attendees=attendees,
            decisions=decisions,
            tasks_added=tuple(t.task_id for t in added),
        )
        if current is not None and added:
            self.trigger(
                ctx,
                ReintegrationPlanRevised,
                person_id=self.person_id,
                revision=self.revision + 1,
                goals=current.goals,
                tasks=(*self.tasks.values(), *added),
                reason=f"Tasks from the case conference of {held_on.isoformat()}",
            )
        return tuple(t.task_id for t in added)

    @applies(CaseConferenceHeld)
    def _conference_held(self, event: CaseConferenceHeld) -> None:
        self.conferences.append(event)
