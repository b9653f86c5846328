"""HTTP routes of the intake service: thin, JSON in, a command out, domain errors mapped once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Request, status
from pydantic import BaseModel, ConfigDict, Field

from contracts.access_policy import Action, Sight, sight
from contracts.casework import (
    EducationLivelihood,
    Exploitation,
    FamilySituation,
    LegalNeedsAssessment,
    MedicalExamination,
    PsychosocialAssessment,
)
from contracts.envelope import AGENCY_ID_PATTERN, AgencyRef
from contracts.intake import PartyPresent, PersonDetails, Place
from contracts.vocabulary import (
    ArrivalRoute,
    CaseStage,
    ClosureReason,
    ContactMode,
    ContactModes,
    DataCategory,
    DeclineKind,
    IdentificationStatus,
    ReopeningReason,
    ReviewDecision,
    RiskLevel,
    RiskSubjects,
    ServiceType,
    UrgentNeed,
    UrgentNeeds,
)
from services.intake.application import IntakeService
from services.intake.domain import Case, CaseNotFoundError, Episode
from services.runtime.access import check, record_read, roles_for
from services.runtime.agencies import Agencies
from services.runtime.auth import CurrentPrincipal, Principal
from services.runtime.errors import PermissionDeniedError
from services.runtime.http import IdempotencyKey, command_context

RECORDERS = roles_for(Action.RECORD_FACTS)
OWNERS = roles_for(Action.MANAGE_CASE)
ASSIGNERS = roles_for(Action.ASSIGN_CASE_MANAGER)


async def intake_service(request: Request) -> IntakeService:
    service: IntakeService = request.app.state.intake
    return service


Intake = Annotated[IntakeService, Depends(intake_service)]
router = APIRouter(prefix="/intake", tags=["intake"])


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Agencies are named by id only: their kinds come from the agency directory.
AgencyId = Annotated[str, Field(min_length=1, max_length=120, pattern=AGENCY_ID_PATTERN)]


class PresentCreate(Body):
    agency: AgencyId
    capacity: str = Field(min_length=1, max_length=120)


class ReceptionCreate(Body):
    route: ArrivalRoute
    received_at: datetime
    place: Place
    receiving_agency: AgencyId | None = Field(
        default=None, description="your own agency (the default): nobody records for another"
    )
    handed_over_by: AgencyId | None = None
    returned_from_country: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")
    present: tuple[PresentCreate, ...] = Field(default=(), max_length=30)


class NeedsAssessmentCreate(Body):
    needs: UrgentNeeds = Field(min_length=1)
    notes: str | None = Field(default=None, max_length=2000)


class RiskAssessmentCreate(Body):
    level: RiskLevel
    at_risk: RiskSubjects = Field(min_length=1)
    management_plan: str = Field(min_length=1, max_length=4000)


class ContactPreferenceUpdate(Body):
    preferred: ContactModes = Field(min_length=1)
    refused: ContactModes = ()
    note: str | None = Field(default=None, max_length=1000)


class CaseManagerUpdate(Body):
    case_manager_id: str = Field(min_length=1, max_length=120)
    agency: AgencyId


class StageChange(Body):
    to_stage: CaseStage
    reason: str | None = Field(default=None, max_length=1000)


class ClosureCreate(Body):
    reason: ClosureReason
    feedback: str | None = Field(default=None, max_length=4000)
    satisfaction: int | None = Field(default=None, ge=1, le=5)


class ReopeningCreate(Body):
    reason: ReopeningReason
    to_stage: CaseStage = CaseStage.CRISIS
    note: str | None = Field(default=None, max_length=1000)


class CommandResult(BaseModel):
    case_id: UUID
    version: int
    stage: CaseStage
    person_id: UUID | None = None


class EpisodePublic(BaseModel):
    number: int
    opened_at: datetime
    closed_at: datetime | None
    closure_reason: ClosureReason | None
    reopening_reason: ReopeningReason | None


class IdentificationPublic(BaseModel):
    status: IdentificationStatus
    authority: AgencyRef | None
    decided_on: date | None


class ContactPublic(BaseModel):
    contact_id: UUID
    mode: ContactMode
    occurred_at: datetime
    by_user: str
    by_agency: str
    place: str | None
    note: str | None
    against_preference: bool
    reason: str | None


class NotePublic(BaseModel):
    note_id: UUID
    about: DataCategory
    written_at: datetime
    by_user: str
    by_agency: str
    text: str


class DeclinedPublic(BaseModel):
    service_type: ServiceType
    choice: DeclineKind
    at: datetime
    referral_id: UUID | None
    in_their_words: str | None
    how_to_come_back: str


class ReviewPublic(BaseModel):
    at: datetime
    by_user: str
    stage: CaseStage
    findings: str
    decisions: tuple[ReviewDecision, ...]
    next_review_on: date


class CasePublic(BaseModel):
    case_id: UUID
    version: int
    person_id: UUID
    province: str
    stage: CaseStage
    route: ArrivalRoute
    received_at: datetime
    place: Place | None
    receiving_agency: AgencyRef
    handed_over_by: AgencyRef | None
    present: tuple[PartyPresent, ...]
    person: PersonDetails | None
    minor: bool | None
    urgent_needs: tuple[UrgentNeed, ...] | None
    risk_level: RiskLevel | None
    risk_management_plan: str | None
    contact_preferred: tuple[ContactMode, ...] | None
    contact_refused: tuple[ContactMode, ...] | None
    case_manager_id: str | None
    case_manager_agency: AgencyRef | None
    medical_examination: MedicalExamination | None = None
    psychosocial: PsychosocialAssessment | None = None
    family: FamilySituation | None = None
    legal_needs: LegalNeedsAssessment | None = None
    education_livelihood: EducationLivelihood | None = None
    exploitation: Exploitation | None = None
    identification: IdentificationPublic | None = None
    contacts: list[ContactPublic] | None = None
    declined_services: list[DeclinedPublic] | None = None
    reviews: list[ReviewPublic] | None = None
    notes: list[NotePublic] = Field(
        default=[], description="the notes whose category this response shows"
    )
    episodes: list[EpisodePublic]
    created_at: datetime
    updated_at: datetime
    shown: list[DataCategory] = Field(
        description="the categories of the person's data this response shows you; the "
        "others are left out (null): you see a case's progress, not the person's details, "
        "unless your agency holds the case"
    )

    @classmethod
    def of(cls, case: Case, seen: Sight) -> CasePublic:
        """The case as ``seen`` allows: fields of categories not shown are null."""
        reception = case.reception
        assert reception is not None
        assert case.created_on
        assert case.modified_on
        shows = seen.categories.__contains__
        identity, needs, risk, contact, legal = (
            shows(DataCategory.IDENTITY),
            shows(DataCategory.NEEDS),
            shows(DataCategory.RISK),
            shows(DataCategory.CONTACT),
            shows(DataCategory.LEGAL_CASE),
        )
        identification = case.identification
        return cls(
            case_id=case.id,
            version=case.version,
            person_id=case.person_id,
            province=case.province,
            stage=case.stage,
            route=reception.route,
            received_at=reception.received_at,
            place=reception.place if shows(DataCategory.LOCATION) else None,
            receiving_agency=reception.receiving_agency,
            handed_over_by=reception.handed_over_by,
            present=reception.present,
            person=case.person if identity else None,
            minor=case.minor if identity else None,
            urgent_needs=case.needs.needs if case.needs and needs else None,
            risk_level=case.risk.level if case.risk and risk else None,
            risk_management_plan=case.risk.management_plan if case.risk and risk else None,
            contact_preferred=case.contact.preferred if case.contact and contact else None,
            contact_refused=case.contact.refused if case.contact and contact else None,
            case_manager_id=case.case_manager.case_manager_id if case.case_manager else None,
            case_manager_agency=case.case_manager.agency if case.case_manager else None,
            medical_examination=case.medical if shows(DataCategory.HEALTH) else None,
            psychosocial=case.psychosocial if shows(DataCategory.PSYCHOSOCIAL) else None,
            family=case.family if shows(DataCategory.FAMILY) else None,
            legal_needs=case.legal_needs if legal else None,
            education_livelihood=case.livelihood if needs else None,
            exploitation=case.exploitation if legal else None,
            identification=IdentificationPublic(
                status=identification.status,
                authority=identification.authority,
                decided_on=identification.decided_on,
            )
            if identification and legal
            else None,
            contacts=[
                ContactPublic(
                    contact_id=c.contact_id,
                    mode=c.mode,
                    occurred_at=c.occurred_at,
                    by_user=c.actor.user_id,
                    by_agency=c.actor.agency_id,
                    place=c.place,
                    note=c.note,
                    against_preference=c.against_preference,
                    reason=c.reason,
                )
                for c in case.contacts
            ]
            if contact
            else None,
            declined_services=[
                DeclinedPublic(
                    service_type=d.service_type,
                    choice=d.choice,
                    at=d.timestamp,
                    referral_id=d.referral_id,
                    in_their_words=d.in_their_words,
                    how_to_come_back=d.how_to_come_back,
                )
                for d in case.declined
            ]
            if needs
            else None,
            reviews=[
                ReviewPublic(
                    at=r.timestamp,
                    by_user=r.actor.user_id,
                    stage=r.stage,
                    findings=r.findings,
                    decisions=r.decisions,
                    next_review_on=r.next_review_on,
                )
                for r in case.reviews
            ]
            if needs
            else None,
            notes=[
                NotePublic(
                    note_id=n.note_id,
                    about=n.about,
                    written_at=n.timestamp,
                    by_user=n.actor.user_id,
                    by_agency=n.actor.agency_id,
                    text=n.text,
                )
                for n in case.notes
                if shows(n.about)
            ],
            episodes=[_episode(e) for e in case.episodes],
            created_at=case.created_on,
            updated_at=case.modified_on,
            shown=sorted(seen.categories),
        )


def _episode(episode: Episode) -> EpisodePublic:
    return EpisodePublic(
        number=episode.number,
        opened_at=episode.opened_at,
        closed_at=episode.closed_at,
        closure_reason=episode.closure_reason,
        reopening_reason=episode.reopening_reason,
    )


def allowed(principal: Principal, action: Action) -> Callable[[Case], None]:
    """The access policy's check for ``action`` on a case: a case this principal has no tie
    to does not exist for them (404); one they may see but not change answers 403."""

    def check_case(case: Case) -> None:
        check(principal, case.ties, action, lambda: CaseNotFoundError(case.id))
        case.check_not_erased()  # to those who may see it: erased (410), not missing

    return check_case


class BreakGlass(Body):
    reason: str = Field(min_length=10, max_length=1000)


@router.post(
    "/cases",
    status_code=status.HTTP_201_CREATED,
    response_model=CommandResult,
    summary="Record a reception",
)
def record_reception(
    body: ReceptionCreate,
    intake: Intake,
    principal: CurrentPrincipal,
    agencies: Agencies,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, object]:
    """A person was received (tiếp nhận) by your agency: opens their case in the province of
    the reception."""
    ctx = command_context(request, principal, roles_for(Action.RECORD_RECEPTION), idempotency_key)
    if not principal.covers_province(body.place.province):
        raise PermissionDeniedError("You can record receptions only in your own province.")
    if body.receiving_agency not in (None, principal.agency_id):
        raise PermissionDeniedError("You can record only receptions by your own agency.")
    return intake.record_reception(
        ctx,
        route=body.route,
        received_at=body.received_at,
        place=body.place,
        receiving_agency=agencies.resolve(principal.agency_id, "receiving_agency"),
        handed_over_by=agencies.resolve(body.handed_over_by, "handed_over_by")
        if body.handed_over_by
        else None,
        returned_from_country=body.returned_from_country,
        present=tuple(
            PartyPresent(
                agency=agencies.resolve(p.agency, f"present.{i}.agency"),
                capacity=p.capacity,
            )
            for i, p in enumerate(body.present)
        ),
    )


@router.get("/cases/{case_id}", response_model=CasePublic, summary="Read a case")
def read_case(
    case_id: UUID, intake: Intake, principal: CurrentPrincipal, request: Request
) -> CasePublic:
    """The agencies holding the case read it whole; coordinators and auditors see its
    progress only. Every read of the person's data is recorded."""
    case = intake.get_case(case_id)
    allowed(principal, Action.SEE_PROGRESS)(case)
    seen = sight(principal.asker, case.ties)
    record_read(
        request, principal, seen, case_id=case.id, what="intake.case", person_id=case.person_id
    )
    return CasePublic.of(case, seen)


@router.post(
    "/cases/{case_id}/break-glass",
    response_model=CasePublic,
    summary="Emergency read of a case's details, with a reason (recorded, reviewed)",
)
def break_glass(
    case_id: UUID,
    body: BreakGlass,
    intake: Intake,
    principal: CurrentPrincipal,
    request: Request,
) -> CasePublic:
    """For an emergency when the agency holding the case cannot be reached: the whole record,
    to intake officers, case managers and coordinators tied to the case. The read and its
    reason are recorded and flagged for review."""
    case = intake.get_case(case_id)
    allowed(principal, Action.BREAK_GLASS)(case)
    seen = sight(principal.asker, case.ties, break_glass_reason=body.reason)
    record_read(
        request,
        principal,
        seen,
        case_id=case.id,
        what="intake.case.break_glass",
        person_id=case.person_id,
        reason=body.reason,
    )
    return CasePublic.of(case, seen)


@router.post(
    "/cases/{case_id}/person",
    status_code=201,
    response_model=CommandResult,
    summary="Register the person",
)
def register_person(
    case_id: UUID,
    body: PersonDetails,
    intake: Intake,
    principal: CurrentPrincipal,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, object]:
    ctx = command_context(request, principal, RECORDERS, idempotency_key)
    return intake.register_person(ctx, case_id, body, scope=allowed(principal, Action.RECORD_FACTS))


@router.put(
    "/cases/{case_id}/person", response_model=CommandResult, summary="Correct the person's details"
)
def correct_person_details(
    case_id: UUID,
    body: PersonDetails,
    intake: Intake,
    principal: CurrentPrincipal,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, object]:
    ctx = command_context(request, principal, RECORDERS, idempotency_key)
    scope = allowed(principal, Action.RECORD_FACTS)
    return intake.correct_person_details(ctx, case_id, body, scope=scope)


@router.post(
    "/cases/{case_id}/needs-assessments",
    status_code=201,
    response_model=CommandResult,
    summary="Record a rapid needs assessment",
)
def assess_needs(
    case_id: UUID,
    body: NeedsAssessmentCreate,
    intake: Intake,
    principal: CurrentPrincipal,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, object]:
    ctx = command_context(request, principal, RECORDERS, idempotency_key)
    return intake.assess_needs(
        ctx, case_id, body.needs, body.notes, scope=allowed(principal, Action.RECORD_FACTS)
    )


@router.post(
    "/cases/{case_id}/risk-assessments",
    status_code=201,
    response_model=CommandResult,
    summary="Record a risk assessment",
)
def assess_risk(
    case_id: UUID,
    body: RiskAssessmentCreate,
    intake: Intake,
    principal: CurrentPrincipal,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, object]:
    ctx = command_context(request, principal, RECORDERS, idempotency_key)
    return intake.assess_risk(
        ctx,
        case_id,
        body.level,
        body.at_risk,
        body.management_plan,
        scope=allowed(principal, Action.RECORD_FACTS),
    )


@router.put(
    "/cases/{case_id}/contact-preference",
    response_model=CommandResult,
    summary="Record how the person wants to be contacted",
)
def record_contact_preference(
    case_id: UUID,
    body: ContactPreferenceUpdate,
    intake: Intake,
    principal: CurrentPrincipal,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, object]:
    ctx = command_context(request, principal, RECORDERS, idempotency_key)
    scope = allowed(principal, Action.RECORD_FACTS)
    return intake.record_contact_preference(
        ctx, case_id, body.preferred, body.refused, body.note, scope=scope
    )


@router.put(
    "/cases/{case_id}/case-manager", response_model=CommandResult, summary="Assign the case manager"
)
def assign_case_manager(
    case_id: UUID,
    body: CaseManagerUpdate,
    intake: Intake,
    principal: CurrentPrincipal,
    agencies: Agencies,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, object]:
    ctx = command_context(request, principal, ASSIGNERS, idempotency_key)
    agency = agencies.resolve(body.agency, "agency")
    scope = allowed(principal, Action.ASSIGN_CASE_MANAGER)
    return intake.assign_case_manager(ctx, case_id, body.case_manager_id, agency, scope=scope)


@router.post(
    "/cases/{case_id}/stage", response_model=CommandResult, summary="Move the case to another stage"
)
def change_stage(
    case_id: UUID,
    body: StageChange,
    intake: Intake,
    principal: CurrentPrincipal,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, object]:
    ctx = command_context(request, principal, OWNERS, idempotency_key)
    return intake.change_stage(
        ctx, case_id, body.to_stage, body.reason, scope=allowed(principal, Action.MANAGE_CASE)
    )


@router.post(
    "/cases/{case_id}/closure",
    status_code=201,
    response_model=CommandResult,
    summary="Close the case",
)
def close_case(
    case_id: UUID,
    body: ClosureCreate,
    intake: Intake,
    principal: CurrentPrincipal,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, object]:
    ctx = command_context(request, principal, OWNERS, idempotency_key)
    return intake.close_case(
        ctx,
        case_id,
        body.reason,
        body.feedback,
        body.satisfaction,
        scope=allowed(principal, Action.MANAGE_CASE),
    )


@router.post(
    "/cases/{case_id}/reopening",
    status_code=201,
    response_model=CommandResult,
    summary="Reopen a closed case as a new episode",
)
def reopen_case(
    case_id: UUID,
    body: ReopeningCreate,
    intake: Intake,
    principal: CurrentPrincipal,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, object]:
    ctx = command_context(request, principal, OWNERS, idempotency_key)
    scope = allowed(principal, Action.MANAGE_CASE)
    return intake.reopen_case(ctx, case_id, body.reason, body.to_stage, body.note, scope=scope)
