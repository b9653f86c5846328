"""The generated national history (bench/history.py) reads back through the services, verifies
under the seal, and rebuilds into the same read models in bounded windows as in one pass."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from orjson import loads
from typer.testing import CliRunner

from bench.history import generate
from services.cli import app as cli
from services.cli import audit as cli_audit
from services.cli.parallel_rebuild import rebuild_in_processes
from services.cli.wiring import Platform, migrate, start
from services.projections.application import ProjectionService
from services.projections.statistics import publish
from services.projections.store import Tables
from services.runtime.seal.keys import seal_signer
from services.runtime.seal.sources import open_logs
from services.runtime.seal.verify import verify_log
from services.runtime.settings import Settings
from tests.conftest import drop_schemas
from tests.support.board import every_page, totals
from tests.support.board import expected as board_order

VIEWS = ("cases", "queue", "timeline")


@dataclass
class History:
    platform: Platform
    events: int
    progress: list[tuple[int, int]]


@pytest.fixture
def history(pg_settings: Settings) -> Iterator[History]:
    """200 cases written by the generator, then the platform started on them."""
    migrate(pg_settings)
    writer = start(pg_settings, ("intake", "consent", "referral"), run_followers=False)
    seen: list[tuple[int, int]] = []
    try:
        events = generate(
            writer,
            200,
            chunk_cases=60,
            years=3,
            end=datetime(2026, 12, 1, tzinfo=UTC),
            progress=lambda done, written: seen.append((done, written)),
        )
    finally:
        writer.close()
    platform = start(pg_settings, run_followers=False)
    yield History(platform, events, seen)
    platform.close()


def test_a_generated_history_reads_back_verifies_and_rebuilds_the_same_in_windows(
    history: History, pg_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform, events, seen = history.platform, history.events, history.progress
    assert [done for done, _ in seen] == [60, 120, 180, 200]
    heads = {
        log: getattr(platform, log).recorder.max_notification_id()
        for log in ("intake", "consent", "referral")
    }
    assert sum(heads.values()) == events
    assert events > 200 * 25
    # The logs were analysed after the load: the planner finds a record's events by index.
    with psycopg.connect(pg_settings.database_url or "") as conn:
        analysed = conn.execute(
            "SELECT relname FROM pg_stat_user_tables WHERE schemaname = %s "
            "AND last_analyze IS NOT NULL",
            [pg_settings.schema_for("consent")],
        ).fetchall()
    assert ("consent_events",) in analysed

    # The services read every case back from their logs (decoded, the person's fields
    # opened); the followers start where the history ends.
    intake = platform.intake.recorder.select_notifications(start=1, limit=100_000)
    case_ids = {n.originator_id for n in intake}
    assert len(case_ids) == 200
    some = sorted(case_ids)[:20]
    for case_id in some:
        case = platform.intake.get_case(case_id)
        assert case.person is not None
        assert case.person.full_name.startswith("Person ")
        assert platform.consent.get_record(case_id).case_id == case_id
        assert platform.referral.get_case_file(case_id).case_id == case_id
    # Nothing for a follower to react to: the history holds what they wrote.
    followed = {
        (name, upstream): getattr(platform, name).position(upstream)
        for name in ("intake", "consent", "referral")
        for upstream in getattr(platform, name).follows
    }
    assert followed == {key: heads[key[1]] for key in followed}
    assert len(followed) >= 3

    # Every log verifies under the seal, as `ketnoi seal verify` checks it.
    with open_logs(pg_settings, ("intake", "consent", "referral")) as sources:
        for source in sources:
            report = verify_log(source, [seal_signer(pg_settings).verifier])
            assert report.ok, report.problems[:3]
            assert report.size == heads[source.name]

    projections = platform.projections
    assert projections is not None
    projections.projector.catch_up()
    live = {v: projections.store.query(Tables.of(v)) for v in VIEWS}
    closed = [doc for _k, _p, _a, doc in live["cases"] if doc.get("closed")]
    reopened = [doc for _k, _p, _a, doc in live["cases"] if doc.get("reopenings")]
    assert closed
    assert reopened
    assert len({province for _k, province, _a, _d in live["cases"]}) > 5
    live_beside = beside(projections)
    assert all(live_beside.values())  # open cases, counters and moments, all kept live
    assert all(row[-1] != 0 for row in live_beside["view_cases_counts"])  # cells at 0 go

    # The board and the statistics read from the tables beside the documents say what the
    # documents say: every open case of the province, once, page after page, in the board's
    # order, each page counting the whole province; the same cells at instants before,
    # within and after the history (the grants of its first cases expire within it),
    # including one in the middle of a day that changed, and one before it began.
    cases = [(province, doc) for key, province, _a, doc in live["cases"] if key[:5] == "case:"]
    today = date.today()
    for province in {p for p, _ in cases if p}:
        pages = every_page(projections, province, 50, today)
        docs = [doc for p, doc in cases if p == province]
        order = board_order(docs, today)
        assert [row["case_id"] for page in pages for row in page["rows"]] == [
            case_id for *_, case_id in order
        ]
        for page in pages:  # the whole province's, on every page
            assert {"open": page["open"], "attention": page["attention"]} == totals(docs, today)
    moments = [at for day in live_beside["view_cases_moments"] for at, *_ in loads(day[3])]
    middle = datetime.fromisoformat(sorted(moments)[len(moments) // 2]).replace(tzinfo=UTC)
    for at in (
        datetime(2023, 12, 1, tzinfo=UTC),
        datetime(2025, 6, 15, 9, tzinfo=UTC),
        middle,
        middle - timedelta(microseconds=1),
        datetime(2028, 1, 1, tzinfo=UTC),
    ):
        expected = publish((doc for _p, doc in cases), threshold=1, step=1, at=at)
        assert projections.statistics(None, threshold=1, step=1, at=at) == expected
        if at.year in (2025, middle.year):
            assert any(cell.count for cell in expected)

    one_pass = projections.projector.rebuild(batch_events=0)
    assert {v: projections.store.query(Tables.of(v)) for v in VIEWS} == live
    assert beside(projections) == live_beside
    # Windows of 700 events: most cases' later events come in a later window, so their
    # documents are read back from the new tables, changed and written again.
    reported: list[int] = []
    windowed = projections.projector.rebuild(progress=reported.append, batch_events=700)
    assert sum(reported) == projections.projector.total_events(list(VIEWS))
    assert windowed == one_pass
    assert {v: projections.store.query(Tables.of(v)) for v in VIEWS} == live
    assert beside(projections) == live_beside
    # In two processes (`ketnoi rebuild --jobs 2`), each applying the events of its share
    # of the cases to every view, in windows, into the same shadow tables: the same again,
    # the progress of both reported here (each reads every log).
    reported = []
    in_processes = rebuild_in_processes(pg_settings, list(VIEWS), 2, reported.append, 700)
    assert in_processes == one_pass
    assert sum(reported) == 2 * projections.projector.total_events(list(VIEWS))
    assert {v: projections.store.query(Tables.of(v)) for v in VIEWS} == live
    assert beside(projections) == live_beside
    # The same from the command line.
    assert pg_settings.database_url is not None
    monkeypatch.setenv("KETNOI_DATABASE_URL", pg_settings.database_url)
    monkeypatch.setenv("KETNOI_SCHEMA_PREFIX", pg_settings.schema_prefix)
    monkeypatch.setenv("KETNOI_DATA_DIR", str(pg_settings.data_dir))
    monkeypatch.setattr(cli_audit, "configure_logging", lambda *_a: None)
    # Beside this test's own platform, which holds its pools open.
    monkeypatch.setenv("KETNOI_PG_POOL_SIZE", "2")
    result = CliRunner().invoke(cli, ["rebuild", "--jobs", "2"])
    assert result.exit_code == 0, result.output
    assert [line for line in result.stdout.splitlines() if ": " in line][-3:] == [
        f"{view}: {size} documents" for view, size in one_pass.items()
    ]
    assert {v: projections.store.query(Tables.of(v)) for v in VIEWS} == live


def beside(projections: ProjectionService) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the tables the cases view keeps beside its documents, in order."""
    found = {}
    with projections.store.transaction() as cur:
        for table in Tables.of("cases").derived:
            cur.execute(f"SELECT * FROM {table}")
            found[table] = sorted(cur.fetchall())
    return found


def _topics(platform: Platform) -> dict[str, list[tuple[str, int]]]:
    return {
        log: [
            (n.topic, n.originator_version)
            for n in getattr(platform, log).recorder.select_notifications(start=1, limit=100_000)
        ]
        for log in ("intake", "consent", "referral")
    }


def test_encoding_processes_write_the_same_history_sealed_and_readable(
    pg_url: str, pg_settings: Settings, tmp_path: Path
) -> None:
    """``--jobs 2``: two processes make and encode the chunks (the persons' keys made there),
    this one writes them in order. The logs hold the same events in the same order as one
    process writes, every log verifies, and the persons' fields decrypt."""
    alone = pg_settings.model_copy(
        update={"schema_prefix": f"{pg_settings.schema_prefix}one_", "data_dir": tmp_path / "one"}
    )
    written: dict[int, tuple[int, dict[str, list[tuple[str, int]]]]] = {}
    try:
        for jobs, settings in ((2, pg_settings), (1, alone)):
            migrate(settings)
            platform = start(settings, ("intake", "consent", "referral"), run_followers=False)
            try:
                events = generate(
                    platform,
                    90,
                    chunk_cases=30,
                    years=1,
                    end=datetime(2026, 12, 1, tzinfo=UTC),
                    jobs=jobs,
                )
                written[jobs] = (events, _topics(platform))
                if jobs == 2:
                    with open_logs(settings, ("intake", "consent", "referral")) as sources:
                        for source in sources:
                            report = verify_log(source, [seal_signer(settings).verifier])
                            assert report.ok, report.problems[:3]
                    intake = platform.intake.recorder.select_notifications(start=1, limit=10)
                    case = platform.intake.get_case(intake[0].originator_id)
                    assert case.person is not None
                    assert case.person.full_name == "Person 0"
            finally:
                platform.close()
    finally:
        drop_schemas(pg_url, alone.schema_prefix)
    assert written[2] == written[1]
    assert written[2][0] > 90 * 25
