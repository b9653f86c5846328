"""The projections service: read models of every log, and the questions they answer."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID

import orjson

from contracts.access_policy import CaseTies
from contracts.audit import PersonalDataRead
from contracts.consent_decision import local_date
from services.projections.board import MAX_PAGE, PAGE, position, shown
from services.projections.followups import schedule
from services.projections.person_copy import person_copy
from services.projections.replay import replay_case
from services.projections.runner import Projector
from services.projections.statistics import STEP, THRESHOLD, Cell, Key, instant, publishable
from services.projections.store import Tables, ViewStore
from services.projections.views import case_key, case_ties
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

    def board(
        self,
        province: str,
        limit: int = PAGE,
        after: str | None = None,
        today: date | None = None,
    ) -> dict[str, Any]:
        """A page of the open cases of a province (``board_json``), parsed: handovers waiting
        on a party, how long each step took, and the deadlines breached."""
        page: dict[str, Any] = orjson.loads(self.board_json(province, limit, after, today))
        return page

    def board_json(
        self, province: str, limit: int = PAGE, after: str | None = None, today: date | None = None
    ) -> bytes:
        """A page of the board of a province as JSON, read from the province's open cases
        only (``services.projections.board``), not from every case it ever had: ``limit``
        rows after the cursor ``after`` (``ValueError`` for a limit out of bounds or a text
        that is no cursor), the next page's cursor, and the province's totals as of
        ``today``."""
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"a page holds 1 to {MAX_PAGE} rows")
        start = position(after) if after is not None else None
        day = today or local_date(datetime.now(UTC))
        tables = Tables.of("cases")
        rows, totals = self.store.board(tables, province, day.isoformat(), start, limit + 1)
        return shown(rows, limit, totals, day)

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
        return [
            Cell(table, province, period, dimension, value, publishable(n, threshold, step))
            for (table, province, period, dimension, value), n in sorted(
                self.counted(province, at).items()
            )
        ]

    def counted(self, province: str | None = None, at: datetime | None = None) -> Counter[Key]:
        """The raw counts at ``at`` (now when not given), as ``statistics.raw_counts`` counts
        them over every case, summed from the counters the projector keeps
        (``services.projections.derived``): the months and days before ``at``, then the
        changes of its day up to the instant."""
        when = instant(at or datetime.now(UTC))
        sums, moments = self.store.counted(Tables.of("cases"), province, when)
        counts: Counter[Key] = Counter()
        for table, where, period, dimension, value, n in sums:
            counts[(table, where, period, dimension, value)] = int(n)
        for at_, table, where, period, dimension, value, n in moments:
            if at_ <= when:
                counts[(table, where, period, dimension, value)] += n
        return +counts  # cells back at zero are no cells

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
