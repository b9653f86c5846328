"""The read models on PostgreSQL: expectations worked out by hand from the scenarios, a
rebuild that equals the live views row for row, and replay as of several instants."""

from __future__ import annotations

import base64
import contextlib
import random
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
import pytest
from psycopg import sql

from contracts.consent import (
    Collection,
    CollectionMethod,
    ConsentGiver,
    GiverKind,
    Recipient,
    RecipientGroup,
)
from contracts.envelope import Actor, AgencyRef
from contracts.intake import PersonDetails, Place
from contracts.referral import HandoverKind, PartyRole, Urgency
from contracts.vocabulary import (
    AgencyKind,
    ArrivalRoute,
    CaseStage,
    ClosureReason,
    DataCategory,
    Purpose,
    ReopeningReason,
    Role,
    ServiceType,
    Sex,
)
from services.cli.wiring import Platform, migrate, start
from services.projections.application import ProjectionService
from services.projections.board import MAX_PAGE
from services.projections.runner import apply_all
from services.projections.statistics import Cell, publish
from services.projections.store import Tables
from services.projections.views import VIEWS
from services.referral.application import NamedParty
from services.runtime.aggregate import CommandContext
from services.runtime.errors import DomainError
from services.runtime.settings import Settings
from tests.support.agencies import register_agencies
from tests.support.board import every_page, expected, totals

pytestmark = pytest.mark.postgres

T0 = datetime(2026, 3, 1, 13, 0, tzinfo=UTC)  # 20:00 in Dong Thap
POLICE = AgencyRef(agency_id="dt-police", kind=AgencyKind.POLICE)
BORDER = AgencyRef(agency_id="dt-border-guard", kind=AgencyKind.BORDER_GUARD)
SWC = AgencyRef(agency_id="dt-swc", kind=AgencyKind.SOCIAL_WORK_CENTRE)
HOSPITAL = AgencyRef(agency_id="dt-hospital", kind=AgencyKind.HOSPITAL)
OFFICER = Actor(user_id="officer-1", agency_id="dt-police", role=Role.INTAKE_OFFICER)
MANAGER = Actor(user_id="cw-1", agency_id="dt-swc", role=Role.CASE_MANAGER)
WRITTEN = Collection(
    method=CollectionMethod.WRITTEN_FORM,
    form_reference="F",
    language="vi",
    withdrawal_explained=True,
)


def at(minutes: float, actor: Actor = MANAGER) -> CommandContext:
    return CommandContext(actor=actor, at=T0 + timedelta(minutes=minutes))


def staff(agency: AgencyRef) -> Actor:
    return Actor(
        user_id=f"{agency.agency_id}-1", agency_id=agency.agency_id, role=Role.AGENCY_STAFF
    )


def _started(settings: Settings) -> Iterator[Platform]:
    """A migrated platform with the agencies registered, its followers not running."""
    migrate(settings)
    platform = start(settings, run_followers=False)
    register_agencies(platform)
    yield platform
    platform.close()


@pytest.fixture
def platform(pg_settings: Settings) -> Iterator[Platform]:
    yield from _started(pg_settings)


def dong_thap_night(p: Platform) -> UUID:
    """Received at 20:00; handover confirmed by 20:50; health check starts at 21:30,
    psychological first aid at 22:00; the shelter referral is never acknowledged."""
    case_id = UUID(
        str(
            p.intake.record_reception(
                at(0, OFFICER),
                route=ArrivalRoute.RESCUED,
                received_at=T0,
                place=Place(province="dong-thap"),
                receiving_agency=POLICE,
            )["case_id"]
        )
    )
    p.intake.register_person(
        at(1, OFFICER), case_id, PersonDetails(full_name="N", sex=Sex.FEMALE, estimated_age=23)
    )
    p.catch_up()
    p.consent.grant(
        at(5),
        case_id,
        categories=(DataCategory.IDENTITY,),
        recipients=(Recipient(group=RecipientGroup.ANY),),
        purposes=(Purpose.SERVICE_PROVISION, Purpose.STATISTICS),
        valid_from=T0,
        valid_until=T0 + timedelta(days=365),
        collection=WRITTEN,
        given_by=ConsentGiver(kind=GiverKind.PERSON),
    )
    p.catch_up()
    handover = p.referral.start_handover(
        at(30, OFFICER),
        case_id,
        kind=HandoverKind.RECEPTION,
        parties=(
            NamedParty(agency_id=POLICE.agency_id, role=PartyRole.FROM, capacity="police"),
            NamedParty(agency_id=SWC.agency_id, role=PartyRole.TO, capacity="social worker"),
            NamedParty(agency_id=BORDER.agency_id, role=PartyRole.WITNESS, capacity="border guard"),
        ),
    )
    hid = UUID(handover["handover_id"])
    for minutes, agency in ((35, POLICE), (40, BORDER), (50, SWC)):
        p.referral.confirm_handover(at(minutes, staff(agency)), hid, agency.agency_id)
    for service, start_at in (
        (ServiceType.HEALTH_CHECK, 90),
        (ServiceType.PSYCHOLOGICAL_FIRST_AID, 120),
    ):
        rid = UUID(
            p.referral.create_referral(
                at(60),
                case_id,
                from_agency=SWC,
                to_agency_id=HOSPITAL.agency_id,
                service_type=service,
                urgency=Urgency.URGENT,
                purpose=Purpose.SERVICE_PROVISION,
                categories=(DataCategory.IDENTITY,),
            )["referral_id"]
        )
        for minutes, action in ((70, "acknowledge"), (75, "accept"), (start_at, "start")):
            p.referral.answer(at(minutes, staff(HOSPITAL)), rid, action)
    shelter = AgencyRef(agency_id="dt-shelter", kind=AgencyKind.NGO)
    p.referral.create_referral(
        at(65),
        case_id,
        from_agency=SWC,
        to_agency_id=shelter.agency_id,
        service_type=ServiceType.SAFE_ACCOMMODATION,
        urgency=Urgency.EMERGENCY,
        purpose=Purpose.SERVICE_PROVISION,
        categories=(DataCategory.IDENTITY,),
    )
    # Shelter: acknowledge within an hour of 21:05 -> missed at 22:05.
    p.referral.check_deadlines(T0 + timedelta(hours=3))
    p.catch_up()
    return case_id


def test_the_board_queue_and_timeline_of_the_dong_thap_night(platform: Platform) -> None:
    case_id = dong_thap_night(platform)
    projections = platform.projections
    assert projections is not None
    [row] = projections.board("dong-thap")["rows"]
    assert row["case_id"] == str(case_id)
    assert row["open_handovers"] == []  # all three confirmed
    assert row["minutes_from_reception"] == {
        "health_check": 90.0,
        "psychological_first_aid": 120.0,
        "safe_accommodation": None,
    }
    breached = row["deadlines_breached"]
    assert [(b["service_type"], b["deadline"]) for b in breached] == [
        ("safe_accommodation", "acknowledge")
    ]
    assert projections.board("lao-cai")["rows"] == []

    queue = projections.queue("dt-hospital")
    assert sorted(q["service_type"] for q in queue) == ["health_check", "psychological_first_aid"]
    assert {q["waiting_for"] for q in queue} == {"outcome"}
    [shelter] = projections.queue("dt-shelter")
    assert shelter["waiting_for"] == "acknowledgement"
    assert shelter["escalated"] == ["acknowledge"]

    ties, entries = projections.timeline(case_id)
    assert ties.province == "dong-thap"
    assert ties.holders == {"dt-police"}  # received by the police, no case manager yet
    whats = [e["what"] for e in entries]
    assert whats[0].startswith("Received (rescued) by dt-police")
    assert whats.index("Handover completed") < whats.index(
        "Referral to dt-hospital for health_check"
    )
    assert "Deadline missed: acknowledge" in whats
    assert [e["at"] for e in entries] == sorted(e["at"] for e in entries)
    disclosures = [e for e in entries if e["type"] == "org.ketnoi.referral.disclosure_recorded"]
    assert len(disclosures) == 3
    assert all(d["grants"] for d in disclosures)  # under which consent


def test_a_rebuilt_view_equals_the_live_one_row_for_row(platform: Platform) -> None:
    rng = random.Random(7)
    cases: list[UUID] = []
    referrals: list[UUID] = []
    grants: list[tuple[UUID, UUID]] = []
    for step in range(400):
        roll = rng.random()
        minutes = step
        if roll < 0.2 or not cases:
            case_id = UUID(
                str(
                    platform.intake.record_reception(
                        at(minutes, OFFICER),
                        route=ArrivalRoute.RESCUED,
                        received_at=T0,
                        place=Place(province=rng.choice(["dong-thap", "lao-cai"])),
                        receiving_agency=POLICE,
                    )["case_id"]
                )
            )
            platform.intake.register_person(
                at(minutes, OFFICER),
                case_id,
                PersonDetails(full_name="X", sex=Sex.MALE, estimated_age=rng.randint(12, 40)),
            )
            cases.append(case_id)
        elif roll < 0.35:
            case_id = rng.choice(cases)
            platform.catch_up()
            # A minor's consent comes from a guardian, with the child's views; an adult's own.
            minor = platform.consent.get_record(case_id).is_minor_at(at(minutes).at)
            giver = ConsentGiver(kind=GiverKind.GUARDIAN if minor else GiverKind.PERSON)
            gid = platform.consent.grant(
                at(minutes),
                case_id,
                categories=(DataCategory.IDENTITY,),
                recipients=(Recipient(kind=AgencyKind.HOSPITAL),),
                purposes=(Purpose.SERVICE_PROVISION, Purpose.STATISTICS),
                valid_from=T0,
                valid_until=T0 + timedelta(days=30),
                collection=WRITTEN,
                given_by=giver,
                child_views="agrees" if minor else None,
            )["grant_id"]
            grants.append((case_id, UUID(gid)))
        elif roll < 0.4 and grants:
            case_id, gid = grants.pop(rng.randrange(len(grants)))
            platform.consent.withdraw(at(minutes), case_id, gid, heard_by=HOSPITAL)
        elif roll < 0.6:
            platform.catch_up()
            referrals.append(
                UUID(
                    platform.referral.create_referral(
                        at(minutes),
                        rng.choice(cases),
                        from_agency=SWC,
                        to_agency_id=HOSPITAL.agency_id,
                        service_type=rng.choice(list(ServiceType)),
                        urgency=Urgency.URGENT,
                        purpose=Purpose.SERVICE_PROVISION,
                        categories=(DataCategory.IDENTITY,),
                    )["referral_id"]
                )
            )
        elif roll < 0.8 and referrals:
            rid = rng.choice(referrals)
            action = rng.choice(["acknowledge", "accept", "start", "complete", "reject"])
            # When the state machine says no, that is part of the scenario too.
            with contextlib.suppress(DomainError):
                platform.referral.answer(at(minutes, staff(HOSPITAL)), rid, action, "because")
        elif roll < 0.9:
            case_id = rng.choice(cases)
            try:
                platform.intake.close_case(at(minutes), case_id, ClosureReason.GOALS_MET)
                platform.intake.reopen_case(
                    at(minutes), case_id, ReopeningReason.NEW_CRISIS, CaseStage.CRISIS
                )
            except Exception:
                pass
        if rng.random() < 0.3:
            platform.catch_up()  # live views advance in uneven steps
    platform.referral.check_deadlines(T0 + timedelta(days=3))
    platform.catch_up()
    projections = platform.projections
    assert projections is not None
    live = {v: projections.store.query(Tables.of(v)) for v in ("cases", "queue", "timeline")}
    assert len(live["cases"]) > 60
    assert len(live["queue"]) > 40
    reported: list[int] = []
    sizes = projections.rebuild(progress=reported.append)
    # The progress bar ends full: every position of every log it reads is counted once.
    assert sum(reported) == projections.projector.total_events(list(live))
    rebuilt = {v: projections.store.query(Tables.of(v)) for v in ("cases", "queue", "timeline")}
    for view in live:
        assert len(rebuilt[view]) == len(live[view]) == sizes[view]
        for old, new in zip(live[view], rebuilt[view], strict=True):
            assert old == new, view
    # Read in windows of 7 positions, most of which hold nothing some view wants: the same.
    projector = projections.projector
    stops = {n: u.recorder.max_notification_id() or 0 for n, u in projections.upstreams.items()}
    windowed = apply_all(projector.views, list(live), projections.upstreams, stops, chunk=7)
    for view, docs in windowed.items():
        for _province, _agency, doc in docs.rows.values():
            VIEWS[view].finalize(doc)
        assert sorted((key, *row) for key, row in docs.rows.items()) == rebuilt[view], view


def test_replay_as_of_several_instants(platform: Platform) -> None:
    case_id = dong_thap_night(platform)
    projections = platform.projections
    assert projections is not None
    with pytest.raises(Exception, match="No case"):
        projections.replay(case_id, T0 - timedelta(minutes=1))
    received = projections.replay(case_id, T0 + timedelta(minutes=0, seconds=30))
    assert received["intake"]["stage"] == "reception"
    assert received["intake"]["person_registered"] is False
    assert received["consent"]["grants_in_force"] == []
    assert received["who_could_see_what"] == []

    mid_handover = projections.replay(case_id, T0 + timedelta(minutes=45))
    assert mid_handover["handovers"][0]["waiting_for"] == ["dt-swc"]
    assert len(mid_handover["consent"]["grants_in_force"]) == 1
    assert mid_handover["referrals"] == []

    later = projections.replay(case_id, T0 + timedelta(minutes=100))
    assert later["handovers"][0]["status"] == "completed"
    statuses = {r["service_type"]: r["status"] for r in later["referrals"]}
    assert statuses == {
        "health_check": "in-progress",
        "psychological_first_aid": "accepted",
        "safe_accommodation": "requested",
    }
    seen = {(v["agency"], tuple(v["categories"])) for v in later["who_could_see_what"]}
    assert seen == {("dt-hospital", ("identity",)), ("dt-shelter", ("identity",))}
    assert all(v["grant_ids"] for v in later["who_could_see_what"])

    # She withdraws the grant at 3 hours: from then on nobody could read her identity, though
    # the referrals go on (the record that they were made stays).
    grant_id = UUID(later["consent"]["grants_in_force"][0]["grant_id"])
    platform.consent.withdraw(at(180), case_id, grant_id, heard_by=SWC)
    platform.catch_up()
    before = projections.replay(case_id, T0 + timedelta(minutes=179))
    assert {v["agency"] for v in before["who_could_see_what"]} == {"dt-hospital", "dt-shelter"}
    after = projections.replay(case_id, T0 + timedelta(minutes=181))
    assert after["who_could_see_what"] == []
    assert len(after["referrals"]) == 3


def test_statistics_count_only_consenting_cases(platform: Platform) -> None:
    for _ in range(16):
        dong_thap_night(platform)
    projections = platform.projections
    assert projections is not None
    cells = {
        (c.table, c.dimension, c.value): c.count
        for c in projections.statistics("dong-thap", at=T0 + timedelta(days=1))
    }
    assert cells[("cases", "all", "all")] == 15  # 16 cases, rounded down to a step of 5
    assert cells[("referrals", "health_check", "in-progress")] == 15
    assert cells[("time_to_service", "health_check", "under 1 hour")] == 15  # 21:00 to 21:30
    # The shelter referral of each case: 16 requested, but never started: no time to service.
    assert ("time_to_service", "safe_accommodation", "under 1 hour") not in cells


def test_bulk_loaded_documents_read_back_as_written(platform: Platform) -> None:
    projections = platform.projections
    assert projections is not None
    store = projections.store
    tables = Tables.of("cases", "_bulk_test")
    store.create(tables, replace=True, shadow=True)
    awkward = 'tab\there, new\nline, cr\r, back\\slash, \\N, quote " and ký tự'
    rows = [
        ("case:1", awkward, None, {"text": awkward, "nested": {"list": [awkward, None, 1.5]}}),
        ("case:2", None, "agency\\x", {"empty": "", "escaped": "\\\\t"}),
        ("case:3", "dong-thap", "dt-swc", {}),
    ]
    store.bulk_load(tables, rows)
    assert store.query(tables) == rows
    with store.transaction() as cur:
        cur.execute(f"DROP TABLE {tables.docs}")
        cur.execute(f"DROP TABLE {tables.tracking}")


def test_statistics_count_only_consent_in_force_live_and_after_a_rebuild(
    platform: Platform,
) -> None:
    """Five cases: a grant that expired, one overridden by a refusal, one withdrawn, a
    guardian's grant after the 18th birthday, and a valid grant. Only the last counts, in
    the live view and after a rebuild alike."""
    later = T0 + timedelta(days=90)

    def case(birth: date | None = None) -> UUID:
        case_id = UUID(
            str(
                platform.intake.record_reception(
                    at(0, OFFICER),
                    route=ArrivalRoute.RESCUED,
                    received_at=T0,
                    place=Place(province="dong-thap"),
                    receiving_agency=POLICE,
                )["case_id"]
            )
        )
        details = (
            PersonDetails(full_name="M", sex=Sex.MALE, date_of_birth=birth)
            if birth
            else PersonDetails(full_name="N", sex=Sex.FEMALE, estimated_age=25)
        )
        platform.intake.register_person(at(1, OFFICER), case_id, details)
        platform.catch_up()
        return case_id

    def grant(case_id: UUID, days: int = 365, guardian: bool = False) -> UUID:
        return UUID(
            platform.consent.grant(
                at(5),
                case_id,
                categories=(DataCategory.IDENTITY,),
                recipients=(Recipient(group=RecipientGroup.ANY),),
                purposes=(Purpose.STATISTICS,),
                valid_from=T0,
                valid_until=T0 + timedelta(days=days),
                collection=WRITTEN,
                given_by=ConsentGiver(kind=GiverKind.GUARDIAN if guardian else GiverKind.PERSON),
                child_views="agrees" if guardian else None,
            )["grant_id"]
        )

    grant(case(), days=30)
    refused = case()
    grant(refused)
    platform.consent.refuse(
        at(10), refused, recipients=(Recipient(group=RecipientGroup.GOVERNMENT),)
    )
    withdrawn = case()
    platform.consent.withdraw(at(20), withdrawn, grant(withdrawn), heard_by=HOSPITAL)
    # 18 on 1 April 2026, a month after the reception (Vietnam's calendar).
    grant(case(birth=date(2008, 4, 1)), guardian=True)
    valid = case()
    grant(valid)
    platform.catch_up()
    projections = platform.projections
    assert projections is not None

    def cases_counted() -> dict[str, int | None]:
        cells = projections.statistics("dong-thap", threshold=1, step=1, at=later)
        return {c.table: c.count for c in cells}

    live = projections.statistics("dong-thap", threshold=1, step=1, at=later)
    assert cases_counted() == {"cases": 1}
    # A fortnight in, the grant that later expired and the guardian's grant still counted.
    early = projections.statistics("dong-thap", threshold=1, step=1, at=T0 + timedelta(days=14))
    assert {c.table: c.count for c in early} == {"cases": 3}
    projections.rebuild(["cases"])
    assert projections.statistics("dong-thap", threshold=1, step=1, at=later) == live
    overview = projections.case_overview(valid)
    assert overview is not None
    assert [t for t, _ in overview["consent"]] == [
        "org.ketnoi.consent.subject_age_noted",
        "org.ketnoi.consent.granted",
    ]


@pytest.fixture
def embedded(sqlite_settings: Settings) -> Iterator[Platform]:
    yield from _started(sqlite_settings)


def test_the_board_and_the_statistics_read_from_their_own_tables_on_sqlite(
    embedded: Platform,
) -> None:
    """The embedded demo keeps the open cases and the counters too: the board lists the
    open cases, and the statistics at any instant are what the case documents say, live
    and after a rebuild."""
    cases = [dong_thap_night(embedded) for _ in range(12)]
    embedded.intake.close_case(at(600), cases[0], ClosureReason.GOALS_MET)
    embedded.catch_up()
    projections = embedded.projections
    assert projections is not None
    instants = (T0 - timedelta(days=1), T0 + timedelta(days=1), T0 + timedelta(days=800))

    def from_documents(when: datetime) -> list[Cell]:
        rows = projections.store.query(Tables.of("cases"), key_prefix="case:")
        return publish((doc for *_, doc in rows), threshold=1, step=1, at=when)

    def statistics() -> list[list[Cell]]:
        return [projections.statistics("dong-thap", 1, 1, when) for when in instants]

    board = projections.board("dong-thap")
    assert sorted(row["case_id"] for row in board["rows"]) == sorted(str(c) for c in cases[1:])
    live = statistics()
    assert live == [from_documents(when) for when in instants]
    assert any(cell.count for cell in live[1])
    projections.rebuild()
    assert projections.board("dong-thap") == board
    assert statistics() == live


def test_an_existing_case_overview_is_told_to_rebuild_for_its_new_tables(
    platform: Platform,
) -> None:
    """A database whose case overview came before the board's and the statistics' tables:
    migrating makes them, empty, and says that ``ketnoi rebuild cases`` fills them."""
    dong_thap_night(platform)
    platform.catch_up()
    projections = platform.projections
    assert projections is not None
    store, tables = projections.store, Tables.of("cases")
    with store.transaction() as cur:
        for table in tables.derived:
            cur.execute(f"DROP TABLE {table}")
    assert store.create(tables) is True  # made now, beside documents already there
    assert store.create(tables) is False  # there already: nothing to say
    assert projections.board("dong-thap")["rows"] == []
    projections.rebuild(["cases"])
    assert len(projections.board("dong-thap")["rows"]) == 1


def received(p: Platform, when: datetime, province: str = "dong-thap") -> UUID:
    """A reception and nothing more: its first review falls due a few days after it."""
    case_id = UUID(
        str(
            p.intake.record_reception(
                CommandContext(actor=OFFICER, at=when + timedelta(minutes=5)),
                route=ArrivalRoute.RESCUED,
                received_at=when,
                place=Place(province=province),
                receiving_agency=POLICE,
            )["case_id"]
        )
    )
    p.catch_up()
    return case_id


def waiting_handover(p: Platform, when: datetime) -> UUID:
    """A reception whose handover to the social work centre nobody has confirmed yet."""
    case_id = received(p, when)
    p.referral.start_handover(
        CommandContext(actor=OFFICER, at=when + timedelta(minutes=30)),
        case_id,
        kind=HandoverKind.RECEPTION,
        parties=(
            NamedParty(agency_id=POLICE.agency_id, role=PartyRole.FROM, capacity="police"),
            NamedParty(agency_id=SWC.agency_id, role=PartyRole.TO, capacity="social worker"),
        ),
    )
    p.catch_up()
    return case_id


def busy_province(p: Platform) -> None:
    """Open cases of Dong Thap in every part of the board's order, received in an order of
    their own: deadlines breached, handovers waiting, reviews overdue (received weeks before
    ``BOARD_DAY``), the others (received the day before); one closed, one of Lao Cai."""
    for _ in range(2):
        dong_thap_night(p)
    for hours in (5, 1, 3):
        waiting_handover(p, T0 + timedelta(hours=hours))
    for days in (20, 40, 30):
        received(p, BOARD_DAY_START - timedelta(days=days))
    for hours in (4, 2, 6, 1):
        received(p, BOARD_DAY_START - timedelta(hours=hours))
    closed = received(p, T0)
    p.intake.close_case(at(600), closed, ClosureReason.GOALS_MET)
    received(p, T0, "lao-cai")
    p.catch_up()


BOARD_DAY = date(2026, 4, 2)
BOARD_DAY_START = datetime(2026, 4, 1, 17, 0, tzinfo=UTC)  # midnight of BOARD_DAY, Dong Thap


def case_documents(projections: ProjectionService, province: str) -> list[dict[str, Any]]:
    rows = projections.store.query(Tables.of("cases"), province=province, key_prefix="case:")
    return [doc for *_, doc in rows]


def board_index(projections: ProjectionService) -> list[str]:
    """The indexes of the live open-cases table that the board's pages read."""
    store = projections.store
    with store.transaction() as cur:
        if store.backend == "sqlite":
            cur.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = %s "
                "AND name LIKE %s",
                ["view_cases_open", "%board"],
            )
        else:
            cur.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = %s AND tablename = %s "
                "AND indexname LIKE %s",
                [store.schema, "view_cases_open", "%board"],
            )
        return [str(name) for (name,) in cur.fetchall()]


@pytest.fixture(params=["pg_settings", "sqlite_settings"])
def either(request: pytest.FixtureRequest) -> Iterator[Platform]:
    """A platform on PostgreSQL, then on SQLite."""
    yield from _started(request.getfixturevalue(request.param))


@pytest.mark.parametrize("limit", [1, 3, 5])
def test_the_board_pages_through_every_open_case_once_attention_first(
    either: Platform, limit: int
) -> None:
    """More open cases than a page: following the cursors reads each once, in the board's
    order (what needs attention first, then oldest reception first), every page counting
    the whole province; a rebuild gives the same pages."""
    busy_province(either)
    projections = either.projections
    assert projections is not None
    docs = case_documents(projections, "dong-thap")
    order = expected(docs, BOARD_DAY)
    assert [segment for segment, *_ in order] == [0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 3]
    pages = every_page(projections, "dong-thap", limit, BOARD_DAY)
    assert len(pages) == -(-len(order) // limit)
    assert all(len(page["rows"]) == limit for page in pages[:-1])
    shown = [row["case_id"] for page in pages for row in page["rows"]]
    assert shown == [case_id for *_, case_id in order]
    overdue = [row["review_overdue"] for page in pages for row in page["rows"]]
    assert overdue[5:8] == [True] * 3
    assert overdue[8:] == [False] * 4
    whole = {
        "open": 12,
        "attention": {"deadlines_breached": 2, "handovers_waiting": 3, "reviews_overdue": 8},
    }
    assert whole == totals(docs, BOARD_DAY)
    for page in pages:
        assert {"open": page["open"], "attention": page["attention"]} == whole
    assert pages[-1]["next"] is None

    projections.rebuild(["cases"])
    assert every_page(projections, "dong-thap", limit, BOARD_DAY) == pages
    assert board_index(projections) == ["view_cases_open_board"]  # kept through the swap
    assert projections.board("lao-cai", today=BOARD_DAY)["open"] == 1


def test_a_page_and_its_totals_are_read_from_one_snapshot(
    platform: Platform, pg_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A case that leaves the board between the page's statements and the totals' (closed,
    its row deleted by another connection) still counts in the totals of that page: both
    are read as the tables were when the page was."""
    busy_province(platform)
    projections = platform.projections
    assert projections is not None
    store = projections.store
    table = Tables.of("cases").open
    assert table is not None
    read_totals = store.board_totals

    def meanwhile(*args: Any) -> dict[str, Any]:
        assert pg_settings.database_url is not None
        with psycopg.connect(pg_settings.database_url, autocommit=True) as other:
            deleted = other.execute(
                sql.SQL(
                    "DELETE FROM {} WHERE case_id = (SELECT min(case_id) FROM {} "
                    "WHERE province = 'dong-thap')"
                ).format(sql.Identifier(store.schema, table), sql.Identifier(store.schema, table))
            ).rowcount
        assert deleted == 1
        return read_totals(*args)

    monkeypatch.setattr(store, "board_totals", meanwhile)
    page = projections.board("dong-thap", 3, today=BOARD_DAY)
    assert len(page["rows"]) == 3
    assert page["open"] == 12  # as when the page was read
    monkeypatch.undo()
    assert projections.board("dong-thap", today=BOARD_DAY)["open"] == 11


def test_a_review_falling_due_moves_a_case_up_the_board_on_that_day(either: Platform) -> None:
    """Whether a review is overdue is asked on the day the board is read, not when its row
    was written."""
    projections = either.projections
    assert projections is not None
    later = received(either, BOARD_DAY_START - timedelta(hours=1))
    earlier = received(either, BOARD_DAY_START - timedelta(hours=2))
    assert [r["case_id"] for r in projections.board("dong-thap", today=BOARD_DAY)["rows"]] == [
        str(earlier),
        str(later),
    ]
    [due] = {r["review_due_on"] for r in projections.board("dong-thap", today=BOARD_DAY)["rows"]}
    after = date.fromisoformat(due) + timedelta(days=1)
    page = projections.board("dong-thap", today=after)
    assert page["attention"]["reviews_overdue"] == 2
    assert [r["review_overdue"] for r in page["rows"]] == [True, True]


def test_a_page_out_of_bounds_or_a_cursor_not_of_the_board_is_refused(
    platform: Platform,
) -> None:
    projections = platform.projections
    assert projections is not None
    for limit in (0, -1, 501):
        with pytest.raises(ValueError, match="a page holds"):
            projections.board_json("dong-thap", limit)
    forged = base64.urlsafe_b64encode(b'[9,"2026-01-01","x"]').decode()
    for cursor in ("not-a-cursor", "", "%%%", forged, base64.b64encode(b"{}").decode()):
        with pytest.raises(ValueError, match="not a cursor"):
            projections.board_json("dong-thap", 10, cursor)
    assert projections.board("dong-thap", MAX_PAGE)["rows"] == []


def test_an_open_cases_table_from_before_the_pages_is_migrated_then_rebuilt(
    either: Platform,
) -> None:
    """An installation whose open cases were kept before the board was paged: migrating
    adds the columns of the board's order (every row at the default rank, still listed),
    says that ``ketnoi rebuild cases`` is needed, and the rebuild ranks them."""
    busy_province(either)
    projections = either.projections
    assert projections is not None
    store, tables = projections.store, Tables.of("cases")
    assert tables.open is not None
    pages = every_page(projections, "dong-thap", 4, BOARD_DAY)
    with store.transaction() as cur:
        cur.execute(f"SELECT province, case_id, received_at, review_due_on, row FROM {tables.open}")
        kept = cur.fetchall()
        cur.execute(f"DROP TABLE {tables.open}")
        cur.execute(
            f"CREATE TABLE {tables.open} (province text NOT NULL, "
            "case_id text NOT NULL, received_at text, review_due_on text, row text NOT NULL, "
            "PRIMARY KEY (province, case_id), UNIQUE (case_id))"
        )
        cur.executemany(f"INSERT INTO {tables.open} VALUES (%s, %s, %s, %s, %s)", kept)
    assert store.create(tables) is True  # given its columns now, beside documents there
    assert store.create(tables) is False  # there already: nothing to say
    before = every_page(projections, "dong-thap", 4, BOARD_DAY)
    assert sorted(r["case_id"] for p in before for r in p["rows"]) == sorted(
        r["case_id"] for p in pages for r in p["rows"]
    )
    assert before[0]["attention"]["deadlines_breached"] == 0  # not ranked until rebuilt
    assert board_index(projections) == ["view_cases_open_board"]
    projections.rebuild(["cases"])
    assert every_page(projections, "dong-thap", 4, BOARD_DAY) == pages
