"""The referral form on a page of its own: for the person, for a task of the plan (preset
to the task's agency and service), or for a member of the person's family on their own
consent, apart from the person's. Before sending, the page shows which of the person's data
would be released to the chosen agency and which withheld (``referrals.preview_referral``);
the referral is sent through the referral service's route."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from contracts.consent import CollectionMethod
from contracts.referral import Urgency
from contracts.vocabulary import Purpose
from services.intake import plan_api
from services.intake.plan import TASK_STEPS
from services.referral import api as referral_api
from services.runtime.auth import Principal
from services.web import casework
from services.web.deps import Csrf, User, page_router
from services.web.forms import Failure, Form, Posted, attempt
from services.web.i18n import N_
from services.web.positions import service
from services.web.referrals import referral_choices

router = page_router()


REFERRAL = {
    "to_agency": N_("Choose the agency: for a task of the plan, the agency responsible for it."),
    "service_type": N_("Choose the service: for a task of the plan, the service it asks for."),
    "purpose": N_("Choose the purpose of the referral."),
    "urgency": N_("Choose how urgent the referral is."),
    "categories": N_(
        "Tick at least one kind of the person's information to send (a family member's "
        "referral may need none)."
    ),
    "note": N_("Keep the note under 2000 characters."),
    "plan_task_id": N_("This task is not a task of the case's plan."),
    "family_member": N_(
        "Give the family member's name, how they are related to the person, their age, and "
        "their own consent: who gave it and when, with the form's reference for a written "
        "consent or the witness for a verbal one. A family member under 18 is consented for "
        "by their guardian."
    ),
}
REFERRAL_RULES = {"_": N_("This task of the plan is finished: it takes no new referral.")}


def family_member(posted: Posted) -> dict[str, Any] | None:
    """The family member the referral is for (None when it is for the person): their
    details and their own consent, apart from the person's."""
    if posted.text("for_whom") != "family":
        return None
    method = posted.text("family_method")
    return {
        "full_name": posted.text("family_name") or "",
        "relationship": posted.text("family_relationship") or "",
        "age": posted.number("family_age", required=True),
        "consent": {
            "given_by": posted.text("family_given_by") or "",
            "given_on": posted.day("family_given_on", required=True),
            "collection": {
                "method": method or "",
                "form_reference": posted.text("family_form_reference")
                if method == CollectionMethod.WRITTEN_FORM
                else None,
                "witness_user_id": posted.text("family_witness")
                if method == CollectionMethod.VERBAL_WITH_WITNESS
                else None,
                "language": "vi",
                "withdrawal_explained": posted.text("family_withdrawal_explained") == "yes",
            },
        },
    }


def plan_task(request: Request, principal: Principal, case_id: UUID, task_id: UUID) -> Any:
    """The open task of the case's plan that ``task_id`` names (None when there is none):
    open while it has steps left."""
    plan = plan_api.read_plan(case_id, service(request, "intake"), principal, request)
    return next((t for t in plan.tasks if t.task_id == task_id and TASK_STEPS[t.status]), None)


def referral_form_page(
    request: Request,
    principal: Principal,
    case_id: UUID,
    task_id: UUID | None,
    failure: Failure | None = None,
) -> Response:
    task = plan_task(request, principal, case_id, task_id) if task_id else None
    return casework.page(
        request,
        principal,
        case_id,
        "refer.html",
        failure,
        task=task,
        decision=None,  # the preview, until the information to send is chosen
        # The case-work pages' own choices name the services already.
        **{k: v for k, v in referral_choices(request, principal).items() if k != "services"},
    )


@router.get("/cases/{case_id}/referrals/new")
def new_referral(
    case_id: UUID, request: Request, principal: User, task: UUID | None = None
) -> Response:
    """The referral form on a page of its own; for a task of the plan (``task``), preset
    to the task's agency and service."""
    return referral_form_page(request, principal, case_id, task)


@router.post("/cases/{case_id}/referrals")
def send_referral(
    case_id: UUID, request: Request, principal: User, _csrf: Csrf, posted: Form
) -> Response:
    """Sent at once where the consent in force allows every category; otherwise it waits
    as a draft, blocked by consent (the referral's page says which and why). For a task of
    the plan, or for a member of the person's family on their own consent."""
    created: dict[str, Any] = {}

    def send() -> object:
        body = referral_api.ReferralCreate.model_validate(
            {
                "to_agency": posted.text("to_agency") or "",
                "service_type": posted.text("service_type") or "",
                "urgency": posted.text("urgency") or Urgency.ROUTINE,
                "purpose": posted.text("purpose") or Purpose.SERVICE_PROVISION,
                "categories": posted.all("categories"),
                "note": posted.text("note"),
                "plan_task_id": posted.text("plan_task_id"),
                "family_member": family_member(posted),
            }
        )
        created.update(
            referral_api.create_referral(
                case_id,
                body,
                service(request, "referral"),
                principal,
                request.app.state.agencies,
                request,
                casework.key(posted),
            )
        )
        return created

    failure = attempt("referral", posted, REFERRAL, send, REFERRAL_RULES)
    if failure is None:
        return RedirectResponse(f"/referrals/{created['referral_id']}", status_code=303)
    task = posted.text("plan_task_id")
    try:
        task_id = UUID(task) if task else None
    except ValueError:
        task_id = None
    return referral_form_page(request, principal, case_id, task_id, failure)
