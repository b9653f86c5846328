"""The case work on pages of the case file: contacts with the person and case notes, the
follow-up after the exit, the supervisor's reviews, and the case's stage, closure and
reopening; and what every case-work page shares (``page``). Each page reads the case through
the intake service's gated read (recorded in the read audit); each form sends one command
through the service's own route, and is shown only to whom the access policy lets send it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from contracts.vocabulary import (
    ClosureReason,
    ContactMode,
    DataCategory,
    DeclineKind,
    ReopeningReason,
    ReviewDecision,
    ServiceType,
)
from services.intake import api as intake_api
from services.intake import casework_api, plan_api
from services.intake.domain import REOPENING_STAGES
from services.projections import api as projections_api
from services.projections.followups import FollowUp, schedule
from services.runtime.auth import Principal
from services.runtime.errors import NotFoundError
from services.web import cases
from services.web.cases import new_key
from services.web.deps import Csrf, User, page_router
from services.web.forms import Failure, Form, Posted, attempt, gate
from services.web.i18n import N_, TIME_ZONE
from services.web.positions import service
from services.web.render import render

router = page_router()

CHOICES: dict[str, Any] = {
    "modes": list(ContactMode),
    "note_categories": list(DataCategory),
    "services": list(ServiceType),
    "decline_kinds": list(DeclineKind),
    "decisions": list(ReviewDecision),
    "closure_reasons": list(ClosureReason),
    "reopening_reasons": list(ReopeningReason),
    "reopening_stages": list(REOPENING_STAGES),
}


def now_local() -> str:
    """Now, as a ``datetime-local`` field shows it."""
    return datetime.now(TIME_ZONE).strftime("%Y-%m-%dT%H:%M")


def read_case(request: Request, principal: Principal, case_id: UUID) -> Any:
    return intake_api.read_case(case_id, service(request, "intake"), principal, request)


def page(
    request: Request,
    principal: Principal,
    case_id: UUID,
    template: str,
    failure: Failure | None = None,
    case: Any = None,
    **extra: Any,
) -> Response:
    """A case-work page; with ``failure``, the refused form again, with its errors."""
    case = case or read_case(request, principal, case_id)
    return render(
        request,
        template,
        422 if failure else 200,
        case=case,
        may=gate(principal, case),
        key=new_key(),
        now=now_local(),
        failed=failure,
        **CHOICES,
        **extra,
    )


def recorded(
    form: str,
    posted: Posted,
    messages: Mapping[str, str],
    send: Callable[[], object],
    *,
    where: str,
    again: Callable[[Failure], Response],
    rules: Mapping[str, str] | None = None,
) -> Response:
    """Send one form's command (``forms.attempt``): once recorded, back to ``where`` on its
    page (a path); else ``again``, the page again with the form's errors beside it and what
    was typed kept. Every case-work form ends here."""
    failure = attempt(form, posted, messages, send, rules)
    if failure is None:
        return RedirectResponse(where, status_code=303)
    return again(failure)


def key(posted: Posted) -> str | None:
    return posted.text("idempotency_key")


# -- contacts and notes ---------------------------------------------------------------------


@router.get("/cases/{case_id}/contacts")
def contacts(case_id: UUID, request: Request, principal: User) -> Response:
    return contacts_page(request, principal, case_id)


def contacts_page(
    request: Request, principal: Principal, case_id: UUID, failure: Failure | None = None
) -> Response:
    case = read_case(request, principal, case_id)
    plan = plan_api.read_plan(case_id, service(request, "intake"), principal, request)
    due = follow_ups(case, plan)
    return page(
        request, principal, case_id, "contacts.html", failure, case, plan=plan, follow_ups=due
    )


def follow_ups(case: Any, plan: Any) -> list[FollowUp]:
    """The follow-up contacts due after the exit (the exit plan's schedule from the
    closure), each made, due, missed or upcoming by the contacts logged."""
    exit_plan = plan.exit_plan
    closed_at = case.episodes[-1].closed_at if case.episodes else None
    if exit_plan is None or closed_at is None or case.contacts is None:
        return []
    return schedule(
        closed_at,
        exit_plan.follow_up_every_days,
        exit_plan.follow_up_until,
        [c.occurred_at for c in case.contacts],
        datetime.now(UTC),
    )


CONTACT = {
    "mode": N_("Choose how the contact was made."),
    "occurred_at": N_("Give the date and time of the contact (not in the future)."),
    "place": N_("Keep the place under 1000 characters."),
    "note": N_("Keep the note under 4000 characters."),
    "reason": N_(
        "A reason is asked only when the person refused this way of contact: leave it empty."
    ),
}
CONTACT_RULES = {
    "_": N_(
        "The person refused this way of contact: give the reason it could not be avoided, or "
        "contact them as they prefer."
    )
}


@router.post("/cases/{case_id}/contacts")
def log_contact(
    case_id: UUID, request: Request, principal: User, _csrf: Csrf, posted: Form
) -> Response:
    """A contact in a mode the person refused needs the reason, and is flagged."""

    def send() -> object:
        body = casework_api.ContactCreate.model_validate(
            {
                "mode": posted.text("mode") or "",
                "occurred_at": posted.moment("occurred_at"),
                "place": posted.text("place"),
                "note": posted.text("note"),
                "reason": posted.text("reason"),
            }
        )
        return casework_api.log_contact(
            case_id, body, service(request, "intake"), principal, request, key(posted)
        )

    return recorded(
        "contact",
        posted,
        CONTACT,
        send,
        where=f"/cases/{case_id}/contacts#contacts",
        again=lambda failure: contacts_page(request, principal, case_id, failure),
        rules=CONTACT_RULES,
    )


NOTE = {
    "about": N_("Choose what the note is about: it decides who may read it."),
    "text": N_("Write the note (under 4000 characters)."),
}


@router.post("/cases/{case_id}/notes")
def write_note(
    case_id: UUID, request: Request, principal: User, _csrf: Csrf, posted: Form
) -> Response:
    def send() -> object:
        body = casework_api.NoteCreate.model_validate(
            {"about": posted.text("about") or "", "text": posted.text("text") or ""}
        )
        return casework_api.write_note(
            case_id, body, service(request, "intake"), principal, request, key(posted)
        )

    return recorded(
        "note",
        posted,
        NOTE,
        send,
        where=f"/cases/{case_id}/contacts#notes",
        again=lambda failure: contacts_page(request, principal, case_id, failure),
    )


DECLINED = {
    "service_type": N_("Choose the service the person refused or dropped."),
    "choice": N_("Say whether the person refused the service or dropped it."),
    "in_their_words": N_("Keep the person's words under 1000 characters."),
    "how_to_come_back": N_(
        "Write what the person was told about coming back to the service: whom to call."
    ),
}


@router.post("/cases/{case_id}/declined-services")
def record_declined(
    case_id: UUID, request: Request, principal: User, _csrf: Csrf, posted: Form
) -> Response:
    """A service refused or dropped: the person's choice, never a condition for another
    one, recorded with what they were told about coming back."""

    def send() -> object:
        body = casework_api.DeclinedCreate.model_validate(
            {
                "service_type": posted.text("service_type") or "",
                "choice": posted.text("choice") or "",
                "in_their_words": posted.text("in_their_words"),
                "how_to_come_back": posted.text("how_to_come_back") or "",
            }
        )
        return casework_api.record_declined(
            case_id, body, service(request, "intake"), principal, request, key(posted)
        )

    return recorded(
        "declined",
        posted,
        DECLINED,
        send,
        where=f"/cases/{case_id}/contacts#choices",
        again=lambda failure: contacts_page(request, principal, case_id, failure),
    )


# -- reviews --------------------------------------------------------------------------------


@router.get("/cases/{case_id}/reviews")
def reviews(case_id: UUID, request: Request, principal: User) -> Response:
    return page(request, principal, case_id, "reviews.html")


REVIEW = {
    "findings": N_("Write what the review found (under 4000 characters)."),
    "decisions": N_("Tick at least one decision."),
}
REVIEW_RULES = {"_": N_("A case is reviewed by a supervisor other than its case manager.")}


@router.post("/cases/{case_id}/reviews")
def sign_review(
    case_id: UUID, request: Request, principal: User, _csrf: Csrf, posted: Form
) -> Response:
    """The supervisor's review, signed off: the next one falls due by the case's stage."""

    def send() -> object:
        body = casework_api.ReviewCreate.model_validate(
            {"findings": posted.text("findings") or "", "decisions": tuple(posted.all("decisions"))}
        )
        return casework_api.review_case(
            case_id, body, service(request, "intake"), principal, request, key(posted)
        )

    return recorded(
        "review",
        posted,
        REVIEW,
        send,
        where=f"/cases/{case_id}/reviews#reviews",
        again=lambda failure: page(request, principal, case_id, "reviews.html", failure),
        rules=REVIEW_RULES,
    )


# -- the case file for a newcomer ----------------------------------------------------------


@router.get("/cases/{case_id}/overview")
def overview(case_id: UUID, request: Request, principal: User) -> Response:
    """The case file in the order a newcomer taking the case over reads it (the projections'
    case file): the person, the consent in force, the plan with its open tasks and their
    referrals, the open referrals, the risks, then the whole history."""
    try:
        told = projections_api.case_file(
            case_id, service(request, "projections"), principal, request
        )
    except NotFoundError:
        told = None  # the projections have not learnt of the case yet
    return page(request, principal, case_id, "overview.html", file=told)


# -- the stage, closure and reopening -------------------------------------------------------


STAGE = {
    "to_stage": N_("Choose the stage the case moves to."),
    "reason": N_("Keep the reason under 1000 characters."),
}
CLOSURE = {
    "reason": N_("Choose why the case closes."),
    "feedback": N_("Keep the person's feedback under 4000 characters."),
    "satisfaction": N_("Choose how satisfied the person was, from 1 to 5."),
}
REOPENING = {
    "reason": N_("Choose why the case reopens."),
    "to_stage": N_("Choose the stage the case reopens in."),
    "note": N_("Keep the note under 1000 characters."),
}


def case_file_again(
    request: Request, principal: Principal, case_id: UUID, failure: Failure
) -> Response:
    return cases.show_case(request, principal, case_id, failure)


@router.post("/cases/{case_id}/stage")
def change_stage(
    case_id: UUID, request: Request, principal: User, _csrf: Csrf, posted: Form
) -> Response:
    def send() -> object:
        body = intake_api.StageChange.model_validate(
            {"to_stage": posted.text("to_stage") or "", "reason": posted.text("reason")}
        )
        return intake_api.change_stage(
            case_id, body, service(request, "intake"), principal, request, key(posted)
        )

    return recorded(
        "stage",
        posted,
        STAGE,
        send,
        where=f"/cases/{case_id}#stage",
        again=lambda failure: case_file_again(request, principal, case_id, failure),
    )


@router.post("/cases/{case_id}/closure")
def close_case(
    case_id: UUID, request: Request, principal: User, _csrf: Csrf, posted: Form
) -> Response:
    def send() -> object:
        body = intake_api.ClosureCreate.model_validate(
            {
                "reason": posted.text("reason") or "",
                "feedback": posted.text("feedback"),
                "satisfaction": posted.number("satisfaction"),
            }
        )
        return intake_api.close_case(
            case_id, body, service(request, "intake"), principal, request, key(posted)
        )

    return recorded(
        "closure",
        posted,
        CLOSURE,
        send,
        where=f"/cases/{case_id}#stage",
        again=lambda failure: case_file_again(request, principal, case_id, failure),
    )


@router.post("/cases/{case_id}/reopening")
def reopen_case(
    case_id: UUID, request: Request, principal: User, _csrf: Csrf, posted: Form
) -> Response:
    def send() -> object:
        body = intake_api.ReopeningCreate.model_validate(
            {
                "reason": posted.text("reason") or "",
                "to_stage": posted.text("to_stage") or "",
                "note": posted.text("note"),
            }
        )
        return intake_api.reopen_case(
            case_id, body, service(request, "intake"), principal, request, key(posted)
        )

    return recorded(
        "reopening",
        posted,
        REOPENING,
        send,
        where=f"/cases/{case_id}#stage",
        again=lambda failure: case_file_again(request, principal, case_id, failure),
    )
