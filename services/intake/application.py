"""The intake service: commands on cases, each saved in one transaction."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from contracts.envelope import AgencyRef
from contracts.intake import PartyPresent, PersonDetails, Place
from contracts.vocabulary import (
    ArrivalRoute,
    CaseStage,
    ClosureReason,
    ContactMode,
    ReopeningReason,
    RiskLevel,
    RiskSubject,
    UrgentNeed,
)
from services.intake.domain import Case, CaseNotFoundError
from services.runtime.aggregate import CommandContext
from services.runtime.application import Result, ServiceApplication


class IntakeService(ServiceApplication):
    """Receptions and cases. Every command returns ids, never personal data."""

    name = "intake"

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
        change: Callable[[Case], None],
        *,
        scope: Callable[[Case], None] | None = None,
    ) -> Result:
        def run() -> tuple[list[Any], Result]:
            case = self.get_case(case_id)
            if scope is not None:
                scope(case)
            change(case)
            return [case], case.summary()

        return self.execute(ctx, command, {"case_id": str(case_id), **request}, run)

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
