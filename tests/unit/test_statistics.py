"""Published statistics never single anyone out."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.projections.statistics import (
    STEP,
    THRESHOLD,
    bucket,
    publish,
    publishable,
    raw_counts,
    to_csv,
)

SERVICES = ["health_check", "psychological_first_aid", "legal_aid"]
STATUSES = ["requested", "in-progress", "completed", "failed"]


def case(
    province: str,
    month: int,
    consent: bool,
    referrals: list[tuple[str, str, int | None]],
    reopenings: int = 0,
) -> dict[str, Any]:
    refs = {}
    for n, (service, status, hours) in enumerate(referrals):
        started = None if hours is None else f"2026-{month:02d}-02T{hours:02d}:00:00+00:00"
        refs[str(n)] = {
            "service_type": service,
            "status": status,
            "dispatched_at": f"2026-{month:02d}-02T00:00:00+00:00",
            "started_at": started,
        }
    return {
        "case_id": f"{province}-{month}-{len(refs)}",
        "province": province,
        "received_at": f"2026-{month:02d}-01T10:00:00+00:00",
        "reopenings": reopenings,
        "statistics_grants": ["g"] if consent else [],
        "withdrawn_grants": [],
        "referrals": refs,
    }


cases = st.lists(
    st.builds(
        case,
        province=st.sampled_from(["dong-thap", "lao-cai"]),
        month=st.integers(1, 3),
        consent=st.booleans(),
        referrals=st.lists(
            st.tuples(
                st.sampled_from(SERVICES),
                st.sampled_from(STATUSES),
                st.one_of(st.none(), st.integers(0, 23)),
            ),
            max_size=3,
        ),
        reopenings=st.integers(0, 2),
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(cases)
def test_no_published_cell_is_below_the_threshold(docs: list[dict[str, Any]]) -> None:
    for cell in publish(docs):
        assert cell.count is None or (cell.count >= THRESHOLD and cell.count % STEP == 0)


@settings(max_examples=200, deadline=None)
@given(cases)
def test_cases_without_statistics_consent_never_count(docs: list[dict[str, Any]]) -> None:
    with_consent = [d for d in docs if d["statistics_grants"]]
    assert raw_counts(docs) == raw_counts(with_consent)


@settings(max_examples=200, deadline=None)
@given(cases, st.integers(1, 10))
def test_one_more_person_never_shows_as_a_difference_of_one(
    docs: list[dict[str, Any]], extra_month: int
) -> None:
    """Reports before and after one case is added differ by 0 or by whole steps."""
    before = {(c.table, c.province, c.period, c.dimension, c.value): c.count for c in publish(docs)}
    added = case("dong-thap", 1, True, [("health_check", "completed", 3)])
    after = {
        (c.table, c.province, c.period, c.dimension, c.value): c.count
        for c in publish([*docs, added])
    }
    for key, count in after.items():
        old = before.get(key)
        if count is not None and old is not None:
            assert (count - old) % STEP == 0


def test_rounding_and_suppression() -> None:
    assert [publishable(n) for n in (0, 10, 11, 14, 15, 19, 20, 37)] == [
        None,
        None,
        None,
        None,
        15,
        15,
        20,
        35,
    ]


def test_counts_by_province_period_service_and_outcome() -> None:
    docs = [case("lao-cai", 2, True, [("health_check", "completed", 3)]) for _ in range(17)]
    docs += [case("lao-cai", 2, False, [("health_check", "completed", 3)]) for _ in range(9)]
    cells = {(c.table, c.dimension, c.value): c.count for c in publish(docs)}
    assert cells[("cases", "all", "all")] == 15  # 17 consenting cases, rounded down
    assert cells[("referrals", "health_check", "completed")] == 15
    assert cells[("time_to_service", "health_check", "1-6 hours")] == 15
    assert bucket(0.5) == "under 1 hour"
    assert bucket(100) == "over 3 days"
    csv_text = to_csv(publish(docs[:5]))
    assert csv_text.splitlines()[0] == "table,province,period,dimension,value,count"
    assert "suppressed" in csv_text
