"""HTTP routes of the referral service: where agencies meet."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from contracts.envelope import AGENCY_ID_PATTERN, AgencyRef
from contracts.referral import (
    DeadlineKind,
    DisclosureBasis,
    HandoverKind,
    HandoverParty,
    PartyRole,
    ReferralStatus,
    ReleasedField,
    Urgency,
    WithheldCategory,
)
from contracts.vocabulary import DataCategory, Purpose, Role, ServiceType
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
from services.runtime.agencies import Agencies
from services.runtime.auth import CurrentPrincipal, Principal
from services.runtime.errors import PermissionDeniedError
from services.runtime.http import IdempotencyKey, command_context

SENDERS = (Role.CASE_MANAGER,)
OVERSEERS = (Role.CASE_MANAGER, Role.COORDINATOR, Role.AUDITOR)
OVERRIDERS = (Role.CASE_MANAGER, Role.COORDINATOR)
HANDOVER_STARTERS = (Role.CASE_MANAGER, Role.INTAKE_OFFICER, Role.COORDINATOR)
ANYONE = tuple(Role)


def referral_service(request: Request) -> ReferralService:
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
    categories: tuple[DataCategory, ...] = Field(min_length=1)
    note: str | None = Field(default=None, max_length=2000)


class Answer(Body):
    note: str | None = Field(default=None, max_length=2000)
    reason: str | None = Field(default=None, max_length=2000)
    outcome: str | None = Field(default=None, max_length=2000)


class Cancellation(Body):
    reason: str = Field(min_length=1, max_length=2000)


class OverrideCreate(Body):
    reason: str = Field(min_length=10, max_length=2000)


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
    disclosure: DisclosurePublic | None
    timeline: list[StepPublic]


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


def referral_public(referral: Referral, *, as_recipient: bool) -> ReferralPublic:
    spec = referral.spec
    disclosure = referral.disclosure
    show_data = as_recipient and referral.status not in (
        ReferralStatus.DRAFT,
        ReferralStatus.ON_HOLD,
    )
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
        note=spec.note if (not as_recipient or referral.dispatched_at) else None,
        acknowledge_by=referral.acknowledge_by,
        first_service_by=referral.first_service_by,
        escalated=sorted(referral.escalated),
        override_in_force=referral.override_in_force,
        disclosure=DisclosurePublic(
            basis=disclosure.basis,
            released=disclosure.released,
            flagged_for_review=disclosure.flagged_for_review,
            at=disclosure.timestamp,
            data=disclosure.data if show_data else None,
        )
        if disclosure
        else None,
        timeline=[StepPublic(at=at, what=what, status=s) for at, what, s in referral.history],
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


# -- who sees what ----------------------------------------------------------------------------


def own_agency(principal: Principal, agencies: Agencies) -> AgencyRef:
    """The principal's agency, with its kind from the directory (never from the token)."""
    known = agencies.lookup(principal.agency_id)
    if known is None or not known.active:
        raise PermissionDeniedError("Your agency is not active in the agency directory.")
    return known.ref()


def case_in_province(principal: Principal) -> Callable[[CaseFile], None]:
    def check(case_file: CaseFile) -> None:
        if not principal.covers_province(case_file.province):
            raise CaseFileNotFoundError(case_file.case_id)

    return check


def is_recipient(principal: Principal, referral: Referral) -> bool:
    """The recipient agency knows of a referral only once it has been sent to it."""
    return (
        principal.agency_id == referral.spec.to_agency.agency_id
        and referral.dispatched_at is not None
    )


def may_oversee(principal: Principal, referral: Referral) -> bool:
    return bool(principal.roles & set(OVERSEERS)) and principal.covers_province(
        referral.spec.province
    )


def visible_to(principal: Principal) -> Callable[[Referral], None]:
    """Agency staff see referrals addressed to their agency; others, their province's."""

    def check(referral: Referral) -> None:
        staff = Role.AGENCY_STAFF in principal.roles and is_recipient(principal, referral)
        if not (staff or may_oversee(principal, referral)):
            raise ReferralNotFoundError(referral.id)

    return check


def addressed_to(principal: Principal) -> Callable[[Referral], None]:
    def check(referral: Referral) -> None:
        if not is_recipient(principal, referral):
            raise ReferralNotFoundError(referral.id)

    return check


def in_province(principal: Principal) -> Callable[[Referral], None]:
    def check(referral: Referral) -> None:
        if not principal.covers_province(referral.spec.province):
            raise ReferralNotFoundError(referral.id)

    return check


def handover_visible_to(principal: Principal) -> Callable[[Handover], None]:
    def check(handover: Handover) -> None:
        party = principal.agency_id in handover.party_ids
        if not (party or principal.covers_province(handover.spec.province)):
            raise HandoverNotFoundError(handover.id)

    return check


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
    ctx = command_context(request, principal, SENDERS, idempotency_key)
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
        scope=case_in_province(principal),
    )


@router.get(
    "/referrals",
    response_model=list[ReferralPublic],
    summary="Referrals you may see: your agency's queue, or your province's",
)
def list_referrals(
    referrals: Referrals,
    principal: CurrentPrincipal,
    case_id: UUID | None = None,
    status: ReferralStatus | None = None,
) -> Any:
    principal.require(Role.AGENCY_STAFF, *OVERSEERS)
    if Role.AGENCY_STAFF in principal.roles and not principal.roles & set(OVERSEERS):
        entries = [
            e
            for e in referrals.index.referrals_where(
                to_agency_id=principal.agency_id, case_id=case_id, status=status
            )
            if e.dispatched
        ]
    else:
        entries = [
            e
            for e in referrals.index.referrals_where(case_id=case_id, status=status)
            if principal.covers_province(e.province)
        ]
    loaded = [referrals.get_referral(e.referral_id) for e in entries]
    return [referral_public(r, as_recipient=is_recipient(principal, r)) for r in loaded]


@router.get("/referrals/{referral_id}", response_model=ReferralPublic, summary="Read a referral")
def read_referral(referral_id: UUID, referrals: Referrals, principal: CurrentPrincipal) -> Any:
    referral = referrals.get_referral(referral_id)
    visible_to(principal)(referral)
    return referral_public(referral, as_recipient=is_recipient(principal, referral))


def _answer_route(action: str) -> None:
    def answer(
        referral_id: UUID,
        body: Answer,
        referrals: Referrals,
        principal: CurrentPrincipal,
        request: Request,
        idempotency_key: IdempotencyKey = None,
    ) -> Any:
        ctx = command_context(request, principal, (Role.AGENCY_STAFF,), idempotency_key)
        text = body.reason or body.outcome or body.note
        return referrals.answer(ctx, referral_id, action, text, scope=addressed_to(principal))

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
    ctx = command_context(request, principal, SENDERS, idempotency_key)
    return referrals.answer(ctx, referral_id, "cancel", body.reason, scope=in_province(principal))


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
    ctx = command_context(request, principal, OVERRIDERS, idempotency_key)
    return referrals.request_override(ctx, referral_id, body.reason, scope=in_province(principal))


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
    ctx = command_context(request, principal, OVERRIDERS, idempotency_key)
    return referrals.approve_override(ctx, referral_id, override_id, scope=in_province(principal))


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
    ctx = command_context(request, principal, HANDOVER_STARTERS, idempotency_key)
    return referrals.start_handover(
        ctx,
        case_id,
        kind=body.kind,
        parties=tuple(NamedParty(p.agency, p.role, p.capacity) for p in body.parties),
        to_case_manager_id=body.to_case_manager_id,
        scope=case_in_province(principal),
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
    entries = [
        e
        for e in referrals.index.handovers.values()
        if (case_id is None or e.case_id == case_id)
        and (not open_only or e.status == "open")
        and (principal.agency_id in e.party_ids or principal.covers_province(e.province))
    ]
    return [handover_public(referrals.get_handover(e.handover_id)) for e in entries]


@router.get("/handovers/{handover_id}", response_model=HandoverPublic, summary="Read a handover")
def read_handover(handover_id: UUID, referrals: Referrals, principal: CurrentPrincipal) -> Any:
    handover = referrals.get_handover(handover_id)
    handover_visible_to(principal)(handover)
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
    ctx = command_context(request, principal, ANYONE, idempotency_key)
    return referrals.confirm_handover(
        ctx, handover_id, principal.agency_id, scope=handover_visible_to(principal)
    )
