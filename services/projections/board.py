"""The coordinator's board: one row per open case, kept by the projector as the case changes.

A row is made from the case overview's document when the projector writes it
(``services.projections.derived``) and kept in a table of open cases keyed by province, so
the board of a province reads its open cases only, whatever the size of the history. Only
``review_overdue`` depends on the day the board is read: it is set when the rows are shown.

The board is read a page at a time, the cases needing attention first (``SEGMENTS``): each
row keeps its attention rank (a deadline breached, else a handover waiting, else none) as a
column beside it, and the page goes on from a cursor naming the last row shown (its segment,
reception and case), so every page is a range of one index, however many cases are open.
Whether a review is overdue is asked of the stored ``review_due_on`` on the day of reading:
the cases of rank ``QUIET`` whose review fell due before that day come before the others.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson

from contracts.casework import REVIEW_INTERVAL_DAYS
from contracts.consent_decision import local_date
from contracts.vocabulary import CaseStage
from services.projections.views import STEP_SERVICES

ENDED = ("completed", "rejected", "cancelled", "failed")

# Attention ranks kept with each row: a deadline breached, a handover waiting, neither.
BREACHED, WAITING, QUIET = 0, 1, 2
# The board's order, segment by segment (each oldest reception first, then by case):
# (rank, whether the review is overdue on the day: True, False, or None for either).
SEGMENTS: tuple[tuple[int, bool | None], ...] = (
    (BREACHED, None),
    (WAITING, None),
    (QUIET, True),
    (QUIET, False),
)
PAGE, MAX_PAGE = 100, 500

Position = tuple[int, str, str]  # segment, received_at, case_id of the last row shown


def attention(row: dict[str, Any]) -> int:
    """The rank a board row keeps for the board's order: breached deadlines first, then
    handovers waiting on a party."""
    if row["deadlines_breached"]:
        return BREACHED
    if row["open_handovers"]:
        return WAITING
    return QUIET


def cursor(position: Position) -> str:
    """Where the next page starts, as an opaque text: the case id and reception of the last
    row shown, nothing of the person."""
    return base64.urlsafe_b64encode(orjson.dumps(list(position))).decode().rstrip("=")


def position(text: str) -> Position:
    """The position a cursor names; ``ValueError`` for anything that is not one."""
    try:
        segment, received_at, case_id = orjson.loads(
            base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        )
    except (binascii.Error, orjson.JSONDecodeError, ValueError, TypeError) as exc:
        raise ValueError("not a cursor of the board") from exc
    if (
        type(segment) is not int
        or not 0 <= segment < len(SEGMENTS)
        or not isinstance(received_at, str)
        or not isinstance(case_id, str)
        or len(received_at) > 64
        or len(case_id) > 64
    ):
        raise ValueError("not a cursor of the board")
    return segment, received_at, case_id


def board_row(case: dict[str, Any]) -> dict[str, Any]:
    """An open case as the board shows it: handovers waiting on a party, minutes from the
    reception to each first step, open referrals, the next review and the deadlines
    breached. ``review_overdue`` is left for ``shown`` to set on the day."""
    steps = {}
    for service in STEP_SERVICES:
        started = [
            ref["started_at"]
            for ref in case["referrals"].values()
            if ref["service_type"] == service and ref.get("started_at")
        ]
        steps[service] = _minutes(case.get("received_at"), min(started)) if started else None
    review_due = review_due_on(case)
    return {
        "case_id": case["case_id"],
        "received_at": case.get("received_at"),
        "stage": case.get("stage"),
        "minor": case.get("minor"),
        "open_handovers": [
            {"handover_id": hid, "waiting_for": h["waiting_for"], "started_at": h["started_at"]}
            for hid, h in case["handovers"].items()
            if h["status"] == "open"
        ],
        "minutes_from_reception": steps,
        "open_referrals": [
            {
                "referral_id": rid,
                "service_type": ref["service_type"],
                "to_agency": ref["to_agency"],
                "status": ref["status"],
            }
            for rid, ref in case["referrals"].items()
            if ref["status"] not in ENDED
        ],
        "review_due_on": review_due.isoformat() if review_due else None,
        "review_overdue": False,  # as of the day it is read: ``shown`` sets it
        # Contacts in a mode the person refused (a home visit, say): breaches of their
        # wish, each with the reason on the case's own record.
        "contacts_against_preference": case.get("contacts_against_preference", []),
        "deadlines_breached": [
            {"referral_id": rid, "service_type": ref["service_type"], **missed}
            for rid, ref in case["referrals"].items()
            for missed in ref["escalations"]
        ],
    }


# How a board row (written by orjson) says whether its review is overdue.
ON_TIME, OVERDUE = '"review_overdue":false', '"review_overdue":true'


# A row of a page as the store reads it: segment, received_at, case_id, review_due_on ("" for
# none) and the row as JSON.
PageRow = tuple[int, str, str, str, str]


def shown(
    rows: Sequence[PageRow], limit: int, totals: dict[str, int], today: date | None = None
) -> bytes:
    """One page of the board as read on ``today`` (the jurisdiction's day now when not
    given), as JSON: ``limit`` rows as stored (read one more than shown, to know whether
    another page follows), each marked overdue when its review fell due before today; the
    cursor of the next page; the province's open cases and what needs attention in all of
    them (``totals``: ``open`` and the counts of ``attention``). Rows are put together as
    text: a page is not parsed to be written again."""
    day = (today or local_date(datetime.now(UTC))).isoformat()
    page = rows[:limit]
    after = cursor(page[-1][:3]) if len(rows) > limit and page else None
    listed = ",".join(
        row.replace(ON_TIME, OVERDUE, 1) if due and due < day else row
        for _segment, _received, _case, due, row in page
    )
    head = orjson.dumps({"next": after, **totals})
    return b'{"rows":[' + listed.encode() + b"]," + head[1:]


def review_due_on(case: dict[str, Any]) -> date | None:
    """When an open case's next review falls due: as its last review said, or by its stage
    from its reception (or reopening) before any review (``REVIEW_INTERVAL_DAYS``)."""
    if case.get("next_review_on"):
        return date.fromisoformat(case["next_review_on"])
    since = case.get("reopened_at") or case.get("received_at")
    interval = REVIEW_INTERVAL_DAYS.get(CaseStage(case["stage"])) if case.get("stage") else None
    if since is None or interval is None:
        return None
    return local_date(datetime.fromisoformat(since)) + timedelta(days=interval)


def _minutes(start: str | None, end: str) -> float | None:
    if start is None:
        return None
    return round(
        (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds() / 60, 1
    )
