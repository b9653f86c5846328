"""``ketnoi rebuild``, ``ketnoi replay`` and ``ketnoi audit reads``: the auditor's commands."""

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
) -> None:
    """Rebuild read models from the logs into fresh tables and swap them in, live."""
    from services.cli.wiring import start

    if view is not None and view not in VIEWS:
        console.print(f"[red]Unknown view {view!r}.[/red] Choose one of: {', '.join(VIEWS)}.")
        raise typer.Exit(2)
    settings = _settings()
    configure_logging(settings.effective_log_format, settings.log_level)
    platform = start(settings, ("projections",), run_followers=False)
    assert platform.projections is not None
    projections = platform.projections
    names = [view] if view else list(VIEWS)
    try:
        total = projections.projector.total_events(names)
        with Progress(
            TextColumn("Rebuilding {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task(", ".join(names), total=total)
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
