"""The coordinator's board: one row per open case, kept by the projector as the case changes.

A row is made from the case overview's document when the projector writes it
(``services.projections.derived``) and kept in a table of open cases keyed by province, so
the board of a province reads its open cases only, whatever the size of the history. Only
``review_overdue`` depends on the day the board is read: it is set when the rows are shown.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from contracts.casework import REVIEW_INTERVAL_DAYS
from contracts.consent_decision import local_date
from contracts.vocabulary import CaseStage
from services.projections.views import STEP_SERVICES

ENDED = ("completed", "rejected", "cancelled", "failed")


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


def shown(rows: list[tuple[str, str, str, str]], today: date | None = None) -> bytes:
    """The board as read on ``today`` (the jurisdiction's day now when not given), as JSON:
    the rows as stored (``ViewStore.open_cases``: oldest reception first, then by case),
    each marked overdue when its review fell due before today. Rows are put together as
    text: a board of thousands of open cases is not parsed to be written again."""
    day = (today or local_date(datetime.now(UTC))).isoformat()
    return (
        "["
        + ",".join(
            row.replace(ON_TIME, OVERDUE, 1) if due and due < day else row
            for _received, _case, due, row in rows
        )
        + "]"
    ).encode()


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
