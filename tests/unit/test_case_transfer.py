"""Ownership that moves with a completed case transfer (services/intake/transfer.py): the
rule on the case, and intake's reaction to the referral log, with no I/O (in memory)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

from contracts.envelope import Actor, AgencyRef
from contracts.intake import CaseManagerAssigned, Place
from contracts.referral import (
    HandoverCompleted,
    HandoverKind,
    HandoverParty,
    HandoverStarted,
    PartyRole,
)
from contracts.vocabulary import AgencyKind, ArrivalRoute, ClosureReason, Role
from services.intake.application import IntakeService
from services.intake.domain import Case
from services.runtime.aggregate import CommandContext

NOW = datetime(2026, 3, 1, 10, 30, tzinfo=UTC)
POLICE = AgencyRef(agency_id="dt-police", kind=AgencyKind.POLICE)
SWC = AgencyRef(agency_id="dt-swc", kind=AgencyKind.SOCIAL_WORK_CENTRE)
OTHER_SWC = AgencyRef(agency_id="dt-swc-1", kind=AgencyKind.SOCIAL_WORK_CENTRE)
MANAGER = Actor(user_id="manager-1", agency_id="dt-swc", role=Role.CASE_MANAGER)


def ctx(minutes: int = 0) -> CommandContext:
    return CommandContext(actor=MANAGER, at=NOW + timedelta(minutes=minutes))


def case(*, collected: bool = True) -> Case:
    c = Case.record_reception(
        ctx(),
        route=ArrivalRoute.RESCUED,
        received_at=NOW - timedelta(hours=2),
        place=Place(province="dong-thap"),
        receiving_agency=POLICE,
    )
    c.assign_case_manager(ctx(), "manager-1", SWC)
    if collected:
        c.collect_events()
    return c


def test_a_transfer_names_the_new_case_manager_and_the_handover() -> None:
    c = case()
    handover = uuid4()
    assert c.take_over_by_transfer(ctx(1), handover, "manager-2", OTHER_SWC)
    [event] = c.collect_events()
    assert isinstance(event, CaseManagerAssigned)
    assert (event.case_manager_id, event.agency, event.handover_id) == (
        "manager-2",
        OTHER_SWC,
        handover,
    )
    assert c.ties.holders == {"dt-police", "dt-swc-1"}


def test_a_transfer_to_the_manager_who_already_owns_the_case_records_nothing() -> None:
    c = case()
    assert not c.take_over_by_transfer(ctx(1), uuid4(), "manager-1", SWC)
    assert c.collect_events() == []


def test_a_closed_case_moves_with_its_transfer_too() -> None:
    c = case()
    c.close(ctx(1), ClosureReason.TRANSFERRED_ELSEWHERE, None, None)
    assert c.take_over_by_transfer(ctx(2), uuid4(), "manager-2", OTHER_SWC)
    assert c.case_manager is not None
    assert c.case_manager.case_manager_id == "manager-2"


# -- intake following the referral log -------------------------------------------------------


def intake() -> IntakeService:
    return IntakeService(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})


def started(case_id: UUID, kind: HandoverKind, manager: str | None) -> HandoverStarted:
    return HandoverStarted(
        originator_id=uuid4(),
        originator_version=1,
        timestamp=NOW,
        actor=MANAGER,
        case_id=case_id,
        province="dong-thap",
        kind=kind,
        parties=(
            HandoverParty(agency=SWC, role=PartyRole.FROM, capacity="case manager"),
            HandoverParty(agency=OTHER_SWC, role=PartyRole.TO, capacity="case manager"),
        ),
        to_case_manager_id=manager,
    )


def completed(start: HandoverStarted) -> HandoverCompleted:
    return HandoverCompleted(
        originator_id=start.originator_id,
        originator_version=3,
        timestamp=NOW + timedelta(minutes=5),
        actor=Actor(user_id="manager-2", agency_id="dt-swc-1", role=Role.CASE_MANAGER),
        seconds_by_party={"dt-swc": 60.0, "dt-swc-1": 300.0},
    )


def follow(app: IntakeService, *events: HandoverStarted | HandoverCompleted) -> None:
    for n, event in enumerate(events, start=1):
        app.process("referral", n, event)


def test_intake_makes_the_named_manager_the_owner_when_the_transfer_completes() -> None:
    app = intake()
    c = case(collected=False)
    app.save(c)
    start = started(c.id, HandoverKind.CASE_TRANSFER, "manager-2")
    follow(app, start)
    assert app.get_case(c.id).case_manager.case_manager_id == "manager-1"  # type: ignore[union-attr]
    follow_on = completed(start)
    app.process("referral", 2, follow_on)
    owner = app.get_case(c.id).case_manager
    assert owner is not None
    assert (owner.case_manager_id, owner.agency, owner.handover_id) == (
        "manager-2",
        OTHER_SWC,
        start.originator_id,
    )
    # Caused by the completion, at its time, by whoever confirmed last.
    assert owner.caused_by == follow_on.event_id
    assert owner.timestamp == follow_on.timestamp
    assert owner.actor.user_id == "manager-2"
    # The same completion read again changes nothing.
    assert not app.process("referral", 2, follow_on)


def test_a_reception_handover_moves_no_case_manager() -> None:
    app = intake()
    c = case(collected=False)
    app.save(c)
    start = started(c.id, HandoverKind.RECEPTION, None)
    follow(app, start, completed(start))
    owner = app.get_case(c.id).case_manager
    assert owner is not None
    assert owner.case_manager_id == "manager-1"
    assert app.history(c.id)[-1] == owner


def test_intake_follows_only_the_handover_events_it_needs() -> None:
    assert set(IntakeService.follows) == {"referral"}
    assert set(IntakeService.follows["referral"]) == {HandoverStarted, HandoverCompleted}
