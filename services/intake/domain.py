"""The Case: from reception to closure, and reopened as a new episode of the same record."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from uuid import UUID, uuid4

from contracts.access_policy import CaseTies
from contracts.consent_decision import local_date
from contracts.envelope import AgencyRef
from contracts.intake import (
    CaseClosed,
    CaseManagerAssigned,
    CaseReopened,
    ContactPreferenceRecorded,
    PartyPresent,
    PersonDetails,
    PersonDetailsCorrected,
    PersonRegistered,
    Place,
    RapidNeedsAssessed,
    ReceptionRecorded,
    RiskAssessed,
    StageChanged,
)
from contracts.vocabulary import (
    AgencyKind,
    ArrivalRoute,
    CaseStage,
    ClosureReason,
    ContactMode,
    ReopeningReason,
    RiskLevel,
    RiskSubject,
    UrgentNeed,
)
from services.intake.casework import CLOCK_TOLERANCE
from services.intake.forgetting import Forgetting
from services.runtime.aggregate import CommandContext, applies
from services.runtime.errors import InvalidRequestError, NotFoundError, RuleViolationError

ADULT_AGE = 18

# Stage changes a case manager may make; closing and reopening have their own commands.
STAGE_TRANSITIONS: dict[CaseStage, tuple[CaseStage, ...]] = {
    CaseStage.RECEPTION: (CaseStage.CRISIS, CaseStage.TRANSITIONAL),
    CaseStage.CRISIS: (CaseStage.TRANSITIONAL,),
    CaseStage.TRANSITIONAL: (CaseStage.EXTERNAL_SUPPORT, CaseStage.CRISIS),
    CaseStage.EXTERNAL_SUPPORT: (CaseStage.TRANSITIONAL, CaseStage.CRISIS),
    CaseStage.CLOSED: (),
}
REOPENING_STAGES = (CaseStage.CRISIS, CaseStage.TRANSITIONAL, CaseStage.EXTERNAL_SUPPORT)


class CaseNotFoundError(NotFoundError):
    def __init__(self, case_id: UUID) -> None:
        super().__init__(f"No case {case_id} that you may see.", case_id=str(case_id))


class CaseRuleError(RuleViolationError):
    """A command the case's rules forbid in its current state."""


def age_on(born: date, day: date) -> int:
    return day.year - born.year - ((day.month, day.day) < (born.month, born.day))


def is_minor(details: PersonDetails, on: date) -> bool:
    if details.date_of_birth is not None:
        return age_on(details.date_of_birth, on) < ADULT_AGE
    assert details.estimated_age is not None
    return details.estimated_age < ADULT_AGE


@dataclass(frozen=True)
class Episode:
    """One period during which the case was open."""

    number: int
    opened_at: datetime
    closed_at: datetime | None = None
    closure_reason: ClosureReason | None = None
    reopening_reason: ReopeningReason | None = None


class Case(Forgetting):
    """A person's case, owned by a case manager, in one province; its case work (assessments,
    exploitation, contacts) in ``services.intake.casework``."""

    def __init__(self, aggregate_id: UUID) -> None:
        super().__init__(aggregate_id)
        self.person_id: UUID = aggregate_id
        self.reception: ReceptionRecorded | None = None
        self.person: PersonDetails | None = None
        self.minor: bool | None = None
        self.needs: RapidNeedsAssessed | None = None
        self.risk: RiskAssessed | None = None
        self.contact: ContactPreferenceRecorded | None = None
        self.case_manager: CaseManagerAssigned | None = None
        self.stage = CaseStage.RECEPTION
        self.episodes: list[Episode] = []
        self.closure: CaseClosed | None = None

    @property
    def ties(self) -> CaseTies:
        """The agencies that hold this case: the receiving agency, the case manager's."""
        reception, manager = self.reception, self.case_manager
        return CaseTies.held_by(
            self.province,
            reception.receiving_agency.agency_id if reception else None,
            manager.agency.agency_id if manager else None,
        )

    # -- creation --------------------------------------------------------------------------

    @classmethod
    def record_reception(
        cls,
        ctx: CommandContext,
        *,
        route: ArrivalRoute,
        received_at: datetime,
        place: Place,
        receiving_agency: AgencyRef,
        handed_over_by: AgencyRef | None = None,
        returned_from_country: str | None = None,
        present: tuple[PartyPresent, ...] = (),
    ) -> Case:
        """A person was received. Raises InvalidRequestError naming the field at fault."""
        if received_at.tzinfo is None:
            raise InvalidRequestError("received_at", "Give received_at with its time zone.")
        if received_at > ctx.at + CLOCK_TOLERANCE:
            raise InvalidRequestError("received_at", "received_at is in the future.")
        if route is ArrivalRoute.BORDER_HANDOVER:
            if handed_over_by is None:
                raise InvalidRequestError(
                    "handed_over_by", "A border handover names the authority that handed over."
                )
            if handed_over_by.kind is not AgencyKind.FOREIGN_AUTHORITY:
                raise InvalidRequestError(
                    "handed_over_by.kind",
                    "At a border handover the person comes from a foreign_authority.",
                )
        case = cls(uuid4())
        case.trigger(
            ctx,
            ReceptionRecorded,
            person_id=uuid4(),
            route=route,
            received_at=received_at,
            place=place,
            receiving_agency=receiving_agency,
            handed_over_by=handed_over_by,
            returned_from_country=returned_from_country,
            present=present,
        )
        return case

    @applies(ReceptionRecorded)
    def _received(self, event: ReceptionRecorded) -> None:
        self.person_id = event.person_id
        self.reception = event
        self.episodes = [Episode(number=1, opened_at=event.received_at)]

    # -- the person ------------------------------------------------------------------------

    def register_person(self, ctx: CommandContext, details: PersonDetails) -> None:
        self.check_open("register the person")
        if self.person is not None:
            raise CaseRuleError(
                "The person is already registered; send a correction instead.",
                allowed=["correct_person_details"],
            )
        self.trigger(
            ctx,
            PersonRegistered,
            person_id=self.person_id,
            details=details,
            minor=self._judge_minor(details),
        )

    def correct_person_details(self, ctx: CommandContext, details: PersonDetails) -> None:
        if self.person is None:
            raise CaseRuleError(
                "No person is registered on this case yet; register the person first.",
                allowed=["register_person"],
            )
        if details == self.person:
            raise CaseRuleError("These details are already recorded; nothing to correct.")
        self.trigger(
            ctx,
            PersonDetailsCorrected,
            person_id=self.person_id,
            details=details,
            minor=self._judge_minor(details),
        )

    def _judge_minor(self, details: PersonDetails) -> bool:
        if details.date_of_birth is None and details.estimated_age is None:
            raise InvalidRequestError(
                "details.date_of_birth",
                "Give date_of_birth or estimated_age: minors follow child-protection rules.",
            )
        assert self.reception is not None
        received = local_date(self.reception.received_at)
        if details.date_of_birth is not None and details.date_of_birth > received:
            raise InvalidRequestError(
                "details.date_of_birth", "date_of_birth is after the reception date."
            )
        return is_minor(details, received)

    @applies(PersonRegistered)
    def _registered(self, event: PersonRegistered) -> None:
        self.person = event.details
        self.minor = event.minor

    @applies(PersonDetailsCorrected)
    def _corrected(self, event: PersonDetailsCorrected) -> None:
        self.person = event.details
        self.minor = event.minor

    # -- assessments and preferences ---------------------------------------------------------

    def assess_needs(
        self, ctx: CommandContext, needs: tuple[UrgentNeed, ...], notes: str | None
    ) -> None:
        self.check_open("record a needs assessment")
        self.trigger(ctx, RapidNeedsAssessed, person_id=self.person_id, needs=needs, notes=notes)

    @applies(RapidNeedsAssessed)
    def _needs_assessed(self, event: RapidNeedsAssessed) -> None:
        self.needs = event

    def assess_risk(
        self,
        ctx: CommandContext,
        level: RiskLevel,
        at_risk: tuple[RiskSubject, ...],
        management_plan: str,
    ) -> None:
        self.check_open("record a risk assessment")
        self.trigger(
            ctx,
            RiskAssessed,
            person_id=self.person_id,
            level=level,
            at_risk=at_risk,
            management_plan=management_plan,
        )

    @applies(RiskAssessed)
    def _risk_assessed(self, event: RiskAssessed) -> None:
        self.risk = event

    def record_contact_preference(
        self,
        ctx: CommandContext,
        preferred: tuple[ContactMode, ...],
        refused: tuple[ContactMode, ...],
        note: str | None,
    ) -> None:
        both = set(preferred) & set(refused)
        if both:
            names = ", ".join(sorted(m.value for m in both))
            raise InvalidRequestError(
                "refused", f"A mode cannot be both preferred and refused: {names}."
            )
        if not preferred:
            raise InvalidRequestError(
                "preferred", "Name at least one way the person agrees to be contacted."
            )
        self.trigger(
            ctx,
            ContactPreferenceRecorded,
            person_id=self.person_id,
            preferred=preferred,
            refused=refused,
            note=note,
        )

    @applies(ContactPreferenceRecorded)
    def _contact_recorded(self, event: ContactPreferenceRecorded) -> None:
        self.contact = event

    # -- ownership and stages ----------------------------------------------------------------

    def assign_case_manager(
        self, ctx: CommandContext, case_manager_id: str, agency: AgencyRef
    ) -> None:
        self.check_open("assign a case manager")
        current = self.case_manager
        if current is not None and (current.case_manager_id, current.agency) == (
            case_manager_id,
            agency,
        ):
            raise CaseRuleError("This case manager is already assigned to the case.")
        self.trigger(ctx, CaseManagerAssigned, case_manager_id=case_manager_id, agency=agency)

    def take_over_by_transfer(
        self, ctx: CommandContext, handover_id: UUID, case_manager_id: str, agency: AgencyRef
    ) -> bool:
        """A completed case transfer makes the case manager it names the owner: a fact of
        the referral log, recorded whatever the case's stage (a closed case has an owner
        too), and nothing when that manager already owns it. Returns whether it changed."""
        current = self.case_manager
        if current is not None and (current.case_manager_id, current.agency) == (
            case_manager_id,
            agency,
        ):
            return False
        self.trigger(
            ctx,
            CaseManagerAssigned,
            case_manager_id=case_manager_id,
            agency=agency,
            handover_id=handover_id,
        )
        return True

    @applies(CaseManagerAssigned)
    def _manager_assigned(self, event: CaseManagerAssigned) -> None:
        self.case_manager = event

    def change_stage(self, ctx: CommandContext, to_stage: CaseStage, reason: str | None) -> None:
        if to_stage is CaseStage.CLOSED:
            raise CaseRuleError(
                "Close a case with its closure, giving the reason.", allowed=["close"]
            )
        self.check_open("change its stage")
        allowed = STAGE_TRANSITIONS[self.stage]
        if to_stage not in allowed:
            raise CaseRuleError(
                f"A case in stage {self.stage.value} can move to: "
                + (", ".join(s.value for s in allowed) or "no other stage")
                + ", or be closed.",
                allowed=[s.value for s in allowed] + ["close"],
            )
        self.trigger(ctx, StageChanged, from_stage=self.stage, to_stage=to_stage, reason=reason)

    @applies(StageChanged)
    def _stage_changed(self, event: StageChanged) -> None:
        self.stage = event.to_stage

    def close(
        self,
        ctx: CommandContext,
        reason: ClosureReason,
        feedback: str | None,
        satisfaction: int | None,
    ) -> None:
        if self.stage is CaseStage.CLOSED:
            raise CaseRuleError(
                "The case is already closed; reopen it if support resumes.", allowed=["reopen"]
            )
        if reason is ClosureReason.SAFE_INDEPENDENCE and self.exit_plan is None:
            raise CaseRuleError(
                "An exit toward safe independence is planned first: its follow-up, and how "
                "the person can come back.",
                allowed=["exit_plan"],
            )
        self.trigger(
            ctx,
            CaseClosed,
            person_id=self.person_id,
            from_stage=self.stage,
            reason=reason,
            feedback=feedback,
            satisfaction=satisfaction,
        )

    @applies(CaseClosed)
    def _closed(self, event: CaseClosed) -> None:
        self.stage = CaseStage.CLOSED
        self.closure = event
        last = self.episodes[-1]
        self.episodes[-1] = Episode(
            number=last.number,
            opened_at=last.opened_at,
            closed_at=event.timestamp,
            closure_reason=event.reason,
            reopening_reason=last.reopening_reason,
        )

    def reopen(
        self, ctx: CommandContext, reason: ReopeningReason, to_stage: CaseStage, note: str | None
    ) -> None:
        if self.stage is not CaseStage.CLOSED:
            raise CaseRuleError(
                f"Only a closed case can be reopened; this one is in stage {self.stage.value}.",
                allowed=["change_stage", "close"],
            )
        if to_stage not in REOPENING_STAGES:
            raise InvalidRequestError(
                "to_stage",
                "Reopen into one of: " + ", ".join(s.value for s in REOPENING_STAGES) + ".",
            )
        self.trigger(
            ctx,
            CaseReopened,
            episode=len(self.episodes) + 1,
            reason=reason,
            to_stage=to_stage,
            note=note,
        )

    @applies(CaseReopened)
    def _reopened(self, event: CaseReopened) -> None:
        self.stage = event.to_stage
        self.closure = None
        self.exit_plan = None  # a new episode plans its own exit
        self.episodes.append(
            Episode(number=event.episode, opened_at=event.timestamp, reopening_reason=event.reason)
        )

    # -- rules -----------------------------------------------------------------------------

    def check_open(self, doing: str) -> None:
        self.check_not_erased()
        if self.stage is CaseStage.CLOSED:
            raise CaseRuleError(f"The case is closed; reopen it to {doing}.", allowed=["reopen"])

    @property
    def province(self) -> str:
        assert self.reception is not None
        return self.reception.place.province

    def summary(self) -> dict[str, Any]:
        """Ids and state only, no personal data: for command results and logs."""
        return {"case_id": str(self.id), "version": self.version, "stage": self.stage.value}
