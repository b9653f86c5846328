"""Retention: a case closed for longer than the retention period is proposed for erasure to
its agency, once per closure, where the agency sees it (SQLite, every service in process)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from contracts.intake import Place
from contracts.vocabulary import ArrivalRoute, ClosureReason, ReopeningReason
from services.cli.wiring import Platform, migrate, start
from services.runtime.aggregate import CommandContext
from services.runtime.settings import Settings
from tests.integration.test_projections import MANAGER, OFFICER, POLICE, SWC
from tests.support.agencies import register_agencies

CLOSED = datetime(2026, 1, 10, 9, 0, tzinfo=UTC)
DAYS = 30


@pytest.fixture
def platform(sqlite_settings: Settings) -> Iterator[Platform]:
    migrate(sqlite_settings)
    running = start(sqlite_settings, run_followers=False)
    register_agencies(running)
    yield running
    running.close()


def closed_case(p: Platform) -> UUID:
    at = CommandContext(actor=OFFICER, at=CLOSED - timedelta(days=2))
    case_id = UUID(
        str(
            p.intake.record_reception(
                at,
                route=ArrivalRoute.RESCUED,
                received_at=at.at,
                place=Place(province="dong-thap"),
                receiving_agency=POLICE,
            )["case_id"]
        )
    )
    p.intake.assign_case_manager(at, case_id, MANAGER.user_id, SWC)
    p.intake.close_case(CommandContext(actor=MANAGER, at=CLOSED), case_id, ClosureReason.GOALS_MET)
    return case_id


def test_a_case_closed_past_the_retention_period_is_proposed_once(platform: Platform) -> None:
    case_id = closed_case(platform)
    intake = platform.intake
    assert intake.propose_erasures(DAYS, now=CLOSED + timedelta(days=DAYS - 1)) == []
    assert intake.propose_erasures(DAYS, now=CLOSED + timedelta(days=DAYS + 1)) == [case_id]
    assert intake.propose_erasures(DAYS, now=CLOSED + timedelta(days=DAYS + 2)) == []
    proposed = intake.get_case(case_id).erasure_proposed
    assert proposed is not None
    assert proposed.closed_at == CLOSED
    assert proposed.retention_days == DAYS

    # The agency sees it: in the case overview and on the case's timeline.
    platform.catch_up()
    projections = platform.projections
    assert projections is not None
    overview = projections.case_overview(case_id)
    assert overview is not None
    assert overview["erasure_proposed"]["closed_at"].startswith("2026-01-10T09:00")
    _ties, entries = projections.timeline(case_id)
    assert "org.ketnoi.intake.erasure_proposed" in [e["type"] for e in entries]


def test_a_reopened_case_is_not_proposed_and_its_next_closure_counts_afresh(
    platform: Platform,
) -> None:
    case_id = closed_case(platform)
    intake = platform.intake
    reopened_at = CLOSED + timedelta(days=5)
    intake.reopen_case(
        CommandContext(actor=MANAGER, at=reopened_at), case_id, ReopeningReason.NEW_CRISIS
    )
    assert intake.propose_erasures(DAYS, now=CLOSED + timedelta(days=DAYS + 1)) == []
    closed_again = reopened_at + timedelta(days=1)
    intake.close_case(
        CommandContext(actor=MANAGER, at=closed_again), case_id, ClosureReason.GOALS_MET
    )
    assert intake.propose_erasures(DAYS, now=closed_again + timedelta(days=DAYS - 1)) == []
    assert intake.propose_erasures(DAYS, now=closed_again + timedelta(days=DAYS + 1)) == [case_id]
