"""HTTP routes of case work on a case: the comprehensive assessments, exploitation and
identification, the contact log and notes. Each is recorded by the roles the access policy
names for it; the case read (``GET /intake/cases/{id}``) shows them by category.

``router`` is the whole intake service: the case's routes (``services.intake.api``), these,
and the reintegration plan's (``services.intake.plan_api``).
"""

from __future__ import annotations

from datetime import date, datetime
from uuid import UUID

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from contracts.access_policy import Action
from contracts.casework import (
    EducationLivelihood,
    Exploitation,
    FamilySituation,
    LegalNeedsAssessment,
    MedicalExamination,
    PsychosocialAssessment,
)
from contracts.vocabulary import (
    CaseStage,
    ContactMode,
    DataCategory,
    DeclineKind,
    IdentificationStatus,
    ReviewDecisions,
    ServiceType,
)
from services.intake.api import AgencyId, Body, CommandResult, Intake, allowed
from services.intake.api import router as cases_router
from services.intake.erasure_api import erasure
from services.intake.plan_api import plan
from services.runtime.access import roles_for
from services.runtime.agencies import Agencies
from services.runtime.auth import CurrentPrincipal
from services.runtime.http import IdempotencyKey, command_context

casework = APIRouter(prefix="/intake/cases/{case_id}", tags=["intake: case work"])


class IdentificationUpdate(Body):
    status: IdentificationStatus
    authority: AgencyId | None = Field(
        default=None, description="the authority that decided (not for a presumed victim)"
    )
    decided_on: date | None = None


class ContactCreate(Body):
    mode: ContactMode
    occurred_at: datetime
    place: str | None = Field(default=None, min_length=1, max_length=1000)
    note: str | None = Field(default=None, min_length=1, max_length=4000)
    reason: str | None = Field(
        default=None,
        min_length=1,
        max_length=1000,
        description="why, when the person refused this mode of contact (then required)",
    )


class NoteCreate(Body):
    about: DataCategory = Field(
        description="the category of the person's data the note tells: who may read it"
    )
    text: str = Field(min_length=1, max_length=4000)


class DeclinedCreate(Body):
    service_type: ServiceType
    choice: DeclineKind
    referral_id: UUID | None = None
    in_their_words: str | None = Field(
        default=None, min_length=1, max_length=1000, description="only if they chose to say"
    )
    how_to_come_back: str = Field(
        min_length=1, max_length=1000, description="what the person was told about coming back"
    )


class ReviewCreate(Body):
    findings: str = Field(min_length=1, max_length=4000)
    decisions: ReviewDecisions


class ReviewResult(BaseModel):
    case_id: UUID
    version: int
    stage: CaseStage
    next_review_on: date


class ContactResult(BaseModel):
    case_id: UUID
    version: int
    stage: CaseStage
    contact_id: UUID


class NoteResult(BaseModel):
    case_id: UUID
    version: int
    stage: CaseStage
    note_id: UUID


# -- the comprehensive assessments -----------------------------------------------------------


@casework.post(
    "/medical-examinations",
    status_code=201,
    response_model=CommandResult,
    summary="Record a medical examination (health workers)",
)
def record_medical_examination(
    case_id: UUID,
    body: MedicalExamination,
    intake: Intake,
    principal: CurrentPrincipal,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, object]:
    """Findings, urgent treatment and the follow-up needed: the person's ``health`` data,
    which a referral carries only with their consent."""
    action = Action.RECORD_MEDICAL_EXAMINATION
    ctx = command_context(request, principal, roles_for(action), idempotency_key)
    return intake.record_medical_examination(ctx, case_id, body, scope=allowed(principal, action))


@casework.post(
    "/psychosocial-assessments",
    status_code=201,
    response_model=CommandResult,
    summary="Record the initial mental state and psychosocial needs",
)
def assess_psychosocial(
    case_id: UUID,
    body: PsychosocialAssessment,
    intake: Intake,
    principal: CurrentPrincipal,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, object]:
    action = Action.RECORD_PSYCHOSOCIAL_ASSESSMENT
    ctx = command_context(request, principal, roles_for(action), idempotency_key)
    return intake.assess_psychosocial(ctx, case_id, body, scope=allowed(principal, action))


@casework.post(
    "/family-assessments",
    status_code=201,
    response_model=CommandResult,
    summary="Record the family and return situation",
)
def assess_family(
    case_id: UUID,
    body: FamilySituation,
    intake: Intake,
    principal: CurrentPrincipal,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, object]:
    action = Action.RECORD_ASSESSMENT
    ctx = command_context(request, principal, roles_for(action), idempotency_key)
    return intake.assess_family(ctx, case_id, body, scope=allowed(principal, action))


@casework.post(
    "/legal-needs-assessments",
    status_code=201,
    response_model=CommandResult,
    summary="Record the legal needs",
)
def assess_legal_needs(
    case_id: UUID,
    body: LegalNeedsAssessment,
    intake: Intake,
    principal: CurrentPrincipal,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, object]:
    action = Action.RECORD_ASSESSMENT
    ctx = command_context(request, principal, roles_for(action), idempotency_key)
    return intake.assess_legal_needs(ctx, case_id, body, scope=allowed(principal, action))


@casework.post(
    "/livelihood-assessments",
    status_code=201,
    response_model=CommandResult,
    summary="Record education and livelihood",
)
def assess_livelihood(
    case_id: UUID,
    body: EducationLivelihood,
    intake: Intake,
    principal: CurrentPrincipal,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, object]:
    action = Action.RECORD_ASSESSMENT
    ctx = command_context(request, principal, roles_for(action), idempotency_key)
    return intake.assess_livelihood(ctx, case_id, body, scope=allowed(principal, action))


# -- exploitation and identification ----------------------------------------------------------


@casework.put(
    "/exploitation", response_model=CommandResult, summary="Record the exploitation (CTDC terms)"
)
def record_exploitation(
    case_id: UUID,
    body: Exploitation,
    intake: Intake,
    principal: CurrentPrincipal,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, object]:
    """Types (several at once), where and for how long, and the means of control; the whole
    set replaces the previous one."""
    action = Action.RECORD_FACTS
    ctx = command_context(request, principal, roles_for(action), idempotency_key)
    return intake.record_exploitation(ctx, case_id, body, scope=allowed(principal, action))


@casework.put(
    "/identification",
    response_model=CommandResult,
    summary="Record whether the person is a presumed or identified victim",
)
def record_identification(
    case_id: UUID,
    body: IdentificationUpdate,
    intake: Intake,
    principal: CurrentPrincipal,
    agencies: Agencies,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, object]:
    action = Action.RECORD_FACTS
    ctx = command_context(request, principal, roles_for(action), idempotency_key)
    authority = agencies.resolve(body.authority, "authority") if body.authority else None
    return intake.record_identification(
        ctx, case_id, body.status, authority, body.decided_on, scope=allowed(principal, action)
    )


# -- the contact log and notes ----------------------------------------------------------------


@casework.post(
    "/contacts",
    status_code=201,
    response_model=ContactResult,
    summary="Log a contact with the person (call, message, meeting, visit)",
)
def log_contact(
    case_id: UUID,
    body: ContactCreate,
    intake: Intake,
    principal: CurrentPrincipal,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, object]:
    """By you, in your agency. A contact in a mode the person refused (a home visit, say)
    needs the reason, and shows on the coordinator's board as a breach of their wish."""
    action = Action.RECORD_CONTACT
    ctx = command_context(request, principal, roles_for(action), idempotency_key)
    return intake.log_contact(
        ctx,
        case_id,
        mode=body.mode,
        occurred_at=body.occurred_at,
        place=body.place,
        note=body.note,
        reason=body.reason,
        scope=allowed(principal, action),
    )


@casework.post("/notes", status_code=201, response_model=NoteResult, summary="Write a case note")
def write_note(
    case_id: UUID,
    body: NoteCreate,
    intake: Intake,
    principal: CurrentPrincipal,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, object]:
    action = Action.RECORD_CONTACT
    ctx = command_context(request, principal, roles_for(action), idempotency_key)
    return intake.write_note(ctx, case_id, body.about, body.text, scope=allowed(principal, action))


@casework.post(
    "/declined-services",
    status_code=201,
    response_model=CommandResult,
    summary="Record a service the person refused or dropped: their choice",
)
def record_declined(
    case_id: UUID,
    body: DeclinedCreate,
    intake: Intake,
    principal: CurrentPrincipal,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, object]:
    """Services are voluntary: a refusal or a drop-out is the person's choice, never a
    condition for another service; record what they were told about coming back."""
    action = Action.MANAGE_PLAN
    ctx = command_context(request, principal, roles_for(action), idempotency_key)
    return intake.record_declined(
        ctx,
        case_id,
        body.service_type,
        body.choice,
        body.how_to_come_back,
        body.referral_id,
        body.in_their_words,
        scope=allowed(principal, action),
    )


@casework.post(
    "/reviews",
    status_code=201,
    response_model=ReviewResult,
    summary="A supervisor's case review, signed off",
)
def review_case(
    case_id: UUID,
    body: ReviewCreate,
    intake: Intake,
    principal: CurrentPrincipal,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, object]:
    """What the review found and decided; the next review falls due by the case's stage
    (every 7 days in crisis, 30 in transition, 90 in external support)."""
    action = Action.REVIEW_CASE
    ctx = command_context(request, principal, roles_for(action), idempotency_key)
    return intake.review_case(
        ctx, case_id, body.findings, body.decisions, scope=allowed(principal, action)
    )


router = APIRouter()
router.include_router(cases_router)
router.include_router(casework)
router.include_router(plan)
router.include_router(erasure)
