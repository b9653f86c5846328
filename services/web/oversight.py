"""For auditors and policy: a case replayed as of an instant, and the statistics (CSV too)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from fastapi import Request
from fastapi.responses import PlainTextResponse, Response

from services.projections import api as projections_api
from services.web.deps import User, page_router
from services.web.i18n import TIME_ZONE
from services.web.positions import service
from services.web.render import render

router = page_router()
TABLES = ("cases", "referrals", "time_to_service", "reopenings")


@router.get("/audit")
def replay_page(
    request: Request,
    principal: User,
    case_id: UUID | None = None,
    as_of: str | None = None,
) -> Response:
    """Replay a case across every service as of an instant (Vietnam time), and who could see
    what then; auditors of the case's province only, and each replay is recorded."""
    replay: dict[str, Any] | None = None
    if case_id is not None and as_of:
        moment = datetime.fromisoformat(as_of)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=TIME_ZONE)
        replay = projections_api.replay(
            case_id, moment, service(request, "projections"), principal, request
        )
    return render(
        request,
        "audit.html",
        replay=replay,
        case_id=case_id or "",
        as_of=as_of or datetime.now(TIME_ZONE).strftime("%Y-%m-%dT%H:%M"),
    )


@router.get("/statistics")
def statistics_page(request: Request, principal: User, province: str | None = None) -> Response:
    """The anonymised statistics, a table per measure; suppressed cells say so."""
    cells = projections_api.statistics(service(request, "projections"), principal, province)
    tables: dict[str, list[Any]] = {name: [] for name in TABLES}
    for cell in cells:
        tables.setdefault(cell.table, []).append(cell)
    return render(request, "statistics.html", tables=tables, province=province or "")


@router.get("/statistics.csv")
def statistics_csv(request: Request, principal: User, province: str | None = None) -> Response:
    answer = projections_api.statistics_csv(service(request, "projections"), principal, province)
    return PlainTextResponse(
        answer.body,
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="ketnoi-statistics.csv"'},
    )
