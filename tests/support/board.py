"""The coordinator's board read whole, a page at a time, and the order it is expected in,
worked out from the case documents themselves."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Any

from services.projections.application import ProjectionService
from services.projections.board import QUIET, attention, board_row


def every_page(
    projections: ProjectionService, province: str, limit: int, today: date
) -> list[dict[str, Any]]:
    """Every page of a province's board, following each page's cursor to the last."""
    pages = [projections.board(province, limit, today=today)]
    while pages[-1]["next"] is not None:
        pages.append(projections.board(province, limit, pages[-1]["next"], today))
        assert len(pages) < 10_000
    return pages


def expected(docs: Iterable[dict[str, Any]], today: date) -> list[tuple[int, str, str]]:
    """The open cases of these documents in the board's order as of ``today``: deadlines
    breached, handovers waiting, reviews overdue, the others; each oldest reception first."""
    day = today.isoformat()
    order = []
    for doc in docs:
        if doc.get("closed"):
            continue
        row = board_row(doc)
        rank = attention(row)
        due = row["review_due_on"]
        segment = rank if rank < QUIET else (QUIET if due and due < day else QUIET + 1)
        order.append((segment, row["received_at"] or "", row["case_id"]))
    return sorted(order)


def totals(docs: Iterable[dict[str, Any]], today: date) -> dict[str, Any]:
    """What the board counts of these documents' open cases."""
    rows = [board_row(doc) for doc in docs if not doc.get("closed")]
    day = today.isoformat()
    return {
        "open": len(rows),
        "attention": {
            "deadlines_breached": sum(1 for r in rows if r["deadlines_breached"]),
            "handovers_waiting": sum(1 for r in rows if r["open_handovers"]),
            "reviews_overdue": sum(
                1 for r in rows if r["review_due_on"] and r["review_due_on"] < day
            ),
        },
    }
