"""The comprehensive assessments on their page of the case file: the medical examination
(recorded by a health worker only: the form is shown to whom the access policy allows), the
mental state, the family and return home, legal needs, education and livelihood; and the
exploitation (CTDC's terms: several types at once, where, how long, the means of control)
and the identification as a victim."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from uuid import UUID

from fastapi import Request
from fastapi.responses import Response

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
    EducationLevel,
    ExploitationType,
    IdentificationStatus,
    LegalNeed,
    LivelihoodStatus,
    MeansOfControl,
    MentalState,
    ReturnSafety,
)
from services.intake import casework_api
from services.runtime.auth import Principal
from services.web.casework import key, page, recorded
from services.web.deps import Csrf, User, page_router
from services.web.forms import Form, Posted
from services.web.i18n import N_
from services.web.positions import service
from services.web.referrals import recipients

router = page_router()

# Countries of exploitation offered (the region's routes; CTDC's CountryOfExploitation);
# their names come from the locale's own data.
COUNTRIES = ("CN", "KH", "LA", "TH", "MY", "MM", "TW", "KR", "JP", "RU", "GB", "DE")
# Who decides whether a person is a victim of trafficking.
AUTHORITIES = (AgencyKind.POLICE, AgencyKind.BORDER_GUARD, AgencyKind.FOREIGN_AUTHORITY)


def choices(request: Request, principal: Principal) -> dict[str, Any]:
    return {
        "mental_states": list(MentalState),
        "return_safeties": list(ReturnSafety),
        "legal_needs": list(LegalNeed),
        "education_levels": list(EducationLevel),
        "livelihoods": list(LivelihoodStatus),
        "exploitation_types": list(ExploitationType),
        "means": list(MeansOfControl),
        "identification_statuses": list(IdentificationStatus),
        "countries": COUNTRIES,
        "authorities": [a for a in recipients(request, principal) if a.kind in AUTHORITIES],
    }


@router.get("/cases/{case_id}/assessments")
def assessments(case_id: UUID, request: Request, principal: User) -> Response:
    return page(request, principal, case_id, "assessments.html", **choices(request, principal))


def _recorded(
    request: Request,
    principal: Principal,
    case_id: UUID,
    form: str,
    posted: Posted,
    messages: Mapping[str, str],
    send: Callable[[], object],
    rules: Mapping[str, str] | None = None,
) -> Response:
    """Send one assessment form; the page again, with the form's error beside it when it
    was refused."""
    return recorded(
        form,
        posted,
        messages,
        send,
        where=f"/cases/{case_id}/assessments#{form}",
        again=lambda failure: page(
            request,
            principal,
            case_id,
            "assessments.html",
            failure,
            **choices(request, principal),
        ),
        rules=rules,
    )


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
            case_id, exam, service(request, "intake"), principal, request, key(posted)
        )

    return _recorded(request, principal, case_id, "medical", posted, MEDICAL, send)


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
            case_id, body, service(request, "intake"), principal, request, key(posted)
        )

    return _recorded(request, principal, case_id, "psychosocial", posted, PSYCHOSOCIAL, send)


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
            case_id, body, service(request, "intake"), principal, request, key(posted)
        )

    return _recorded(request, principal, case_id, "family", posted, FAMILY, send)


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
            case_id, body, service(request, "intake"), principal, request, key(posted)
        )

    return _recorded(request, principal, case_id, "legal", posted, LEGAL, send)


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
            case_id, body, service(request, "intake"), principal, request, key(posted)
        )

    return _recorded(request, principal, case_id, "livelihood", posted, LIVELIHOOD, send)


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
            case_id, body, service(request, "intake"), principal, request, key(posted)
        )

    return _recorded(
        request, principal, case_id, "exploitation", posted, EXPLOITATION, send, EXPLOITATION_RULES
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
            case_id,
            body,
            service(request, "intake"),
            principal,
            state.agencies,
            request,
            key(posted),
        )

    return _recorded(
        request,
        principal,
        case_id,
        "identification",
        posted,
        IDENTIFICATION,
        send,
        IDENTIFICATION_RULES,
    )
