"""What the case manager's referral form needs: the agencies to refer to, the choices of
its fields, and the preview of exactly which of the person's data would be released to the
chosen agency and which withheld, and why (the consent decision in force now). The form and
its sending: ``services.web.referring``. Also the consent receipt, printable and bilingual,
as the consent service writes it."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import Form, Request
from fastapi.responses import HTMLResponse, Response

from contracts.consent import CollectionMethod
from contracts.referral import FamilyConsentGiver, FamilyRelationship, Urgency
from contracts.vocabulary import DataCategory, Purpose, ServiceType
from services.consent import api as consent_api
from services.runtime.auth import Principal
from services.runtime.errors import InvalidRequestError
from services.web.deps import Csrf, User, page_router
from services.web.positions import service
from services.web.render import render

router = page_router()


def recipients(request: Request, principal: Principal) -> list[Any]:
    """Active agencies, the user's own province first, by name."""
    agencies = [a for a in request.app.state.agencies.agencies() if a.active]
    return sorted(agencies, key=lambda a: (a.province != principal.province, a.name_vi))


def referral_choices(request: Request, principal: Principal) -> dict[str, Any]:
    return {
        "recipients": recipients(request, principal),
        "services": list(ServiceType),
        "purposes": list(Purpose),
        "urgencies": list(Urgency),
        "categories": list(DataCategory),
        "relationships": list(FamilyRelationship),
        "family_givers": list(FamilyConsentGiver),
        "collection_methods": list(CollectionMethod),
    }


def _categories(names: list[str]) -> tuple[DataCategory, ...]:
    try:
        return tuple(DataCategory(n) for n in names)
    except ValueError:
        raise InvalidRequestError("categories", "Choose known categories.") from None


@router.post("/cases/{case_id}/referrals/preview")
def preview_referral(
    case_id: UUID,
    request: Request,
    principal: User,
    _csrf: Csrf,
    to_agency: Annotated[str, Form()],
    purpose: Annotated[Purpose, Form()],
    categories: Annotated[list[str], Form()] = [],  # noqa: B006 (FastAPI copies defaults)
) -> Response:
    """What the consent in force now lets go to ``to_agency``, category by category."""
    decision = None
    if categories:
        recipient = request.app.state.agencies.resolve(to_agency, "to_agency")
        decision = consent_api.decide(
            case_id,
            consent_api.DecisionRequest(
                recipient=recipient, purpose=purpose, categories=_categories(categories)
            ),
            service(request, "consent"),
            principal,
        )
    return render(request, "referral_preview.html", decision=decision)


@router.get("/cases/{case_id}/consent/{grant_id}/receipt")
def consent_receipt(
    case_id: UUID, grant_id: UUID, request: Request, principal: User
) -> HTMLResponse:
    """The grant's receipt for the person, in Vietnamese and English, to print."""
    return consent_api.read_receipt_page(case_id, grant_id, service(request, "consent"), principal)
