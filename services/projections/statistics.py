"""Statistics for policy, safe to publish.

Only cases whose consent covers statistics count. A cell is published rounded down to the
reporting step, and only when that rounded count is at least the threshold (11, as the
Counter Trafficking Data Collaborative publishes); otherwise it is suppressed. Successive
reports therefore move in whole steps and cannot be subtracted to single out a person.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.projections.views import statistics_consent

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


@dataclass(frozen=True)
class Cell:
    table: str
    province: str
    period: str
    dimension: str
    value: str
    count: int | None  # None: suppressed


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


def raw_counts(cases: Iterable[dict[str, Any]]) -> Counter[tuple[str, str, str, str, str]]:
    """Counts per (table, province, period, dimension, value), before any protection."""
    counts: Counter[tuple[str, str, str, str, str]] = Counter()
    for case in cases:
        if not statistics_consent(case):
            continue
        province, period = case.get("province") or "unknown", _period(case.get("received_at"))
        counts[("cases", province, period, "all", "all")] += 1
        if case.get("reopenings"):
            counts[("reopenings", province, period, "reopened", "yes")] += 1
        for referral in case["referrals"].values():
            service = referral["service_type"]
            counts[("referrals", province, period, service, referral["status"])] += 1
            if referral.get("dispatched_at") and referral.get("started_at"):
                hours = _hours(referral["dispatched_at"], referral["started_at"])
                counts[("time_to_service", province, period, service, bucket(hours))] += 1
    return counts


def publish(
    cases: Iterable[dict[str, Any]], threshold: int = THRESHOLD, step: int = STEP
) -> list[Cell]:
    """Every cell, protected; suppressed cells are kept (count None) so readers see them."""
    return [
        Cell(table, province, period, dimension, value, publishable(n, threshold, step))
        for (table, province, period, dimension, value), n in sorted(raw_counts(cases).items())
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
