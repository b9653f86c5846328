"""The case file, the case manager's list, handovers (confirm, printable minutes) and
consent capture. Every read goes through the services' gated entry points: what the gate
does not permit is not on the page."""

from __future__ import annotations

import uuid
from typing import Annotated, Any
from uuid import UUID

from fastapi import Form, Request
from fastapi.responses import RedirectResponse, Response

from contracts.consent import Recipient
from contracts.vocabulary import AgencyKind
from services.consent import api as consent_api
from services.intake import api as intake_api
from services.projections import api as projections_api
from services.referral import api as referral_api
from services.runtime.auth import Principal
from services.runtime.errors import NotFoundError
from services.web.deps import Csrf, FormText, User, page_router
from services.web.positions import service
from services.web.referrals import referral_choices
from services.web.render import render

router = page_router()


def new_key() -> str:
    """A fresh Idempotency-Key for a form: a double submit or a retry records once."""
    return str(uuid.uuid4())


def case_file(request: Request, principal: Principal, case_id: UUID) -> dict[str, Any]:
    """Everything of a case this principal may see, each part read through its service."""
    case = intake_api.read_case(case_id, service(request, "intake"), principal, request)
    try:
        consent = consent_api.read_record(case_id, service(request, "consent"), principal, request)
    except NotFoundError:
        consent = None  # the consent service has not learnt of the case yet
    referrals = referral_api.list_referrals(
        service(request, "referral"), principal, request, case_id=case_id
    )
    handovers = referral_api.list_handovers(
        service(request, "referral"), principal, case_id=case_id
    )
    try:
        timeline = projections_api.timeline(
            case_id, service(request, "projections"), principal, request
        )
    except NotFoundError:
        timeline = []
    return {
        "case": case,
        "consent": consent,
        "referrals": referrals,
        "handovers": handovers,
        "timeline": list(reversed(timeline)),
    }


@router.get("/cases/{case_id}")
def case_page(case_id: UUID, request: Request, principal: User) -> Response:
    return render(
        request,
        "case.html",
        **case_file(request, principal, case_id),
        **referral_choices(request, principal),
        decision=None,
        key=new_key(),
        kinds=list(AgencyKind),
    )


@router.get("/cases")
def my_cases(request: Request, principal: User) -> Response:
    """The cases the user's agency takes part in: by their handovers and referrals."""
    seen: dict[UUID, list[str]] = {}
    for handover in referral_api.list_handovers(service(request, "referral"), principal):
        seen.setdefault(handover.case_id, []).append("handover")
    for referral in referral_api.list_referrals(service(request, "referral"), principal, request):
        seen.setdefault(referral.case_id, []).append("referral")
    cases = []
    for case_id in seen:
        try:
            cases.append(
                intake_api.read_case(case_id, service(request, "intake"), principal, request)
            )
        except NotFoundError:
            continue
    cases.sort(key=lambda c: c.received_at, reverse=True)
    return render(request, "cases.html", cases=cases)


# -- handovers --------------------------------------------------------------------------------


@router.get("/handovers/{handover_id}")
def handover_page(handover_id: UUID, request: Request, principal: User) -> Response:
    handover = referral_api.read_handover(handover_id, service(request, "referral"), principal)
    mine = next((p for p in handover.parties if p.agency.agency_id == principal.agency_id), None)
    return render(
        request,
        "handover.html",
        handover=handover,
        mine=mine,
        key=new_key(),
        printable=request.query_params.get("print") == "1",
    )


@router.post("/handovers/{handover_id}/confirm")
def confirm_handover(
    handover_id: UUID,
    request: Request,
    principal: User,
    _csrf: Csrf,
    idempotency_key: FormText = None,
) -> Response:
    referral_api.confirm_handover(
        handover_id, service(request, "referral"), principal, request, idempotency_key
    )
    return RedirectResponse(f"/handovers/{handover_id}", status_code=303)


# -- consent capture --------------------------------------------------------------------------


@router.post("/cases/{case_id}/consent/refuse")
def refuse_consent(
    case_id: UUID,
    request: Request,
    principal: User,
    _csrf: Csrf,
    recipient_kind: Annotated[AgencyKind, Form()],
    statement: FormText = None,
    idempotency_key: FormText = None,
) -> Response:
    body = consent_api.RefusalCreate(
        recipients=(Recipient(kind=recipient_kind),), statement=statement or None
    )
    consent_api.refuse(
        case_id, body, service(request, "consent"), principal, request, idempotency_key
    )
    return RedirectResponse(f"/cases/{case_id}#consent", status_code=303)


@router.post("/cases/{case_id}/consent/{grant_id}/withdraw")
def withdraw_consent(
    case_id: UUID,
    grant_id: UUID,
    request: Request,
    principal: User,
    _csrf: Csrf,
    reason: FormText = None,
    idempotency_key: FormText = None,
) -> Response:
    body = consent_api.WithdrawalCreate(reason=reason or None)
    consent_api.withdraw(
        case_id, grant_id, body, service(request, "consent"), principal, request, idempotency_key
    )
    return RedirectResponse(f"/cases/{case_id}#consent", status_code=303)
