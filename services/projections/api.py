"""HTTP routes of the projections service; every answer comes from a read model."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel

from contracts.access_policy import ALL_CATEGORIES, Action, CaseTies, Sight, permits, sight
from contracts.audit import ReadBasis
from contracts.consent_decision import local_date
from contracts.vocabulary import DataCategory, Role
from services.projections.application import CaseTimelineNotFoundError, ProjectionService
from services.projections.board import MAX_PAGE, PAGE
from services.projections.case_file import SECTIONS, arrange
from services.projections.person_copy import sealed_now
from services.projections.statistics import Cell, to_csv
from services.projections.views import category_of, describe_type
from services.runtime.access import check, flush_reads, record_read, roles_for
from services.runtime.aggregate import utcnow
from services.runtime.auth import CurrentPrincipal, Principal
from services.runtime.errors import InvalidRequestError, PermissionDeniedError

OVERSIGHT = (Role.COORDINATOR, Role.AUDITOR)
POLICY = (Role.COORDINATOR, Role.AUDITOR, Role.ADMIN)


async def projection_service(request: Request) -> ProjectionService:
    service: ProjectionService = request.app.state.projections
    return service


Projections = Annotated[ProjectionService, Depends(projection_service)]
router = APIRouter(prefix="/projections", tags=["projections"])


class StatisticsCell(BaseModel):
    table: str
    province: str
    period: str
    dimension: str
    value: str
    count: int | None


def _province(principal: Principal, asked: str | None) -> str:
    """The province a request is about: the user's own, or any for national users."""
    if asked is None:
        if principal.province == "*":
            raise InvalidRequestError("province", "Name the province (?province=...).")
        return principal.province
    if not principal.covers_province(asked):
        raise PermissionDeniedError("You can see your own province only.")
    return asked


class BoardAttention(BaseModel):
    deadlines_breached: int
    handovers_waiting: int
    reviews_overdue: int


class BoardPage(BaseModel):
    rows: list[dict[str, Any]]
    next: str | None
    open: int
    attention: BoardAttention


Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"Rows of the page, up to {MAX_PAGE}.")]
After = Annotated[
    str | None,
    Query(max_length=200, description="The cursor of the page to read: `next` of the last."),
]


def board_page(
    projections: ProjectionService,
    principal: Principal,
    province: str | None = None,
    limit: int = PAGE,
    after: str | None = None,
) -> bytes:
    """A page of the board of a province, as JSON, for its oversight roles."""
    principal.require(*OVERSIGHT)
    asked = _province(principal, province)
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequestError("limit", f"A page holds 1 to {MAX_PAGE} rows.")
    try:
        return projections.board_json(asked, limit, after)
    except ValueError:
        raise InvalidRequestError(
            "after", "Not a cursor of the board: give `next` as it came."
        ) from None


def board(
    projections: ProjectionService,
    principal: Principal,
    province: str | None = None,
    limit: int = PAGE,
    after: str | None = None,
) -> dict[str, Any]:
    """A page of the board of a province, parsed (the web page reads it)."""
    page: dict[str, Any] = orjson.loads(board_page(projections, principal, province, limit, after))
    return page


@router.get(
    "/board",
    summary="The coordinator's board of open cases and handovers, a page at a time",
    response_model=BoardPage,
)
def board_route(
    projections: Projections,
    principal: CurrentPrincipal,
    province: str | None = None,
    limit: Limit = PAGE,
    after: After = None,
) -> Response:
    """A page of the province's open cases: those with a deadline breached first, then those
    with a handover waiting, then those with a review overdue, then the others, each oldest
    reception first. ``next`` is the cursor of the following page (null on the last);
    ``open`` and ``attention`` count the whole province. The board's rows are kept as JSON:
    answered as they are, rather than parsed, validated and encoded again value by value."""
    board = board_page(projections, principal, province, limit, after)
    return Response(board, media_type="application/json")


@router.get("/follow-ups", summary="Follow-up after exit: contacts missed, and the next one due")
def follow_ups(
    projections: Projections, principal: CurrentPrincipal, province: str | None = None
) -> list[dict[str, Any]]:
    """Closed cases with a follow-up schedule (from their exit plan): for the coordinator to
    chase the contacts missed. Dates only, nothing of the person."""
    principal.require(*OVERSIGHT)
    return projections.follow_ups(_province(principal, province))


@router.get("/cases/{case_id}/timeline", summary="One ordered story of a case")
def timeline(
    case_id: UUID, projections: Projections, principal: CurrentPrincipal, request: Request
) -> list[dict[str, Any]]:
    """For the agencies holding the case, its coordinator and auditors. What the person's
    needs, risks and contact preferences were is told to the holders only (and recorded)."""
    ties, entries = projections.timeline(case_id)
    check(principal, ties, Action.SEE_PROGRESS, lambda: CaseTimelineNotFoundError(case_id))
    seen = sight(principal.asker, ties)
    told = {c for e in entries if (c := category_of(e)) in seen.categories}
    if told:
        shown = Sight(frozenset(told), seen.basis, seen.role)
        record_read(request, principal, shown, case_id=case_id, what="projections.timeline")
    return [_tell(e, seen) for e in entries]


def _tell(entry: dict[str, Any], seen: Sight) -> dict[str, Any]:
    """A timeline entry as the reader may read it: its details only in a category they see."""
    category = category_of(entry)
    if category is None or category in seen.categories:
        return entry
    return {**entry, "what": describe_type(entry["type"])}


@router.get(
    "/cases/{case_id}/case-file",
    summary="The case file, in the order a newcomer taking the case over reads it",
)
def case_file(
    case_id: UUID, projections: Projections, principal: CurrentPrincipal, request: Request
) -> dict[str, Any]:
    """Who the person is and how to reach them, the consent in force, the current plan with
    its open tasks (each with the referrals that serve it), the open referrals, the risks,
    then the whole history newest first (``services.projections.case_file``). Told as the
    timeline tells it: details to the agencies holding the case only (and recorded); the
    coordinator and auditors read its progress."""
    ties, doc = projections.case_file(case_id)
    check(principal, ties, Action.SEE_PROGRESS, lambda: CaseTimelineNotFoundError(case_id))
    seen = sight(principal.asker, ties)
    now = utcnow()
    arranged = arrange(doc, now, local_date(now))
    told = {c for e in doc["entries"] if (c := category_of(e)) in seen.categories}
    if told:
        shown = Sight(frozenset(told), seen.basis, seen.role)
        record_read(request, principal, shown, case_id=case_id, what="projections.case_file")
    for section in ("person", "consent", "risks", "history"):
        arranged[section] = [_tell(e, seen) for e in arranged[section]]
    plan = arranged["plan"]
    plan["entries"] = [_tell(e, seen) for e in plan["entries"]]
    if DataCategory.NEEDS not in seen.categories:  # what each task is: the person's needs
        plan["open_tasks"] = [{**t, "action": None} for t in plan["open_tasks"]]
    arranged["sections"] = list(SECTIONS)
    return arranged


@router.get(
    "/cases/{case_id}/copy",
    summary="The person's own copy: everything held about them, every disclosure and read",
)
def person_copy(
    case_id: UUID, projections: Projections, principal: CurrentPrincipal, request: Request
) -> dict[str, Any]:
    """For the agencies holding the case, to give the person (seed 002: the person may see
    their record at any time). The copy is a read of everything about the person: it is
    recorded first, and is the last of the reads the copy lists."""
    ties, _ = projections.timeline(case_id)
    check(principal, ties, Action.GIVE_PERSON_COPY, lambda: CaseTimelineNotFoundError(case_id))
    seen = sight(principal.asker, ties)
    assert seen.categories == ALL_CATEGORIES  # a holder's own case: everything
    record_read(request, principal, seen, case_id=case_id, what="projections.person_copy")
    flush_reads(request)  # stored before the list of reads is read: the copy lists its own
    reads = request.app.state.read_audit.reads_of_case(case_id)
    copy = projections.person_copy(case_id, reads, utcnow())
    copy["seal"] = sealed_now(projections.checkpoints)
    return copy


@router.get(
    "/agencies/{agency_id}/queue",
    summary="Referrals waiting for an agency's acknowledgement, acceptance or outcome",
)
def agency_queue(
    agency_id: str, projections: Projections, principal: CurrentPrincipal
) -> list[dict[str, Any]]:
    own = Role.AGENCY_STAFF in principal.roles and principal.agency_id == agency_id
    if not own:
        raise PermissionDeniedError("Agency staff see their own agency's queue.")
    return projections.queue(agency_id)


@router.get("/agencies/{agency_id}/cases", summary="The cases an agency holds")
def agency_cases(
    agency_id: str, projections: Projections, principal: CurrentPrincipal
) -> list[dict[str, Any]]:
    """For the agency's own staff: the cases it holds as the access policy counts holding
    (the agency that received the person, and the current case manager's; a completed case
    transfer moves the case to the agency it names), each passed through the policy, newest
    first. Progress only (when and how the case came, its stage, who holds it): nothing of
    the person, so no read to record; the person's details are read case by case."""
    principal.require(*roles_for(Action.SEE_PROGRESS))
    if principal.agency_id != agency_id:
        raise PermissionDeniedError("Agency staff see the cases their own agency holds.")
    listed = [
        {
            "case_id": case["case_id"],
            "province": case.get("province"),
            "received_at": case.get("received_at"),
            "route": case.get("route"),
            "stage": case.get("stage"),
            "closed": case.get("closed", False),
            "receiving_agency": case.get("receiving_agency"),
            "case_manager_agency": case.get("case_manager_agency"),
        }
        for ties, case in projections.held_cases(agency_id)
        if permits(principal.asker, ties, Action.SEE_PROGRESS).allowed
    ]
    return sorted(listed, key=lambda c: c["received_at"] or "", reverse=True)


@router.get("/queues", summary="Every referral queue of a province")
def province_queues(
    projections: Projections, principal: CurrentPrincipal, province: str | None = None
) -> list[dict[str, Any]]:
    principal.require(*OVERSIGHT)
    return projections.province_queue(_province(principal, province))


def statistics(
    projections: ProjectionService, principal: Principal, province: str | None = None
) -> list[Cell]:
    """The published cells of a province (or every one, for national users), for the
    policy roles (the web pages and the CSV read them too)."""
    principal.require(*POLICY)
    if province is not None and not principal.covers_province(province):
        raise PermissionDeniedError("You can see your own province only.")
    if province is None and principal.province != "*":
        province = principal.province
    return projections.statistics(province)


@router.get(
    "/statistics",
    response_model=list[StatisticsCell],
    summary="Anonymised statistics (cells under 11 suppressed, counts rounded down)",
)
def statistics_route(
    projections: Projections, principal: CurrentPrincipal, province: str | None = None
) -> Response:
    """The cells written by orjson as they are (``StatisticsCell``'s fields, in its order):
    a thousand cells validated into models and encoded one by one took as long as summing
    them, and the objects made woke the cycle collector."""
    cells = statistics(projections, principal, province)
    return Response(orjson.dumps(cells), media_type="application/json")


@router.get(
    "/statistics.csv", response_class=PlainTextResponse, summary="The same statistics as CSV"
)
def statistics_csv(
    projections: Projections, principal: CurrentPrincipal, province: str | None = None
) -> PlainTextResponse:
    cells = statistics(projections, principal, province)
    return PlainTextResponse(to_csv(cells), media_type="text/csv")


@router.post("/rebuild", summary="Rebuild read models from zero (auditors)")
def rebuild(
    projections: Projections,
    principal: CurrentPrincipal,
    view: Annotated[list[str] | None, Query()] = None,
) -> dict[str, int]:
    principal.require(Role.AUDITOR)
    try:
        return projections.rebuild(view)
    except ValueError as exc:
        raise InvalidRequestError("view", str(exc)) from None


@router.get(
    "/replay/cases/{case_id}",
    summary="A case across all services as of an instant, and who could see what",
)
def replay(
    case_id: UUID,
    as_of: datetime,
    projections: Projections,
    principal: CurrentPrincipal,
    request: Request,
) -> dict[str, Any]:
    """For auditors of the case's province. It tells whether the person was a minor (of
    their identity), so each replay is recorded as a read on the auditor's basis."""
    principal.require(Role.AUDITOR)
    if as_of.tzinfo is None:
        raise InvalidRequestError("as_of", "Give as_of with its time zone.")
    result = projections.replay(case_id, as_of)
    ties = CaseTies(province=result["intake"].get("province", ""))
    role = check(principal, ties, Action.AUDIT, lambda: CaseTimelineNotFoundError(case_id))
    if result["intake"].get("minor") is not None:
        seen = Sight(frozenset({DataCategory.IDENTITY}), ReadBasis.AUDIT, role)
        record_read(request, principal, seen, case_id=case_id, what="projections.replay")
    return result
