"""A form that could not be recorded: what went wrong, in the user's words, next to the field,
with what was typed kept. The rules stay in the services; a page only says their answer
again in the user's language, by the field or the kind of problem the service named."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from services.runtime.errors import (
    ConcurrentChangeError,
    IdempotencyKeyReusedError,
    InvalidRequestError,
    PermissionDeniedError,
    RuleViolationError,
)
from services.web.i18n import N_

# What a form answers with its own page again; anything else (a case not the user's to see,
# a database away) is answered by the error page.
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


@dataclass(frozen=True)
class FormError:
    """Which form failed, at which field (if the service named one), and the message (an
    ``N_`` text, translated where it is shown)."""

    form: str
    field: str | None
    message: str
    status: int
    values: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def form_error(
    form: str,
    exc: Exception,
    messages: Mapping[str, str] | None = None,
    values: Mapping[str, Any] | None = None,
) -> FormError:
    """The failure ``exc`` of ``form`` as the page says it: by the field the service named
    (``messages``: field or problem kind -> message), else by the kind of problem."""
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
    return FormError(form, field_name, message, status, values or {})
