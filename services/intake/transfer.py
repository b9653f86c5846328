"""Ownership that moves with a completed case transfer.

A case transfer is a handover of the referral log (kind ``case_transfer``): the agency
handing over, the one taking over with the case manager it names, and witnesses. Intake
follows that log. When the transfer starts, intake notes it (``CaseTransferAwaited``, keyed
by the handover, which is all a completion names); when every party has confirmed it, the
named case manager owns the case (``CaseManagerAssigned`` naming the handover). The consent
and referral services learn the new case manager from intake, as of any assignment.
"""

from __future__ import annotations

from uuid import UUID

from contracts.envelope import AgencyRef
from contracts.intake import CaseTransferAwaited, transfer_id
from services.runtime.aggregate import Aggregate, CommandContext, applies


class Transfer(Aggregate):
    """Intake's note of a case transfer under way: which case, to whom."""

    def __init__(self, aggregate_id: UUID) -> None:
        super().__init__(aggregate_id)
        self.awaited: CaseTransferAwaited | None = None

    @classmethod
    def await_completion(
        cls,
        ctx: CommandContext,
        *,
        handover_id: UUID,
        case_id: UUID,
        to_agency: AgencyRef,
        to_case_manager_id: str,
    ) -> Transfer:
        transfer = cls(transfer_id(handover_id))
        transfer.trigger(
            ctx,
            CaseTransferAwaited,
            case_id=case_id,
            handover_id=handover_id,
            to_agency=to_agency,
            to_case_manager_id=to_case_manager_id,
        )
        return transfer

    @applies(CaseTransferAwaited)
    def _awaited(self, event: CaseTransferAwaited) -> None:
        self.awaited = event

    @property
    def spec(self) -> CaseTransferAwaited:
        assert self.awaited is not None
        return self.awaited
