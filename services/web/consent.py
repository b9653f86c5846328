"""Recording a written consent: what, to which kind of agency, for what, for how long, and
who gave it. For a child the consent is the guardian's (a parent) or the child protection
authority's, with the child's own views beside it (seed 004); the consent service keeps that
rule, and the form says its answer next to the field, with what was typed kept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

from fastapi import Form, Request
from fastapi.responses import RedirectResponse, Response

from contracts.consent import (
    Collection,
    CollectionMethod,
    GiverKind,
    Recipient,
)
from contracts.vocabulary import AgencyKind, DataCategory, Purpose
from services.consent import api as consent_api
from services.runtime.errors import InvalidRequestError
from services.web.cases import new_key
from services.web.deps import Csrf, FormText, User, page_router
from services.web.forms import FORM_FAILURES, Failure, refusal
from services.web.i18n import N_
from services.web.positions import service
from services.web.render import render

router = page_router()
FormList = Annotated[list[str], Form()]
MESSAGES = {
    "categories": N_("Tick at least one kind of information."),
    "purposes": N_("Tick at least one purpose."),
    "recipients": N_("Choose the kind of agency."),
    "kind": N_("Choose who gave the consent."),
    "relationship": N_("Say how the guardian is related to the child, in at most 80 characters."),
    "child_views": N_(
        "Write the child's own views, in their words, beside the guardian's consent."
    ),
    "form_reference": N_("Give the reference of the signed form."),
    "valid_until": N_("Give a number of months from 1 to 60."),
    "months": N_("Give a number of months from 1 to 60."),
}
# Who may give it depends on the person's age: the consent service says which, by the field.
GIVER_FOR_A_CHILD = N_(
    "The person is a child: consent is given by a guardian or the child protection "
    "authority, with the child's own views."
)
GIVER_FOR_AN_ADULT = N_("The person is an adult: they give their own consent.")


def consent_form(
    request: Request,
    case_id: UUID,
    record: Any,
    *,
    values: dict[str, Any],
    error: Failure | None = None,
    key: str | None = None,
) -> Response:
    """The form, with the consent record as the consent service shows it to the user."""
    return render(
        request,
        "consent.html",
        error.status if error else 200,
        case_id=case_id,
        minor=record.subject.minor,
        values=values,
        error=error,
        key=key or new_key(),
        categories=list(DataCategory),
        purposes=list(Purpose),
        kinds=list(AgencyKind),
        givers=list(GiverKind),
    )


@router.get("/cases/{case_id}/consent/new")
def new_consent(case_id: UUID, request: Request, principal: User) -> Response:
    record = consent_api.read_record(case_id, service(request, "consent"), principal, request)
    values: dict[str, Any] = {
        "months": "12",
        "given_by": GiverKind.GUARDIAN.value if record.subject.minor else GiverKind.PERSON.value,
        "signed_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "categories": [],
        "purposes": [],
    }
    return consent_form(request, case_id, record, values=values)


@router.post("/cases/{case_id}/consent/grant")
def grant_consent(
    case_id: UUID,
    request: Request,
    principal: User,
    _csrf: Csrf,
    categories: FormList = [],  # noqa: B006 (FastAPI copies defaults)
    purposes: FormList = [],  # noqa: B006
    recipient_kind: FormText = None,
    form_reference: FormText = None,
    months: FormText = None,
    given_by: FormText = None,
    relationship: FormText = None,
    child_views: FormText = None,
    signed_at: FormText = None,
    idempotency_key: FormText = None,
) -> Response:
    """A written consent the person (or, for a child, their guardian) signed. The period
    starts when the form was opened (``signed_at``), so the same form sent twice is the same
    request, recorded once."""
    values: dict[str, Any] = {
        "categories": categories,
        "purposes": purposes,
        "recipient_kind": recipient_kind,
        "form_reference": form_reference,
        "months": months,
        "given_by": given_by,
        "relationship": relationship,
        "child_views": child_views,
        "signed_at": signed_at,
    }
    try:
        body = grant_body(values)
        consent_api.grant(
            case_id, body, service(request, "consent"), principal, request, idempotency_key
        )
    except FORM_FAILURES as exc:
        record = consent_api.read_record(case_id, service(request, "consent"), principal, request)
        giver = GIVER_FOR_A_CHILD if record.subject.minor else GIVER_FOR_AN_ADULT
        error = refusal("grant", exc, {**MESSAGES, "kind": giver}, values)
        page_key = idempotency_key.split(":", 1)[0] if idempotency_key else None
        return consent_form(request, case_id, record, values=values, error=error, key=page_key)
    return RedirectResponse(f"/cases/{case_id}#consent", status_code=303)


def grant_body(values: dict[str, Any]) -> consent_api.GrantCreate:
    """The consent service's request from the form; raises ValidationError or
    InvalidRequestError naming the field."""
    try:
        kind_of_recipient = AgencyKind(values["recipient_kind"] or "")
    except ValueError:
        raise InvalidRequestError("recipients", "Choose the kind of agency.") from None
    try:
        months = int(values["months"] or "")
        signed = datetime.fromisoformat(values["signed_at"] or "")
    except ValueError:
        field = "months" if not str(values["months"] or "").isdigit() else "signed_at"
        raise InvalidRequestError(field, "Check the period.") from None
    if not 1 <= months <= 60:
        raise InvalidRequestError("months", "From 1 to 60 months.")
    start = signed if signed.tzinfo else signed.replace(tzinfo=UTC)
    kind = values["given_by"] or ""
    return consent_api.GrantCreate.model_validate(
        {
            "categories": values["categories"],
            "recipients": [Recipient(kind=kind_of_recipient)],
            "purposes": values["purposes"],
            "valid_from": start,
            "valid_until": start + timedelta(days=30 * months),
            "collection": Collection(
                method=CollectionMethod.WRITTEN_FORM,
                form_reference=(values["form_reference"] or "").strip(),
                language="vi",
                withdrawal_explained=True,
            ),
            "given_by": {
                "kind": kind,
                "relationship": (values["relationship"] or "").strip() or None
                if kind == GiverKind.GUARDIAN
                else None,
            },
            "child_views": (values["child_views"] or "").strip() or None,
        }
    )
