"""The case-work forms' reading of what was posted, their errors, the gate that decides which
forms a page shows, and the measures' trend chart."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import BaseModel, Field
from starlette.datastructures import FormData

from contracts.vocabulary import CaseStage, Role
from services.runtime.auth import Principal
from services.runtime.errors import InvalidRequestError, RuleViolationError
from services.web.forms import GENERIC, RULES, FieldError, Posted, attempt, gate
from services.web.i18n import TIME_ZONE
from services.web.planning import trend


def posted(*pairs: tuple[str, str]) -> Posted:
    return Posted(FormData(list(pairs)))


def test_blank_text_is_none_and_lists_drop_blanks() -> None:
    form = posted(("a", "  "), ("b", " x "), ("c", "1"), ("c", ""), ("c", "2"))
    assert form.text("a") is None
    assert form.text("b") == "x"
    assert form.all("c") == ["1", "2"]
    assert form.values() == {"a": "  ", "b": " x ", "c": ["1", "", "2"]}


def test_a_local_moment_is_read_in_vietnams_time() -> None:
    moment = posted(("at", "2026-03-01T08:30")).moment("at")
    assert moment == datetime(2026, 3, 1, 8, 30, tzinfo=TIME_ZONE)
    assert moment is not None
    assert moment.astimezone(UTC).hour == 1
    with pytest.raises(FieldError):
        posted(("at", "yesterday")).moment("at")
    with pytest.raises(FieldError):
        posted().moment("at")


def test_scores_take_a_decimal_comma_and_stay_between_0_and_1() -> None:
    assert posted(("s", "0,45")).score("s") == 0.45
    for bad in ("1.5", "-0.1", "", "half"):
        with pytest.raises(FieldError):
            posted(("s", bad)).score("s")


def test_yes_no_unanswered_is_none_unless_required() -> None:
    assert posted(("q", "yes")).yes_no("q") is True
    assert posted(("q", "no")).yes_no("q") is False
    assert posted(("q", "")).yes_no("q") is None
    with pytest.raises(FieldError):
        posted().yes_no("q", required=True)


class Body(BaseModel):
    text: str = Field(min_length=1)


MESSAGES = {"text": "Write it.", "_": "The form."}


def test_a_recorded_form_has_no_failure() -> None:
    sent: list[str] = []
    assert attempt("f", posted(("text", "hi")), MESSAGES, lambda: sent.append("hi")) is None
    assert sent == ["hi"]


def test_errors_name_the_field_and_keep_what_was_typed() -> None:
    form = posted(("text", ""), ("csrf_token", "t"), ("idempotency_key", "k"), ("other", "kept"))

    def bad_schema() -> object:
        return Body.model_validate({"text": ""})

    failure = attempt("f", form, MESSAGES, bad_schema)
    assert failure is not None
    assert failure.errors == {"text": "Write it."}
    assert failure.values == {"text": "", "other": "kept"}  # no token or key sent back

    def bad_field() -> object:
        raise FieldError("when")

    failure = attempt("f", form, MESSAGES, bad_field)
    assert failure is not None
    assert failure.errors == {"when": GENERIC}

    def refused_by_service() -> object:
        raise InvalidRequestError("text.0", "no")

    failure = attempt("f", form, MESSAGES, refused_by_service)
    assert failure is not None
    assert failure.errors == {"text": "Write it."}


def test_a_rule_refusal_says_what_to_do_first() -> None:
    def closed() -> object:
        raise RuleViolationError("closed", allowed=["reopen"])

    failure = attempt("f", posted(), MESSAGES, closed)
    assert failure is not None
    assert failure.errors == {"_": RULES["reopen"]}
    own = attempt("f", posted(), MESSAGES, closed, {"_": "Own words."})
    assert own is not None
    assert own.errors == {"_": "Own words."}


def case_read(receiving: str, manager: str | None) -> Any:
    return SimpleNamespace(
        province="dong-thap",
        receiving_agency=SimpleNamespace(agency_id=receiving),
        case_manager_agency=SimpleNamespace(agency_id=manager) if manager else None,
    )


def principal(role: Role, agency: str = "swc") -> Principal:
    return Principal(user_id="u", agency_id=agency, province="dong-thap", roles=frozenset({role}))


def test_the_gate_shows_each_form_to_the_role_whose_work_it_is() -> None:
    case = case_read("police", "swc")
    health = gate(principal(Role.HEALTH_WORKER), case)
    manager = gate(principal(Role.CASE_MANAGER), case)
    supervisor = gate(principal(Role.SUPERVISOR), case)
    assert health["record_medical_examination"]
    assert not manager["record_medical_examination"]
    assert manager["manage_plan"]
    assert manager["record_assessment"]
    assert manager["manage_case"]
    assert not health["manage_plan"]
    assert not supervisor["manage_plan"]
    assert supervisor["review_case"]
    assert not manager["review_case"]
    # Of another agency, or overseeing the province: no form at all.
    other = gate(principal(Role.CASE_MANAGER, agency="elsewhere"), case)
    coordinator = gate(principal(Role.COORDINATOR, agency="dolisa"), case)
    for may in (other, coordinator):
        assert not any(
            may[a] for a in ("manage_plan", "record_contact", "record_assessment", "manage_case")
        )


def test_the_trend_draws_each_dimension_across_the_measures() -> None:
    measures = [
        SimpleNamespace(economic=0.0, social=0.5, psychosocial=1.0, composite=0.5),
        SimpleNamespace(economic=1.0, social=0.5, psychosocial=0.0, composite=0.5),
    ]
    chart = trend(measures)
    top, bottom = chart["pad"], chart["height"] - chart["pad"]
    (x0, y0), (x1, y1) = chart["dots"]["economic"]
    assert (y0, y1) == (bottom, top)  # 0 at the bottom, 1 at the top
    assert x0 < x1
    assert chart["lines"]["social"].count(",") == 2
    single = trend(measures[:1])
    assert single["dots"]["composite"][0][0] == chart["width"] / 2


def test_the_stage_vocabulary_is_labelled() -> None:
    from services.web.labels import LABELS

    assert {s.value for s in CaseStage} <= set(LABELS["stage"])


def test_scores_are_written_as_each_language_writes_them() -> None:
    from services.web.i18n import score, use_locale

    use_locale("vi")
    assert (score(0.45), score(0.3, signed=True), score(-0.05, signed=True)) == (
        "0,45",
        "+0,30",
        "-0,05",
    )
    use_locale("en")
    assert (score(0.45), score(0.3, signed=True)) == ("0.45", "+0.30")


def test_every_case_work_form_ends_in_one_send_and_answer() -> None:
    """Recorded: back to its place on the page (303); refused: the page again, given why."""
    from fastapi.responses import Response

    from services.web.casework import recorded

    pages: list[Any] = []

    def again(failure: Any) -> Response:
        pages.append(failure)
        return Response(status_code=422)

    sent = recorded("note", posted(("text", "x")), {}, lambda: None, where="/a#b", again=again)
    assert (sent.status_code, sent.headers["location"], pages) == (303, "/a#b", [])

    def refuse() -> object:
        raise FieldError("text")

    told = {"text": "Write the note."}
    refused = recorded("note", posted(("text", "")), told, refuse, where="/a#b", again=again)
    assert refused.status_code == 422
    [failure] = pages
    assert (failure.form, failure.errors, failure.values) == (
        "note",
        {"text": "Write the note."},
        {"text": ""},
    )

    def broken_rule() -> object:
        raise RuleViolationError("closed", allowed=("reopen",))

    rules = {"_": "Only a supervisor."}
    recorded("x", posted(), {}, broken_rule, where="/", again=again, rules=rules)
    assert pages[-1].errors == {"_": "Only a supervisor."}
