"""A referral's own page and the closed loop on it: the recipient acknowledges, accepts or
rejects, starts, reports progress and completes with an outcome (delivered in full, in part,
or not, and why); the sender records the person's own feedback on the service. Every step
calls the referral service's route for it; a step refused comes back on the same page, next
to its form, with what was typed kept."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any
from uuid import UUID

from fastapi import Form, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.routing import APIRoute

from contracts.referral import OverrideConclusion, ServiceDelivery
from services.referral import api as referral_api
from services.referral.domain import RECIPIENT_ANSWERS
from services.runtime.auth import Principal
from services.web.cases import new_key
from services.web.deps import Csrf, FormText, User, page_router
from services.web.forms import FORM_FAILURES, Failure, refusal
from services.web.i18n import N_
from services.web.positions import service
from services.web.render import render

router = page_router()
ANSWER_ROUTES: dict[str, Any] = {
    route.path.rsplit("/", 1)[1]: route.endpoint
    for route in referral_api.router.routes
    if isinstance(route, APIRoute)
    and route.path.startswith("/referral/referrals/{referral_id}/")
    and route.path.rsplit("/", 1)[1] in RECIPIENT_ANSWERS
}
# What each form's fields must hold, said where the service names the field.
MESSAGES = {
    "reason": N_("Give the reason."),
    "outcome": N_("Say what the outcome of the service was."),
    "why": N_("Say why the service was not delivered in full."),
    "delivery": N_("Choose how much of the service was delivered."),
    "note": N_("Write what happened, in a few words."),
    "satisfaction": N_("Choose the person's own rating, from 1 to 5."),
    "comment": N_("Check the comment: at most 2,000 characters."),
}
ONGOING = ("accepted", "in-progress")  # progress is reported while the service goes on
SERVED = ("in-progress", "completed", "failed")  # the person can say how it went


def referral_view(
    request: Request,
    principal: Principal,
    referral_id: UUID,
    error: Failure | None = None,
    key: str | None = None,
) -> Response:
    """The referral as the service shows it to ``principal``; with ``error``, the form that
    failed is shown again with its message, at the error's status."""
    referral = referral_api.read_referral(
        referral_id, service(request, "referral"), principal, request
    )
    recipient = principal.agency_id == referral.to_agency.agency_id
    answers = [a for a in referral.next_steps if a in RECIPIENT_ANSWERS] if recipient else []
    return render(
        request,
        "referral.html",
        error.status if error else 200,
        referral=referral,
        answers=answers,
        recipient=recipient,
        sender=principal.agency_id == referral.from_agency.agency_id,
        ongoing=ONGOING,
        served=SERVED,
        deliveries=list(ServiceDelivery),
        conclusions=list(OverrideConclusion),
        error=error,
        values=error.values if error else {},
        key=key or new_key(),
    )


@router.get("/referrals/{referral_id}")
def referral_page(referral_id: UUID, request: Request, principal: User) -> Response:
    return referral_view(request, principal, referral_id)


def step(
    request: Request,
    principal: Principal,
    referral_id: UUID,
    form: str,
    key: str | None,
    values: dict[str, Any],
    call: Callable[[], object],
    messages: dict[str, str] = MESSAGES,
) -> Response:
    """Do one step of the loop, then back to the referral; a refused step is shown again on
    its form (the same Idempotency-Key, so a retry still records once)."""
    try:
        call()
    except FORM_FAILURES as exc:
        error = refusal(form, exc, messages, values)
        # Each form's key is the page's key and the form's name: the page's is kept.
        page_key = key.split(":", 1)[0] if key else None
        return referral_view(request, principal, referral_id, error, page_key)
    return RedirectResponse(f"/referrals/{referral_id}", status_code=303)


@router.post("/referrals/{referral_id}/progress")
def report_progress(
    referral_id: UUID,
    request: Request,
    principal: User,
    _csrf: Csrf,
    note: FormText = None,
    idempotency_key: FormText = None,
) -> Response:
    """The recipient says how the service goes (weeks or months of treatment)."""

    def call() -> object:
        body = referral_api.ProgressReport(note=(note or "").strip())
        return referral_api.report_progress(
            referral_id, body, service(request, "referral"), principal, request, idempotency_key
        )

    values = {"note": note}
    return step(request, principal, referral_id, "progress", idempotency_key, values, call)


@router.post("/referrals/{referral_id}/feedback")
def record_feedback(
    referral_id: UUID,
    request: Request,
    principal: User,
    _csrf: Csrf,
    satisfaction: FormText = None,
    comment: FormText = None,
    idempotency_key: FormText = None,
) -> Response:
    """The person's own feedback on the service, as the sender's case manager heard it."""

    def call() -> object:
        body = referral_api.FeedbackCreate.model_validate(
            {"satisfaction": satisfaction, "comment": (comment or "").strip() or None}
        )
        return referral_api.record_feedback(
            referral_id, body, service(request, "referral"), principal, request, idempotency_key
        )

    values = {"satisfaction": satisfaction, "comment": comment}
    return step(request, principal, referral_id, "feedback", idempotency_key, values, call)


@router.post("/referrals/{referral_id}/{action}")
def answer_referral(
    referral_id: UUID,
    action: str,
    request: Request,
    principal: User,
    _csrf: Csrf,
    text: FormText = None,
    delivery: Annotated[str | None, Form()] = None,
    why: FormText = None,
    idempotency_key: FormText = None,
) -> Response:
    """The recipient's answer: acknowledge, accept, reject (with a reason), start, complete
    (with an outcome and how much was delivered), or could not deliver (with a reason)."""
    if action not in RECIPIENT_ANSWERS:
        return render(request, "error.html", 404, status=404, slug="not-found")
    text = (text or "").strip() or None
    closing = action in ("reject", "fail")

    def call() -> object:
        answer = referral_api.Answer.model_validate(
            {
                "reason": text if closing else None,
                "outcome": text if action == "complete" else None,
                "note": text if not closing and action != "complete" else None,
                "delivery": delivery if action == "complete" else None,
                "why": (why or "").strip() or None if action == "complete" else None,
            }
        )
        # The referral service makes one route per answer; the page calls that same route.
        route = ANSWER_ROUTES[action]
        return route(
            referral_id, answer, service(request, "referral"), principal, request, idempotency_key
        )

    values = {"text": text, "delivery": delivery, "why": why}
    return step(request, principal, referral_id, action, idempotency_key, values, call)
