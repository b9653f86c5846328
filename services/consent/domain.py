"""A case's consent record: grants, refusals and withdrawals, and who may give consent."""

from __future__ import annotations

from datetime import date, datetime
from uuid import UUID, uuid4

from contracts.access_policy import CaseTies
from contracts.consent import (
    CaseManagerNoted,
    CaseStageNoted,
    Collection,
    ConsentGiver,
    ConsentGranted,
    ConsentRecordOpened,
    ConsentRefused,
    ConsentRenewed,
    ConsentWithdrawn,
    GiverKind,
    Recipient,
    RefusalLifted,
    SubjectAgeNoted,
    consent_record_id,
)
from contracts.consent_decision import (
    ConsentDecision,
    ConsentState,
    decide,
    local_date,
    state_at,
)
from contracts.envelope import AgencyRef, Event
from contracts.vocabulary import CaseStage, DataCategory, Purpose
from services.runtime.aggregate import Aggregate, CommandContext, applies
from services.runtime.errors import InvalidRequestError, NotFoundError, RuleViolationError

ADULT_AGE = 18


class ConsentRecordNotFoundError(NotFoundError):
    def __init__(self, case_id: UUID) -> None:
        super().__init__(
            f"No consent record for case {case_id} that you may see. A case received a "
            "moment ago appears here within seconds; otherwise check the case id.",
            case_id=str(case_id),
        )


class GrantNotFoundError(NotFoundError):
    def __init__(self, grant_id: UUID) -> None:
        super().__init__(f"No grant {grant_id} on this case.", grant_id=str(grant_id))


class RefusalNotFoundError(NotFoundError):
    def __init__(self, refusal_id: UUID) -> None:
        super().__init__(f"No refusal {refusal_id} on this case.", refusal_id=str(refusal_id))


class ConsentRuleError(RuleViolationError):
    """A consent command the rules forbid in the record's current state."""


def add_years(day: date, years: int) -> date:
    """The same day ``years`` later (29 February becomes 1 March)."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return date(day.year + years, 3, 1)


def adult_on(born: date) -> date:
    """The day someone born on ``born`` turns 18."""
    return add_years(born, ADULT_AGE)


def estimated_adult_on(age: int, on: date) -> date | None:
    """When someone estimated to be ``age`` on ``on`` turns 18; None if already adult."""
    return add_years(on, ADULT_AGE - age) if age < ADULT_AGE else None


class ConsentRecord(Aggregate):
    """Everything the person decided about their data, in the order they decided it."""

    def __init__(self, aggregate_id: UUID) -> None:
        super().__init__(aggregate_id)
        self.case_id: UUID = aggregate_id
        self.person_id: UUID = aggregate_id
        self.province = ""
        self.received_at: datetime | None = None
        self.stage = CaseStage.RECEPTION
        self.minor: bool | None = None
        self.adult_on: date | None = None
        self.age_is_estimated = False
        self.receiving_agency_id: str | None = None
        self.case_manager_agency_id: str | None = None
        self.history: list[Event] = []
        self.grants: dict[UUID, ConsentGranted] = {}
        self.withdrawn: dict[UUID, ConsentWithdrawn] = {}
        self.renewals: dict[UUID, ConsentRenewed] = {}
        self.refusals: dict[UUID, ConsentRefused] = {}
        self.lifted: dict[UUID, RefusalLifted] = {}

    def apply(self, event: Event) -> None:
        super().apply(event)
        self.history.append(event)

    # -- facts from intake -----------------------------------------------------------------

    @classmethod
    def open(
        cls,
        ctx: CommandContext,
        *,
        case_id: UUID,
        person_id: UUID,
        province: str,
        received_at: datetime,
        receiving_agency_id: str,
    ) -> ConsentRecord:
        record = cls(consent_record_id(case_id))
        record.trigger(
            ctx,
            ConsentRecordOpened,
            case_id=case_id,
            person_id=person_id,
            province=province,
            received_at=received_at,
            receiving_agency_id=receiving_agency_id,
        )
        return record

    @applies(ConsentRecordOpened)
    def _opened(self, event: ConsentRecordOpened) -> None:
        self.case_id = event.case_id
        self.person_id = event.person_id
        self.province = event.province
        self.received_at = event.received_at
        self.receiving_agency_id = event.receiving_agency_id

    def note_case_manager(self, ctx: CommandContext, agency_id: str) -> None:
        if agency_id != self.case_manager_agency_id:
            self.trigger(ctx, CaseManagerNoted, agency_id=agency_id)

    @applies(CaseManagerNoted)
    def _case_manager_noted(self, event: CaseManagerNoted) -> None:
        self.case_manager_agency_id = event.agency_id

    @property
    def ties(self) -> CaseTies:
        """The agencies that hold the case, as this log knows them."""
        return CaseTies.held_by(
            self.province, self.receiving_agency_id, self.case_manager_agency_id
        )

    def note_age(
        self, ctx: CommandContext, *, minor: bool, adult_on: date | None, estimated: bool
    ) -> None:
        if (self.minor, self.adult_on, self.age_is_estimated) == (minor, adult_on, estimated):
            return
        self.trigger(
            ctx,
            SubjectAgeNoted,
            person_id=self.person_id,
            minor=minor,
            adult_on=adult_on,
            age_is_estimated=estimated,
        )

    @applies(SubjectAgeNoted)
    def _age_noted(self, event: SubjectAgeNoted) -> None:
        self.minor = event.minor
        self.adult_on = event.adult_on
        self.age_is_estimated = event.age_is_estimated

    def note_stage(self, ctx: CommandContext, stage: CaseStage) -> None:
        if stage is not self.stage:
            self.trigger(ctx, CaseStageNoted, stage=stage)

    @applies(CaseStageNoted)
    def _stage_noted(self, event: CaseStageNoted) -> None:
        self.stage = event.stage

    # -- the person's decisions ------------------------------------------------------------

    def is_minor_at(self, at: datetime) -> bool | None:
        if self.minor is None:
            return None
        if not self.minor:
            return False
        return self.adult_on is None or local_date(at) < self.adult_on

    def grant(
        self,
        ctx: CommandContext,
        *,
        categories: tuple[DataCategory, ...],
        recipients: tuple[Recipient, ...],
        purposes: tuple[Purpose, ...],
        valid_from: datetime,
        valid_until: datetime,
        collection: Collection,
        given_by: ConsentGiver,
        child_views: str | None,
    ) -> UUID:
        """Record a grant; returns its id. Raises InvalidRequestError or ConsentRuleError."""
        if valid_until <= valid_from:
            raise InvalidRequestError("valid_until", "The period ends before it starts.")
        if valid_until <= ctx.at:
            raise InvalidRequestError("valid_until", "The period has already ended.")
        self._check_giver(ctx.at, given_by, child_views)
        grant_id = uuid4()
        self.trigger(
            ctx,
            ConsentGranted,
            grant_id=grant_id,
            person_id=self.person_id,
            categories=categories,
            recipients=recipients,
            purposes=purposes,
            valid_from=valid_from,
            valid_until=valid_until,
            collection=collection,
            given_by=given_by,
            child_views=child_views,
        )
        return grant_id

    def _check_giver(self, at: datetime, given_by: ConsentGiver, child_views: str | None) -> None:
        minor = self.is_minor_at(at)
        if minor is None:
            raise ConsentRuleError(
                "The person's age is not known yet: register the person at intake first, "
                "because a minor's consent is given by a guardian."
            )
        if minor:
            if given_by.kind is GiverKind.PERSON:
                raise InvalidRequestError(
                    "given_by.kind",
                    "The person is a minor: consent is given by a guardian or the child "
                    "protection authority, with the child's own views recorded.",
                )
            if not (child_views and child_views.strip()):
                raise InvalidRequestError(
                    "child_views", "Record the child's own views beside the guardian's consent."
                )
        elif given_by.kind is not GiverKind.PERSON:
            raise InvalidRequestError(
                "given_by.kind", "The person is an adult: they give their own consent."
            )

    @applies(ConsentGranted)
    def _granted(self, event: ConsentGranted) -> None:
        self.grants[event.grant_id] = event

    def refuse(
        self,
        ctx: CommandContext,
        *,
        recipients: tuple[Recipient, ...],
        categories: tuple[DataCategory, ...],
        purposes: tuple[Purpose, ...],
        except_purposes: tuple[Purpose, ...],
        statement: str | None,
    ) -> UUID:
        """Record a refusal (always accepted: restricting sharing is always safe)."""
        overlap = set(purposes) & set(except_purposes)
        if overlap:
            raise InvalidRequestError(
                "except_purposes", "A purpose cannot be both refused and excepted."
            )
        refusal_id = uuid4()
        self.trigger(
            ctx,
            ConsentRefused,
            refusal_id=refusal_id,
            person_id=self.person_id,
            recipients=recipients,
            categories=categories,
            purposes=purposes,
            except_purposes=except_purposes,
            statement=statement,
        )
        return refusal_id

    @applies(ConsentRefused)
    def _refused(self, event: ConsentRefused) -> None:
        self.refusals[event.refusal_id] = event

    def withdraw(
        self, ctx: CommandContext, grant_id: UUID, heard_by: AgencyRef, reason: str | None
    ) -> None:
        """Withdraw a grant, effective at once."""
        if grant_id not in self.grants:
            raise GrantNotFoundError(grant_id)
        if grant_id in self.withdrawn:
            raise ConsentRuleError(
                f"This grant was already withdrawn at {self.withdrawn[grant_id].timestamp}."
            )
        self.trigger(
            ctx,
            ConsentWithdrawn,
            grant_id=grant_id,
            person_id=self.person_id,
            heard_by=heard_by,
            reason=reason,
        )

    @applies(ConsentWithdrawn)
    def _withdrawn(self, event: ConsentWithdrawn) -> None:
        self.withdrawn[event.grant_id] = event

    def renew(
        self, ctx: CommandContext, grant_id: UUID, valid_until: datetime, collection: Collection
    ) -> None:
        grant = self.grants.get(grant_id)
        if grant is None:
            raise GrantNotFoundError(grant_id)
        if grant_id in self.withdrawn:
            raise ConsentRuleError(
                "A withdrawn grant cannot be renewed; record a new grant.", allowed=["grant"]
            )
        if valid_until <= self.valid_until(grant_id):
            raise InvalidRequestError(
                "valid_until", "A renewal extends the period: give a later valid_until."
            )
        if grant.given_by.kind is not GiverKind.PERSON and self.is_minor_at(ctx.at) is False:
            raise ConsentRuleError(
                "The person is now an adult: record their own new grant instead.",
                allowed=["grant"],
            )
        self.trigger(
            ctx,
            ConsentRenewed,
            grant_id=grant_id,
            person_id=self.person_id,
            valid_until=valid_until,
            collection=collection,
        )

    @applies(ConsentRenewed)
    def _renewed(self, event: ConsentRenewed) -> None:
        self.renewals[event.grant_id] = event

    def lift_refusal(self, ctx: CommandContext, refusal_id: UUID, collection: Collection) -> None:
        if refusal_id not in self.refusals:
            raise RefusalNotFoundError(refusal_id)
        if refusal_id in self.lifted:
            raise ConsentRuleError("This refusal was already lifted.")
        self.trigger(
            ctx,
            RefusalLifted,
            refusal_id=refusal_id,
            person_id=self.person_id,
            collection=collection,
        )

    @applies(RefusalLifted)
    def _lifted(self, event: RefusalLifted) -> None:
        self.lifted[event.refusal_id] = event

    # -- reading ---------------------------------------------------------------------------

    def valid_until(self, grant_id: UUID) -> datetime:
        renewal = self.renewals.get(grant_id)
        return renewal.valid_until if renewal else self.grants[grant_id].valid_until

    def state(self, at: datetime) -> ConsentState:
        return state_at(self.history, at)

    def decide(
        self,
        recipient: AgencyRef,
        purpose: Purpose,
        categories: tuple[DataCategory, ...],
        at: datetime,
    ) -> ConsentDecision:
        return decide(
            self.history, recipient=recipient, purpose=purpose, categories=categories, at=at
        )
