"""Forgetting a person: an erasure asked for by one person and approved by another, and the
proposal to erase a case closed for longer than the retention period.

The erasure itself (destroying the person's key) is the application's; the case records that
it was asked for and that it was done, and from then on refuses every change.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import ClassVar
from uuid import UUID, uuid4

from contracts.envelope import Actor
from contracts.erasure import ErasureProposed, ErasureReason, ErasureRequested, PersonErased
from contracts.intake import CaseClosed
from contracts.vocabulary import CaseStage
from services.intake.casework import CaseWork
from services.runtime.aggregate import CommandContext, applies
from services.runtime.errors import NotFoundError, RuleViolationError


class CaseErasedError(NotFoundError):
    """The person of this case was erased: nothing about them can be read or changed. A
    kind of not found (lists and pages leave the case out), answered 410 Gone."""

    status: ClassVar[int] = 410
    slug: ClassVar[str] = "erased"
    title: ClassVar[str] = "The person was erased"

    def __init__(self, case_id: UUID) -> None:
        super().__init__(
            f"The person of case {case_id} was erased at their request or at the end of the "
            "retention period; nothing about them can be read or recorded any more.",
            case_id=str(case_id),
        )


class ErasureRuleError(RuleViolationError):
    """An erasure step out of turn: nothing asked, already done, or the same person twice."""


class Forgetting(CaseWork):
    """The erasure part of a case. ``Case`` provides the person, the stage and the closure."""

    closure: CaseClosed | None

    def __init__(self, aggregate_id: UUID) -> None:
        super().__init__(aggregate_id)
        self.erasure_request: ErasureRequested | None = None
        self.erased: PersonErased | None = None
        self.erasure_proposed: ErasureProposed | None = None

    def check_not_erased(self) -> None:
        """Raises CaseErasedError once the person is erased."""
        if self.erased is not None:
            raise CaseErasedError(self.id)

    def request_erasure(self, ctx: CommandContext, reason: ErasureReason) -> UUID:
        """Ask for the person's erasure; returns the request's id. Raises ErasureRuleError
        when a request waits already."""
        self.check_not_erased()
        if self.erasure_request is not None:
            raise ErasureRuleError(
                "An erasure of this person was asked for already; it waits for a second "
                "person to approve it.",
                allowed=["approve_erasure"],
            )
        request_id = uuid4()
        self.trigger(ctx, ErasureRequested, request_id=request_id, reason=reason)
        return request_id

    @applies(ErasureRequested)
    def _erasure_requested(self, event: ErasureRequested) -> None:
        self.erasure_request = event

    def check_approval(self, approver: Actor) -> ErasureRequested:
        """The request a second person may approve now. Raises ErasureRuleError when none
        waits or the approver asked for it."""
        self.check_not_erased()
        request = self.erasure_request
        if request is None:
            raise ErasureRuleError(
                "No erasure of this person was asked for; ask for it first.",
                allowed=["request_erasure"],
            )
        if request.actor.user_id == approver.user_id:
            raise ErasureRuleError(
                "The erasure you asked for is approved by another person: a second person "
                "checks that it is what the person wants, or what the law requires."
            )
        return request

    def record_erased(self, ctx: CommandContext) -> None:
        """The person's key is destroyed: record it (after ``check_approval``)."""
        request = self.check_approval(ctx.actor)
        self.trigger(
            ctx,
            PersonErased,
            person_id=self.person_id,
            request_id=request.request_id,
            reason=request.reason,
            requested_by=request.actor,
        )

    @applies(PersonErased)
    def _erased(self, event: PersonErased) -> None:
        self.erased = event
        self.erasure_request = None

    def erasure_due(self, now: datetime, retention_days: int) -> datetime | None:
        """When the case's closure is older than the retention period and nobody was asked
        yet, the closure's time; else None."""
        closure = self.closure
        if self.erased is not None or self.stage is not CaseStage.CLOSED or closure is None:
            return None
        if self.erasure_proposed is not None and self.erasure_proposed.closed_at == (
            closure.timestamp
        ):
            return None
        if now - closure.timestamp < timedelta(days=retention_days):
            return None
        return closure.timestamp

    def propose_erasure(self, ctx: CommandContext, retention_days: int) -> bool:
        """Propose the erasure to the case's agency when it is due; False when it is not."""
        closed_at = self.erasure_due(ctx.at, retention_days)
        if closed_at is None:
            return False
        self.trigger(ctx, ErasureProposed, closed_at=closed_at, retention_days=retention_days)
        return True

    @applies(ErasureProposed)
    def _erasure_proposed(self, event: ErasureProposed) -> None:
        self.erasure_proposed = event
