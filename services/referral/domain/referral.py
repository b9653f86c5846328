"""The Referral: a closed loop from request to outcome, bound to the consent in force."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from contracts.consent_decision import ConsentDecision, Verdict
from contracts.deadlines import DueTimes
from contracts.envelope import AgencyRef
from contracts.plan import TaskStatus
from contracts.referral import (
    OVERRIDE_DEFAULT_HOURS,
    OVERRIDE_MAX_HOURS,
    TERMINAL_STATUSES,
    DeadlineKind,
    DeadlineMissed,
    DisclosureBasis,
    DisclosureRecorded,
    FamilyConsentGiver,
    FamilyMember,
    OverrideApproved,
    OverrideConclusion,
    OverrideLapsed,
    OverrideRequested,
    OverrideReviewed,
    ReferralAccepted,
    ReferralAcknowledged,
    ReferralBlocked,
    ReferralCancelled,
    ReferralCompleted,
    ReferralCreated,
    ReferralDeclinedByPerson,
    ReferralDispatched,
    ReferralFailed,
    ReferralProgressReported,
    ReferralPutOnHold,
    ReferralRejected,
    ReferralResumed,
    ReferralStarted,
    ReferralStatus,
    ReleasedField,
    ServiceDelivery,
    ServiceFeedbackRecorded,
    Urgency,
    WithdrawalNotedDuringOverride,
    WithheldCategory,
)
from contracts.vocabulary import DataCategory, DeclineKind, Purpose, ServiceType
from services.referral.domain.case_file import CaseFile
from services.referral.domain.overrides import Override, override_past_its_end
from services.referral.settings import Deadlines
from services.runtime.aggregate import Aggregate, CommandContext, applies
from services.runtime.errors import (
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    RuleViolationError,
)

S = ReferralStatus
ACTIVE = (S.REQUESTED, S.RECEIVED, S.ACCEPTED, S.IN_PROGRESS)

# What each answer or command may follow; the 409 names the steps allowed instead.
TRANSITIONS: dict[str, tuple[tuple[ReferralStatus, ...], ReferralStatus]] = {
    "acknowledge": ((S.REQUESTED,), S.RECEIVED),
    "accept": ((S.RECEIVED,), S.ACCEPTED),
    "reject": ((S.REQUESTED, S.RECEIVED), S.REJECTED),
    "start": ((S.ACCEPTED,), S.IN_PROGRESS),
    "complete": ((S.IN_PROGRESS,), S.COMPLETED),
    "fail": ((S.ACCEPTED, S.IN_PROGRESS), S.FAILED),
    "cancel": (
        (S.DRAFT, S.REQUESTED, S.RECEIVED, S.ACCEPTED, S.IN_PROGRESS, S.ON_HOLD),
        S.CANCELLED,
    ),
}
RECIPIENT_ANSWERS = ("acknowledge", "accept", "reject", "start", "complete", "fail")


def next_steps(status: ReferralStatus) -> list[str]:
    return [action for action, (sources, _) in TRANSITIONS.items() if status in sources]


class ReferralNotFoundError(NotFoundError):
    def __init__(self, referral_id: UUID) -> None:
        super().__init__(f"No referral {referral_id} visible to you.", referral_id=str(referral_id))


class ReferralRuleError(RuleViolationError):
    """A step the referral's state machine does not allow now."""


def check_plan_task(
    case_file: CaseFile, task_id: UUID, to_agency: AgencyRef, service_type: ServiceType
) -> None:
    """A plan task's referral goes to the agency responsible for the task, for the task's
    service (when it names one), while the task is open."""
    task = case_file.plan_tasks.get(task_id)
    if task is None:
        raise InvalidRequestError(
            "plan_task_id",
            "No such task in the case's current plan. A plan revised a moment ago appears "
            "here within seconds; otherwise check the task id.",
        )
    if task.status in (TaskStatus.DONE, TaskStatus.CANCELLED):
        raise ReferralRuleError(
            f"The task is {task.status.value}: revise the plan for a new task first.",
            current_status=task.status.value,
        )
    if to_agency.agency_id != task.agency_id:
        raise InvalidRequestError(
            "to_agency",
            f"A plan task's referral goes to the agency responsible for it: {task.agency_id}.",
        )
    if task.service_type is not None and service_type is not task.service_type:
        raise InvalidRequestError(
            "service_type", f"The task asks for the service {task.service_type.value}."
        )


def check_family_consent(member: FamilyMember) -> None:
    """A family member consents for themselves; a family member under 18 through their
    guardian. Either way they were told how to withdraw it."""
    consent = member.consent
    if member.minor and consent.given_by is not FamilyConsentGiver.GUARDIAN:
        raise InvalidRequestError(
            "family_member.consent.given_by",
            "A family member under 18 is referred with their guardian's consent (guardian).",
        )
    if not member.minor and consent.given_by is not FamilyConsentGiver.FAMILY_MEMBER:
        raise InvalidRequestError(
            "family_member.consent.given_by",
            "An adult family member consents for themselves (family_member).",
        )
    if not consent.collection.withdrawal_explained:
        raise InvalidRequestError(
            "family_member.consent.collection.withdrawal_explained",
            "Tell the family member how to withdraw their consent, and record that you did.",
        )


class Referral(Aggregate):
    def __init__(self, aggregate_id: UUID) -> None:
        super().__init__(aggregate_id)
        self.status = S.DRAFT
        self.created: ReferralCreated | None = None
        self.withheld: tuple[WithheldCategory, ...] = ()
        self.disclosure: DisclosureRecorded | None = None
        self.disclosures: list[DisclosureRecorded] = []
        self.due = DueTimes()
        self.dispatched_at: datetime | None = None
        self.acknowledged_at: datetime | None = None
        self.started_at: datetime | None = None
        self.held_at: datetime | None = None
        self.resume_to: ReferralStatus | None = None
        self.escalated: set[DeadlineKind] = set()
        self.overrides: dict[UUID, Override] = {}
        self.latest_override: UUID | None = None
        # What the consent withheld when the latest override was approved, and since: a
        # withdrawal is what newly appears here while the override is in force.
        self.withheld_under_override: set[tuple[DataCategory, Verdict]] = set()
        self.closing_reason: str | None = None
        self.history: list[tuple[datetime, str, ReferralStatus]] = []
        self.delivery: ServiceDelivery | None = None
        self.delivery_why: str | None = None
        self.progress_reports: list[ReferralProgressReported] = []
        self.feedback: list[ServiceFeedbackRecorded] = []
        self.declined_by: DeclineKind | None = None

    @property
    def person_id(self) -> UUID | None:
        """The person referred: their free text in its events is encrypted under their key."""
        return self.created.person_id if self.created is not None else None

    @property
    def acknowledge_by(self) -> datetime | None:
        """When acknowledgement is due (moved later by any hold for consent)."""
        return self.due.acknowledge_by

    @property
    def first_service_by(self) -> datetime | None:
        """When the first service is due (moved later by any hold for consent)."""
        return self.due.first_service_by

    # -- creation and dispatch -------------------------------------------------------------

    @classmethod
    def create(
        cls,
        ctx: CommandContext,
        case_file: CaseFile,
        *,
        from_agency: AgencyRef,
        to_agency: AgencyRef,
        service_type: ServiceType,
        urgency: Urgency,
        purpose: Purpose,
        categories: tuple[DataCategory, ...],
        note: str | None,
        deadlines: Deadlines,
        plan_task_id: UUID | None = None,
        family_member: FamilyMember | None = None,
    ) -> Referral:
        """A new referral, sent at once if the consent in force allows, else blocked.

        A referral naming a task of the case's plan goes to the agency responsible for the
        task, for the task's service, while the task is open. A referral of a family member
        carries their own consent; the person's data it asks for (``categories``, which may
        be none) waits for the person's consent like any referral's. Raises
        InvalidRequestError naming the field at fault, ReferralRuleError for a task done or
        cancelled."""
        if to_agency == from_agency:
            raise RuleViolationError("An agency does not refer a person to itself.")
        if plan_task_id is not None:
            check_plan_task(case_file, plan_task_id, to_agency, service_type)
        if family_member is not None:
            check_family_consent(family_member)
        elif not categories:
            raise InvalidRequestError(
                "categories", "Name the categories of the person's data the service needs."
            )
        referral = cls(uuid4())
        referral.trigger(
            ctx,
            ReferralCreated,
            case_id=case_file.case_id,
            person_id=case_file.person_id,
            province=case_file.province,
            from_agency=from_agency,
            to_agency=to_agency,
            service_type=service_type,
            urgency=urgency,
            purpose=purpose,
            categories=tuple(dict.fromkeys(categories)),
            note=note,
            plan_task_id=plan_task_id,
            family_member=family_member,
        )
        case_file.link(ctx, referral.id)
        referral.reconsider(ctx, case_file, deadlines)
        return referral

    @applies(ReferralCreated)
    def _created(self, event: ReferralCreated) -> None:
        self.created = event
        self._moved(event.timestamp, "created", S.DRAFT)

    @property
    def spec(self) -> ReferralCreated:
        assert self.created is not None
        return self.created

    def decision(self, case_file: CaseFile, at: datetime) -> ConsentDecision:
        spec = self.spec
        return case_file.decide(spec.to_agency, spec.purpose, spec.categories, at)

    def reconsider(self, ctx: CommandContext, case_file: CaseFile, deadlines: Deadlines) -> None:
        """Follow the consent in force now: send, block, hold or resume as it allows.

        While an emergency override is in force the referral stays as the override left
        it, and consent it loses meanwhile is noted for the override's approver. Once the
        override has ended (reviewed, or past the end it was asked for) the referral
        follows the consent again; an end not yet on record is recorded first."""
        if self.status in TERMINAL_STATUSES:
            return
        decision = self.decision(case_file, ctx.at)
        withheld = tuple(
            WithheldCategory(category=c.category, verdict=c.verdict, reason=c.reason)
            for c in decision.withheld
        )
        # Never judged as of an instant before what the referral already recorded (a
        # consent change read late must not undo an override approved after it).
        at = max(ctx.at, self.modified_on) if self.modified_on else ctx.at
        in_force = self.override_in_force_at(at)
        if in_force is not None:
            self._note_withdrawal(ctx, in_force, withheld)
            return
        self._record_lapse(ctx, at)
        if self.status is S.DRAFT:
            if withheld:
                if withheld != self.withheld:
                    self.trigger(ctx, ReferralBlocked, withheld=withheld)
                return
            self._disclose(ctx, case_file, decision, DisclosureBasis.CONSENT)
            self._dispatch(ctx, deadlines)
        elif self.status in ACTIVE:
            if withheld:
                self.trigger(ctx, ReferralPutOnHold, withheld=withheld, resume_to=self.status)
            elif self._disclosure_outdated(decision):
                self._disclose(ctx, case_file, decision, DisclosureBasis.CONSENT)
        elif self.status is S.ON_HOLD and not withheld:
            self._disclose(ctx, case_file, decision, DisclosureBasis.CONSENT)
            assert self.resume_to is not None
            self.trigger(ctx, ReferralResumed, to_status=self.resume_to)

    def _disclosure_outdated(self, decision: ConsentDecision) -> bool:
        """True when the data held by the recipient rests on other grants than the consent
        in force, or on an override that has ended (it now rests on consent)."""
        if self.disclosure is None:
            return False
        if self.disclosure.basis is not DisclosureBasis.CONSENT:
            return True
        released = {f.category: f.grant_id for f in self.disclosure.released}
        return any(
            c.category in released and released[c.category] != c.grant_id
            for c in decision.categories
        )

    def _disclose(
        self,
        ctx: CommandContext,
        case_file: CaseFile,
        decision: ConsentDecision | None,
        basis: DisclosureBasis,
        override_id: UUID | None = None,
    ) -> None:
        grants: dict[DataCategory, UUID | None] = (
            {c.category: c.grant_id for c in decision.categories if c.grant_id}
            if decision is not None
            else dict.fromkeys(self.spec.categories)
        )
        data: dict[str, dict[str, Any]] = {}
        released: list[ReleasedField] = []
        for category in self.spec.categories:
            facts = case_file.facts.get(category)
            if category not in grants or not facts:
                continue
            data[category.value] = dict(facts)
            released.extend(
                ReleasedField(category=category, field=name, grant_id=grants[category])
                for name in facts
            )
        self.trigger(
            ctx,
            DisclosureRecorded,
            disclosure_id=uuid4(),
            person_id=self.spec.person_id,
            recipient=self.spec.to_agency,
            purpose=self.spec.purpose,
            basis=basis,
            released=tuple(released),
            data=data,
            override_id=override_id,
            flagged_for_review=basis is DisclosureBasis.VITAL_INTEREST,
        )

    def _dispatch(self, ctx: CommandContext, deadlines: Deadlines) -> None:
        self.trigger(
            ctx,
            ReferralDispatched,
            acknowledge_by=ctx.at + deadlines.acknowledge,
            first_service_by=ctx.at + deadlines.first_service,
        )

    @applies(ReferralBlocked)
    def _blocked(self, event: ReferralBlocked) -> None:
        self.withheld = event.withheld

    @applies(DisclosureRecorded)
    def _disclosed(self, event: DisclosureRecorded) -> None:
        self.disclosure = event
        self.disclosures.append(event)

    @applies(ReferralDispatched)
    def _dispatched(self, event: ReferralDispatched) -> None:
        self.withheld = ()
        self.due = DueTimes(event.acknowledge_by, event.first_service_by)
        self.dispatched_at = event.timestamp
        self._moved(event.timestamp, "dispatched", S.REQUESTED)

    @applies(ReferralPutOnHold)
    def _held(self, event: ReferralPutOnHold) -> None:
        self.withheld = event.withheld
        self.resume_to = event.resume_to
        self.held_at = event.timestamp
        self._moved(event.timestamp, "put on hold", S.ON_HOLD)

    @applies(ReferralResumed)
    def _resumed(self, event: ReferralResumed) -> None:
        # Nobody could act while it waited for consent: its deadlines wait too.
        if self.held_at is not None and self.resume_to is not None:
            self.due = self.due.after_hold(
                self.resume_to, self.escalated, self.held_at, event.timestamp
            )
        self.withheld = ()
        self.resume_to = None
        self.held_at = None
        self._moved(event.timestamp, "resumed", event.to_status)

    # -- answers and commands --------------------------------------------------------------

    def check_step(self, action: str) -> None:
        sources, _ = TRANSITIONS[action]
        if self.status not in sources:
            allowed = next_steps(self.status)
            steps = ", ".join(allowed) or "none (the referral is closed)"
            raise ReferralRuleError(
                f"A referral that is {self.status.value} cannot be {action}ed now. "
                f"Allowed next steps: {steps}.",
                allowed=allowed,
                current_status=self.status.value,
            )

    def answer(
        self,
        ctx: CommandContext,
        action: str,
        text: str | None = None,
        delivery: ServiceDelivery | None = None,
        why: str | None = None,
    ) -> None:
        """A step of the closed loop (the recipient's answers, or the sender's cancel). A
        completion says how much of the service was delivered, and why when not all of it."""
        self.check_step(action)
        if action == "complete":
            delivery = delivery or ServiceDelivery.DELIVERED
            if delivery is not ServiceDelivery.DELIVERED and not (why and why.strip()):
                raise InvalidRequestError("why", "Say why the service was not delivered in full.")
            outcome = _required(text, "outcome")
            self.trigger(ctx, ReferralCompleted, outcome=outcome, delivery=delivery, why=why)
            return
        if action == "acknowledge":
            self.trigger(ctx, ReferralAcknowledged)
        elif action == "accept":
            self.trigger(ctx, ReferralAccepted, note=text)
        elif action == "reject":
            self.trigger(ctx, ReferralRejected, reason=_required(text, "reason"))
        elif action == "start":
            self.trigger(ctx, ReferralStarted)
        elif action == "fail":
            self.trigger(ctx, ReferralFailed, reason=_required(text, "reason"))
        elif action == "cancel":
            self.trigger(ctx, ReferralCancelled, reason=_required(text, "reason"))

    @applies(ReferralAcknowledged)
    def _acknowledged(self, event: ReferralAcknowledged) -> None:
        self.acknowledged_at = event.timestamp
        self._moved(event.timestamp, "acknowledged", S.RECEIVED)

    @applies(ReferralAccepted)
    def _accepted(self, event: ReferralAccepted) -> None:
        self._moved(event.timestamp, "accepted", S.ACCEPTED)

    @applies(ReferralRejected)
    def _rejected(self, event: ReferralRejected) -> None:
        self.closing_reason = event.reason
        self._moved(event.timestamp, "rejected", S.REJECTED)

    @applies(ReferralStarted)
    def _started(self, event: ReferralStarted) -> None:
        self.started_at = event.timestamp
        self._moved(event.timestamp, "started", S.IN_PROGRESS)

    @applies(ReferralCompleted)
    def _completed(self, event: ReferralCompleted) -> None:
        self.closing_reason = event.outcome
        self.delivery = event.delivery
        self.delivery_why = event.why
        self._moved(event.timestamp, "completed", S.COMPLETED)

    @applies(ReferralCancelled)
    def _cancelled(self, event: ReferralCancelled) -> None:
        self.closing_reason = event.reason
        self._moved(event.timestamp, "cancelled", S.CANCELLED)

    def declined_by_person(
        self, ctx: CommandContext, choice: DeclineKind, service_declined: UUID
    ) -> bool:
        """The person refused or dropped the service (recorded in intake): the referral
        ends as their choice, and the recipient is told. Nothing when it has already ended.
        Returns whether it changed."""
        if self.status in TERMINAL_STATUSES:
            return False
        self.trigger(
            ctx, ReferralDeclinedByPerson, choice=choice, service_declined=service_declined
        )
        return True

    @applies(ReferralDeclinedByPerson)
    def _declined_by_person(self, event: ReferralDeclinedByPerson) -> None:
        self.closing_reason = f"The person {event.choice.value} the service: their choice."
        self.declined_by = event.choice
        self._moved(event.timestamp, f"{event.choice.value} by the person", S.CANCELLED)

    @applies(ReferralFailed)
    def _failed(self, event: ReferralFailed) -> None:
        self.closing_reason = event.reason
        self._moved(event.timestamp, "failed", S.FAILED)

    def report_progress(self, ctx: CommandContext, note: str) -> None:
        """The recipient reports how the service goes, once accepted and until it ends."""
        if self.status not in (S.ACCEPTED, S.IN_PROGRESS):
            raise ReferralRuleError(
                f"Progress is reported on an accepted or started referral; this one is "
                f"{self.status.value}.",
                allowed=next_steps(self.status),
                current_status=self.status.value,
            )
        self.trigger(ctx, ReferralProgressReported, note=note)

    @applies(ReferralProgressReported)
    def _progress_reported(self, event: ReferralProgressReported) -> None:
        self.progress_reports.append(event)

    def record_feedback(self, ctx: CommandContext, satisfaction: int, comment: str | None) -> None:
        """The person's feedback on the service, once it started (or ended)."""
        if self.status not in (S.IN_PROGRESS, S.COMPLETED, S.FAILED):
            raise ReferralRuleError(
                "The person gives feedback on a service that started; this referral is "
                f"{self.status.value}.",
                allowed=next_steps(self.status),
                current_status=self.status.value,
            )
        self.trigger(ctx, ServiceFeedbackRecorded, satisfaction=satisfaction, comment=comment)

    @applies(ServiceFeedbackRecorded)
    def _feedback(self, event: ServiceFeedbackRecorded) -> None:
        self.feedback.append(event)

    def _moved(self, at: datetime, what: str, status: ReferralStatus) -> None:
        self.status = status
        self.history.append((at, what, status))

    # -- deadlines -------------------------------------------------------------------------

    def missed_deadlines(self, now: datetime) -> list[tuple[DeadlineKind, datetime]]:
        """The deadlines passed by ``now`` and not yet escalated (none while on hold)."""
        return self.due.missed(self.status, self.escalated, now)

    def escalate(self, ctx: CommandContext, now: datetime) -> list[DeadlineKind]:
        """Append one DeadlineMissed per deadline passed and not yet escalated."""
        kinds = []
        for kind, due in self.missed_deadlines(now):
            self.trigger(ctx, DeadlineMissed, deadline=kind, due_at=due, status=self.status)
            kinds.append(kind)
        return kinds

    @applies(DeadlineMissed)
    def _deadline_missed(self, event: DeadlineMissed) -> None:
        self.escalated.add(event.deadline)

    # -- emergency override ----------------------------------------------------------------

    def override_in_force_at(self, at: datetime) -> UUID | None:
        """The override in force at instant ``at``, if any: approved by then, neither
        reviewed by then nor past the end it was asked for. Pure: the same events and
        instant give the same answer."""
        for override_id, override in self.overrides.items():
            if override.in_force_at(at):
                return override_id
        return None

    @property
    def override_in_force(self) -> UUID | None:
        """The latest approved override not yet ended on record (by its review or a
        recorded lapse). An override past its end counts no more even before its lapse is
        recorded: decisions ask ``override_in_force_at``."""
        latest = self.overrides.get(self.latest_override) if self.latest_override else None
        if latest is None or latest.approval is None or latest.ended_on_record:
            return None
        return self.latest_override

    @property
    def withdrawals_noted(self) -> list[WithdrawalNotedDuringOverride]:
        """Consent lost while an override was in force, for the overrides' approvers."""
        return [w for o in self.overrides.values() for w in o.withdrawals_noted]

    def override_ended_by(self, at: datetime) -> UUID | None:
        """The approved override whose end passed by ``at`` without a review or a recorded
        lapse (the next deadline check records its lapse and reconsiders the referral)."""
        return override_past_its_end(self.overrides, self.latest_override, at)

    def request_override(
        self, ctx: CommandContext, reason: str, needed_for_hours: int = OVERRIDE_DEFAULT_HOURS
    ) -> UUID:
        """Ask for an emergency override, needed for ``needed_for_hours`` (1 to 72) from
        its approval. Raises ReferralRuleError unless the referral waits on consent, and
        InvalidRequestError for a duration out of bounds."""
        if self.status not in (S.DRAFT, S.ON_HOLD):
            raise ReferralRuleError(
                "An emergency override is for a referral waiting on consent "
                f"(draft or on-hold); this one is {self.status.value}.",
                allowed=next_steps(self.status),
            )
        if not 1 <= needed_for_hours <= OVERRIDE_MAX_HOURS:
            raise InvalidRequestError(
                "needed_for_hours",
                f"Say how long the override is needed: 1 to {OVERRIDE_MAX_HOURS} hours. "
                "Ask again for longer once it has been reviewed.",
            )
        override_id = uuid4()
        self.trigger(
            ctx,
            OverrideRequested,
            override_id=override_id,
            reason=reason,
            needed_for_hours=needed_for_hours,
        )
        return override_id

    @applies(OverrideRequested)
    def _override_requested(self, event: OverrideRequested) -> None:
        self.overrides[event.override_id] = Override(event)

    def approve_override(
        self, ctx: CommandContext, override_id: UUID, case_file: CaseFile, deadlines: Deadlines
    ) -> None:
        """A second approver, in another role, releases the data for the person's vital
        interest; the disclosure is flagged for review."""
        override = self.overrides.get(override_id)
        if override is None:
            raise NotFoundError(f"No override request {override_id} on this referral.")
        request = override.request
        if override.approval is not None:
            raise ReferralRuleError("This override was approved already.")
        if self.override_in_force_at(ctx.at) is not None:
            raise ReferralRuleError("An override is already in force on this referral.")
        if self.status not in (S.DRAFT, S.ON_HOLD):
            raise ReferralRuleError(
                f"The referral is {self.status.value}: it no longer waits on consent.",
                allowed=next_steps(self.status),
            )
        if ctx.actor.user_id == request.actor.user_id or ctx.actor.role is request.actor.role:
            raise PermissionDeniedError(
                "An override needs a second approver: another person, in another role, than "
                f"the one who asked ({request.actor.role.value})."
            )
        self.trigger(ctx, OverrideApproved, override_id=override_id)
        self._disclose(ctx, case_file, None, DisclosureBasis.VITAL_INTEREST, override_id)
        if self.status is S.DRAFT:
            self._dispatch(ctx, deadlines)
        else:
            assert self.resume_to is not None
            self.trigger(ctx, ReferralResumed, to_status=self.resume_to)

    @applies(OverrideApproved)
    def _override_approved(self, event: OverrideApproved) -> None:
        override = self.overrides.get(event.override_id)
        if override is not None:  # a log always holds the request first
            override.approval = event
            self.latest_override = event.override_id
            self.withheld_under_override = {(w.category, w.verdict) for w in self.withheld}

    def review_override(
        self,
        ctx: CommandContext,
        override_id: UUID,
        conclusion: OverrideConclusion,
        note: str,
        case_file: CaseFile,
        deadlines: Deadlines,
    ) -> None:
        """Record the review of an approved override by someone in a third role (neither
        the requester's nor the approver's); from then on the override no longer counts and
        the referral follows the consent in force. Raises NotFoundError for an override not
        approved, ReferralRuleError when it was reviewed already, PermissionDeniedError for
        the requester, the approver or someone in either's role."""
        override = self.overrides.get(override_id)
        if override is None or override.approval is None:
            raise NotFoundError(f"No approved override {override_id} on this referral.")
        if override.review is not None:
            raise ReferralRuleError("This override was reviewed already.")
        involved = (override.request.actor, override.approval.actor)
        if any(ctx.actor.user_id == a.user_id or ctx.actor.role is a.role for a in involved):
            roles = " and ".join(sorted({a.role.value for a in involved}))
            raise PermissionDeniedError(
                "An override is reviewed by someone in another role than the one who asked "
                f"for it and the one who approved it ({roles})."
            )
        if len(note.strip()) < 10:
            raise InvalidRequestError("note", "Say what the review found (10 characters or more).")
        self.trigger(
            ctx, OverrideReviewed, override_id=override_id, conclusion=conclusion, note=note
        )
        self.reconsider(ctx, case_file, deadlines)

    @applies(OverrideReviewed)
    def _override_reviewed(self, event: OverrideReviewed) -> None:
        if event.override_id in self.overrides:
            self.overrides[event.override_id].review = event

    def _record_lapse(self, ctx: CommandContext, at: datetime) -> None:
        override_id = self.override_ended_by(at)
        if override_id is not None:
            ended_at = self.overrides[override_id].ends_at
            self.trigger(ctx, OverrideLapsed, override_id=override_id, ended_at=ended_at)

    @applies(OverrideLapsed)
    def _override_lapsed(self, event: OverrideLapsed) -> None:
        if event.override_id in self.overrides:
            self.overrides[event.override_id].lapse = event

    def _note_withdrawal(
        self, ctx: CommandContext, override_id: UUID, withheld: tuple[WithheldCategory, ...]
    ) -> None:
        """Tell the approver of the override in force of consent newly withheld."""
        if {(w.category, w.verdict) for w in withheld} <= self.withheld_under_override:
            return
        approval = self.overrides[override_id].approval
        assert approval is not None
        self.trigger(
            ctx,
            WithdrawalNotedDuringOverride,
            override_id=override_id,
            approved_by=approval.actor,
            withheld=withheld,
        )

    @applies(WithdrawalNotedDuringOverride)
    def _withdrawal_noted(self, event: WithdrawalNotedDuringOverride) -> None:
        if event.override_id in self.overrides:
            self.overrides[event.override_id].withdrawals_noted.append(event)
        self.withheld_under_override |= {(w.category, w.verdict) for w in event.withheld}


def _required(text: str | None, name: str) -> str:
    if not text or not text.strip():
        raise InvalidRequestError(name, f"Give the {name}.")
    return text
