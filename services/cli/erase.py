"""``ketnoi erase``: forget a person, asked for by one person and approved by another."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

import typer

from contracts.directory import PLATFORM_AGENCY_ID
from contracts.envelope import Actor
from contracts.erasure import ErasureReason
from contracts.intake import ReceptionRecorded
from contracts.vocabulary import Role
from services.cli import _settings, app, console
from services.intake.application import IntakeService
from services.runtime.aggregate import CommandContext
from services.runtime.errors import DomainError
from services.runtime.follower import topics_of
from services.runtime.logging import configure_logging
from services.runtime.persistence import decode_stored


@app.command()
def erase(
    person: Annotated[UUID, typer.Argument(help="The person's id (or their case's id).")],
    reason: Annotated[ErasureReason, typer.Option(help="Why the person is erased.")],
    requested_by: Annotated[str, typer.Option(help="The user id of whoever asked for it.")],
    approved_by: Annotated[str, typer.Option(help="The user id of a second person who approves.")],
) -> None:
    """Erase a person: destroy their data key, so nothing personal about them reads any more
    in any log, read model or export, and tell every agency their data went to. Irreversible;
    the logs and their seal stay whole."""
    from services.cli.wiring import start

    settings = _settings()
    configure_logging(settings.effective_log_format, settings.log_level)
    platform = start(settings, run_followers=False)
    try:
        intake = platform.intake
        case_id = _case_of(intake, person)
        if case_id is None:
            console.print(f"[red]No person or case {person}.[/red] Check the id.")
            raise typer.Exit(1)
        asker = CommandContext(actor=_operator(requested_by))
        approver = CommandContext(actor=_operator(approved_by))
        try:
            if intake.get_case(case_id).erasure_request is None:
                intake.request_erasure(asker, case_id, reason)
            intake.approve_erasure(approver, case_id)
        except DomainError as exc:
            console.print(f"[red]Not erased:[/red] {exc.detail}")
            raise typer.Exit(1) from None
        # The referral service and the read models follow at once: the person's documents
        # are dropped, and the agencies' erasure notices wait in the referral log.
        platform.catch_up()
        platform.checkpoint()
    finally:
        platform.close()
    typer.echo(f"Erased the person of case {case_id}.")


def _operator(user_id: str) -> Actor:
    return Actor(user_id=user_id, agency_id=PLATFORM_AGENCY_ID, role=Role.ADMIN)


def _case_of(intake: IntakeService, person_or_case: UUID) -> UUID | None:
    """The case of a person (or the case itself when given its id)."""
    topics = topics_of([ReceptionRecorded])
    position = 0
    while True:
        batch = intake.recorder.select_notifications(start=position + 1, limit=500, topics=topics)
        if not batch:
            return None
        for notification in batch:
            if notification.originator_id == person_or_case:
                return person_or_case
            event = decode_stored(intake.mapper, notification)
            if isinstance(event, ReceptionRecorded) and event.person_id == person_or_case:
                return event.originator_id
        position = batch[-1].id
