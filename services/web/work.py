"""The agency's inbox of referrals, and the intake officer's reception form (one screen,
large targets, an Idempotency-Key). A referral's own page and its answers are in ``loop``."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import Form, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from contracts.intake import PersonDetails, Place
from contracts.vocabulary import (
    ArrivalRoute,
    ContactMode,
    RiskLevel,
    RiskSubject,
    Sex,
    UrgentNeed,
)
from services.intake import api as intake_api
from services.referral import api as referral_api
from services.web.cases import new_key
from services.web.deps import Csrf, FormText, User, page_router
from services.web.i18n import N_, TIME_ZONE
from services.web.positions import service
from services.web.render import render

router = page_router()
FormList = Annotated[list[str], Form()]


@router.get("/inbox")
def inbox(request: Request, principal: User) -> Response:
    """Referrals sent to the user's agency, as the referral service lists them."""
    referrals = referral_api.list_referrals(service(request, "referral"), principal, request)
    mine = [r for r in referrals if r.to_agency.agency_id == principal.agency_id]
    mine.sort(key=lambda r: (not r.next_steps, r.timeline[0].at if r.timeline else None))
    return render(request, "inbox.html", referrals=mine)


# -- the reception form -----------------------------------------------------------------------

CHOICES: dict[str, Any] = {
    "routes": list(ArrivalRoute),
    "sexes": list(Sex),
    "needs": list(UrgentNeed),
    "levels": list(RiskLevel),
    "subjects": list(RiskSubject),
    "modes": list(ContactMode),
}


@router.get("/reception")
def reception_form(request: Request, principal: User) -> Response:
    now = datetime.now(TIME_ZONE).strftime("%Y-%m-%dT%H:%M")
    values: dict[str, Any] = {"received_at": now, "route": "rescued", "sex": "not_stated"}
    return render(request, "reception.html", key=new_key(), values=values, errors={}, **CHOICES)


def _local_moment(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=TIME_ZONE)


@router.post("/reception")
def record_reception(
    request: Request,
    principal: User,
    _csrf: Csrf,
    idempotency_key: Annotated[str, Form()],
    route: Annotated[str, Form()] = "",
    received_at: Annotated[str, Form()] = "",
    district: FormText = None,
    location: FormText = None,
    full_name: FormText = None,
    sex: Annotated[str, Form()] = "not_stated",
    date_of_birth: FormText = None,
    estimated_age: FormText = None,
    needs: FormList = [],  # noqa: B006 (FastAPI copies defaults)
    risk_level: FormText = None,
    at_risk: FormList = [],  # noqa: B006
    plan: FormText = None,
    contact_preferred: FormList = [],  # noqa: B006
    contact_refused: FormList = [],  # noqa: B006
) -> Response:
    """Record the reception, the person, rapid needs, risk and contact preference. Each step
    carries a key derived from the form's own, so a double tap or a retry records once."""
    values = {
        "route": route,
        "received_at": received_at,
        "district": district,
        "location": location,
        "full_name": full_name,
        "sex": sex,
        "date_of_birth": date_of_birth,
        "estimated_age": estimated_age,
        "needs": needs,
        "risk_level": risk_level,
        "at_risk": at_risk,
        "plan": plan,
        "contact_preferred": contact_preferred,
        "contact_refused": contact_refused,
    }
    errors: dict[str, str] = {}
    parsed: dict[str, Any] = {}

    def take(field: str, message: str, build: Any) -> None:
        try:
            parsed[field] = build()
        except (ValueError, ValidationError):
            errors[field] = message

    take("route", N_("Choose how the person came."), lambda: ArrivalRoute(route))
    take(
        "received_at",
        N_("Give the date and time of the reception."),
        lambda: _local_moment(received_at),
    )
    take(
        "place",
        N_("Check the district and place."),
        lambda: Place(
            province=principal.province, district=district or None, location=location or None
        ),
    )
    take(
        "person",
        N_(
            "Give the person's name (or what they want to be called) and a valid date "
            "of birth or age."
        ),
        lambda: PersonDetails(
            full_name=(full_name or "").strip(),
            sex=Sex(sex),
            date_of_birth=date.fromisoformat(date_of_birth) if date_of_birth else None,
            estimated_age=int(estimated_age) if estimated_age else None,
        ),
    )
    take(
        "needs",
        N_("Tick at least one urgent need."),
        lambda: intake_api.NeedsAssessmentCreate(needs=tuple(UrgentNeed(n) for n in needs)),
    )
    if risk_level or at_risk or plan:
        take(
            "risk",
            N_("For the risk, give its level, who is at risk and the plan."),
            lambda: intake_api.RiskAssessmentCreate(
                level=RiskLevel(risk_level or ""),
                at_risk=tuple(RiskSubject(s) for s in at_risk),
                management_plan=plan or "",
            ),
        )
    if contact_preferred or contact_refused:
        take(
            "contact",
            N_("Choose at least one way the person accepts to be contacted."),
            lambda: intake_api.ContactPreferenceUpdate(
                preferred=tuple(ContactMode(m) for m in contact_preferred),
                refused=tuple(ContactMode(m) for m in contact_refused),
            ),
        )
    if errors:
        return render(
            request,
            "reception.html",
            422,
            key=idempotency_key,
            values=values,
            errors=errors,
            **CHOICES,
        )
    agencies = request.app.state.agencies
    created = intake_api.record_reception(
        intake_api.ReceptionCreate(
            route=parsed["route"], received_at=parsed["received_at"], place=parsed["place"]
        ),
        service(request, "intake"),
        principal,
        agencies,
        request,
        f"{idempotency_key}:reception",
    )
    case_id = UUID(str(created["case_id"]))
    intake_api.register_person(
        case_id,
        parsed["person"],
        service(request, "intake"),
        principal,
        request,
        f"{idempotency_key}:person",
    )
    intake_api.assess_needs(
        case_id,
        parsed["needs"],
        service(request, "intake"),
        principal,
        request,
        f"{idempotency_key}:needs",
    )
    if "risk" in parsed:
        intake_api.assess_risk(
            case_id,
            parsed["risk"],
            service(request, "intake"),
            principal,
            request,
            f"{idempotency_key}:risk",
        )
    if "contact" in parsed:
        intake_api.record_contact_preference(
            case_id,
            parsed["contact"],
            service(request, "intake"),
            principal,
            request,
            f"{idempotency_key}:contact",
        )
    return RedirectResponse(f"/cases/{case_id}", status_code=303)
