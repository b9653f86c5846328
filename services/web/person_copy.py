"""The person's own copy of their record, to print and give them in their language: the
record, the consents, every disclosure (to whom, when, under which grant), every recorded read
of their data, and the signed checkpoints that prove the copy complete when it was made. The
projections service reads it (through the access gate, and records the reading); this page
only says it in Vietnamese or English."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any
from uuid import UUID

from fastapi import Request
from fastapi.responses import Response

from services.projections import api as projections_api
from services.web.deps import User, page_router
from services.web.i18n import N_, current_locale, day, gettext, when
from services.web.labels import LABELS, label, province
from services.web.positions import service
from services.web.render import agency_name, render
from services.web.seal import checkpoint_facts

router = page_router()

# The facts' names, as the person reads them; a name not here is shown as it is written.
FIELDS = {
    "full_name": N_("Name"),
    "sex": N_("Sex"),
    "date_of_birth": N_("Date of birth"),
    "estimated_age": N_("Estimated age"),
    "nationality": N_("Nationality"),
    "languages": N_("Languages"),
    "identity_document_status": N_("Identity documents"),
    "route": N_("How the person came"),
    "received_at": N_("Received"),
    "place": N_("Place"),
    "province": N_("Province"),
    "district": N_("District"),
    "location": N_("Place"),
    "needs": N_("Urgent needs"),
    "notes": N_("Notes"),
    "note": N_("Note"),
    "level": N_("Risk"),
    "at_risk": N_("Who is at risk"),
    "management_plan": N_("Risk management plan"),
    "preferred": N_("Contact preferred"),
    "refused": N_("Contact refused"),
    "stage": N_("Stage"),
    "reason": N_("Reason"),
    "categories": N_("Information"),
    "recipients": N_("Shared with"),
    "purposes": N_("For what purpose"),
    "except_purposes": N_("Except for"),
    "valid_from": N_("Valid from"),
    "valid_until": N_("Valid until"),
    "given_by": N_("Given by"),
    "relationship": N_("Relationship"),
    "child_views": N_("The child's own views"),
    "statement": N_("In the person's words"),
    "minor": N_("Minor"),
    "details": N_("The person"),
    "receiving_agency": N_("Receiving agency"),
    "receiving_agency_id": N_("Receiving agency"),
    "returned_from_country": N_("Returned from (country)"),
    "present": N_("Present"),
    "agency": N_("Agency"),
    "capacity": N_("Capacity"),
    "from_stage": N_("From stage"),
    "to_stage": N_("To stage"),
    "kind": N_("Kind"),
    "adult_on": N_("Turns 18 on"),
    "age_is_estimated": N_("Age estimated"),
    "handed_over_by": N_("Handed over by"),
    "role": N_("Role"),
    "parties": N_("Parties"),
    "agency_id": N_("Agency"),
}
# The fields a copy leaves out: ids of records and of the people working on them (an
# agency's id is said as its name), and how a consent was collected (its receipt says it).
HIDDEN = {"collection", "by_user", "user_id"}


def shown(name: str) -> bool:
    return name not in HIDDEN and (not name.endswith("_id") or name.endswith("agency_id"))


READS = {
    "intake.case": N_("The case file"),
    "intake.case.break_glass": N_("The case file, in an emergency (break-glass)"),
    "intake.plan": N_("The reintegration plan"),
    "consent.record": N_("The consent record"),
    "consent.history": N_("The consent history"),
    "referral.referral": N_("A referral's data, by its recipient"),
    "referral.family_member": N_("A family member's details, by the referral's recipient"),
    "referral.feed": N_("A referral's data, sent to its recipient's system"),
    "referral.feed_key": N_("The key to a referral's data, fetched by its recipient's system"),
    "projections.case_file": N_("The case file for a new case worker"),
    "projections.timeline": N_("The case's timeline"),
    "projections.replay": N_("An auditor's replay"),
    "projections.person_copy": N_("A copy like this one"),
}
BASES = {
    "grant": N_("the person's consent"),
    "override": N_("an emergency override"),
    "break_glass": N_("an emergency read (break-glass)"),
    "own_case": N_("the agency holds the case"),
    "audit": N_("an audit"),
    "consent": N_("the person's consent"),
    "vital_interest": N_("an emergency override (vital interest)"),
    "family_member_consent": N_("the family member's own consent"),
}


ISO_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
ISO_MOMENT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")


def field_name(name: str) -> str:
    """A fact's name in the reader's language (as it is written, where it has none)."""
    return gettext(FIELDS[name]) if name in FIELDS else name.replace("_", " ")


@dataclass(frozen=True)
class Telling:
    """Says the facts of an entry in the reader's language: the vocabulary's words, dates as
    their locale writes them, agencies by their name in the directory."""

    agency: Callable[[str], str]

    def said(self, value: Any, name: str = "") -> str:
        if isinstance(value, bool):
            return gettext(N_("Yes")) if value else gettext(N_("No"))
        if isinstance(value, list):
            return ", ".join(self.said(v, name) for v in value)
        if isinstance(value, dict):
            if value.get("agency_id"):
                return self.agency(str(value["agency_id"]))
            return "; ".join(f"{field}: {told}" for field, told in self.facts(value))
        text = str(value)
        if name == "province" or name.endswith("agency_id"):
            return province(text) if name == "province" else self.agency(text)
        if ISO_DAY.match(text):
            return day(date.fromisoformat(text))
        if ISO_MOMENT.match(text):
            return when(text)
        for words in LABELS.values():
            if text in words:
                return gettext(words[text])
        return text

    def facts(self, found: dict[str, Any]) -> list[tuple[str, str]]:
        """The facts of an entry worth telling the person, each named in their language."""
        return [
            (field_name(name), self.said(value, name))
            for name, value in found.items()
            if shown(name) and value not in (None, "", [], {})
        ]


@dataclass(frozen=True)
class ReadRow:
    """A recorded read as the copy's table says it."""

    at: str
    who: str
    what: str
    reason: str | None
    information: str
    allowed: str
    grants: tuple[str, ...]
    exceptional: bool


def read_rows(reads: list[dict[str, Any]], agency: Callable[[str], str]) -> list[ReadRow]:
    """The copy's reads in the reader's language. A copy lists every read of the person's
    data, hundreds of them and most alike (one agency in one role reading one part on one
    basis): each kind is said once, not once per row."""
    said: dict[tuple[Any, ...], tuple[str, str, str, str]] = {}
    rows = []
    for read in reads:
        kind = (read["by_agency"], read["by_role"], read["what"], *read["categories"])
        kind += (read["basis"],)
        words = said.get(kind)
        if words is None:
            words = said[kind] = (
                f"{agency(read['by_agency'])} ({label(read['by_role'], 'role')})",
                gettext(READS[read["what"]]) if read["what"] in READS else read["what"],
                ", ".join(label(c, "category") for c in read["categories"]),
                gettext(BASES[read["basis"]]) if read["basis"] in BASES else read["basis"],
            )
        rows.append(
            ReadRow(
                at=when(read["at"], "short"),
                who=words[0],
                what=words[1],
                reason=read["reason"],
                information=words[2],
                allowed=words[3],
                grants=tuple(g[:8] for g in read["grant_ids"]),
                exceptional=read["basis"] in ("override", "break_glass"),
            )
        )
    return rows


@router.get("/cases/{case_id}/copy")
def person_copy_page(case_id: UUID, request: Request, principal: User) -> Response:
    """For the agencies holding the case, to print for the person; the copy is itself a
    recorded read, and the last one it lists."""
    copy = projections_api.person_copy(case_id, service(request, "projections"), principal, request)
    telling = Telling(lambda agency_id: agency_name(request, agency_id, current_locale()))
    return render(
        request,
        "person_copy.html",
        copy=copy,
        # Said as the page is rendered, in its language.
        reads=lambda: read_rows(copy["reads"], telling.agency),
        facts=telling.facts,
        field_name=field_name,
        basis=lambda b: gettext(BASES[b]) if b in BASES else b,
        checkpoint_facts=checkpoint_facts,
    )
