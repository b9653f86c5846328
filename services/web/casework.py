"""The case manager's case work, on pages of the case file: the comprehensive assessments
(the medical examination by a health worker), exploitation and identification, contacts with
the person and case notes, the supervisor's reviews, and the case's stage, closure and
reopening. Each page reads the case through the intake service's gated read (recorded in the
read audit); each form sends one command through the service's own route."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from contracts.casework import (
    EducationLivelihood,
    Exploitation,
    FamilySituation,
    LegalNeedsAssessment,
    MedicalExamination,
    PsychosocialAssessment,
)
from contracts.vocabulary import (
    AgencyKind,
    CaseStage,
    ClosureReason,
    ContactMode,
    DataCategory,
    EducationLevel,
    ExploitationType,
    IdentificationStatus,
    LegalNeed,
    LivelihoodStatus,
    MeansOfControl,
    MentalState,
    ReopeningReason,
    ReturnSafety,
    ReviewDecision,
)
from services.intake import api as intake_api
from services.intake import casework_api, plan_api
from services.intake.domain import REOPENING_STAGES, STAGE_TRANSITIONS
from services.projections.followups import FollowUp, schedule
from services.runtime.auth import Principal
from services.web import cases
from services.web.cases import new_key
from services.web.deps import Csrf, User, page_router
from services.web.forms import Failure, Form, Posted, attempt, gate
from services.web.i18n import N_, TIME_ZONE
from services.web.referrals import recipients
from services.web.render import render

router = page_router()

# Countries of exploitation offered first (the region's routes, CTDC's CountryOfExploitation);
# their names come from the locale's own data.
COUNTRIES = ("CN", "KH", "LA", "TH", "MY", "MM", "TW", "KR", "JP", "RU", "GB", "DE")
# Who decides whether a person is a victim of trafficking.
AUTHORITIES = (AgencyKind.POLICE, AgencyKind.BORDER_GUARD, AgencyKind.FOREIGN_AUTHORITY)
CHOICES: dict[str, Any] = {
    "mental_states": list(MentalState),
    "return_safeties": list(ReturnSafety),
    "legal_needs": list(LegalNeed),
    "education_levels": list(EducationLevel),
    "livelihoods": list(LivelihoodStatus),
    "exploitation_types": list(ExploitationType),
    "means": list(MeansOfControl),
    "identification_statuses": list(IdentificationStatus),
    "countries": COUNTRIES,
    "modes": list(ContactMode),
    "note_categories": list(DataCategory),
    "decisions": list(ReviewDecision),
    "closure_reasons": list(ClosureReason),
    "reopening_reasons": list(ReopeningReason),
    "reopening_stages": list(REOPENING_STAGES),
}


def now_local() -> str:
    """Now, as a ``datetime-local`` field shows it."""
    return datetime.now(TIME_ZONE).strftime("%Y-%m-%dT%H:%M")


def read_case(request: Request, principal: Principal, case_id: UUID) -> Any:
    return intake_api.read_case(case_id, request.app.state.intake, principal, request)


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
        authorities=[a for a in recipients(request, principal) if a.kind in AUTHORITIES],
        **CHOICES,
        **extra,
    )


def done(case_id: UUID, where: str) -> Response:
    return RedirectResponse(f"/cases/{case_id}/{where}", status_code=303)


def answer(
    request: Request,
    principal: Principal,
    case_id: UUID,
    template: str,
    failure: Failure | None,
    where: str,
) -> Response:
    if failure is None:
        return done(case_id, where)
    return page(request, principal, case_id, template, failure)


# -- the comprehensive assessments, exploitation and identification --------------------------


@router.get("/cases/{case_id}/assessments")
def assessments(case_id: UUID, request: Request, principal: User) -> Response:
    return page(request, principal, case_id, "assessments.html")


MEDICAL = {
    "examined_at": N_("Give the date and time of the examination (not in the future)."),
    "findings": N_("Write what the examination found."),
    "urgent_treatment": N_("Say what urgent treatment was given, in under 1000 characters."),
    "follow_up_needed": N_("Say whether a follow-up is needed."),
    "follow_up": N_("Say what follow-up is needed, where and when."),
}


@router.post("/cases/{case_id}/assessments/medical")
def record_medical(
    case_id: UUID, request: Request, principal: User, _csrf: Csrf, posted: Form
) -> Response:
    """Only a health worker of an agency holding the case records it (the gate decides)."""

    def send() -> object:
        exam = MedicalExamination.model_validate(
            {
                "examined_at": posted.moment("examined_at"),
                "findings": posted.text("findings") or "",
                "urgent_treatment": posted.text("urgent_treatment"),
                "follow_up_needed": posted.yes_no("follow_up_needed", required=True),
                "follow_up": posted.text("follow_up"),
            }
        )
        return casework_api.record_medical_examination(
            case_id, exam, request.app.state.intake, principal, request, key(posted)
        )

    failure = attempt("medical", posted, MEDICAL, send)
    return answer(request, principal, case_id, "assessments.html", failure, "assessments#medical")


PSYCHOSOCIAL = {
    "assessed_at": N_("Give the date and time of the assessment (not in the future)."),
    "mental_state": N_("Choose the person's mental state."),
    "psychological_support_needed": N_(
        "Say whether psychological support is needed: an acute crisis or a risk of self-harm "
        "always needs it."
    ),
    "observations": N_("Keep the observations under 4000 characters."),
}


@router.post("/cases/{case_id}/assessments/psychosocial")
def record_psychosocial(
    case_id: UUID, request: Request, principal: User, _csrf: Csrf, posted: Form
) -> Response:
    def send() -> object:
        body = PsychosocialAssessment.model_validate(
            {
                "assessed_at": posted.moment("assessed_at"),
                "mental_state": posted.text("mental_state") or "",
                "psychological_support_needed": posted.yes_no(
                    "psychological_support_needed", required=True
                ),
                "self_harm_risk": posted.text("self_harm_risk") == "yes",
                "observations": posted.text("observations"),
            }
        )
        return casework_api.assess_psychosocial(
            case_id, body, request.app.state.intake, principal, request, key(posted)
        )

    failure = attempt("psychosocial", posted, PSYCHOSOCIAL, send)
    return answer(
        request, principal, case_id, "assessments.html", failure, "assessments#psychosocial"
    )


FAMILY = {
    "assessed_at": N_("Give the date and time of the assessment (not in the future)."),
    "return_safety": N_("Say whether going home is safe."),
    "dependants": N_("Give the number of dependants, from 0 to 30."),
    "notes": N_("Keep the notes under 4000 characters."),
}


@router.post("/cases/{case_id}/assessments/family")
def record_family(
    case_id: UUID, request: Request, principal: User, _csrf: Csrf, posted: Form
) -> Response:
    def send() -> object:
        body = FamilySituation.model_validate(
            {
                "assessed_at": posted.moment("assessed_at"),
                "return_safety": posted.text("return_safety") or "",
                "wishes_to_return_home": posted.yes_no("wishes_to_return_home"),
                "family_aware_of_return": posted.yes_no("family_aware_of_return"),
                "dependants": posted.number("dependants") or 0,
                "notes": posted.text("notes"),
            }
        )
        return casework_api.assess_family(
            case_id, body, request.app.state.intake, principal, request, key(posted)
        )

    failure = attempt("family", posted, FAMILY, send)
    return answer(request, principal, case_id, "assessments.html", failure, "assessments#family")


LEGAL = {
    "assessed_at": N_("Give the date and time of the assessment (not in the future)."),
    "needs": N_("Choose the legal needs from the list."),
    "notes": N_("Keep the notes under 4000 characters."),
}


@router.post("/cases/{case_id}/assessments/legal")
def record_legal(
    case_id: UUID, request: Request, principal: User, _csrf: Csrf, posted: Form
) -> Response:
    def send() -> object:
        body = LegalNeedsAssessment.model_validate(
            {
                "assessed_at": posted.moment("assessed_at"),
                "needs": tuple(posted.all("needs")),
                "notes": posted.text("notes"),
            }
        )
        return casework_api.assess_legal_needs(
            case_id, body, request.app.state.intake, principal, request, key(posted)
        )

    failure = attempt("legal", posted, LEGAL, send)
    return answer(request, principal, case_id, "assessments.html", failure, "assessments#legal")


LIVELIHOOD = {
    "assessed_at": N_("Give the date and time of the assessment (not in the future)."),
    "education_level": N_("Choose the level of education."),
    "livelihood": N_("Choose how the person earns a living now."),
    "skills": N_("Give each skill in a few words (under 80 characters)."),
    "wishes": N_("Keep the person's wishes under 1000 characters."),
}


@router.post("/cases/{case_id}/assessments/livelihood")
def record_livelihood(
    case_id: UUID, request: Request, principal: User, _csrf: Csrf, posted: Form
) -> Response:
    def send() -> object:
        body = EducationLivelihood.model_validate(
            {
                "assessed_at": posted.moment("assessed_at"),
                "education_level": posted.text("education_level"),
                "livelihood": posted.text("livelihood") or "",
                "skills": tuple(posted.all("skills")),
                "wishes": posted.text("wishes"),
            }
        )
        return casework_api.assess_livelihood(
            case_id, body, request.app.state.intake, principal, request, key(posted)
        )

    failure = attempt("livelihood", posted, LIVELIHOOD, send)
    return answer(
        request, principal, case_id, "assessments.html", failure, "assessments#livelihood"
    )


EXPLOITATION = {
    "types": N_("Tick at least one type of exploitation."),
    "other_type": N_("Say what the other exploitation was, and tick Other."),
    "countries": N_("Choose the countries from the list."),
    "place": N_("Keep the place under 1000 characters."),
    "started_on": N_("Give a valid start date, not in the future."),
    "ended_on": N_("Give a valid end date, not in the future and not before the start."),
    "duration_months": N_("Give the duration in whole months, from 0 to 600."),
    "means_of_control": N_("Choose the means of control from the list."),
    "other_means": N_("Say what the other means of control were, and tick Other."),
}
EXPLOITATION_RULES = {"_": N_("This is already recorded: nothing changed.")}


@router.post("/cases/{case_id}/assessments/exploitation")
def record_exploitation(
    case_id: UUID, request: Request, principal: User, _csrf: Csrf, posted: Form
) -> Response:
    """The whole set (several types at once) replaces the one recorded before."""

    def send() -> object:
        body = Exploitation.model_validate(
            {
                "types": tuple(posted.all("types")),
                "other_type": posted.text("other_type"),
                "countries": tuple(posted.all("countries")),
                "place": posted.text("place"),
                "started_on": posted.day("started_on"),
                "ended_on": posted.day("ended_on"),
                "duration_months": posted.number("duration_months"),
                "means_of_control": tuple(posted.all("means_of_control")),
                "other_means": posted.text("other_means"),
            }
        )
        return casework_api.record_exploitation(
            case_id, body, request.app.state.intake, principal, request, key(posted)
        )

    failure = attempt("exploitation", posted, EXPLOITATION, send, EXPLOITATION_RULES)
    return answer(
        request, principal, case_id, "assessments.html", failure, "assessments#exploitation"
    )


IDENTIFICATION = {
    "status": N_("Choose the identification status."),
    "authority": N_("Name the authority that decided (none for a presumed victim), from the list."),
    "decided_on": N_("Give the date of the decision, not in the future."),
}
IDENTIFICATION_RULES = {
    "_": N_("An authority has decided: only another authority's decision replaces it.")
}


@router.post("/cases/{case_id}/assessments/identification")
def record_identification(
    case_id: UUID, request: Request, principal: User, _csrf: Csrf, posted: Form
) -> Response:
    def send() -> object:
        body = casework_api.IdentificationUpdate.model_validate(
            {
                "status": posted.text("status") or "",
                "authority": posted.text("authority"),
                "decided_on": posted.day("decided_on"),
            }
        )
        state = request.app.state
        return casework_api.record_identification(
            case_id, body, state.intake, principal, state.agencies, request, key(posted)
        )

    failure = attempt("identification", posted, IDENTIFICATION, send, IDENTIFICATION_RULES)
    return answer(
        request, principal, case_id, "assessments.html", failure, "assessments#identification"
    )


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
    plan = plan_api.read_plan(case_id, request.app.state.intake, principal, request)
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
            case_id, body, request.app.state.intake, principal, request, key(posted)
        )

    failure = attempt("contact", posted, CONTACT, send, CONTACT_RULES)
    if failure is None:
        return done(case_id, "contacts#contacts")
    return contacts_page(request, principal, case_id, failure)


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
            case_id, body, request.app.state.intake, principal, request, key(posted)
        )

    failure = attempt("note", posted, NOTE, send)
    if failure is None:
        return done(case_id, "contacts#notes")
    return contacts_page(request, principal, case_id, failure)


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
            case_id, body, request.app.state.intake, principal, request, key(posted)
        )

    failure = attempt("review", posted, REVIEW, send, REVIEW_RULES)
    return answer(request, principal, case_id, "reviews.html", failure, "reviews#reviews")


# -- the stage, closure and reopening -------------------------------------------------------


def stage_choices(case: Any) -> list[CaseStage]:
    return list(STAGE_TRANSITIONS.get(case.stage, ()))


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
            case_id, body, request.app.state.intake, principal, request, key(posted)
        )

    failure = attempt("stage", posted, STAGE, send)
    if failure is None:
        return RedirectResponse(f"/cases/{case_id}#stage", status_code=303)
    return case_file_again(request, principal, case_id, failure)


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
            case_id, body, request.app.state.intake, principal, request, key(posted)
        )

    failure = attempt("closure", posted, CLOSURE, send)
    if failure is None:
        return RedirectResponse(f"/cases/{case_id}#stage", status_code=303)
    return case_file_again(request, principal, case_id, failure)


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
            case_id, body, request.app.state.intake, principal, request, key(posted)
        )

    failure = attempt("reopening", posted, REOPENING, send)
    if failure is None:
        return RedirectResponse(f"/cases/{case_id}#stage", status_code=303)
    return case_file_again(request, principal, case_id, failure)
