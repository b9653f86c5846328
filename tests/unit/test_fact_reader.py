"""How the views read stored events: the recorded facts, under the right aggregate id."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from contracts.envelope import Actor, AgencyRef
from contracts.intake import Place
from contracts.vocabulary import AgencyKind, ArrivalRoute, CaseStage, Role
from services.intake.domain import Case
from services.projections import views
from services.runtime.aggregate import CommandContext
from services.runtime.persistence import new_mapper
from tests.support.stored import as_notifications

NOW = datetime(2026, 3, 1, 10, 30, tzinfo=UTC)
POLICE = AgencyRef(agency_id="dong-thap-police", kind=AgencyKind.POLICE)
OFFICER = Actor(user_id="officer-1", agency_id="dong-thap-police", role=Role.INTAKE_OFFICER)


def case_history(n: int) -> list[object]:
    """A reception and a stage change of case ``n``."""
    at = NOW + timedelta(minutes=n)
    case = Case.record_reception(
        CommandContext(actor=OFFICER, at=at),
        route=ArrivalRoute.RESCUED,
        received_at=at,
        place=Place(province="dong-thap"),
        receiving_agency=POLICE,
    )
    case.change_stage(CommandContext(actor=OFFICER, at=at), CaseStage.CRISIS, None)
    return list(case.collect_events())


def test_facts_keep_their_aggregate_ids_when_the_id_cache_fills(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A cache of two ids, for five cases whose events interleave: the cache is cleared and
    # refilled several times, and every fact must still name its own case.
    monkeypatch.setattr(views, "ID_CACHE_SIZE", 2)
    mapper = new_mapper()
    histories = [case_history(n) for n in range(5)]
    interleaved = [e for pair in itertools.zip_longest(*histories) for e in pair if e]
    read = views.fact_reader(mapper)
    events = interleaved + interleaved[::-1]
    notifications = as_notifications(mapper, events)
    # Read in batches of three, as a view reads its logs batch by batch.
    facts = [
        fact for i in range(0, len(notifications), 3) for fact in read(notifications[i : i + 3])
    ]
    assert len(facts) == len(events)
    for event, fact in zip(events, facts, strict=True):
        assert fact.originator_id == str(event.originator_id)  # type: ignore[attr-defined]
        assert fact.version == event.originator_version  # type: ignore[attr-defined]
        assert fact.type == type(event).event_type
