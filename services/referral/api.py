"""HTTP routes of the referral service: where agencies meet."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from contracts.access_policy import (
    ALL_CATEGORIES,
    NOTHING,
    Action,
    CaseTies,
    Sight,
    family_member_sight,
    permits,
    sight,
)
from contracts.envelope import AGENCY_ID_PATTERN, AgencyRef
from contracts.feed import FEED_KEY_PATH, SEAL_ALGORITHM, FeedKey
from contracts.referral import (
    OVERRIDE_DEFAULT_HOURS,
    OVERRIDE_MAX_HOURS,
    DeadlineKind,
    DisclosureBasis,
    FamilyMember,
    HandoverKind,
    HandoverParty,
    OverrideConclusion,
    PartyRole,
    ReferralStatus,
    ReleasedField,
    ServiceDelivery,
    Urgency,
    WithheldCategory,
)
from contracts.vocabulary import (
    DataCategories,
    DataCategory,
    DeclineKind,
    Purpose,
    Role,
    ServiceType,
)
from services.referral.application import NamedParty, ReferralService
from services.referral.domain import (
    RECIPIENT_ANSWERS,
    CaseFile,
    CaseFileNotFoundError,
    Handover,
    HandoverNotFoundError,
    Referral,
    ReferralNotFoundError,
    next_steps,
)
from services.referral.domain.overrides import Override
from services.referral.feed_keys import FeedKeys, b64, subject_of
from services.runtime.access import check, record_read, roles_for
from services.runtime.agencies import Agencies
from services.runtime.aggregate import utcnow
from services.runtime.auth import CurrentPrincipal, Principal
from services.runtime.errors import NotFoundError, PermissionDeniedError, UnavailableError
from services.runtime.http import IdempotencyKey, command_context


async def referral_service(request: Request) -> ReferralService:
    service: ReferralService = request.app.state.referral
    return service


Referrals = Annotated[ReferralService, Depends(referral_service)]
router = APIRouter(prefix="/referral", tags=["referral"])


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


AgencyId = Annotated[str, Field(min_length=1, max_length=120, pattern=AGENCY_ID_PATTERN)]


class ReferralCreate(Body):
    to_agency: AgencyId = Field(description="the recipient's id; its kind comes from the directory")
    service_type: ServiceType
    urgency: Urgency = Urgency.ROUTINE
    purpose: Purpose = Purpose.SERVICE_PROVISION
    categories: DataCategories = Field(
        description="the person's data the service needs (at least one, except for a family "
        "member's referral, which may need none)"
    )
    note: str | None = Field(default=None, max_length=2000)
    plan_task_id: UUID | None = Field(
        default=None,
        description="the task of the case's reintegration plan this referral serves: it goes "
        "to the agency responsible for the task, for the task's service",
    )
    family_member: FamilyMember | None = Field(
        default=None,
        description="a member of the person's family referred on the person's case, with "
        "their own consent to this recipient reading their details",
    )


class Answer(Body):
    note: str | None = Field(default=None, max_length=2000)
    reason: str | None = Field(default=None, max_length=2000)
    outcome: str | None = Field(default=None, max_length=2000)
    delivery: ServiceDelivery | None = Field(
        default=None, description="at completion: how much was delivered (default: delivered)"
    )
    why: str | None = Field(
        default=None, max_length=2000, description="why, when not delivered in full"
    )


class ProgressReport(Body):
    note: str = Field(min_length=1, max_length=2000)


class FeedbackCreate(Body):
    satisfaction: int = Field(ge=1, le=5, description="the person's own rating")
    comment: str | None = Field(default=None, min_length=1, max_length=2000)


class ProgressPublic(BaseModel):
    at: datetime
    by_agency: str
    note: str


class FeedbackPublic(BaseModel):
    at: datetime
    satisfaction: int
    comment: str | None


class Cancellation(Body):
    reason: str = Field(min_length=1, max_length=2000)


class OverrideCreate(Body):
    reason: str = Field(min_length=10, max_length=2000)
    needed_for_hours: int = Field(
        default=OVERRIDE_DEFAULT_HOURS,
        ge=1,
        le=OVERRIDE_MAX_HOURS,
        description="how long the override is needed, from its approval; it ends then, or "
        "when it is reviewed, whichever comes first",
    )


class OverrideReview(Body):
    conclusion: OverrideConclusion
    note: str = Field(min_length=10, max_length=2000)


class OverridePublic(BaseModel):
    """An emergency override of the referral: asked for, approved, reviewed or lapsed. Its
    reason and review note go to those who take part in overrides or in the loop."""

    override_id: UUID
    requested_at: datetime
    requested_by_agency: str
    requested_by_role: Role
    needed_for_hours: int
    reason: str | None
    approved_at: datetime | None
    approved_by_agency: str | None
    approved_by_role: Role | None
    ends_at: datetime | None
    in_force: bool
    reviewed_at: datetime | None
    reviewed_by_agency: str | None
    reviewed_by_role: Role | None
    conclusion: OverrideConclusion | None
    review_note: str | None
    lapsed_at: datetime | None = Field(description="the end it was asked for, once recorded")


class ConsentLostPublic(BaseModel):
    """Consent withdrawn or refused while an override was in force: for its approver."""

    at: datetime
    override_id: UUID
    approved_by: str
    withheld: tuple[WithheldCategory, ...]


class PartyCreate(Body):
    agency: AgencyId = Field(description="the party's id; its kind comes from the directory")
    role: PartyRole
    capacity: str = Field(min_length=1, max_length=120)


class HandoverCreate(Body):
    kind: HandoverKind = HandoverKind.RECEPTION
    parties: tuple[PartyCreate, ...] = Field(min_length=2, max_length=12)
    to_case_manager_id: str | None = Field(default=None, max_length=120)


class ReferralResult(BaseModel):
    referral_id: UUID
    version: int
    status: ReferralStatus
    blocked_by: list[DataCategory]
    override_id: UUID | None = None


class HandoverResult(BaseModel):
    handover_id: UUID
    version: int
    status: str
    waiting_for: list[str]


class DisclosurePublic(BaseModel):
    basis: DisclosureBasis
    released: tuple[ReleasedField, ...]
    flagged_for_review: bool
    at: datetime
    data: dict[str, dict[str, Any]] | None = Field(
        description="the released data itself: shown to the recipient only, and not on hold"
    )


class StepPublic(BaseModel):
    at: datetime
    what: str
    status: ReferralStatus


class ReferralPublic(BaseModel):
    referral_id: UUID
    case_id: UUID
    version: int
    status: ReferralStatus
    next_steps: list[str]
    blocked_by: tuple[WithheldCategory, ...]
    from_agency: AgencyRef
    to_agency: AgencyRef
    service_type: ServiceType
    urgency: Urgency
    purpose: Purpose
    categories: tuple[DataCategory, ...]
    note: str | None
    acknowledge_by: datetime | None
    first_service_by: datetime | None
    escalated: list[DeadlineKind]
    override_in_force: UUID | None
    consent_lost_during_override: list[ConsentLostPublic]
    disclosure: DisclosurePublic | None
    timeline: list[StepPublic]
    delivery: ServiceDelivery | None = None
    outcome: str | None = Field(
        default=None,
        description="the outcome, or the reason it was rejected, cancelled or not delivered, "
        "to those in the loop",
    )
    delivery_why: str | None = Field(
        default=None, description="why not delivered in full, to those in the loop"
    )
    progress: list[ProgressPublic] | None = Field(
        default=None, description="the recipient's progress reports, to those in the loop"
    )
    feedback: list[FeedbackPublic] | None = None
    overrides: list[OverridePublic] = Field(default_factory=list)
    plan_task_id: UUID | None = None
    family_referral: bool = False
    family_member: FamilyMember | None = Field(
        default=None,
        description="the family member referred: to the agencies holding the case, and to the "
        "recipient once it was sent (on the family member's own consent)",
    )
    declined_by_person: DeclineKind | None = Field(
        default=None, description="the person refused or dropped the service: their choice"
    )


class HandoverPublic(BaseModel):
    handover_id: UUID
    case_id: UUID
    kind: HandoverKind
    status: str
    parties: tuple[HandoverParty, ...]
    waiting_for: list[str]
    confirmed_after_seconds: dict[str, float]
    started_at: datetime
    completed_at: datetime | None
    to_case_manager_id: str | None


def override_public(override: Override, at: datetime, *, shows_reasons: bool) -> OverridePublic:
    request, approval, review = override.request, override.approval, override.review
    return OverridePublic(
        override_id=request.override_id,
        requested_at=request.timestamp,
        requested_by_agency=request.actor.agency_id,
        requested_by_role=request.actor.role,
        needed_for_hours=request.needed_for_hours,
        reason=request.reason if shows_reasons else None,
        approved_at=approval.timestamp if approval else None,
        approved_by_agency=approval.actor.agency_id if approval else None,
        approved_by_role=approval.actor.role if approval else None,
        ends_at=override.ends_at,
        in_force=override.in_force_at(at),
        reviewed_at=review.timestamp if review else None,
        reviewed_by_agency=review.actor.agency_id if review else None,
        reviewed_by_role=review.actor.role if review else None,
        conclusion=review.conclusion if review else None,
        review_note=review.note if review and shows_reasons else None,
        lapsed_at=override.lapse.ended_at if override.lapse else None,
    )


def referral_public(
    referral: Referral,
    seen: Sight,
    *,
    shows_note: bool,
    shows_reasons: bool = False,
    shows_family: bool = False,
) -> ReferralPublic:
    """The referral as the reader may see it: the released data of the categories ``seen``
    allows now (the consent in force at this instant), the note to those in the loop."""
    spec = referral.spec
    disclosure = referral.disclosure
    now = utcnow()
    data = None
    if disclosure is not None and seen.categories:
        data = {
            name: facts
            for name, facts in disclosure.data.items()
            if DataCategory(name) in seen.categories
        } or None
    return ReferralPublic(
        referral_id=referral.id,
        case_id=spec.case_id,
        version=referral.version,
        status=referral.status,
        next_steps=next_steps(referral.status),
        blocked_by=referral.withheld,
        from_agency=spec.from_agency,
        to_agency=spec.to_agency,
        service_type=spec.service_type,
        urgency=spec.urgency,
        purpose=spec.purpose,
        categories=spec.categories,
        note=spec.note if shows_note else None,
        acknowledge_by=referral.acknowledge_by,
        first_service_by=referral.first_service_by,
        escalated=sorted(referral.escalated),
        override_in_force=referral.override_in_force_at(now),
        consent_lost_during_override=[
            ConsentLostPublic(
                at=w.timestamp,
                override_id=w.override_id,
                approved_by=w.approved_by.user_id,
                withheld=w.withheld,
            )
            for w in referral.withdrawals_noted
        ],
        disclosure=DisclosurePublic(
            basis=disclosure.basis,
            released=disclosure.released,
            flagged_for_review=disclosure.flagged_for_review,
            at=disclosure.timestamp,
            data=data,
        )
        if disclosure
        else None,
        timeline=[StepPublic(at=at, what=what, status=s) for at, what, s in referral.history],
        delivery=referral.delivery,
        outcome=referral.closing_reason if shows_note else None,
        delivery_why=referral.delivery_why if shows_note else None,
        progress=[
            ProgressPublic(at=p.timestamp, by_agency=p.actor.agency_id, note=p.note)
            for p in referral.progress_reports
        ]
        if shows_note
        else None,
        feedback=[
            FeedbackPublic(at=f.timestamp, satisfaction=f.satisfaction, comment=f.comment)
            for f in referral.feedback
        ]
        if shows_note
        else None,
        overrides=[
            override_public(o, now, shows_reasons=shows_note or shows_reasons)
            for o in referral.overrides.values()
        ],
        plan_task_id=spec.plan_task_id,
        family_referral=spec.family_member is not None,
        family_member=spec.family_member if shows_family else None,
        declined_by_person=referral.declined_by,
    )


def handover_public(handover: Handover) -> HandoverPublic:
    spec = handover.spec
    return HandoverPublic(
        handover_id=handover.id,
        case_id=spec.case_id,
        kind=spec.kind,
        status=handover.status,
        parties=spec.parties,
        waiting_for=handover.waiting_for,
        confirmed_after_seconds={a: c.waited_seconds for a, c in handover.confirmed.items()},
        started_at=spec.timestamp,
        completed_at=handover.completed_at,
        to_case_manager_id=spec.to_case_manager_id,
    )


# -- who sees what: the access policy, with the ties this log knows ---------------------------


def own_agency(principal: Principal, agencies: Agencies) -> AgencyRef:
    """The principal's agency, with its kind from the directory (never from the token)."""
    known = agencies.lookup(principal.agency_id)
    if known is None or not known.active:
        raise PermissionDeniedError("Your agency is not active in the agency directory.")
    return known.ref()


def referral_ties(referral: Referral, case_file: CaseFile | None) -> CaseTies:
    """The recipient is tied to a referral only once it has been sent to it."""
    spec = referral.spec
    return CaseTies(
        province=spec.province,
        holders=case_file.ties.holders if case_file else frozenset(),
        recipients=frozenset({spec.to_agency.agency_id})
        if referral.dispatched_at is not None
        else frozenset(),
        senders=frozenset({spec.from_agency.agency_id}),
    )


def handover_ties(handover: Handover, case_file: CaseFile | None) -> CaseTies:
    return CaseTies(
        province=handover.spec.province,
        holders=case_file.ties.holders if case_file else frozenset(),
        handover_parties=frozenset(handover.party_ids),
    )


def case_allows(principal: Principal, action: Action) -> Callable[[CaseFile], None]:
    def check_case(case_file: CaseFile) -> None:
        check(principal, case_file.ties, action, lambda: CaseFileNotFoundError(case_file.case_id))

    return check_case


def referral_allows(principal: Principal, action: Action) -> Callable[[Referral], None]:
    def check_referral(referral: Referral) -> None:
        check(
            principal,
            referral_ties(referral, None),
            action,
            lambda: ReferralNotFoundError(referral.id),
        )

    return check_referral


def handover_allows(principal: Principal, action: Action) -> Callable[[Handover], None]:
    def check_handover(handover: Handover) -> None:
        check(
            principal,
            handover_ties(handover, None),
            action,
            lambda: HandoverNotFoundError(handover.id),
        )

    return check_handover


def read_consent_to_head(request: Request) -> None:
    """Bring this process's copy of the consent log to its head (or 503 past the bound)."""
    settings = request.app.state.settings
    request.app.state.followers["referral"].reach_head("consent", settings.consent_read_timeout)


def read_as(
    referrals: ReferralService,
    principal: Principal,
    request: Request,
    referral: Referral,
    case_file: CaseFile | None,
    *,
    consent_at_head: bool = False,
) -> ReferralPublic:
    """One referral as ``principal`` may see it now, its reading of personal data recorded.

    The recipient sees the released data only as far as the consent in force at this instant
    allows: the service first reads the consent log up to its head (unless the caller did,
    ``consent_at_head``, and loaded the referral after), so a withdrawal committed before this
    request is in force for it, whatever the referral's status.
    """
    ties = referral_ties(referral, case_file)
    check(principal, ties, Action.SEE_PROGRESS, lambda: ReferralNotFoundError(referral.id))
    asker = principal.asker
    seen = NOTHING
    reading = permits(asker, ties, Action.READ_PERSONAL).allowed
    recipient = asker.agency_id in ties.recipients
    if reading and recipient and referral.disclosure is not None:
        if not consent_at_head:
            read_consent_to_head(request)
            referral = referrals.get_referral(referral.id)
            case_file = referrals.get_case_file(referral.spec.case_id)
        assert case_file is not None
        now = utcnow()
        # Only the recipient's own tie counts here: what it holds of the case otherwise is
        # read through the services that hold it.
        as_recipient = CaseTies(province=ties.province, recipients=ties.recipients)
        seen = sight(
            asker,
            as_recipient,
            referral.spec.categories,
            consent=referral.decision(case_file, now),
            override_id=referral.override_in_force_at(now),
        )
        record_read(
            request,
            principal,
            seen,
            case_id=referral.spec.case_id,
            what="referral.referral",
            person_id=referral.spec.person_id,
        )
    shows_note = bool(
        asker.agency_id in ties.holders | ties.senders
        or (recipient and referral.dispatched_at is not None)
    )
    # Those who may approve or review an override read why it was asked for and found.
    shows_reasons = any(
        permits(asker, ties, action).allowed
        for action in (Action.APPROVE_OVERRIDE, Action.REVIEW_OVERRIDE)
    )
    shows_family = False
    if referral.spec.family_member is not None:
        # The family member's own details: on the family member's consent, recorded too.
        family = family_member_sight(asker, ties)
        shows_family = bool(family.categories)
        record_read(
            request,
            principal,
            family,
            case_id=referral.spec.case_id,
            what="referral.family_member",
            person_id=referral.spec.person_id,
        )
    return referral_public(
        referral,
        seen,
        shows_note=shows_note,
        shows_reasons=shows_reasons,
        shows_family=shows_family,
    )


# -- referrals --------------------------------------------------------------------------------


@router.post(
    "/cases/{case_id}/referrals",
    status_code=201,
    response_model=ReferralResult,
    summary="Refer the person to another agency's service",
)
def create_referral(
    case_id: UUID,
    body: ReferralCreate,
    referrals: Referrals,
    principal: CurrentPrincipal,
    agencies: Agencies,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Sent at once when the consent in force allows the categories it needs; otherwise it
    waits as a draft, blocked by consent, with the reason for each category."""
    ctx = command_context(request, principal, roles_for(Action.SEND_REFERRAL), idempotency_key)
    return referrals.create_referral(
        ctx,
        case_id,
        from_agency=own_agency(principal, agencies),
        to_agency_id=body.to_agency,
        service_type=body.service_type,
        urgency=body.urgency,
        purpose=body.purpose,
        categories=body.categories,
        note=body.note,
        plan_task_id=body.plan_task_id,
        family_member=body.family_member,
        scope=case_allows(principal, Action.SEND_REFERRAL),
    )


@router.get(
    "/referrals",
    response_model=list[ReferralPublic],
    summary="Referrals you may see: your agency's queue, or your province's",
)
def list_referrals(
    referrals: Referrals,
    principal: CurrentPrincipal,
    request: Request,
    case_id: UUID | None = None,
    status: ReferralStatus | None = None,
) -> Any:
    """Agency staff see the referrals sent to their agency (and those it sent); case
    managers, their cases' referrals; coordinators and auditors, their province's, without
    the person's data."""
    read_consent_to_head(request)  # once for the list; the referrals are loaded after it
    if principal.roles & {Role.CASE_MANAGER, Role.COORDINATOR, Role.AUDITOR}:
        entries = referrals.index.referrals_where(case_id=case_id, status=status)
    else:
        # Agency staff work from their agency's queue: what was sent to them.
        entries = [
            e
            for e in referrals.index.referrals_where(
                to_agency_id=principal.agency_id, case_id=case_id, status=status
            )
            if e.dispatched
        ]
    case_files: dict[UUID, CaseFile] = {}
    shown = []
    for entry in entries:
        if not _may_list(principal, entry):
            continue
        referral = referrals.get_referral(entry.referral_id)
        case_file = case_files.get(referral.spec.case_id)
        if case_file is None:
            case_file = referrals.get_case_file(referral.spec.case_id)
            case_files[referral.spec.case_id] = case_file
        try:
            shown.append(
                read_as(referrals, principal, request, referral, case_file, consent_at_head=True)
            )
        except (ReferralNotFoundError, PermissionDeniedError):
            continue  # not the principal's to see: left out of the list
    return shown


def _may_list(principal: Principal, entry: Any) -> bool:
    # A cheap first cut on the index before loading; the policy decides on the loaded state.
    return bool(
        principal.covers_province(entry.province)
        or principal.agency_id in (entry.to_agency_id, entry.from_agency_id)
        or principal.roles & {Role.CASE_MANAGER, Role.AGENCY_STAFF}
    )


@router.get("/referrals/{referral_id}", response_model=ReferralPublic, summary="Read a referral")
def read_referral(
    referral_id: UUID, referrals: Referrals, principal: CurrentPrincipal, request: Request
) -> Any:
    referral = referrals.get_referral(referral_id)
    case_file = referrals.get_case_file(referral.spec.case_id)
    return read_as(referrals, principal, request, referral, case_file)


def _answer_route(action: str) -> None:
    def answer(
        referral_id: UUID,
        body: Answer,
        referrals: Referrals,
        principal: CurrentPrincipal,
        request: Request,
        idempotency_key: IdempotencyKey = None,
    ) -> Any:
        ctx = command_context(
            request, principal, roles_for(Action.ANSWER_REFERRAL), idempotency_key
        )
        text = body.reason or body.outcome or body.note
        scope = referral_allows(principal, Action.ANSWER_REFERRAL)
        return referrals.answer(
            ctx, referral_id, action, text, scope=scope, delivery=body.delivery, why=body.why
        )

    answer.__name__ = f"{action}_referral"
    router.add_api_route(
        f"/referrals/{{referral_id}}/{action}",
        answer,
        methods=["POST"],
        response_model=ReferralResult,
        summary=f"The recipient agency: {action}",
    )


for _action in RECIPIENT_ANSWERS:
    _answer_route(_action)


@router.post(
    "/referrals/{referral_id}/progress",
    status_code=201,
    response_model=ReferralResult,
    summary="The recipient agency reports progress",
)
def report_progress(
    referral_id: UUID,
    body: ProgressReport,
    referrals: Referrals,
    principal: CurrentPrincipal,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """How the service goes, while it is accepted or under way (treatment and monitoring
    last weeks or months)."""
    action = Action.ANSWER_REFERRAL
    ctx = command_context(request, principal, roles_for(action), idempotency_key)
    scope = referral_allows(principal, action)
    return referrals.report_progress(ctx, referral_id, body.note, scope=scope)


@router.post(
    "/referrals/{referral_id}/feedback",
    status_code=201,
    response_model=ReferralResult,
    summary="The person's feedback on the service, recorded by the sender",
)
def record_feedback(
    referral_id: UUID,
    body: FeedbackCreate,
    referrals: Referrals,
    principal: CurrentPrincipal,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    action = Action.RECORD_SERVICE_FEEDBACK
    ctx = command_context(request, principal, roles_for(action), idempotency_key)
    scope = referral_allows(principal, action)
    return referrals.record_feedback(ctx, referral_id, body.satisfaction, body.comment, scope=scope)


@router.post(
    "/referrals/{referral_id}/cancel",
    response_model=ReferralResult,
    summary="The sender cancels the referral",
)
def cancel_referral(
    referral_id: UUID,
    body: Cancellation,
    referrals: Referrals,
    principal: CurrentPrincipal,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    ctx = command_context(request, principal, roles_for(Action.CANCEL_REFERRAL), idempotency_key)
    scope = referral_allows(principal, Action.CANCEL_REFERRAL)
    return referrals.answer(ctx, referral_id, "cancel", body.reason, scope=scope)


@router.post(
    "/referrals/{referral_id}/overrides",
    status_code=201,
    response_model=ReferralResult,
    summary="Ask for an emergency override",
)
def request_override(
    referral_id: UUID,
    body: OverrideCreate,
    referrals: Referrals,
    principal: CurrentPrincipal,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """For the person's vital interest, when consent cannot be had in time. Needs a second
    approver in another role; the disclosure is flagged for review."""
    ctx = command_context(request, principal, roles_for(Action.REQUEST_OVERRIDE), idempotency_key)
    scope = referral_allows(principal, Action.REQUEST_OVERRIDE)
    return referrals.request_override(
        ctx, referral_id, body.reason, scope=scope, needed_for_hours=body.needed_for_hours
    )


@router.post(
    "/referrals/{referral_id}/overrides/{override_id}/approval",
    response_model=ReferralResult,
    summary="Approve an emergency override",
)
def approve_override(
    referral_id: UUID,
    override_id: UUID,
    referrals: Referrals,
    principal: CurrentPrincipal,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    ctx = command_context(request, principal, roles_for(Action.APPROVE_OVERRIDE), idempotency_key)
    scope = referral_allows(principal, Action.APPROVE_OVERRIDE)
    return referrals.approve_override(ctx, referral_id, override_id, scope=scope)


@router.post(
    "/referrals/{referral_id}/overrides/{override_id}/review",
    response_model=ReferralResult,
    summary="Review an approved emergency override (a third person, in another role)",
)
def review_override(
    referral_id: UUID,
    override_id: UUID,
    body: OverrideReview,
    referrals: Referrals,
    principal: CurrentPrincipal,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """The override stops counting at its review; the referral follows the consent in force
    again."""
    ctx = command_context(request, principal, roles_for(Action.REVIEW_OVERRIDE), idempotency_key)
    scope = referral_allows(principal, Action.REVIEW_OVERRIDE)
    return referrals.review_override(
        ctx, referral_id, override_id, body.conclusion, body.note, scope=scope
    )


# -- handovers --------------------------------------------------------------------------------


@router.post(
    "/cases/{case_id}/handovers",
    status_code=201,
    response_model=HandoverResult,
    summary="Start a multi-party handover",
)
def start_handover(
    case_id: UUID,
    body: HandoverCreate,
    referrals: Referrals,
    principal: CurrentPrincipal,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    ctx = command_context(request, principal, roles_for(Action.START_HANDOVER), idempotency_key)
    return referrals.start_handover(
        ctx,
        case_id,
        kind=body.kind,
        parties=tuple(NamedParty(p.agency, p.role, p.capacity) for p in body.parties),
        to_case_manager_id=body.to_case_manager_id,
        scope=case_allows(principal, Action.START_HANDOVER),
    )


@router.get(
    "/handovers",
    response_model=list[HandoverPublic],
    summary="Handovers of a case, or those your agency takes part in",
)
def list_handovers(
    referrals: Referrals,
    principal: CurrentPrincipal,
    case_id: UUID | None = None,
    open_only: bool = False,
) -> Any:
    referrals.index.refresh()
    shown = []
    for entry in referrals.index.handovers.values():
        if (case_id is not None and entry.case_id != case_id) or (
            open_only and entry.status != "open"
        ):
            continue
        tied = principal.agency_id in entry.party_ids
        if not (tied or principal.covers_province(entry.province)):
            continue
        handover = referrals.get_handover(entry.handover_id)
        case_file = referrals.get_case_file(handover.spec.case_id)
        ties = handover_ties(handover, case_file)
        if permits(principal.asker, ties, Action.SEE_PROGRESS).allowed:
            shown.append(handover_public(handover))
    return shown


@router.get("/handovers/{handover_id}", response_model=HandoverPublic, summary="Read a handover")
def read_handover(handover_id: UUID, referrals: Referrals, principal: CurrentPrincipal) -> Any:
    handover = referrals.get_handover(handover_id)
    case_file = referrals.get_case_file(handover.spec.case_id)
    ties = handover_ties(handover, case_file)
    check(principal, ties, Action.SEE_PROGRESS, lambda: HandoverNotFoundError(handover_id))
    return handover_public(handover)


@router.post(
    "/handovers/{handover_id}/confirmations",
    status_code=201,
    response_model=HandoverResult,
    summary="Confirm the handover for your agency",
)
def confirm_handover(
    handover_id: UUID,
    referrals: Referrals,
    principal: CurrentPrincipal,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Each party confirms separately; the last confirmation completes the handover."""
    ctx = command_context(request, principal, roles_for(Action.CONFIRM_HANDOVER), idempotency_key)
    scope = handover_allows(principal, Action.CONFIRM_HANDOVER)
    return referrals.confirm_handover(ctx, handover_id, principal.agency_id, scope=scope)


# -- the agency feed's keys -------------------------------------------------------------------


class FeedKeyNotFoundError(NotFoundError):
    def __init__(self, key_id: str) -> None:
        super().__init__(f"No feed key {key_id} visible to you.", key_id=key_id)


class FeedKeyGoneError(NotFoundError):
    """The person was erased: their key, and every key derived from it, is destroyed."""

    status = 410
    slug = "erased"
    title = "The person was erased"

    def __init__(self, key_id: str) -> None:
        super().__init__(
            f"The person whose data feed key {key_id} opened was erased; it opens nothing any "
            "more. Erase what you hold of them.",
            key_id=key_id,
        )


KeyId = Annotated[str, Path(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._-]+$")]


@router.get(
    FEED_KEY_PATH.removeprefix(router.prefix),
    response_model=FeedKey,
    summary="The key that opens what your agency's feed carries sealed of a referral or handover",
    responses={410: {"description": "the person was erased: the key is destroyed"}},
)
def read_feed_key(
    key_id: KeyId,
    referrals: Referrals,
    principal: CurrentPrincipal,
    request: Request,
    response: Response,
) -> Any:
    """Your agency's own key for a referral or a handover (the key id is its id), a recorded
    read of the person's data, like reading the referral itself; 410 once the person is
    erased.

    - The recipient of a referral (its key opens the released data and the reasons) as far as
      the access policy lets it read the person's data now: the consent in force at this
      instant, or an emergency override.
    - The sender of a referral, and a party to a handover (their keys open reasons only),
      while their agency holds the case: the person's consent governs what passes to other
      agencies, not what the agencies holding the case read of it; an agency that no longer
      holds it, or never did, reads nothing of the person (403).
    """
    subject_id = subject_of(key_id)
    if subject_id is None:
        raise FeedKeyNotFoundError(key_id)
    read_consent_to_head(request)  # a withdrawal committed before this request counts
    kind = referrals.kind_of(subject_id)
    if kind is Handover:
        handover = referrals.get_handover(subject_id)
        case_file = referrals.get_case_file(handover.spec.case_id)
        seen, person_id = _handover_key_sight(principal, key_id, handover, case_file)
        case_id = handover.spec.case_id
    elif kind is Referral:
        referral = referrals.get_referral(subject_id)
        case_file = referrals.get_case_file(referral.spec.case_id)
        seen, person_id = _referral_key_sight(principal, key_id, referral, case_file)
        case_id = referral.spec.case_id
    else:
        raise FeedKeyNotFoundError(key_id)
    store = referrals.person_keys
    if store is None:
        raise UnavailableError("This installation has no store of persons' keys.")
    key = FeedKeys(store).key(person_id, principal.agency_id, subject_id)
    if key is None:
        raise FeedKeyGoneError(key_id)
    record_read(
        request, principal, seen, case_id=case_id, what="referral.feed_key", person_id=person_id
    )
    response.headers["Cache-Control"] = "no-store"
    return FeedKey(key_id=key_id, alg=SEAL_ALGORITHM, key=b64(key))


def _referral_key_sight(
    principal: Principal, key_id: str, referral: Referral, case_file: CaseFile
) -> tuple[Sight, UUID]:
    """What the asker's key of a referral lets it read, and whose key it derives from."""
    ties = referral_ties(referral, case_file)
    check(principal, ties, Action.SEE_PROGRESS, lambda: FeedKeyNotFoundError(key_id))
    person_id = referral.person_id or case_file.person_id
    if principal.agency_id in ties.senders and principal.agency_id not in ties.recipients:
        return _holder_key_sight(principal, key_id, ties.province, case_file), person_id
    if principal.agency_id not in ties.recipients or referral.disclosure is None:
        raise PermissionDeniedError(
            "Only the sender and the recipient of a referral read its feed's keys."
        )
    # Only the recipient's own tie counts, as when it reads the referral.
    as_recipient = CaseTies(province=ties.province, recipients=ties.recipients)
    check(principal, as_recipient, Action.READ_PERSONAL, lambda: FeedKeyNotFoundError(key_id))
    if case_file.erased:
        raise FeedKeyGoneError(key_id)
    now = utcnow()
    seen = sight(
        principal.asker,
        as_recipient,
        referral.spec.categories,
        consent=referral.decision(case_file, now),
        override_id=referral.override_in_force_at(now),
    )
    if not seen.categories:
        raise PermissionDeniedError(
            "The consent in force does not let your agency read this person's data now."
        )
    return seen, referral.disclosure.person_id


def _handover_key_sight(
    principal: Principal, key_id: str, handover: Handover, case_file: CaseFile
) -> tuple[Sight, UUID]:
    """What a party's key of a handover lets it read, and whose key it derives from."""
    ties = handover_ties(handover, case_file)
    check(principal, ties, Action.SEE_PROGRESS, lambda: FeedKeyNotFoundError(key_id))
    if principal.agency_id not in ties.handover_parties:
        raise PermissionDeniedError("Only the parties to a handover read its feed's keys.")
    seen = _holder_key_sight(principal, key_id, ties.province, case_file)
    return seen, handover.person_id or case_file.person_id


def _holder_key_sight(
    principal: Principal, key_id: str, province: str, case_file: CaseFile
) -> Sight:
    """A sender's or a handover party's key opens free text about the person, which belongs to
    no one category: the read is of all of them, on its agency's holding the case."""
    as_holder = CaseTies(province=province, holders=case_file.ties.holders)
    reading = permits(principal.asker, as_holder, Action.READ_PERSONAL)
    if reading.by_role:
        raise PermissionDeniedError(reading.reason)
    if case_file.erased:
        raise FeedKeyGoneError(key_id)
    seen = sight(principal.asker, as_holder, ALL_CATEGORIES)
    if not seen.categories:
        raise PermissionDeniedError(
            "Your agency reads what the feed seals of this person only while it holds the case."
        )
    return seen
