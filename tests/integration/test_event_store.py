"""The event store's reads on PostgreSQL: topic-filtered reads in bounded windows of
positions return exactly what one unbounded query would."""

from __future__ import annotations

import uuid

import pytest
from eventsourcing.persistence import StoredEvent

from services.cli.wiring import migrate, start
from services.runtime.persistence import WindowedApplicationRecorder
from services.runtime.settings import Settings


def test_windowed_reads_return_what_one_query_would(
    pg_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrate(pg_settings)
    platform = start(pg_settings, run_followers=False)
    try:
        recorder = platform.intake.recorder
        assert isinstance(recorder, WindowedApplicationRecorder)
        wanted = {3, 17, 18, 39, 40}
        recorder.insert_events(
            [
                StoredEvent(
                    originator_id=uuid.uuid4(),
                    originator_version=1,
                    topic="wanted" if n in wanted else "other",
                    state=b"{}",
                )
                for n in range(1, 41)
            ]
        )
        everything = recorder.select_notifications(start=1, limit=100)
        assert [n.id for n in everything] == list(range(1, 41))
        monkeypatch.setattr(WindowedApplicationRecorder, "window", 4)
        for first in (1, 4, 18, 19, 40, 41):
            for limit in (1, 2, 3, 10):
                for stop in (None, 17, 39):
                    expected = [
                        n.id
                        for n in everything
                        if n.topic == "wanted" and n.id >= first and (stop is None or n.id <= stop)
                    ][:limit]
                    found = recorder.select_notifications(
                        start=first, limit=limit, stop=stop, topics=["wanted"]
                    )
                    assert [n.id for n in found] == expected, (first, limit, stop)
        after_18 = recorder.select_notifications(
            start=18, limit=10, topics=["wanted"], inclusive_of_start=False
        )
        assert [n.id for n in after_18] == [39, 40]
    finally:
        platform.close()
