"""The Handover: responsibility for a person moves from one agency to another, witnessed,
complete only when every party has confirmed."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID, uuid4

from contracts.referral import (
    HandoverCancelled,
    HandoverCompleted,
    HandoverConfirmed,
    HandoverKind,
    HandoverParty,
    HandoverStarted,
    PartyRole,
)
from services.referral.domain.case_file import CaseFile
from services.runtime.aggregate import Aggregate, CommandContext, applies
from services.runtime.errors import (
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    RuleViolationError,
)


class HandoverNotFoundError(NotFoundError):
    def __init__(self, handover_id: UUID) -> None:
        super().__init__(f"No handover {handover_id} visible to you.", handover_id=str(handover_id))


class HandoverRuleError(RuleViolationError):
    pass


class Handover(Aggregate):
    def __init__(self, aggregate_id: UUID) -> None:
        super().__init__(aggregate_id)
        self.started: HandoverStarted | None = None
        self.confirmed: dict[str, HandoverConfirmed] = {}
        self.completed: HandoverCompleted | None = None
        self.cancelled: HandoverCancelled | None = None

    @classmethod
    def start(
        cls,
        ctx: CommandContext,
        case_file: CaseFile,
        *,
        kind: HandoverKind,
        parties: tuple[HandoverParty, ...],
        to_case_manager_id: str | None = None,
    ) -> Handover:
        """Raises InvalidRequestError unless exactly one party hands over and one receives."""
        roles = [p.role for p in parties]
        if roles.count(PartyRole.FROM) != 1 or roles.count(PartyRole.TO) != 1:
            raise InvalidRequestError(
                "parties",
                "Name exactly one party that hands over (from) and one that receives (to).",
            )
        ids = [p.agency.agency_id for p in parties]
        if len(set(ids)) != len(ids):
            raise InvalidRequestError("parties", "Each agency takes part once.")
        if kind is HandoverKind.CASE_TRANSFER and not to_case_manager_id:
            raise InvalidRequestError(
                "to_case_manager_id", "A case transfer names the case manager who takes over."
            )
        handover = cls(uuid4())
        handover.trigger(
            ctx,
            HandoverStarted,
            case_id=case_file.case_id,
            province=case_file.province,
            kind=kind,
            parties=parties,
            to_case_manager_id=to_case_manager_id,
            person_id=case_file.person_id,
        )
        return handover

    @applies(HandoverStarted)
    def _started(self, event: HandoverStarted) -> None:
        self.started = event

    @property
    def spec(self) -> HandoverStarted:
        assert self.started is not None
        return self.started

    @property
    def person_id(self) -> UUID | None:
        """The person handed over: a cancellation's reason is encrypted under their key."""
        return self.started.person_id if self.started is not None else None

    @property
    def party_ids(self) -> list[str]:
        return [p.agency.agency_id for p in self.spec.parties]

    @property
    def waiting_for(self) -> list[str]:
        return [a for a in self.party_ids if a not in self.confirmed]

    @property
    def status(self) -> str:
        if self.cancelled:
            return "cancelled"
        return "completed" if self.completed else "open"

    def confirm_by(self, ctx: CommandContext, agency_id: str) -> None:
        """A party confirms; the last confirmation completes the handover."""
        if agency_id not in self.party_ids:
            raise PermissionDeniedError("Your agency is not a party to this handover.")
        if self.status != "open":
            raise HandoverRuleError(f"The handover is {self.status}.")
        if agency_id in self.confirmed:
            raise HandoverRuleError(
                "Your agency has already confirmed; waiting for: " + ", ".join(self.waiting_for)
            )
        waited = (ctx.at - self.spec.timestamp).total_seconds()
        self.trigger(ctx, HandoverConfirmed, agency_id=agency_id, waited_seconds=waited)
        if not self.waiting_for:
            self.trigger(
                ctx,
                HandoverCompleted,
                seconds_by_party={a: c.waited_seconds for a, c in self.confirmed.items()},
            )

    @applies(HandoverConfirmed)
    def _confirmed(self, event: HandoverConfirmed) -> None:
        self.confirmed[event.agency_id] = event

    @applies(HandoverCompleted)
    def _completed(self, event: HandoverCompleted) -> None:
        self.completed = event

    def cancel(self, ctx: CommandContext, reason: str) -> None:
        if self.status != "open":
            raise HandoverRuleError(f"The handover is {self.status}.")
        self.trigger(ctx, HandoverCancelled, reason=reason)

    @applies(HandoverCancelled)
    def _cancelled(self, event: HandoverCancelled) -> None:
        self.cancelled = event

    @property
    def completed_at(self) -> datetime | None:
        return self.completed.timestamp if self.completed else None
