"""A refused form said again in the user's words: by the field the service named, else by
the kind of problem; and the person's copy saying facts in the reader's language."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.referral.api import FeedbackCreate
from services.runtime.errors import (
    InvalidRequestError,
    PermissionDeniedError,
    RuleViolationError,
)
from services.web.forms import BY_KIND, refusal
from services.web.i18n import use_locale
from services.web.person_copy import Telling

MESSAGES = {"why": "Say why.", "forbidden": "Another role approves."}


def test_a_field_the_service_names_gets_the_pages_message_for_it() -> None:
    error = refusal("complete", InvalidRequestError("why", "Say why ..."), MESSAGES, {"a": 1})
    assert (error.form, error.field, error.message, error.status) == (
        "complete",
        "why",
        "Say why.",
        422,
    )
    assert error.values == {"a": 1}


def test_a_schema_error_names_its_last_field() -> None:
    with pytest.raises(ValidationError) as raised:
        FeedbackCreate.model_validate({"satisfaction": 9})
    error = refusal("feedback", raised.value, {"satisfaction": "From 1 to 5."})
    assert (error.field, error.message, error.status) == ("satisfaction", "From 1 to 5.", 422)


def test_other_problems_are_said_by_their_kind() -> None:
    refused = refusal("approve", PermissionDeniedError("no"), MESSAGES)
    assert (refused.message, refused.status, refused.field) == ("Another role approves.", 403, None)
    late = refusal("start", RuleViolationError("no"))
    assert (late.message, late.status) == (BY_KIND["rule-violation"], 409)


@pytest.mark.parametrize(
    ("locale", "expected"),
    [
        (
            "vi",
            [
                ("Cơ quan tiếp nhận", "Công an (dong-thap-police)"),
                ("Ngày sinh", "14 thg 3, 2002"),
                ("Rủi ro", "Trung bình"),
                ("Người chưa thành niên", "Không"),
            ],
        ),
        (
            "en",
            [
                ("Receiving agency", "Police (dong-thap-police)"),
                ("Date of birth", "Mar 14, 2002"),
                ("Risk", "Medium"),
                ("Minor", "No"),
            ],
        ),
    ],
)
def test_the_copy_says_facts_in_the_readers_language(
    locale: str, expected: list[tuple[str, str]]
) -> None:
    use_locale(locale)
    named = {"vi": "Công an", "en": "Police"}[locale]
    telling = Telling(lambda agency_id: f"{named} ({agency_id})")
    found = telling.facts(
        {
            "receiving_agency": {"agency_id": "dong-thap-police", "kind": "police"},
            "date_of_birth": "2002-03-14",
            "level": "medium",
            "minor": False,
            "person_id": "9c1f0000-0000-0000-0000-000000000000",  # ids stay out of the copy
            "case_manager_id": "dt-swc-caseworker-1",  # and so do the staff's user ids
            "notes": None,
        }
    )
    assert found == expected
