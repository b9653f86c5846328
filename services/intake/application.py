"""The intake service: commands on cases, each saved in one transaction."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from contracts.casework import (
    EducationLivelihood,
    Exploitation,
    FamilySituation,
    LegalNeedsAssessment,
    MedicalExamination,
    PsychosocialAssessment,
)
from contracts.directory import PLATFORM_AGENCY_ID
from contracts.envelope import Actor, AgencyRef, Event
from contracts.envelope import Model as ContractModel
from contracts.erasure import ErasureReason
from contracts.intake import CaseClosed, PartyPresent, PersonDetails, Place, transfer_id
from contracts.plan import AgreementMethod, Attendee, TaskStatus
from contracts.referral import HandoverCompleted, HandoverKind, HandoverStarted, PartyRole
from contracts.vocabulary import (
    ArrivalRoute,
    CaseStage,
    ClosureReason,
    ContactMode,
    DataCategory,
    DeclineKind,
    IdentificationStatus,
    ReopeningReason,
    ReviewDecision,
    RiskLevel,
    RiskSubject,
    Role,
    ServiceType,
    UrgentNeed,
)
from services.intake.domain import Case, CaseNotFoundError
from services.intake.plan import GoalDraft, TaskDraft
from services.intake.transfer import Transfer
from services.runtime.aggregate import CommandContext
from services.runtime.application import Result
from services.runtime.follower import FollowingApplication, Processing, topics_of

# The platform's own actor when it proposes an erasure at the end of the retention period.
PLATFORM_ACTOR = Actor(
    user_id="ketnoi-retention-watch", agency_id=PLATFORM_AGENCY_ID, role=Role.ADMIN
)


class IntakeService(FollowingApplication):
    """Receptions and cases. Every command returns ids, never personal data. Follows the
    referral log for one thing: a completed case transfer moves the case to the case
    manager it names (``services.intake.transfer``)."""

    name = "intake"
    follows: ClassVar[dict[str, tuple[type[Event], ...]]] = {
        "referral": (HandoverStarted, HandoverCompleted),
    }

    # -- following the referral log ------------------------------------------------------------

    def policy(self, upstream: str, event: Event, processing: Processing) -> None:
        # The upstream event's own time and actor: replaying the logs gives the same case.
        ctx = CommandContext(
            actor=event.actor,
            at=event.timestamp,
            caused_by=event.event_id,
            correlation_id=event.correlation_id,
        )
        if isinstance(event, HandoverStarted):
            if event.kind is not HandoverKind.CASE_TRANSFER or not event.to_case_manager_id:
                return
            to = next(p for p in event.parties if p.role is PartyRole.TO)
            processing.collect_events(
                Transfer.await_completion(
                    ctx,
                    handover_id=event.originator_id,
                    case_id=event.case_id,
                    to_agency=to.agency,
                    to_case_manager_id=event.to_case_manager_id,
                )
            )
        elif isinstance(event, HandoverCompleted):
            try:
                transfer = self.load(Transfer, transfer_id(event.originator_id))
            except AggregateNotFoundError:
                return  # a reception handover: it moves no case manager
            spec = transfer.spec
            case = self.get_case(spec.case_id)
            if case.take_over_by_transfer(
                ctx, spec.handover_id, spec.to_case_manager_id, spec.to_agency
            ):
                processing.collect_events(case)

    def get_case(self, case_id: UUID) -> Case:
        """The case as it is now; raises CaseNotFoundError."""
        try:
            return self.load(Case, case_id)
        except AggregateNotFoundError:
            raise CaseNotFoundError(case_id) from None

    def record_reception(
        self,
        ctx: CommandContext,
        *,
        route: ArrivalRoute,
        received_at: datetime,
        place: Place,
        receiving_agency: AgencyRef,
        handed_over_by: AgencyRef | None = None,
        returned_from_country: str | None = None,
        present: tuple[PartyPresent, ...] = (),
    ) -> Result:
        """Open a case for a person just received; returns its case_id and person_id."""

        def run() -> tuple[list[Any], Result]:
            case = Case.record_reception(
                ctx,
                route=route,
                received_at=received_at,
                place=place,
                receiving_agency=receiving_agency,
                handed_over_by=handed_over_by,
                returned_from_country=returned_from_country,
                present=present,
            )
            return [case], {**case.summary(), "person_id": str(case.person_id)}

        request = {
            "route": route.value,
            "received_at": received_at.isoformat(),
            "place": place.model_dump(mode="json"),
            "receiving_agency": receiving_agency.model_dump(mode="json"),
            "handed_over_by": handed_over_by.model_dump(mode="json") if handed_over_by else None,
            "returned_from_country": returned_from_country,
            "present": [p.model_dump(mode="json") for p in present],
        }
        return self.execute(ctx, "record_reception", request, run)

    def _on_case(
        self,
        ctx: CommandContext,
        case_id: UUID,
        command: str,
        request: dict[str, Any],
        change: Callable[[Case], Any],
        *,
        scope: Callable[[Case], None] | None = None,
        answer: Callable[[Any], Result] | None = None,
    ) -> Result:
        """Run ``change`` on the case (in the caller's ``scope``, never on an erased case);
        the result is the case's summary with ``answer`` of what ``change`` returned."""

        def run() -> tuple[list[Any], Result]:
            case = self.get_case(case_id)
            if scope is not None:
                scope(case)
            case.check_not_erased()
            made = change(case)
            return [case], {**case.summary(), **(answer(made) if answer else {})}

        return self.execute(ctx, command, {"case_id": str(case_id), **request}, run)

    # -- forgetting ----------------------------------------------------------------------------

    def request_erasure(
        self,
        ctx: CommandContext,
        case_id: UUID,
        reason: ErasureReason,
        *,
        scope: Callable[[Case], None] | None = None,
    ) -> Result:
        """Ask for the erasure of the case's person; a second person approves it."""

        def run() -> tuple[list[Any], Result]:
            case = self.get_case(case_id)
            if scope is not None:
                scope(case)
            request_id = case.request_erasure(ctx, reason)
            return [case], {**case.summary(), "request_id": str(request_id)}

        request = {"case_id": str(case_id), "reason": reason.value}
        return self.execute(ctx, "request_erasure", request, run)

    def approve_erasure(
        self,
        ctx: CommandContext,
        case_id: UUID,
        *,
        scope: Callable[[Case], None] | None = None,
    ) -> Result:
        """Approve the erasure asked for by someone else: destroy the person's key, wait
        until no process can still hold it in its cache, then record ``PersonErased`` (which
        the read models and the referral service follow). Raises ErasureRuleError when no
        request waits or the approver asked for it.

        The key goes first: a failure after it leaves the person erased but not yet recorded,
        and approving again records it."""
        case = self.get_case(case_id)
        if scope is not None:
            scope(case)
        case.check_approval(ctx.actor)
        keys = self.person_keys
        if keys is None:
            msg = "the intake service runs without a key store: it cannot erase anyone"
            raise RuntimeError(msg)
        keys.erase(case.person_id)
        time.sleep(keys.cache_seconds)

        def run() -> tuple[list[Any], Result]:
            case = self.get_case(case_id)
            case.record_erased(ctx)
            return [case], {**case.summary(), "erased": True}

        return self.execute(ctx, "approve_erasure", {"case_id": str(case_id)}, run)

    def propose_erasures(self, retention_days: int, now: datetime | None = None) -> list[UUID]:
        """Propose the erasure of every case closed for longer than ``retention_days`` to its
        agency (once per closure); returns the cases proposed now."""
        ctx = CommandContext(actor=PLATFORM_ACTOR, at=now or datetime.now(UTC))
        proposed = []
        for case_id in self._closed_cases():
            case = self.get_case(case_id)
            if case.erasure_due(ctx.at, retention_days) is None:
                continue

            def run(case_id: UUID = case_id) -> tuple[list[Any], Result]:
                case = self.get_case(case_id)
                case.propose_erasure(ctx, retention_days)
                return [case], case.summary()

            self.execute(ctx, "propose_erasure", {"case_id": str(case_id)}, run)
            proposed.append(case_id)
        return proposed

    def _closed_cases(self) -> list[UUID]:
        topics = topics_of([CaseClosed])
        found: dict[UUID, None] = {}
        position = 0
        while True:
            batch = self.recorder.select_notifications(start=position + 1, limit=500, topics=topics)
            if not batch:
                return list(found)
            for notification in batch:
                found[UUID(str(notification.originator_id))] = None
            position = batch[-1].id

    def register_person(
        self,
        ctx: CommandContext,
        case_id: UUID,
        details: PersonDetails,
        *,
        scope: Callable[[Case], None] | None = None,
    ) -> Result:
        return self._on_case(
            ctx,
            case_id,
            "register_person",
            {"details": details.model_dump(mode="json")},
            lambda case: case.register_person(ctx, details),
            scope=scope,
        )

    def correct_person_details(
        self,
        ctx: CommandContext,
        case_id: UUID,
        details: PersonDetails,
        *,
        scope: Callable[[Case], None] | None = None,
    ) -> Result:
        return self._on_case(
            ctx,
            case_id,
            "correct_person_details",
            {"details": details.model_dump(mode="json")},
            lambda case: case.correct_person_details(ctx, details),
            scope=scope,
        )

    def assess_needs(
        self,
        ctx: CommandContext,
        case_id: UUID,
        needs: tuple[UrgentNeed, ...],
        notes: str | None = None,
        *,
        scope: Callable[[Case], None] | None = None,
    ) -> Result:
        return self._on_case(
            ctx,
            case_id,
            "assess_needs",
            {"needs": [n.value for n in needs], "notes": notes},
            lambda case: case.assess_needs(ctx, needs, notes),
            scope=scope,
        )

    def assess_risk(
        self,
        ctx: CommandContext,
        case_id: UUID,
        level: RiskLevel,
        at_risk: tuple[RiskSubject, ...],
        management_plan: str,
        *,
        scope: Callable[[Case], None] | None = None,
    ) -> Result:
        request = {
            "level": level.value,
            "at_risk": [s.value for s in at_risk],
            "management_plan": management_plan,
        }
        return self._on_case(
            ctx,
            case_id,
            "assess_risk",
            request,
            lambda case: case.assess_risk(ctx, level, at_risk, management_plan),
            scope=scope,
        )

    def record_contact_preference(
        self,
        ctx: CommandContext,
        case_id: UUID,
        preferred: tuple[ContactMode, ...],
        refused: tuple[ContactMode, ...] = (),
        note: str | None = None,
        *,
        scope: Callable[[Case], None] | None = None,
    ) -> Result:
        request = {
            "preferred": [m.value for m in preferred],
            "refused": [m.value for m in refused],
            "note": note,
        }
        return self._on_case(
            ctx,
            case_id,
            "record_contact_preference",
            request,
            lambda case: case.record_contact_preference(ctx, preferred, refused, note),
            scope=scope,
        )

    def assign_case_manager(
        self,
        ctx: CommandContext,
        case_id: UUID,
        case_manager_id: str,
        agency: AgencyRef,
        *,
        scope: Callable[[Case], None] | None = None,
    ) -> Result:
        request = {"case_manager_id": case_manager_id, "agency": agency.model_dump(mode="json")}
        return self._on_case(
            ctx,
            case_id,
            "assign_case_manager",
            request,
            lambda case: case.assign_case_manager(ctx, case_manager_id, agency),
            scope=scope,
        )

    def change_stage(
        self,
        ctx: CommandContext,
        case_id: UUID,
        to_stage: CaseStage,
        reason: str | None = None,
        *,
        scope: Callable[[Case], None] | None = None,
    ) -> Result:
        return self._on_case(
            ctx,
            case_id,
            "change_stage",
            {"to_stage": to_stage.value, "reason": reason},
            lambda case: case.change_stage(ctx, to_stage, reason),
            scope=scope,
        )

    def close_case(
        self,
        ctx: CommandContext,
        case_id: UUID,
        reason: ClosureReason,
        feedback: str | None = None,
        satisfaction: int | None = None,
        *,
        scope: Callable[[Case], None] | None = None,
    ) -> Result:
        request = {"reason": reason.value, "feedback": feedback, "satisfaction": satisfaction}
        return self._on_case(
            ctx,
            case_id,
            "close_case",
            request,
            lambda case: case.close(ctx, reason, feedback, satisfaction),
            scope=scope,
        )

    def reopen_case(
        self,
        ctx: CommandContext,
        case_id: UUID,
        reason: ReopeningReason,
        to_stage: CaseStage = CaseStage.CRISIS,
        note: str | None = None,
        *,
        scope: Callable[[Case], None] | None = None,
    ) -> Result:
        request = {"reason": reason.value, "to_stage": to_stage.value, "note": note}
        return self._on_case(
            ctx,
            case_id,
            "reopen_case",
            request,
            lambda case: case.reopen(ctx, reason, to_stage, note),
            scope=scope,
        )

    # -- case work: assessments, exploitation and identification, contacts and notes --------

    def _assess(
        self,
        ctx: CommandContext,
        case_id: UUID,
        command: str,
        content: ContractModel,
        change: Callable[[Case], None],
        scope: Callable[[Case], None] | None,
    ) -> Result:
        return self._on_case(
            ctx, case_id, command, content.model_dump(mode="json"), change, scope=scope
        )

    def record_medical_examination(
        self,
        ctx: CommandContext,
        case_id: UUID,
        exam: MedicalExamination,
        *,
        scope: Callable[[Case], None] | None = None,
    ) -> Result:
        return self._assess(
            ctx,
            case_id,
            "record_medical_examination",
            exam,
            lambda case: case.record_medical_examination(ctx, exam),
            scope,
        )

    def assess_psychosocial(
        self,
        ctx: CommandContext,
        case_id: UUID,
        assessment: PsychosocialAssessment,
        *,
        scope: Callable[[Case], None] | None = None,
    ) -> Result:
        return self._assess(
            ctx,
            case_id,
            "assess_psychosocial",
            assessment,
            lambda case: case.assess_psychosocial(ctx, assessment),
            scope,
        )

    def assess_family(
        self,
        ctx: CommandContext,
        case_id: UUID,
        situation: FamilySituation,
        *,
        scope: Callable[[Case], None] | None = None,
    ) -> Result:
        return self._assess(
            ctx,
            case_id,
            "assess_family",
            situation,
            lambda case: case.assess_family(ctx, situation),
            scope,
        )

    def assess_legal_needs(
        self,
        ctx: CommandContext,
        case_id: UUID,
        assessment: LegalNeedsAssessment,
        *,
        scope: Callable[[Case], None] | None = None,
    ) -> Result:
        return self._assess(
            ctx,
            case_id,
            "assess_legal_needs",
            assessment,
            lambda case: case.assess_legal_needs(ctx, assessment),
            scope,
        )

    def assess_livelihood(
        self,
        ctx: CommandContext,
        case_id: UUID,
        assessment: EducationLivelihood,
        *,
        scope: Callable[[Case], None] | None = None,
    ) -> Result:
        return self._assess(
            ctx,
            case_id,
            "assess_livelihood",
            assessment,
            lambda case: case.assess_livelihood(ctx, assessment),
            scope,
        )

    def record_exploitation(
        self,
        ctx: CommandContext,
        case_id: UUID,
        exploitation: Exploitation,
        *,
        scope: Callable[[Case], None] | None = None,
    ) -> Result:
        return self._assess(
            ctx,
            case_id,
            "record_exploitation",
            exploitation,
            lambda case: case.record_exploitation(ctx, exploitation),
            scope,
        )

    def record_identification(
        self,
        ctx: CommandContext,
        case_id: UUID,
        status: IdentificationStatus,
        authority: AgencyRef | None = None,
        decided_on: date | None = None,
        *,
        scope: Callable[[Case], None] | None = None,
    ) -> Result:
        request = {
            "status": status.value,
            "authority": authority.model_dump(mode="json") if authority else None,
            "decided_on": decided_on.isoformat() if decided_on else None,
        }
        return self._on_case(
            ctx,
            case_id,
            "record_identification",
            request,
            lambda case: case.record_identification(ctx, status, authority, decided_on),
            scope=scope,
        )

    def log_contact(
        self,
        ctx: CommandContext,
        case_id: UUID,
        *,
        mode: ContactMode,
        occurred_at: datetime,
        place: str | None = None,
        note: str | None = None,
        reason: str | None = None,
        scope: Callable[[Case], None] | None = None,
    ) -> Result:
        """Log a contact with the person; returns its contact_id."""

        request = {
            "mode": mode.value,
            "occurred_at": occurred_at.isoformat(),
            "place": place,
            "note": note,
            "reason": reason,
        }
        return self._on_case(
            ctx,
            case_id,
            "log_contact",
            request,
            lambda case: case.log_contact(
                ctx, mode=mode, occurred_at=occurred_at, place=place, note=note, reason=reason
            ),
            scope=scope,
            answer=lambda contact_id: {"contact_id": str(contact_id)},
        )

    def write_note(
        self,
        ctx: CommandContext,
        case_id: UUID,
        about: DataCategory,
        text: str,
        *,
        scope: Callable[[Case], None] | None = None,
    ) -> Result:
        """Write a case note; returns its note_id."""

        return self._on_case(
            ctx,
            case_id,
            "write_note",
            {"about": about.value, "text": text},
            lambda case: case.write_note(ctx, about, text),
            scope=scope,
            answer=lambda note_id: {"note_id": str(note_id)},
        )

    # -- the reintegration plan and measures --------------------------------------------------

    def revise_plan(
        self,
        ctx: CommandContext,
        case_id: UUID,
        goals: tuple[GoalDraft, ...],
        tasks: tuple[TaskDraft, ...],
        reason: str | None = None,
        *,
        scope: Callable[[Case], None] | None = None,
    ) -> Result:
        """Make the plan's next revision; returns its number as ``revision``."""

        request = {
            "goals": [[g.domain.value, g.goal] for g in goals],
            "tasks": [
                [
                    t.goal,
                    t.action,
                    t.responsible.model_dump(mode="json"),
                    t.due_on.isoformat(),
                    str(t.task_id) if t.task_id else None,
                    # Named only when given: earlier requests keep their digests.
                    *([t.service_type.value] if t.service_type else []),
                ]
                for t in tasks
            ],
            "reason": reason,
        }
        return self._on_case(
            ctx,
            case_id,
            "revise_plan",
            request,
            lambda case: case.revise_plan(ctx, goals, tasks, reason),
            scope=scope,
            answer=lambda revision: {"revision": revision},
        )

    def agree_plan(
        self,
        ctx: CommandContext,
        case_id: UUID,
        method: AgreementMethod,
        person_views: str | None = None,
        *,
        scope: Callable[[Case], None] | None = None,
    ) -> Result:
        return self._on_case(
            ctx,
            case_id,
            "agree_plan",
            {"method": method.value, "person_views": person_views},
            lambda case: case.agree_plan(ctx, method, person_views),
            scope=scope,
        )

    def progress_task(
        self,
        ctx: CommandContext,
        case_id: UUID,
        task_id: UUID,
        to_status: TaskStatus,
        note: str | None = None,
        *,
        scope: Callable[[Case], None] | None = None,
    ) -> Result:
        return self._on_case(
            ctx,
            case_id,
            "progress_task",
            {"task_id": str(task_id), "to_status": to_status.value, "note": note},
            lambda case: case.progress_task(ctx, task_id, to_status, note),
            scope=scope,
        )

    def measure(
        self,
        ctx: CommandContext,
        case_id: UUID,
        measured_at: datetime,
        economic: float,
        social: float,
        psychosocial: float,
        *,
        scope: Callable[[Case], None] | None = None,
    ) -> Result:
        request = {
            "measured_at": measured_at.isoformat(),
            "economic": economic,
            "social": social,
            "psychosocial": psychosocial,
        }
        return self._on_case(
            ctx,
            case_id,
            "measure",
            request,
            lambda case: case.measure(ctx, measured_at, economic, social, psychosocial),
            scope=scope,
        )

    def plan_exit(
        self,
        ctx: CommandContext,
        case_id: UUID,
        planned_exit_on: date,
        every_days: int,
        until: date,
        modes: tuple[ContactMode, ...],
        how_to_come_back: str,
        *,
        scope: Callable[[Case], None] | None = None,
    ) -> Result:
        request = {
            "planned_exit_on": planned_exit_on.isoformat(),
            "every_days": every_days,
            "until": until.isoformat(),
            "modes": [m.value for m in modes],
            "how_to_come_back": how_to_come_back,
        }
        return self._on_case(
            ctx,
            case_id,
            "plan_exit",
            request,
            lambda case: case.plan_exit(
                ctx, planned_exit_on, every_days, until, modes, how_to_come_back
            ),
            scope=scope,
        )

    def record_declined(
        self,
        ctx: CommandContext,
        case_id: UUID,
        service_type: ServiceType,
        choice: DeclineKind,
        how_to_come_back: str,
        referral_id: UUID | None = None,
        in_their_words: str | None = None,
        *,
        scope: Callable[[Case], None] | None = None,
    ) -> Result:
        request = {
            "service_type": service_type.value,
            "choice": choice.value,
            "how_to_come_back": how_to_come_back,
            "referral_id": str(referral_id) if referral_id else None,
            "in_their_words": in_their_words,
        }
        return self._on_case(
            ctx,
            case_id,
            "record_declined",
            request,
            lambda case: case.record_declined(
                ctx, service_type, choice, referral_id, in_their_words, how_to_come_back
            ),
            scope=scope,
        )

    def review_case(
        self,
        ctx: CommandContext,
        case_id: UUID,
        findings: str,
        decisions: tuple[ReviewDecision, ...],
        *,
        scope: Callable[[Case], None] | None = None,
    ) -> Result:
        """A supervisor's review, signed off; returns when the next one is due."""

        return self._on_case(
            ctx,
            case_id,
            "review_case",
            {"findings": findings, "decisions": [d.value for d in decisions]},
            lambda case: case.review(ctx, findings, decisions),
            scope=scope,
            answer=lambda next_review: {"next_review_on": next_review.isoformat()},
        )

    def hold_conference(
        self,
        ctx: CommandContext,
        case_id: UUID,
        held_on: date,
        attendees: tuple[Attendee, ...],
        decisions: tuple[str, ...],
        tasks: tuple[TaskDraft, ...] = (),
        *,
        scope: Callable[[Case], None] | None = None,
    ) -> Result:
        """Record a case conference; returns the ids of the tasks it added to the plan."""

        request = {
            "held_on": held_on.isoformat(),
            "attendees": [a.model_dump(mode="json") for a in attendees],
            "decisions": list(decisions),
            "tasks": [
                [
                    t.goal,
                    t.action,
                    t.responsible.model_dump(mode="json"),
                    t.due_on.isoformat(),
                    *([t.service_type.value] if t.service_type else []),
                ]
                for t in tasks
            ],
        }
        return self._on_case(
            ctx,
            case_id,
            "hold_conference",
            request,
            lambda case: case.hold_conference(ctx, held_on, attendees, decisions, tasks),
            scope=scope,
            answer=lambda added: {"tasks_added": [str(t) for t in added]},
        )
