"""Break-glass: the emergency override of a referral waiting on consent, for the person's
vital interest. One person asks, with the reason and how long it is needed; a second person,
in another role, approves; someone in a third role reviews it afterwards, or it lapses at the
end it was asked for. The referral service keeps every rule; these pages ask its routes and
mark the override as exceptional wherever it shows."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import Form, Request
from fastapi.responses import Response

from services.referral import api as referral_api
from services.web.deps import Csrf, FormText, User, page_router
from services.web.i18n import N_
from services.web.loop import MESSAGES, step
from services.web.positions import service
from services.web.render import render

router = page_router()
OVERRIDE_MESSAGES = {
    **MESSAGES,
    "reason": N_(
        "Say why the person's vital interest cannot wait for their consent (10 characters or more)."
    ),
    "needed_for_hours": N_("Say how long it is needed: 1 to 72 hours."),
    "note": N_("Say what the review found (10 characters or more)."),
    "conclusion": N_("Choose whether the override was justified."),
    "forbidden": N_(
        "An emergency override is approved by another person in another role than the one "
        "who asked, and reviewed by someone in a third role."
    ),
}
Hours = Annotated[str | None, Form()]


@router.get("/overrides")
def overrides_page(request: Request, principal: User) -> Response:
    """The referrals with an emergency override the user may see: waiting for approval or
    for review first."""
    referrals = referral_api.list_referrals(service(request, "referral"), principal, request)
    with_overrides = [r for r in referrals if r.overrides]

    def waiting(referral: referral_api.ReferralPublic) -> bool:
        return any(o.approved_at is None or o.reviewed_at is None for o in referral.overrides)

    with_overrides.sort(key=lambda r: (not waiting(r), -r.overrides[-1].requested_at.timestamp()))
    return render(request, "overrides.html", referrals=with_overrides)


@router.post("/referrals/{referral_id}/overrides")
def request_override(
    referral_id: UUID,
    request: Request,
    principal: User,
    _csrf: Csrf,
    reason: FormText = None,
    needed_for_hours: Hours = None,
    idempotency_key: FormText = None,
) -> Response:
    def call() -> object:
        hours = {"needed_for_hours": needed_for_hours} if needed_for_hours else {}
        body = referral_api.OverrideCreate.model_validate(
            {"reason": (reason or "").strip(), **hours}
        )
        return referral_api.request_override(
            referral_id, body, service(request, "referral"), principal, request, idempotency_key
        )

    values = {"reason": reason, "needed_for_hours": needed_for_hours}
    form = "override"
    return step(
        request, principal, referral_id, form, idempotency_key, values, call, OVERRIDE_MESSAGES
    )


@router.post("/referrals/{referral_id}/overrides/{override_id}/approval")
def approve_override(
    referral_id: UUID,
    override_id: UUID,
    request: Request,
    principal: User,
    _csrf: Csrf,
    idempotency_key: FormText = None,
) -> Response:
    def call() -> object:
        referrals = service(request, "referral")
        return referral_api.approve_override(
            referral_id, override_id, referrals, principal, request, idempotency_key
        )

    form = f"approve-{override_id}"
    return step(request, principal, referral_id, form, idempotency_key, {}, call, OVERRIDE_MESSAGES)


@router.post("/referrals/{referral_id}/overrides/{override_id}/review")
def review_override(
    referral_id: UUID,
    override_id: UUID,
    request: Request,
    principal: User,
    _csrf: Csrf,
    conclusion: FormText = None,
    note: FormText = None,
    idempotency_key: FormText = None,
) -> Response:
    def call() -> object:
        body = referral_api.OverrideReview.model_validate(
            {"conclusion": conclusion, "note": (note or "").strip()}
        )
        return referral_api.review_override(
            referral_id,
            override_id,
            body,
            service(request, "referral"),
            principal,
            request,
            idempotency_key,
        )

    form = f"review-{override_id}"
    values = {"conclusion": conclusion, "note": note}
    return step(
        request, principal, referral_id, form, idempotency_key, values, call, OVERRIDE_MESSAGES
    )
