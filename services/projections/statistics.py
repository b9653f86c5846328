"""Statistics for policy, safe to publish.

Only cases whose consent covers statistics count, as the consent decision says at the
instant the statistics are computed: ``contracts.consent_decision.decide``, the same pure
function the consent and referral services run, over the case's consent events (kept in the
case overview), for the purpose ``statistics`` and the recipient ``PUBLISHER``. So a grant
that expired, was withdrawn or is overridden by a refusal, and a guardian's grant once the
person is 18, do not count; a case counts when at least one category is permitted (the
statistics carry no field of any category, only that the case and its referrals exist);
the exploitation (types and means of control, by the CTDC's variable names) and the
identification status count only where ``legal_case`` is permitted for statistics.

The publisher is the provincial coordination office that publishes these figures: the
Department of Labour, Invalids and Social Affairs (``<province>-dolisa`` in the demo, where
the coordinators' tokens name it), a state authority. It is named once for every province
as ``ketnoi-statistics``, of kind ``local_authority``, so a grant for statistics covers it
when it names every recipient (the demo's and tests' grants name the group ``any``), the
group ``government``, the kind ``local_authority`` or that id; and a person's refusal of the
government (or of the authorities, for statistics) keeps them out of the figures.

A cell is published rounded down to the reporting step, and only when that rounded count is
at least the threshold (11, as the Counter Trafficking Data Collaborative publishes);
otherwise it is suppressed. Successive reports therefore move in whole steps and cannot be
subtracted to single out a person.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from contracts.consent_decision import decide
from contracts.envelope import AgencyRef
from contracts.vocabulary import (
    CTDC_EXPLOITATION,
    AgencyKind,
    DataCategory,
    ExploitationType,
    MeansOfControl,
    Purpose,
    ctdc_means_of_control,
)
from services.projections.views import consent_events

THRESHOLD = 11
STEP = 5
SUPPRESSED = None

# Time from a referral being sent to the service starting.
TIME_BUCKETS: tuple[tuple[str, float], ...] = (
    ("under 1 hour", 1),
    ("1-6 hours", 6),
    ("6-24 hours", 24),
    ("1-3 days", 72),
    ("over 3 days", float("inf")),
)


# IOM's Reintegration Sustainability Survey dimensions, each scored 0 to 1.
DIMENSIONS = ("economic", "social", "psychosocial")
# A change smaller than this between the baseline and the latest measure is no change.
PROGRESS_MARGIN = 0.05


def progress(change: float) -> str:
    if change >= PROGRESS_MARGIN:
        return "improved"
    if change <= -PROGRESS_MARGIN:
        return "declined"
    return "unchanged"


@dataclass(frozen=True)
class Cell:
    table: str
    province: str
    period: str
    dimension: str
    value: str
    count: int | None  # None: suppressed


PUBLISHER = AgencyRef(agency_id="ketnoi-statistics", kind=AgencyKind.LOCAL_AUTHORITY)


def permitted_for_statistics(case: dict[str, Any], at: datetime) -> frozenset[DataCategory]:
    """The categories the consent in force at ``at`` permits to ``PUBLISHER`` for
    statistics."""
    if not case.get("consent"):
        return frozenset()
    decision = decide(
        consent_events(case),
        recipient=PUBLISHER,
        purpose=Purpose.STATISTICS,
        categories=tuple(DataCategory),
        at=at,
    )
    return frozenset(decision.permitted)


def counts_in_statistics(case: dict[str, Any], at: datetime) -> bool:
    """True when the consent in force at ``at`` lets the case count in statistics: the
    consent decision permits at least one category to ``PUBLISHER`` for statistics."""
    return bool(permitted_for_statistics(case, at))


def publishable(raw: int, threshold: int = THRESHOLD, step: int = STEP) -> int | None:
    """The count as published: rounded down to the step, or suppressed below the threshold."""
    rounded = (raw // step) * step
    return rounded if rounded >= threshold else SUPPRESSED


def _period(iso: str | None) -> str:
    return iso[:7] if iso else "unknown"  # YYYY-MM


def _hours(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds() / 3600


def bucket(hours: float) -> str:
    return next(label for label, limit in TIME_BUCKETS if hours < limit)


def raw_counts(
    cases: Iterable[dict[str, Any]], at: datetime | None = None
) -> Counter[tuple[str, str, str, str, str]]:
    """Counts per (table, province, period, dimension, value), before any protection, of
    the cases that count in statistics at ``at`` (now when not given)."""
    at = at or datetime.now(UTC)
    counts: Counter[tuple[str, str, str, str, str]] = Counter()
    for case in cases:
        permitted = permitted_for_statistics(case, at)
        if not permitted:
            continue
        province, period = case.get("province") or "unknown", _period(case.get("received_at"))
        counts[("cases", province, period, "all", "all")] += 1
        if case.get("reopenings"):
            counts[("reopenings", province, period, "reopened", "yes")] += 1
        if case.get("re_trafficked"):
            # Re-trafficking: a case reopened because the person was trafficked again.
            counts[("re_trafficking", province, period, "re_trafficked", "yes")] += 1
        # The exploitation and the identification are the person's legal_case data: they count
        # only where that category is permitted for statistics.
        legal = DataCategory.LEGAL_CASE in permitted
        exploitation = case.get("exploitation") if legal else None
        if exploitation:
            # Named as the CTDC names its variables, so the tables compare with its own.
            for kind in exploitation["types"]:
                name = CTDC_EXPLOITATION[ExploitationType(kind)]
                counts[("exploitation", province, period, "typeOfExploit", name)] += 1
            for means in exploitation["means_of_control"]:
                name = ctdc_means_of_control(MeansOfControl(means))
                counts[("means_of_control", province, period, "meansOfControl", name)] += 1
        if legal and case.get("identification"):
            status = case["identification"]
            counts[("identification", province, period, "status", status)] += 1
        # Progress per dimension of reintegration, latest measure against the baseline: the
        # person's needs data, counted where that category may count.
        measures = case.get("measures") if DataCategory.NEEDS in permitted else None
        if measures and "latest" in measures:
            for dimension in DIMENSIONS:
                change = measures["latest"][dimension] - measures["baseline"][dimension]
                counts[("reintegration", province, period, dimension, progress(change))] += 1
        for referral in case["referrals"].values():
            service = referral["service_type"]
            counts[("referrals", province, period, service, referral["status"])] += 1
            if referral.get("dispatched_at") and referral.get("started_at"):
                hours = _hours(referral["dispatched_at"], referral["started_at"])
                counts[("time_to_service", province, period, service, bucket(hours))] += 1
    return counts


def publish(
    cases: Iterable[dict[str, Any]],
    threshold: int = THRESHOLD,
    step: int = STEP,
    at: datetime | None = None,
) -> list[Cell]:
    """Every cell as of ``at`` (now when not given), protected; suppressed cells are kept
    (count None) so readers see them."""
    counts = raw_counts(cases, at)
    return [
        Cell(table, province, period, dimension, value, publishable(n, threshold, step))
        for (table, province, period, dimension, value), n in sorted(counts.items())
    ]


def to_csv(cells: Iterable[Cell]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["table", "province", "period", "dimension", "value", "count"])
    for cell in cells:
        writer.writerow(
            [
                cell.table,
                cell.province,
                cell.period,
                cell.dimension,
                cell.value,
                "suppressed" if cell.count is None else cell.count,
            ]
        )
    return out.getvalue()
