"""``ketnoi directory import`` and ``ketnoi directory export``: the agency directory in and out
of Open Referral HSDS 3.0."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from contracts.directory import PLATFORM_AGENCY_ID
from contracts.envelope import Actor
from contracts.vocabulary import Role
from services.cli import _settings, app, console
from services.directory.hsds import HsdsError, export_organizations, import_agencies
from services.directory.hsds import parse_organizations as parse
from services.runtime.aggregate import CommandContext
from services.runtime.errors import DomainError
from services.runtime.logging import configure_logging

directory_app = typer.Typer(
    help="The agency directory, in and out of Open Referral HSDS 3.0.", no_args_is_help=True
)
app.add_typer(directory_app, name="directory")

# Imports run as the platform itself: whoever may run this command administers the platform.
IMPORTER = Actor(user_id="ketnoi-directory-import", agency_id=PLATFORM_AGENCY_ID, role=Role.ADMIN)


@directory_app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="An HSDS 3.0 JSON document (organizations).")],
) -> None:
    """Register or update the agencies of an HSDS file. Running it again changes nothing."""
    from services.cli.wiring import start

    try:
        agencies = parse(json.loads(file.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        message = str(exc) if isinstance(exc, HsdsError | OSError) else f"not JSON ({exc})"
        console.print(f"[red]Cannot import {file}:[/red] {message}")
        raise typer.Exit(2) from None
    settings = _settings()
    configure_logging(settings.effective_log_format, settings.log_level)
    platform = start(settings, ("directory",), run_followers=False)
    try:
        outcomes = import_agencies(platform.directory, CommandContext(actor=IMPORTER), agencies)
    except DomainError as exc:
        console.print(f"[red]Import stopped:[/red] {exc.detail}")
        raise typer.Exit(1) from None
    finally:
        platform.close()
    for agency in agencies:
        if agency.skipped_services:
            names = ", ".join(agency.skipped_services)
            console.print(f"{agency.agency_id}: services not in Ketnoi's list, skipped: {names}")
    counts = {o: sum(1 for v in outcomes.values() if v == o) for o in set(outcomes.values())}
    summary = ", ".join(f"{n} {o}" for o, n in sorted(counts.items())) or "nothing"
    typer.echo(f"Imported {len(outcomes)} agencies: {summary}.")


@directory_app.command("export")
def export(
    file: Annotated[
        Path | None, typer.Argument(help="Where to write; standard output if omitted.")
    ] = None,
) -> None:
    """Write every agency of the directory as an HSDS 3.0 organization list."""
    from services.cli.wiring import start

    settings = _settings()
    configure_logging(settings.effective_log_format, settings.log_level)
    platform = start(settings, ("directory",), run_followers=False)
    try:
        document = export_organizations(platform.directory.list_agencies())
    finally:
        platform.close()
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if file is None:
        sys.stdout.write(text)
    else:
        file.write_text(text, encoding="utf-8")
        console.print(f"Wrote {document['total_items']} agencies to {file}.")
