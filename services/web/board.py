"""The coordinator's board of a province, live: htmx asks for its rows every few seconds;
below them the follow-up after exit of the province's closed cases (contacts missed, the
next one due). The board is shown a page at a time, with the province's totals above it
and a link to the next page (its cursor holds no more than a case id and a reception)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Query, Request
from fastapi.responses import Response

from services.projections import api as projections_api
from services.web.deps import User, page_router
from services.web.positions import service
from services.web.render import render

router = page_router()
REFRESH_SECONDS = 5
# Cases shown on a page: a coordinator reads each card, and the page refreshes every few
# seconds; the totals above them count the whole province.
ROWS = 25


def _minutes_since(moment: str | None, now: datetime) -> int | None:
    if not moment:
        return None
    return int((now - datetime.fromisoformat(moment)).total_seconds() // 60)


def board_page(
    request: Request, principal: Any, province: str | None, after: str | None = None
) -> dict[str, Any]:
    """A page of the board as the projections service answers it (oversight roles only,
    own province), in its order, with the waiting time of each open handover."""
    projections = service(request, "projections")
    page = projections_api.board(projections, principal, province, limit=ROWS, after=after)
    now = datetime.now(UTC)
    for row in page["rows"]:
        for handover in row["open_handovers"]:
            handover["minutes_waiting"] = _minutes_since(handover["started_at"], now)
        row["minutes_since_reception"] = _minutes_since(row["received_at"], now)
    return page


@router.get("/board")
def board(
    request: Request,
    principal: User,
    province: str | None = None,
    after: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    page = board_page(request, principal, province, after)
    block = "rows" if request.headers.get("hx-request") else None
    follow_ups = (
        []
        if block
        else projections_api.follow_ups(service(request, "projections"), principal, province)
    )
    following = {"after": page["next"], **({"province": province} if province else {})}
    return render(
        request,
        "board.html",
        block=block,
        page=page,
        rows=page["rows"],
        next_page=f"/board?{urlencode(following)}" if page["next"] else None,
        first_page=f"/board?{urlencode({'province': province})}" if province else "/board",
        follow_ups=follow_ups,
        province=province or principal.province,
        refresh=REFRESH_SECONDS,
        updated=datetime.now(UTC),
    )
