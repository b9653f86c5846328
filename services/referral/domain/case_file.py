"""The referral service's case file: its own copy of what intake and consent recorded.

Disclosures are made from here, and consent decisions run on the copied consent events, so
the referral service decides on its own view, in the same transaction as its reactions.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from contracts.access_policy import CaseTies
from contracts.consent_decision import ConsentDecision, decide
from contracts.envelope import AgencyRef, Event, resolve
from contracts.erasure import CaseFileErased
from contracts.plan import TaskStatus
from contracts.referral import (
    CaseFactsNoted,
    CaseFileManagerNoted,
    CaseFileOpened,
    CasePlanNoted,
    ConsentNoted,
    PlannedTask,
    ReferralLinked,
    case_file_id,
)
from contracts.vocabulary import DataCategory, Purpose
from services.runtime.aggregate import Aggregate, CommandContext, applies
from services.runtime.errors import NotFoundError


class CaseFileNotFoundError(NotFoundError):
    def __init__(self, case_id: UUID) -> None:
        super().__init__(
            f"No case {case_id} that you may see. A case received a moment ago appears here "
            "within seconds; otherwise check the case id.",
            case_id=str(case_id),
        )


class CaseFile(Aggregate):
    def __init__(self, aggregate_id: UUID) -> None:
        super().__init__(aggregate_id)
        self.case_id = aggregate_id
        self.person_id = aggregate_id
        self.province = ""
        self.receiving_agency_id: str | None = None
        self.case_manager_agency_id: str | None = None
        self.facts: dict[DataCategory, dict[str, Any]] = {}
        self.consent_events: list[Event] = []
        self.referral_ids: list[UUID] = []
        self.erased = False
        self.plan_tasks: dict[UUID, PlannedTask] = {}

    @classmethod
    def open(
        cls,
        ctx: CommandContext,
        case_id: UUID,
        person_id: UUID,
        province: str,
        receiving_agency_id: str | None = None,
    ) -> CaseFile:
        case_file = cls(case_file_id(case_id))
        case_file.trigger(
            ctx,
            CaseFileOpened,
            case_id=case_id,
            person_id=person_id,
            province=province,
            receiving_agency_id=receiving_agency_id,
        )
        return case_file

    @applies(CaseFileOpened)
    def _opened(self, event: CaseFileOpened) -> None:
        self.case_id = event.case_id
        self.person_id = event.person_id
        self.province = event.province
        self.receiving_agency_id = event.receiving_agency_id

    def note_case_manager(self, ctx: CommandContext, agency_id: str) -> None:
        if agency_id != self.case_manager_agency_id:
            self.trigger(ctx, CaseFileManagerNoted, agency_id=agency_id)

    @applies(CaseFileManagerNoted)
    def _case_manager_noted(self, event: CaseFileManagerNoted) -> None:
        self.case_manager_agency_id = event.agency_id

    @property
    def ties(self) -> CaseTies:
        """The agencies that hold the case, as this log knows them."""
        return CaseTies.held_by(
            self.province, self.receiving_agency_id, self.case_manager_agency_id
        )

    def note_facts(
        self, ctx: CommandContext, category: DataCategory, facts: dict[str, Any]
    ) -> None:
        """Note the fields ``facts`` gives of ``category``, keeping the category's other
        fields (another event is their source); the event holds the category whole."""
        merged = {**self.facts.get(category, {}), **facts}
        if self.facts.get(category) != merged:
            self.trigger(
                ctx, CaseFactsNoted, person_id=self.person_id, category=category, facts=merged
            )

    @applies(CaseFactsNoted)
    def _facts_noted(self, event: CaseFactsNoted) -> None:
        self.facts[event.category] = event.facts

    def note_plan(self, ctx: CommandContext, tasks: tuple[PlannedTask, ...]) -> None:
        """Note the tasks of the case's current plan (a referral may name one)."""
        if {t.task_id: t for t in tasks} != self.plan_tasks:
            self.trigger(ctx, CasePlanNoted, person_id=self.person_id, tasks=tasks)

    @applies(CasePlanNoted)
    def _plan_noted(self, event: CasePlanNoted) -> None:
        self.plan_tasks = {t.task_id: t for t in event.tasks}

    def note_task_status(self, ctx: CommandContext, task_id: UUID, status: TaskStatus) -> None:
        task = self.plan_tasks.get(task_id)
        if task is not None and task.status is not status:
            changed = task.model_copy(update={"status": status})
            tasks = tuple(changed if t.task_id == task_id else t for t in self.plan_tasks.values())
            self.trigger(ctx, CasePlanNoted, person_id=self.person_id, tasks=tasks)

    def note_consent(self, ctx: CommandContext, event: Event) -> None:
        state = event.model_dump(mode="json", exclude={"originator_id", "originator_version"})
        self.trigger(
            ctx,
            ConsentNoted,
            person_id=self.person_id,
            upstream_topic=type(event).topic(),
            upstream_state=state,
        )

    @applies(ConsentNoted)
    def _consent_noted(self, event: ConsentNoted) -> None:
        cls, state = resolve(event.upstream_topic, dict(event.upstream_state))
        # The copy keeps the upstream event's time; its position is its place in this file.
        state["originator_id"] = self.id
        state["originator_version"] = len(self.consent_events) + 1
        self.consent_events.append(cls.model_validate(state))

    def record_erased(self, ctx: CommandContext, notify: tuple[str, ...]) -> None:
        """The person was erased (intake): the agencies in ``notify`` are told on the feed."""
        if self.erased:
            return
        self.trigger(
            ctx,
            CaseFileErased,
            case_id=self.case_id,
            person_id=self.person_id,
            referral_ids=tuple(self.referral_ids),
            notify=notify,
        )

    @applies(CaseFileErased)
    def _erased(self, event: CaseFileErased) -> None:
        self.erased = True
        self.facts = {}

    def link(self, ctx: CommandContext, referral_id: UUID) -> None:
        self.trigger(ctx, ReferralLinked, referral_id=referral_id)

    @applies(ReferralLinked)
    def _linked(self, event: ReferralLinked) -> None:
        self.referral_ids.append(event.referral_id)

    def decide(
        self,
        recipient: AgencyRef,
        purpose: Purpose,
        categories: tuple[DataCategory, ...],
        at: datetime,
    ) -> ConsentDecision:
        return decide(
            self.consent_events,
            recipient=recipient,
            purpose=purpose,
            categories=categories,
            at=at,
        )
