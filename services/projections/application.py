"""The projections service: read models of every log, and the questions they answer."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

from contracts.access_policy import CaseTies
from contracts.audit import PersonalDataRead
from contracts.casework import REVIEW_INTERVAL_DAYS
from contracts.consent_decision import local_date
from contracts.vocabulary import CaseStage
from services.projections.followups import schedule
from services.projections.person_copy import person_copy
from services.projections.replay import replay_case
from services.projections.runner import Projector
from services.projections.statistics import STEP, THRESHOLD, Cell, publish
from services.projections.store import Tables, ViewStore
from services.projections.views import STEP_SERVICES, case_key, case_ties
from services.runtime.errors import NotFoundError
from services.runtime.follower import Upstream
from services.runtime.seal.operations import Checkpoints
from services.runtime.settings import Settings


class CaseTimelineNotFoundError(NotFoundError):
    def __init__(self, case_id: UUID) -> None:
        super().__init__(f"No case {case_id} that you may see.", case_id=str(case_id))


class ProjectionService:
    """Read models kept by a projector; every answer is read from them."""

    def __init__(
        self, settings: Settings, upstreams: list[Upstream], poll_interval: float = 1.0
    ) -> None:
        self.settings = settings
        self.store = ViewStore(settings)
        self.upstreams = {u.name: u for u in upstreams}
        self.projector = Projector(
            self.store, upstreams, settings=settings, poll_interval=poll_interval
        )
        # The person's copy ends with every log's checkpoint: the logs, opened at the first.
        self.checkpoints = Checkpoints(settings)

    def close(self) -> None:
        self.checkpoints.close()
        self.store.close()

    # -- the coordinator's board ------------------------------------------------------------

    def board(self, province: str) -> list[dict[str, Any]]:
        """Open cases of a province: handovers waiting on a party, how long each step took,
        and the deadlines breached."""
        rows = self.store.query(Tables.of("cases"), province=province, key_prefix="case:")
        today = local_date(datetime.now(UTC))
        board = []
        for _key, _province, _agency, case in rows:
            if case.get("closed"):
                continue
            steps = {}
            for service in STEP_SERVICES:
                started = [
                    ref["started_at"]
                    for ref in case["referrals"].values()
                    if ref["service_type"] == service and ref.get("started_at")
                ]
                steps[service] = (
                    _minutes(case.get("received_at"), min(started)) if started else None
                )
            review_due = review_due_on(case)
            board.append(
                {
                    "case_id": case["case_id"],
                    "received_at": case.get("received_at"),
                    "stage": case.get("stage"),
                    "minor": case.get("minor"),
                    "open_handovers": [
                        {
                            "handover_id": hid,
                            "waiting_for": h["waiting_for"],
                            "started_at": h["started_at"],
                        }
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
                        if ref["status"] not in ("completed", "rejected", "cancelled", "failed")
                    ],
                    "review_due_on": review_due.isoformat() if review_due else None,
                    "review_overdue": review_due is not None and review_due < today,
                    # Contacts in a mode the person refused (a home visit, say): breaches
                    # of their wish, each with the reason on the case's own record.
                    "contacts_against_preference": case.get("contacts_against_preference", []),
                    "deadlines_breached": [
                        {"referral_id": rid, "service_type": ref["service_type"], **missed}
                        for rid, ref in case["referrals"].items()
                        for missed in ref["escalations"]
                    ],
                }
            )
        return sorted(board, key=lambda row: row["received_at"] or "")

    def follow_ups(self, province: str, now: datetime | None = None) -> list[dict[str, Any]]:
        """Closed cases of a province with a follow-up schedule after exit: the contacts
        missed, and the next one due."""
        now = now or datetime.now(UTC)
        rows = self.store.query(Tables.of("cases"), province=province, key_prefix="case:")
        listed = []
        for _key, _province, _agency, case in rows:
            plan = case.get("follow_up")
            if not case.get("closed") or not plan:
                continue
            due = schedule(
                datetime.fromisoformat(case["closed_at"]),
                plan["every_days"],
                date.fromisoformat(plan["until"]),
                [datetime.fromisoformat(at) for at in case.get("contacts_at", [])],
                now,
            )
            listed.append(
                {
                    "case_id": case["case_id"],
                    "closed_at": case["closed_at"],
                    "made": sum(f.status == "made" for f in due),
                    "missed": [f.due_at for f in due if f.status == "missed"],
                    "next_due": next(
                        (f.due_at for f in due if f.status in ("due", "upcoming")), None
                    ),
                    "due_now": any(f.status == "due" for f in due),
                }
            )
        return sorted(listed, key=lambda row: row["closed_at"])

    def held_cases(self, agency_id: str) -> list[tuple[CaseTies, dict[str, Any]]]:
        """The cases ``agency_id`` holds (the cases view's index of holders), each with the
        ties the access policy judges it by."""
        cases = Tables.of("cases")
        index = self.store.query(cases, agency=agency_id, key_prefix="held:")
        keys = [case_key(doc["case_id"]) for *_, doc in index if doc.get("held")]
        found = self.store.load(cases, keys)
        return [(case_ties(doc), doc) for *_, doc in found.values()]

    def case_overview(self, case_id: UUID) -> dict[str, Any] | None:
        found = self.store.load(Tables.of("cases"), [case_key(case_id)])
        return found[case_key(case_id)][3] if found else None

    # -- timelines, queues, statistics ---------------------------------------------------

    def timeline(self, case_id: UUID) -> tuple[CaseTies, list[dict[str, Any]]]:
        """A case's story, and the ties the access policy judges it by."""
        ties, doc = self.case_file(case_id)
        return ties, list(doc["entries"])

    def case_file(self, case_id: UUID) -> tuple[CaseTies, dict[str, Any]]:
        """A case's timeline document (its entries, current tasks and referrals), and the
        ties the access policy judges it by; ``services.projections.case_file`` arranges
        it."""
        found = self.store.load(Tables.of("timeline"), [case_key(case_id)])
        if not found:
            raise CaseTimelineNotFoundError(case_id)
        _key, province, _agency, doc = found[case_key(case_id)]
        ties = CaseTies.held_by(
            province or "", doc.get("receiving_agency"), doc.get("case_manager_agency")
        )
        return ties, doc

    def queue(self, agency_id: str) -> list[dict[str, Any]]:
        rows = self.store.query(Tables.of("queue"), agency=agency_id)
        return [
            doc
            for *_, doc in rows
            if doc["status"] not in ("completed", "rejected", "cancelled", "failed")
        ]

    def province_queue(self, province: str) -> list[dict[str, Any]]:
        rows = self.store.query(Tables.of("queue"), province=province)
        return [doc for *_, doc in rows]

    def statistics(
        self,
        province: str | None = None,
        threshold: int = THRESHOLD,
        step: int = STEP,
        at: datetime | None = None,
    ) -> list[Cell]:
        """The published cells, counting the cases whose consent covers statistics at
        ``at`` (now when not given)."""
        rows = self.store.query(Tables.of("cases"), province=province, key_prefix="case:")
        return publish((doc for *_, doc in rows), threshold, step, at)

    # -- audit ---------------------------------------------------------------------------

    def replay(self, case_id: UUID, at: datetime) -> dict[str, Any]:
        overview = self.case_overview(case_id) or {"referrals": {}, "handovers": {}}
        return replay_case(
            self.upstreams,
            case_id,
            at,
            list(overview["referrals"]),
            list(overview["handovers"]),
        )

    def person_copy(
        self, case_id: UUID, reads: list[PersonalDataRead], at: datetime
    ) -> dict[str, Any]:
        """Everything held about the case's person (``services.projections.person_copy``);
        raises CaseTimelineNotFoundError when intake does not hold the case."""
        overview = self.case_overview(case_id) or {"referrals": {}, "handovers": {}}
        copy = person_copy(
            self.upstreams,
            case_id,
            list(overview["referrals"]),
            list(overview["handovers"]),
            reads,
            at,
        )
        if copy is None:
            raise CaseTimelineNotFoundError(case_id)
        return copy

    def rebuild(self, views: list[str] | None = None, progress: Any = None) -> dict[str, int]:
        return self.projector.rebuild(views, progress)


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
