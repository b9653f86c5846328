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

The projector counts ahead (``services.projections.derived``): for each case, the decision is
run at each instant where its answer may change (an event recorded, a grant's validity
beginning or ending, the 18th birthday), and what the case counts for from each of those
instants is added to counters per province, month, day and cell. The statistics at an
instant sum those counters up to it, which is what ``raw_counts`` gives over every case
document at that instant, without reading any.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, time
from typing import Any
from uuid import UUID

from contracts import consent as c
from contracts.consent_decision import JURISDICTION_TZ, decide
from contracts.envelope import AgencyRef, Event, event_types
from contracts.vocabulary import (
    CTDC_EXPLOITATION,
    AgencyKind,
    DataCategory,
    ExploitationType,
    MeansOfControl,
    Purpose,
    ctdc_means_of_control,
)


def consent_events(doc: dict[str, Any]) -> list[Event]:
    """A case document's consent events, as the consent decision reads them (in the
    consent log's order; free text left out)."""
    types = event_types()
    record_id = c.consent_record_id(UUID(doc["case_id"]))
    return [
        types[event_type].model_validate(
            {**data, "originator_id": record_id, "originator_version": n}
        )
        for n, (event_type, data) in enumerate(doc.get("consent", ()), start=1)
    ]


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


Key = tuple[str, str, str, str, str]  # table, province, period, dimension, value


def raw_counts(cases: Iterable[dict[str, Any]], at: datetime | None = None) -> Counter[Key]:
    """Counts per (table, province, period, dimension, value), before any protection, of
    the cases that count in statistics at ``at`` (now when not given)."""
    at = at or datetime.now(UTC)
    counts: Counter[Key] = Counter()
    for case in cases:
        permitted = permitted_for_statistics(case, at)
        if permitted:
            counts.update(
                case_cells(
                    case, DataCategory.LEGAL_CASE in permitted, DataCategory.NEEDS in permitted
                )
            )
    return counts


def case_cells(case: dict[str, Any], legal: bool, needs: bool) -> Counter[Key]:
    """What one case counts for while its consent lets it count; ``legal`` and ``needs``:
    whether the consent permits its legal_case and its needs data for statistics."""
    counts: Counter[Key] = Counter()
    province, period = case.get("province") or "unknown", _period(case.get("received_at"))
    counts[("cases", province, period, "all", "all")] += 1
    if case.get("reopenings"):
        counts[("reopenings", province, period, "reopened", "yes")] += 1
    if case.get("re_trafficked"):
        # Re-trafficking: a case reopened because the person was trafficked again.
        counts[("re_trafficking", province, period, "re_trafficked", "yes")] += 1
    # The exploitation and the identification are the person's legal_case data: they count
    # only where that category is permitted for statistics.
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
    measures = case.get("measures") if needs else None
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


# -- counted ahead: what each case adds to the counters, from each instant ----------------

COUNTED, LEGAL, NEEDS = 1, 2, 4  # flags: counts at all; legal_case permitted; needs permitted


def instant(at: datetime) -> str:
    """An instant as the counters key it: UTC, to the microsecond, in fixed width, so that
    text order is time order (``2026-03-01T14:00:00.000000``; its first 7 and 10 characters
    are its month and day)."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


def consent_flags(case: dict[str, Any]) -> list[list[Any]]:
    """How the case's consent lets it count in statistics, as ``[instant, flags]`` from each
    instant that changes it (nothing before the first). The consent decision is run at each
    instant where its answer may change, without a new event: an event recorded, a grant
    valid from or until, and the person's 18th birthday; between two of them it holds."""
    if not case.get("consent"):
        return []
    events = consent_events(case)
    instants: set[datetime] = set()
    for event in events:
        instants.add(event.timestamp)
        for name in ("valid_from", "valid_until"):
            value = getattr(event, name, None)
            if value is not None:
                instants.add(value)
        adult_on = getattr(event, "adult_on", None)
        if adult_on is not None:
            instants.add(datetime.combine(adult_on, time(), JURISDICTION_TZ))
    flags, last = [], 0
    for at in sorted(instants):
        permitted = decide(
            events,
            recipient=PUBLISHER,
            purpose=Purpose.STATISTICS,
            categories=tuple(DataCategory),
            at=at,
        ).permitted
        now = (
            (COUNTED if permitted else 0)
            | (LEGAL if DataCategory.LEGAL_CASE in permitted else 0)
            | (NEEDS if DataCategory.NEEDS in permitted else 0)
        )
        if now != last:
            flags.append([instant(at), now])
            last = now
    return flags


def counted(case: dict[str, Any], before: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a case adds to the counters over time: the consent's flags from each instant
    (``consent_flags``, run again only when the case's consent events changed since
    ``before``) and the cells for each flags the case has."""
    consent = len(case.get("consent") or ())
    if before is not None and before["consent"] == consent:
        flags = before["flags"]
    else:
        flags = consent_flags(case)
    cells = {}
    for value in sorted({f for _, f in flags if f}):
        found = case_cells(case, bool(value & LEGAL), bool(value & NEEDS))
        cells[str(value)] = [[*key, n] for key, n in sorted(found.items())]
    return {"consent": consent, "flags": flags, "cells": cells}


def changes(counted: dict[str, Any] | None) -> dict[tuple[str, Key], int]:
    """What a case adds to (or takes from) each cell, at each instant its counting changes."""
    out: dict[tuple[str, Key], int] = {}
    if not counted:
        return out
    before: dict[Key, int] = {}
    for at, value in counted["flags"]:
        now = {tuple(cell[:5]): cell[5] for cell in counted["cells"].get(str(value), ())}
        for key in before.keys() | now.keys():
            delta = now.get(key, 0) - before.get(key, 0)
            if delta:
                out[(at, key)] = delta
        before = now
    return out


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
