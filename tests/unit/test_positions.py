"""The Ketnoi-Position header's value: read strictly, written in one order."""

from __future__ import annotations

import pytest

from services.runtime.positions import MAX_LOGS, InvalidPositionError, merged, parse, render


def test_a_list_of_logs_and_positions() -> None:
    assert parse(["intake=5295"]) == {"intake": 5295}
    assert parse([" intake=5295 , consent=7"]) == {"intake": 5295, "consent": 7}
    # Several header lines are one list; a log named twice counts at its highest.
    assert parse(["intake=5", "intake=9,consent=1"]) == {"intake": 9, "consent": 1}
    assert parse(["some_future_log=1"]) == {"some_future_log": 1}


@pytest.mark.parametrize(
    "value",
    [
        "",
        "intake",
        "intake=",
        "=5",
        "intake=-1",
        "intake=1.5",
        "intake=0x10",
        "Intake=1",
        "intake=1;consent=2",
        "intake=1,,consent=2",
        "intake = 1",
        "intake=१२",  # digits of another script
        "intake=99999999999999999999",
        f"intake={2**63}",
        "x" * 41 + "=1",
        ",".join(f"log{n}=1" for n in range(MAX_LOGS + 1)),
    ],
)
def test_anything_else_is_refused(value: str) -> None:
    with pytest.raises(InvalidPositionError) as refused:
        parse([value])
    assert refused.value.status == 422
    assert refused.value.field == "Ketnoi-Position"


def test_rendered_by_log_name_and_merged_at_the_highest() -> None:
    assert render({"referral": 3, "consent": 12, "intake": 5295}) == (
        "consent=12,intake=5295,referral=3"
    )
    assert merged({"intake": 5, "consent": 2}, {"intake": 3, "referral": 1}) == {
        "intake": 5,
        "consent": 2,
        "referral": 1,
    }
    assert parse([render({"intake": 2**63 - 1})]) == {"intake": 2**63 - 1}
