"""What the web app's forms share: the posted values, the checks of their fields, and a form
that could not be recorded (``Failure``): what went wrong, in the user's words, next to the
field, with what was typed kept.

A case-work form is checked whole before anything is sent, and each sends one command
(``attempt``), so a form with an error records nothing; the page comes back with what was
typed and the error beside its field. The consent and referral pages say a service's refusal
again (``refusal``): by the field the service named, else by the kind of problem. The rules
stay in the services; a page only says their answer again in the user's language.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from pydantic import ValidationError
from starlette.datastructures import FormData

from contracts.access_policy import Action, CaseTies, permits
from services.runtime.auth import Principal
from services.runtime.errors import (
    ConcurrentChangeError,
    IdempotencyKeyReusedError,
    InvalidRequestError,
    PermissionDeniedError,
    RuleViolationError,
)
from services.web.i18n import N_, TIME_ZONE

GENERIC = N_("This step could not be done. Check what you entered and try again.")


class FieldError(ValueError):
    """A posted value that is not what the field asks for."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


@dataclass(frozen=True)
class Posted:
    """A posted form: its text fields stripped (empty is None), its lists without blanks."""

    data: FormData

    def text(self, name: str) -> str | None:
        value = self.data.get(name)
        stripped = value.strip() if isinstance(value, str) else ""
        return stripped or None

    def all(self, name: str) -> list[str]:
        return [v for v in self.data.getlist(name) if isinstance(v, str) and v.strip()]

    def values(self) -> dict[str, Any]:
        """What was typed, to fill the form again (lists for repeated names)."""
        kept: dict[str, Any] = {}
        for name in self.data:
            if name in ("csrf_token", "idempotency_key"):
                continue
            got = [v for v in self.data.getlist(name) if isinstance(v, str)]
            kept[name] = got if len(got) > 1 else (got[0] if got else "")
        return kept

    def moment(self, name: str, *, required: bool = True) -> datetime | None:
        """A ``datetime-local`` field, read in Vietnam's time."""
        text = self.text(name)
        if text is None:
            if required:
                raise FieldError(name)
            return None
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise FieldError(name) from None
        return moment if moment.tzinfo else moment.replace(tzinfo=TIME_ZONE)

    def day(self, name: str, *, required: bool = False) -> date | None:
        text = self.text(name)
        if text is None:
            if required:
                raise FieldError(name)
            return None
        try:
            return date.fromisoformat(text)
        except ValueError:
            raise FieldError(name) from None

    def number(self, name: str, *, required: bool = False) -> int | None:
        text = self.text(name)
        if text is None:
            if required:
                raise FieldError(name)
            return None
        try:
            return int(text)
        except ValueError:
            raise FieldError(name) from None

    def score(self, name: str) -> float:
        """A score from 0 to 1 (a comma is read as the decimal mark, as Vietnamese writes)."""
        text = self.text(name)
        try:
            value = float((text or "").replace(",", "."))
        except ValueError:
            raise FieldError(name) from None
        if not 0 <= value <= 1:
            raise FieldError(name)
        return value

    def yes_no(self, name: str, *, required: bool = False) -> bool | None:
        """``yes`` or ``no``; unanswered is None."""
        text = self.text(name)
        if text in ("yes", "no"):
            return text == "yes"
        if required:
            raise FieldError(name)
        return None


async def read_posted(request: Request) -> Posted:
    return Posted(await request.form())


Form = Annotated[Posted, Depends(read_posted)]


@dataclass
class Failure:
    """Why a form was refused: messages (``N_`` texts, translated where they are shown) by
    field, ``_`` for the whole form; what was typed; the status the page answers with."""

    form: str
    errors: dict[str, str] = dataclasses.field(default_factory=dict)
    values: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    status: int = 422

    @property
    def field(self) -> str | None:
        """The field the (first) error is beside; None for the whole form."""
        named = next(iter(self.errors), "_")
        return None if named == "_" else named

    @property
    def message(self) -> str:
        """The (first) error's message."""
        return next(iter(self.errors.values()), GENERIC)


# What to do when a rule of the case refused the step, by the next steps the rule allows.
RULES: dict[str, str] = {
    "reopen": N_("The case is closed: reopen it first."),
    "exit_plan": N_(
        "A case closes for safe independence only after its exit is planned: plan the exit "
        "and the follow-up first."
    ),
    "agreement": N_(
        "The person has not agreed to the plan as it stands: record their agreement before "
        "the work starts."
    ),
    "change_stage": N_("Not in this stage of the case: change the stage first."),
    "close": N_("The case cannot move to that stage from its current one."),
}


def attempt(
    form: str,
    posted: Posted,
    messages: Mapping[str, str],
    send: Callable[[], object],
    rules: Mapping[str, str] | None = None,
) -> Failure | None:
    """Check and send one form's command; None when it was recorded, else why not.

    ``send`` builds the command from the posted values (raising FieldError or pydantic's
    ValidationError for a bad field) and sends it; the services' InvalidRequestError and
    RuleViolationError come back as messages too. ``messages`` are the form's messages by
    field, ``rules`` its messages for a refusal by the rules.
    """
    failure = Failure(form, values=posted.values())
    try:
        send()
    except FieldError as bad:
        failure.errors[bad.name] = messages.get(bad.name, GENERIC)
    except ValidationError as bad:
        for error in bad.errors():
            name = str(error["loc"][0]) if error["loc"] else "_"
            failure.errors.setdefault(name, messages.get(name, messages.get("_", GENERIC)))
    except InvalidRequestError as bad:
        name = bad.field.split(".")[0]
        failure.errors[name] = messages.get(name, messages.get("_", GENERIC))
    except RuleViolationError as bad:
        told = (rules or {}).get("_") or next(
            (RULES[a] for a in bad.allowed if a in RULES), messages.get("_", GENERIC)
        )
        failure.errors["_"] = told
    else:
        return None
    return failure


def gate(principal: Principal, case: Any) -> dict[str, bool]:
    """Which steps the access policy lets ``principal`` take on ``case`` (as read): the
    forms of a page are shown for these only. Every step here needs the agency to hold the
    case, and the case read tells which agencies do."""
    manager = case.case_manager_agency.agency_id if case.case_manager_agency else None
    ties = CaseTies.held_by(case.province, case.receiving_agency.agency_id, manager)
    return {a.value: permits(principal.asker, ties, a).allowed for a in Action}


# -- a service's refusal, said again ---------------------------------------------------------

# What a consent or referral form answers with its own page again; anything else (a case not
# the user's to see, a database away) is answered by the error page.
FORM_FAILURES: tuple[type[Exception], ...] = (
    ValidationError,
    InvalidRequestError,
    RuleViolationError,
    ConcurrentChangeError,
    PermissionDeniedError,
    IdempotencyKeyReusedError,
)
BY_KIND = {
    "invalid-request": N_("Check what you entered and try again."),
    "rule-violation": N_(
        "This step is not possible now. Reload the page to see where things stand."
    ),
    "concurrent-change": N_(
        "Someone changed this at the same time. Reload the page and try again."
    ),
    "forbidden": N_("Your role does not allow this step here."),
    "idempotency-key-reused": N_(
        "This form was already sent with other answers. Reload the page and send it again."
    ),
}


def refusal(
    form: str,
    exc: Exception,
    messages: Mapping[str, str] | None = None,
    values: Mapping[str, Any] | None = None,
) -> Failure:
    """The failure ``exc`` of ``form`` as the page says it: by the field the service named
    (``messages``: field or problem kind -> message), else by the kind of problem; at the
    status of the problem."""
    messages = messages or {}
    if isinstance(exc, ValidationError):
        found = exc.errors()
        named = ".".join(str(p) for p in found[0]["loc"]) if found else None
        status, kind = 422, "invalid-request"
    else:
        named = exc.field if isinstance(exc, InvalidRequestError) else None
        status, kind = getattr(exc, "status", 400), getattr(exc, "slug", "invalid-request")
    field_name = named.split(".")[-1] if named else None
    message = (
        messages.get(named or "")
        or messages.get(field_name or "")
        or messages.get(kind)
        or BY_KIND.get(kind)
        or BY_KIND["invalid-request"]
    )
    return Failure(form, {field_name or "_": message}, values or {}, status)
