"""The coordinator's board of a province, live: htmx asks for its rows every few seconds;
below them the follow-up after exit of the province's closed cases (contacts missed, the
next one due)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from services.projections import api as projections_api
from services.web.deps import User, page_router
from services.web.positions import service
from services.web.render import render

router = page_router()
REFRESH_SECONDS = 5


def _minutes_since(moment: str | None, now: datetime) -> int | None:
    if not moment:
        return None
    return int((now - datetime.fromisoformat(moment)).total_seconds() // 60)


def board_rows(request: Request, principal: Any, province: str | None) -> list[dict[str, Any]]:
    """The board as the projections service answers it (oversight roles only, own
    province), with the waiting time of each open handover, breached deadlines first."""
    rows = projections_api.board(service(request, "projections"), principal, province)
    now = datetime.now(UTC)
    for row in rows:
        for handover in row["open_handovers"]:
            handover["minutes_waiting"] = _minutes_since(handover["started_at"], now)
        row["minutes_since_reception"] = _minutes_since(row["received_at"], now)
    return sorted(rows, key=lambda r: (not r["deadlines_breached"], r["received_at"] or ""))


@router.get("/board")
def board(request: Request, principal: User, province: str | None = None) -> Response:
    rows = board_rows(request, principal, province)
    block = "rows" if request.headers.get("hx-request") else None
    follow_ups = (
        []
        if block
        else projections_api.follow_ups(service(request, "projections"), principal, province)
    )
    return render(
        request,
        "board.html",
        block=block,
        rows=rows,
        follow_ups=follow_ups,
        province=province or principal.province,
        refresh=REFRESH_SECONDS,
        updated=datetime.now(UTC),
    )
