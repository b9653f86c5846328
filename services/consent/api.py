"""HTTP routes of the consent service."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from contracts.access_policy import Action, sight
from contracts.consent import (
    Collection,
    ConsentGiver,
    ConsentRefused,
    Recipient,
    Recipients,
)
from contracts.consent_decision import ConsentDecision
from contracts.envelope import AgencyRef
from contracts.vocabulary import (
    CaseStage,
    DataCategories,
    DataCategory,
    Purpose,
    Purposes,
    Role,
)
from services.consent.application import ConsentService
from services.consent.domain import ConsentRecord, ConsentRecordNotFoundError
from services.consent.receipt import receipt, receipt_html, status_of
from services.runtime.access import check, record_read, roles_for
from services.runtime.aggregate import utcnow
from services.runtime.auth import CurrentPrincipal, Principal
from services.runtime.errors import PermissionDeniedError
from services.runtime.http import IdempotencyKey, command_context

RECORDERS = roles_for(Action.RECORD_CONSENT)
WITHDRAWERS = roles_for(Action.WITHDRAW_CONSENT)
# Fields of consent events in the person's own words.
FREE_TEXT = frozenset({"child_views", "statement", "reason"})
# Any agency that hears a withdrawal may record it.


async def consent_service(request: Request) -> ConsentService:
    service: ConsentService = request.app.state.consent
    return service


Consent = Annotated[ConsentService, Depends(consent_service)]
router = APIRouter(prefix="/consent", tags=["consent"])


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GrantCreate(Body):
    categories: DataCategories = Field(min_length=1)
    recipients: Recipients = Field(min_length=1)
    purposes: Purposes = Field(min_length=1)
    valid_from: datetime
    valid_until: datetime
    collection: Collection
    given_by: ConsentGiver
    child_views: str | None = Field(default=None, max_length=4000)


class RefusalCreate(Body):
    recipients: Recipients = Field(min_length=1)
    categories: DataCategories = ()
    purposes: Purposes = ()
    except_purposes: Purposes = ()
    statement: str | None = Field(default=None, max_length=2000)


class WithdrawalCreate(Body):
    reason: str | None = Field(default=None, max_length=2000)


class RenewalCreate(Body):
    valid_until: datetime
    collection: Collection


class LiftingCreate(Body):
    collection: Collection


class DecisionRequest(Body):
    recipient: AgencyRef
    purpose: Purpose
    categories: DataCategories = Field(min_length=1)
    at: datetime | None = None


class ConsentResult(BaseModel):
    case_id: UUID
    version: int
    grant_id: UUID | None = None
    refusal_id: UUID | None = None


class GrantPublic(BaseModel):
    grant_id: UUID
    status: str
    categories: tuple[DataCategory, ...]
    recipients: tuple[Recipient, ...]
    purposes: tuple[Purpose, ...]
    valid_from: datetime
    valid_until: datetime
    given_by: ConsentGiver
    recorded_at: datetime
    withdrawn_at: datetime | None


class RefusalPublic(BaseModel):
    refusal_id: UUID
    in_force: bool
    recipients: tuple[Recipient, ...]
    categories: tuple[DataCategory, ...]
    purposes: tuple[Purpose, ...]
    except_purposes: tuple[Purpose, ...]
    recorded_at: datetime


class SubjectPublic(BaseModel):
    minor: bool | None
    adult_on: str | None
    age_is_estimated: bool
    own_consent_needed: bool = Field(
        description="the person is 18 now and grants a guardian gave no longer count"
    )


class ConsentRecordPublic(BaseModel):
    case_id: UUID
    person_id: UUID
    province: str
    stage: CaseStage
    version: int
    subject: SubjectPublic
    grants: list[GrantPublic]
    refusals: list[RefusalPublic]


class HistoryEntry(BaseModel):
    type: str
    version: int
    at: datetime
    actor: dict[str, Any]
    data: dict[str, Any]


def _public(record: ConsentRecord, at: datetime, *, holder: bool) -> ConsentRecordPublic:
    """The record now; the day the person turns 18 tells their birthday: holders only."""
    state = record.state(at)
    guardian_grants = any(g.given_by.kind.value != "person" for g in record.grants.values())
    return ConsentRecordPublic(
        case_id=record.case_id,
        person_id=record.person_id,
        province=record.province,
        stage=record.stage,
        version=record.version,
        subject=SubjectPublic(
            minor=record.is_minor_at(at),
            adult_on=record.adult_on.isoformat() if record.adult_on and holder else None,
            age_is_estimated=record.age_is_estimated,
            own_consent_needed=guardian_grants and state.own_consent_needed(at),
        ),
        grants=[
            GrantPublic(
                grant_id=g.grant_id,
                status=status_of(record, g.grant_id, at),
                categories=g.categories,
                recipients=g.recipients,
                purposes=g.purposes,
                valid_from=g.valid_from,
                valid_until=record.valid_until(g.grant_id),
                given_by=g.given_by,
                recorded_at=g.timestamp,
                withdrawn_at=(w.timestamp if (w := record.withdrawn.get(g.grant_id)) else None),
            )
            for g in record.grants.values()
        ],
        refusals=[_refusal(r, r.refusal_id not in record.lifted) for r in record.refusals.values()],
    )


def _refusal(refusal: ConsentRefused, in_force: bool) -> RefusalPublic:
    return RefusalPublic(
        refusal_id=refusal.refusal_id,
        in_force=in_force,
        recipients=refusal.recipients,
        categories=refusal.categories,
        purposes=refusal.purposes,
        except_purposes=refusal.except_purposes,
        recorded_at=refusal.timestamp,
    )


def allowed(principal: Principal, action: Action) -> Callable[[ConsentRecord], None]:
    """The access policy's check for ``action`` on a case's consent record."""

    def check_record(record: ConsentRecord) -> None:
        check(principal, record.ties, action, lambda: ConsentRecordNotFoundError(record.case_id))

    return check_record


def recorder_scope(principal: Principal, role: Role) -> Callable[[ConsentRecord], None]:
    """The agencies holding the case; intake officers at the reception stage only."""
    holder = allowed(principal, Action.RECORD_CONSENT)

    def check_record(record: ConsentRecord) -> None:
        holder(record)
        if role is Role.INTAKE_OFFICER and record.stage is not CaseStage.RECEPTION:
            raise PermissionDeniedError(
                "Intake officers record consent at reception; the case manager records it now."
            )

    return check_record


def _read(consent: ConsentService, principal: Principal, case_id: UUID) -> ConsentRecord:
    record = consent.get_record(case_id)
    allowed(principal, Action.SEE_PROGRESS)(record)
    return record


@router.get(
    "/cases/{case_id}",
    response_model=ConsentRecordPublic,
    summary="The consents of a case, and their state now",
)
def read_record(
    case_id: UUID, consent: Consent, principal: CurrentPrincipal, request: Request
) -> Any:
    record = _read(consent, principal, case_id)
    seen = sight(principal.asker, record.ties, (DataCategory.IDENTITY,))
    if record.adult_on is not None:
        record_read(
            request,
            principal,
            seen,
            case_id=case_id,
            what="consent.record",
            person_id=record.person_id,
        )
    return _public(record, utcnow(), holder=bool(seen.categories))


@router.get(
    "/cases/{case_id}/history",
    response_model=list[HistoryEntry],
    summary="Every consent event of a case, oldest first",
)
def read_history(
    case_id: UUID, consent: Consent, principal: CurrentPrincipal, request: Request
) -> Any:
    """The person's own words (a child's views, a refusal's statement, a withdrawal's
    reason) are shown to the agencies holding the case only, and each such read recorded."""
    record = _read(consent, principal, case_id)
    seen = sight(principal.asker, record.ties, (DataCategory.PSYCHOSOCIAL,))
    words = FREE_TEXT if seen.categories else frozenset()
    if any(getattr(e, name, None) for e in record.history for name in FREE_TEXT):
        record_read(
            request,
            principal,
            seen,
            case_id=case_id,
            what="consent.history",
            person_id=record.person_id,
        )
    return [
        HistoryEntry(
            type=e.event_type,
            version=e.originator_version,
            at=e.timestamp,
            actor=e.actor.model_dump(mode="json"),
            data=e.model_dump(
                mode="json",
                exclude={"originator_id", "originator_version", "timestamp", "actor"}
                | (FREE_TEXT - words),
            ),
        )
        for e in record.history
    ]


@router.post(
    "/cases/{case_id}/grants",
    status_code=201,
    response_model=ConsentResult,
    summary="Record a written, informed consent",
)
def grant(
    case_id: UUID,
    body: GrantCreate,
    consent: Consent,
    principal: CurrentPrincipal,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    ctx = command_context(request, principal, RECORDERS, idempotency_key)
    return consent.grant(
        ctx,
        case_id,
        categories=body.categories,
        recipients=body.recipients,
        purposes=body.purposes,
        valid_from=body.valid_from,
        valid_until=body.valid_until,
        collection=body.collection,
        given_by=body.given_by,
        child_views=body.child_views,
        scope=recorder_scope(principal, ctx.actor.role),
    )


@router.post(
    "/cases/{case_id}/refusals",
    status_code=201,
    response_model=ConsentResult,
    summary="Record a refusal that overrides grants",
)
def refuse(
    case_id: UUID,
    body: RefusalCreate,
    consent: Consent,
    principal: CurrentPrincipal,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    ctx = command_context(request, principal, RECORDERS, idempotency_key)
    return consent.refuse(
        ctx,
        case_id,
        recipients=body.recipients,
        categories=body.categories,
        purposes=body.purposes,
        except_purposes=body.except_purposes,
        statement=body.statement,
        scope=recorder_scope(principal, ctx.actor.role),
    )


@router.post(
    "/cases/{case_id}/grants/{grant_id}/withdrawal",
    status_code=201,
    response_model=ConsentResult,
    summary="Record a withdrawal (effective at once)",
)
def withdraw(
    case_id: UUID,
    grant_id: UUID,
    body: WithdrawalCreate,
    consent: Consent,
    principal: CurrentPrincipal,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Any agency that hears the person withdraw may record it, in any province."""
    ctx = command_context(request, principal, WITHDRAWERS, idempotency_key)
    heard_by = (
        AgencyRef(agency_id=principal.agency_id, kind=principal.agency_kind)
        if (principal.agency_kind)
        else None
    )
    if heard_by is None:
        raise PermissionDeniedError("Your token does not name your agency's kind.")
    return consent.withdraw(ctx, case_id, grant_id, heard_by=heard_by, reason=body.reason)


@router.post(
    "/cases/{case_id}/grants/{grant_id}/renewal",
    status_code=201,
    response_model=ConsentResult,
    summary="Extend a grant's period",
)
def renew(
    case_id: UUID,
    grant_id: UUID,
    body: RenewalCreate,
    consent: Consent,
    principal: CurrentPrincipal,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    ctx = command_context(request, principal, RECORDERS, idempotency_key)
    return consent.renew(
        ctx,
        case_id,
        grant_id,
        valid_until=body.valid_until,
        collection=body.collection,
        scope=recorder_scope(principal, ctx.actor.role),
    )


@router.post(
    "/cases/{case_id}/refusals/{refusal_id}/lifting",
    status_code=201,
    response_model=ConsentResult,
    summary="Lift a refusal",
)
def lift_refusal(
    case_id: UUID,
    refusal_id: UUID,
    body: LiftingCreate,
    consent: Consent,
    principal: CurrentPrincipal,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    ctx = command_context(request, principal, RECORDERS, idempotency_key)
    return consent.lift_refusal(
        ctx,
        case_id,
        refusal_id,
        collection=body.collection,
        scope=recorder_scope(principal, ctx.actor.role),
    )


@router.post(
    "/cases/{case_id}/decisions",
    response_model=ConsentDecision,
    summary="May these categories go to this agency for this purpose?",
)
def decide(
    case_id: UUID, body: DecisionRequest, consent: Consent, principal: CurrentPrincipal
) -> Any:
    return consent.decide(
        case_id,
        recipient=body.recipient,
        purpose=body.purpose,
        categories=body.categories,
        at=body.at,
        scope=allowed(principal, Action.SEE_PROGRESS),
    )


@router.get("/cases/{case_id}/grants/{grant_id}/receipt", summary="A grant's consent receipt")
def read_receipt(
    case_id: UUID, grant_id: UUID, consent: Consent, principal: CurrentPrincipal
) -> dict[str, Any]:
    return receipt(_read(consent, principal, case_id), grant_id, utcnow())


@router.get(
    "/cases/{case_id}/grants/{grant_id}/receipt.html",
    response_class=HTMLResponse,
    summary="A grant's consent receipt as a printable page",
)
def read_receipt_page(
    case_id: UUID, grant_id: UUID, consent: Consent, principal: CurrentPrincipal
) -> HTMLResponse:
    data = receipt(_read(consent, principal, case_id), grant_id, utcnow())
    return HTMLResponse(receipt_html(data))
