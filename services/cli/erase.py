"""``ketnoi erase``: forget a person, asked for by one person and approved by another."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated
from uuid import UUID

import typer
from eventsourcing.persistence import Mapper, StoredEvent

from contracts.consent import consent_record_id
from contracts.directory import PLATFORM_AGENCY_ID
from contracts.envelope import Actor
from contracts.erasure import ErasureReason
from contracts.intake import ReceptionRecorded
from contracts.referral import case_file_id
from contracts.vocabulary import Role
from services.cli import _settings, app, console
from services.intake.application import IntakeService
from services.runtime.aggregate import CommandContext
from services.runtime.errors import DomainError
from services.runtime.follower import topics_of
from services.runtime.logging import configure_logging
from services.runtime.persistence import decode_stored, stored_in_clear, stored_state

if TYPE_CHECKING:
    from services.cli.wiring import Platform


@app.command()
def erase(
    person: Annotated[UUID, typer.Argument(help="The person's id (or their case's id).")],
    reason: Annotated[ErasureReason, typer.Option(help="Why the person is erased.")],
    requested_by: Annotated[str, typer.Option(help="The user id of whoever asked for it.")],
    approved_by: Annotated[str, typer.Option(help="The user id of a second person who approves.")],
) -> None:
    """Erase a person: destroy their data key, so nothing personal about them reads any more
    in any log, read model or export, and tell every agency their data went to. Irreversible;
    the logs and their seal stay whole. Reports how many of the person's events were stored
    in clear (before per-person encryption existed): destroying the key cannot reach those."""
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
        in_clear = events_in_clear(platform, case_id, intake.get_case(case_id).person_id)
    finally:
        platform.close()
    typer.echo(f"Erased the person of case {case_id}.")
    total = sum(in_clear.values())
    if total:
        where = ", ".join(f"{log}: {count}" for log, count in sorted(in_clear.items()) if count)
        were = "was" if total == 1 else "were"
        typer.echo(
            f"{total} of their events {were} stored in clear, before per-person encryption "
            f"existed ({where}): destroying the key does not reach them; they stay readable "
            "in the logs and in backups."
        )
    else:
        typer.echo("None of their events was stored in clear: nothing of them reads any more.")


def events_in_clear(platform: Platform, case_id: UUID, person_id: UUID | None) -> dict[str, int]:
    """How many events about the person each log stores with personal values in clear.

    An event is about the person when it names them or their case, or belongs to one of
    their aggregates (the case, its consent record and case file, its referrals and
    handovers): events written before per-person encryption may name neither. One pass over
    each log, in order, so an aggregate is known by its first event before its later ones.
    """
    logs = {name: (app.recorder, app.mapper) for name, app in platform.apps.items()}
    if platform.read_audit is not None:
        audit = platform.read_audit.log
        logs["audit"] = (audit.recorder, audit.mapper)
    ours: set[UUID | str] = {case_id, consent_record_id(case_id), case_file_id(case_id)}
    names = {str(case_id)} | ({str(person_id)} if person_id is not None else set())
    found: dict[str, int] = {}
    for name, (recorder, mapper) in logs.items():
        count = 0
        position = 0
        while batch := recorder.select_notifications(start=position + 1, limit=1000):
            for notification in batch:
                if notification.originator_id in ours or _names(mapper, notification, names):
                    ours.add(notification.originator_id)
                    count += stored_in_clear(mapper, notification)
            position = batch[-1].id
        found[name] = count
    return found


def _names(mapper: Mapper[UUID], stored: StoredEvent, names: set[str]) -> bool:
    """Whether a stored event names the person or their case (ids are never encrypted)."""
    state = stored_state(mapper, stored)
    return state.get("person_id") in names or state.get("case_id") in names


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
