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
from contracts.referral import PartyRole
from contracts.vocabulary import AgencyKind, ClosureReason, ReopeningReason
from services.consent import api as consent_api
from services.intake import api as intake_api
from services.intake import plan_api
from services.intake.domain import REOPENING_STAGES, STAGE_TRANSITIONS
from services.projections import api as projections_api
from services.referral import api as referral_api
from services.runtime.auth import Principal
from services.runtime.errors import NotFoundError, PermissionDeniedError
from services.web.deps import Csrf, FormText, User, page_router
from services.web.forms import Failure, gate
from services.web.positions import service
from services.web.referrals import referral_choices
from services.web.render import render

router = page_router()


# Where the timeline's case-work events are told in full (for those who may read them).
_INTAKE = "org.ketnoi.intake."
TIMELINE_LINKS: dict[str, str] = {
    **{
        _INTAKE + name: f"assessments#{anchor}"
        for name, anchor in (
            ("medical_examination_recorded", "medical"),
            ("psychosocial_assessed", "psychosocial"),
            ("family_situation_assessed", "family"),
            ("legal_needs_assessed", "legal"),
            ("education_livelihood_assessed", "livelihood"),
            ("exploitation_recorded", "exploitation"),
            ("identification_recorded", "identification"),
        )
    },
    **{
        _INTAKE + name: f"plan#{anchor}"
        for name, anchor in (
            ("reintegration_plan_revised", "history"),
            ("reintegration_plan_agreed", "history"),
            ("plan_task_progressed", "tasks"),
            ("reintegration_measured", "measures"),
            ("exit_planned", "exit"),
            ("case_conference_held", "conferences"),
        )
    },
    _INTAKE + "contact_logged": "contacts#contacts",
    _INTAKE + "case_note_written": "contacts#notes",
    _INTAKE + "service_declined": "contacts#choices",
    _INTAKE + "case_reviewed": "reviews#reviews",
}


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
    return show_case(request, principal, case_id)


def show_case(
    request: Request, principal: Principal, case_id: UUID, failure: Failure | None = None
) -> Response:
    """The case file; with ``failure``, its refused stage, closure or reopening form again."""
    found = case_file(request, principal, case_id)
    case = found["case"]
    plan = plan_api.read_plan(case_id, service(request, "intake"), principal, request)
    return render(
        request,
        "case.html",
        422 if failure else 200,
        **found,
        **referral_choices(request, principal),
        plan=plan,
        may=gate(principal, case),
        failed=failure,
        timeline_links=TIMELINE_LINKS,
        next_stages=list(STAGE_TRANSITIONS.get(case.stage, ())),
        closure_reasons=list(ClosureReason),
        reopening_reasons=list(ReopeningReason),
        reopening_stages=list(REOPENING_STAGES),
        decision=None,
        key=new_key(),
        kinds=list(AgencyKind),
    )


@router.get("/cases")
def my_cases(request: Request, principal: User) -> Response:
    """The cases the user's agency holds (the projections' list, as the access policy counts
    holding), then those it takes part in by its handovers and referrals. Each case is read
    through intake's gated read, which records the read of the person's details it shows."""
    projections = service(request, "projections")
    try:
        held = projections_api.agency_cases(principal.agency_id, projections, principal)
    except PermissionDeniedError:
        held = []  # a role that follows no case
    held_ids = [UUID(c["case_id"]) for c in held]
    others: dict[UUID, None] = {}
    for handover in referral_api.list_handovers(service(request, "referral"), principal):
        others.setdefault(handover.case_id)
    for referral in referral_api.list_referrals(service(request, "referral"), principal, request):
        others.setdefault(referral.case_id)
    return render(
        request,
        "cases.html",
        held=_read_cases(request, principal, held_ids),
        cases=_read_cases(request, principal, [c for c in others if c not in set(held_ids)]),
    )


def _read_cases(request: Request, principal: Principal, case_ids: list[UUID]) -> list[Any]:
    """Each case as intake lets this principal read it, newest first (one gone: left out)."""
    cases = []
    for case_id in case_ids:
        try:
            cases.append(
                intake_api.read_case(case_id, service(request, "intake"), principal, request)
            )
        except NotFoundError:
            continue
    cases.sort(key=lambda c: c.received_at, reverse=True)
    return cases


# -- handovers --------------------------------------------------------------------------------


@router.get("/handovers/{handover_id}")
def handover_page(handover_id: UUID, request: Request, principal: User) -> Response:
    handover = referral_api.read_handover(handover_id, service(request, "referral"), principal)
    mine = next((p for p in handover.parties if p.agency.agency_id == principal.agency_id), None)
    # A completed case transfer: the agency taking over, whose case manager it named.
    taking_over = next((p for p in handover.parties if p.role == PartyRole.TO), None)
    return render(
        request,
        "handover.html",
        handover=handover,
        mine=mine,
        taking_over=taking_over,
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
