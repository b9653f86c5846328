"""``ketnoi rebuild``, ``ketnoi replay``, ``ketnoi audit reads`` and ``ketnoi audit disclosures``:
the auditor's commands."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from services.cli import _settings, app, console
from services.projections.views import VIEWS
from services.runtime.errors import DomainError
from services.runtime.logging import configure_logging

replay_app = typer.Typer(help="Replay history as of an instant.", no_args_is_help=True)
app.add_typer(replay_app, name="replay")


@app.command()
def rebuild(
    view: Annotated[
        str | None, typer.Argument(help=f"One of: {', '.join(VIEWS)}; all if none.")
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Processes to rebuild in, each a share of the cases, on PostgreSQL "
            "(default: the setting rebuild_jobs, 1).",
        ),
    ] = None,
) -> None:
    """Rebuild read models from the logs into fresh tables and swap them in, live."""
    from services.cli.parallel_rebuild import rebuild_in_processes, small_pools
    from services.cli.wiring import start

    if view is not None and view not in VIEWS:
        console.print(f"[red]Unknown view {view!r}.[/red] Choose one of: {', '.join(VIEWS)}.")
        raise typer.Exit(2)
    settings = _settings()
    configure_logging(settings.effective_log_format, settings.log_level)
    names = [view] if view else list(VIEWS)
    jobs = jobs or settings.rebuild_jobs
    if jobs > 1 and (settings.postgres is None or settings.rebuild_batch_events <= 0):
        jobs = 1  # the SQLite files take one writer at a time; processes write in windows
    # With processes doing the work, this one only counts the events.
    platform = start(
        small_pools(settings) if jobs > 1 else settings, ("projections",), run_followers=False
    )
    assert platform.projections is not None
    projections = platform.projections
    try:
        # Each process reads every log the views need: the bar counts what they all read.
        total = jobs * projections.projector.total_events(names)
        with Progress(
            TextColumn("Rebuilding {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task(", ".join(names), total=total)
            if jobs > 1:
                sizes = rebuild_in_processes(
                    settings, names, jobs, lambda n: progress.advance(task, n)
                )
            else:
                sizes = projections.rebuild(names, lambda n: progress.advance(task, n))
    finally:
        platform.close()
    for name, size in sizes.items():
        typer.echo(f"{name}: {size} documents")


@replay_app.command("case")
def replay_case(
    case_id: Annotated[UUID, typer.Argument(help="The case's id.")],
    as_of: Annotated[
        datetime | None,
        typer.Option(
            "--as-of",
            help="The instant (ISO 8601, with time zone); now if omitted.",
            formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%d"],
        ),
    ] = None,
) -> None:
    """A case across all services as of an instant, and who could see what then."""
    from services.cli.wiring import start

    at = as_of or datetime.now(UTC)
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    settings = _settings()
    configure_logging(settings.effective_log_format, settings.log_level)
    platform = start(settings, ("projections",), run_followers=False)
    assert platform.projections is not None
    try:
        platform.projections.projector.catch_up()
        result = platform.projections.replay(case_id, at)
    except DomainError as exc:
        console.print(f"[red]{exc.detail}[/red]")
        raise typer.Exit(1) from None
    finally:
        platform.close()
    sys.stdout.write(json.dumps(result, indent=2, ensure_ascii=False) + "\n")


audit_app = typer.Typer(help="The audit log of reads of personal data.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("reads")
def audit_reads(
    case_id: Annotated[UUID | None, typer.Option("--case", help="Only this case's reads.")] = None,
    since: Annotated[
        datetime | None,
        typer.Option(
            "--since",
            help="Only reads at or after this instant (ISO 8601; UTC if no time zone).",
            formats=[
                "%Y-%m-%dT%H:%M:%S%z",
                "%Y-%m-%dT%H:%M:%S.%f%z",
                "%Y-%m-%dT%H:%M:%S",
                "%Y-%m-%d",
            ],
        ),
    ] = None,
) -> None:
    """Who read which personal data of which case, when and on what basis: one JSON line each."""
    from services.runtime.read_audit import ReadAudit

    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    settings = _settings()
    configure_logging(settings.effective_log_format, settings.log_level)
    audit = ReadAudit(settings)
    shown = 0
    try:
        reads = audit.reads_of_case(case_id) if case_id is not None else audit.all_reads()
        for read in reads:
            if since is not None and read.timestamp < since:
                continue
            line = read.model_dump(mode="json", exclude={"originator_version", "caused_by"})
            line = {"read_id": line.pop("originator_id"), **line}
            sys.stdout.write(json.dumps(line, ensure_ascii=False) + "\n")
            shown += 1
    finally:
        audit.close()
    console.print(f"{shown} read(s)")


# -- ketnoi audit disclosures: every disclosure and read, checked against the logs ------------


@audit_app.command("disclosures")
def audit_disclosures(
    since: Annotated[
        datetime | None,
        typer.Option(
            "--since",
            help="Only disclosures and reads at or after this instant (ISO 8601; UTC if no "
            "time zone). They are still judged on the whole history.",
            formats=[
                "%Y-%m-%dT%H:%M:%S%z",
                "%Y-%m-%dT%H:%M:%S.%f%z",
                "%Y-%m-%dT%H:%M:%S",
                "%Y-%m-%d",
            ],
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON document on stdout instead of a table.")
    ] = False,
    show_all: Annotated[
        bool, typer.Option("--all", help="List the lawful ones too, with what covered each.")
    ] = False,
) -> None:
    """Check every disclosure and every recorded read against the logs.

    Each is judged at its own instant: the unlawful ones (no grant covered them) and those
    left for review (emergencies, audits) are listed. Exits 1 when any is unlawful, else 0."""
    from functools import partial

    from eventsourcing.persistence import PersistenceError
    from rich.console import Console
    from rich.table import Table

    from services.projections.lawfulness import (
        CHECKED_EVENTS,
        Lawfulness,
        Ledger,
        check_all,
        events_of,
    )
    from services.runtime.follower import open_upstream
    from services.runtime.read_audit import ReadAudit

    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    # One connection a log: they are read one after the other.
    settings = _settings(pg_pool_size=1, pg_max_overflow=1)
    configure_logging(settings.effective_log_format, settings.log_level)
    audit = ReadAudit(settings)
    try:
        upstreams = [open_upstream(settings, n, t) for n, t in CHECKED_EVENTS.items()]
        with Progress(
            TextColumn("Checking {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            disable=as_json,
        ) as progress:
            ledger = Ledger()
            for upstream in upstreams:
                total = upstream.recorder.max_notification_id() or 0
                task = progress.add_task(f"the {upstream.name} log", total=total)
                for event in events_of(upstream, partial(progress.advance, task)):
                    ledger.add(event)
                progress.update(task, completed=total)
            reads_total = audit.log.recorder.max_notification_id() or 0
            task = progress.add_task("the reads", total=reads_total)
            reads = progress.track(audit.all_reads(), task_id=task)
            report = check_all(ledger, reads, since)
            progress.update(task, completed=reads_total)
    except PersistenceError as exc:
        first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
        console.print(
            f"[red]Cannot read the logs:[/red] {first_line}. Run 'ketnoi migrate' first, and "
            "check KETNOI_DATABASE_URL (or the data directory)."
        )
        raise typer.Exit(2) from None
    finally:
        audit.close()
    shown = [f for f in report.findings if show_all or f.verdict is not Lawfulness.LAWFUL]
    unlawful = report.count(Lawfulness.UNLAWFUL)
    if as_json:
        document = {
            "disclosures": report.disclosures,
            "reads": report.reads,
            "unlawful": unlawful,
            "flagged": report.count(Lawfulness.FLAGGED),
            "findings": [f.as_json() for f in shown],
        }
        sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    else:
        # Ids in full: piped to a file or another program, the table is as wide as it needs.
        out = Console() if sys.stdout.isatty() else Console(width=220)
        if shown:
            table = Table(show_lines=True)
            table.add_column("verdict")
            table.add_column("kind")
            table.add_column("id", no_wrap=True, min_width=36)
            table.add_column("case", no_wrap=True, min_width=36)
            table.add_column("at (UTC)", no_wrap=True)
            table.add_column("why", ratio=1)
            colours = {"unlawful": "red", "flagged": "yellow", "lawful": "green"}
            for f in shown:
                table.add_row(
                    f"[{colours[f.verdict.value]}]{f.verdict.value}[/]",
                    f.kind.value,
                    str(f.id),
                    "" if f.case_id is None else str(f.case_id),
                    f.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
                    f.why,
                )
            out.print(table)
        out.print(report.summary, highlight=False)
    if unlawful:
        raise typer.Exit(1)
