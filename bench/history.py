"""A realistic national history, written fast through the services' own aggregates.

``python -m bench.history generate --cases 10000`` writes the lives of that many cases into the
intake, consent and referral logs of the database named by ``KETNOI_DATABASE_URL`` (migrated
first). Every event is made by the domain aggregates (``Case``, ``ConsentRecord``,
``Referral``, ``Handover``) and stored by the applications' own recorders: encoded by their
mapper, the person's fields encrypted under the person's key, and each event sealed in the
same transaction as any command's. Only the commands' HTTP, access checks and idempotency are
skipped: many cases are saved in one transaction per log (a chunk).

The shapes follow the demo's scenarios: a reception (rescued, returned from abroad, handed
over at the border, a hotline call or self-referral), the person registered, needs and risk
assessed, a case manager assigned, consent asked (most grant, a few refuse part of it, some
withdraw later), one to four referrals (most completed, some rejected, a few still open), the
reception handover (a few still waiting on a party), then a closure for most and, for a few, a
reopening months later. Provinces are weighted (border provinces receive most) and arrivals are
seasonal (more after Tết and in summer). Arrivals run in order over ``--years`` ending now;
what happens to a case after its first weeks (a withdrawal, a reopening, a late completion) is
written some chunks later, so the logs interleave cases as they do in production.

Chunked: ``--start`` resumes at a case number (the history is deterministic by case number
and ``--seed``, so a run stopped between chunks can go on where it stopped).
"""

from __future__ import annotations

import argparse
import bisect
import functools
import heapq
import itertools
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from eventsourcing.persistence import StoredEvent

from contracts.consent import (
    Collection,
    CollectionMethod,
    ConsentGiver,
    GiverKind,
    Recipient,
    RecipientGroup,
)
from contracts.envelope import Actor, AgencyRef
from contracts.intake import PartyPresent, PersonDetails, Place
from contracts.referral import HandoverKind, HandoverParty, PartyRole, Urgency
from contracts.vocabulary import (
    AgencyKind,
    ArrivalRoute,
    CaseStage,
    ClosureReason,
    ContactMode,
    DataCategory,
    Purpose,
    ReopeningReason,
    RiskLevel,
    RiskSubject,
    Role,
    ServiceType,
    Sex,
    UrgentNeed,
)
from services.cli.wiring import Platform
from services.consent.domain import ConsentRecord
from services.intake.domain import Case
from services.referral.domain import CaseFile, Handover, Referral
from services.referral.settings import DEFAULT_DEADLINES, OTHERWISE
from services.runtime.aggregate import CommandContext
from services.runtime.seal.recorders import Head

# Provinces and their share of receptions: the northern border and the Mekong delta receive
# most people coming back.
PROVINCES: tuple[tuple[str, float], ...] = (
    ("lao-cai", 0.16),
    ("quang-ninh", 0.12),
    ("lang-son", 0.11),
    ("ha-giang", 0.09),
    ("nghe-an", 0.09),
    ("dien-bien", 0.06),
    ("thanh-hoa", 0.06),
    ("an-giang", 0.08),
    ("dong-thap", 0.07),
    ("tay-ninh", 0.05),
    ("ha-noi", 0.04),
    ("ho-chi-minh", 0.04),
    ("thua-thien-hue", 0.03),
)
# Arrivals by month (January first): a peak after Tết, another in summer.
MONTH_WEIGHTS = (0.9, 1.4, 1.5, 1.1, 0.9, 1.0, 1.2, 1.3, 0.9, 0.8, 0.8, 0.7)
ROUTES = (
    (ArrivalRoute.BORDER_HANDOVER, 0.35),
    (ArrivalRoute.RETURNED_FROM_ABROAD, 0.25),
    (ArrivalRoute.RESCUED, 0.2),
    (ArrivalRoute.HOTLINE, 0.12),
    (ArrivalRoute.SELF_REFERRAL, 0.08),
)
SERVICES = (
    ServiceType.HEALTH_CHECK,
    ServiceType.SAFE_ACCOMMODATION,
    ServiceType.PSYCHOLOGICAL_FIRST_AID,
    ServiceType.MEDICAL_CARE,
    ServiceType.LEGAL_AID,
    ServiceType.IDENTITY_DOCUMENTS,
    ServiceType.EDUCATION,
)
WRITTEN = Collection(
    method=CollectionMethod.WRITTEN_FORM,
    form_reference="F-01",
    language="vi",
    withdrawal_explained=True,
)
FOREIGN = AgencyRef(agency_id="cn-border-authority", kind=AgencyKind.FOREIGN_AUTHORITY)
EVERYTHING = (
    DataCategory.IDENTITY,
    DataCategory.NEEDS,
    DataCategory.HEALTH,
    DataCategory.LEGAL_CASE,
)


def say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _choose(rng: random.Random, weighted: tuple[tuple[Any, float], ...]) -> Any:
    return rng.choices([v for v, _ in weighted], [w for _, w in weighted])[0]


@dataclass(frozen=True)
class Agencies:
    """A province's agencies and staff, named as in the demo directory's pattern."""

    police: AgencyRef
    border: AgencyRef
    swc: AgencyRef
    hospital: AgencyRef
    legal: AgencyRef
    officer: Actor
    manager: Actor
    staff: Actor
    legal_staff: Actor

    @classmethod
    def of(cls, province: str) -> Agencies:
        def ref(suffix: str, kind: AgencyKind) -> AgencyRef:
            return AgencyRef(agency_id=f"{province}-{suffix}", kind=kind)

        police = ref("police", AgencyKind.POLICE)
        swc = ref("social-work-centre", AgencyKind.SOCIAL_WORK_CENTRE)
        hospital = ref("hospital", AgencyKind.HOSPITAL)
        legal = ref("legal-aid", AgencyKind.LEGAL_AID_CENTRE)
        return cls(
            police=police,
            border=ref("border-guard", AgencyKind.BORDER_GUARD),
            swc=swc,
            hospital=hospital,
            legal=legal,
            officer=Actor(
                user_id=f"{province}-officer", agency_id=police.agency_id, role=Role.INTAKE_OFFICER
            ),
            manager=Actor(
                user_id=f"{province}-cm", agency_id=swc.agency_id, role=Role.CASE_MANAGER
            ),
            staff=Actor(
                user_id=f"{province}-nurse", agency_id=hospital.agency_id, role=Role.AGENCY_STAFF
            ),
            legal_staff=Actor(
                user_id=f"{province}-lawyer", agency_id=legal.agency_id, role=Role.AGENCY_STAFF
            ),
        )


AGENCIES = {province: Agencies.of(province) for province, _ in PROVINCES}


class Arrivals:
    """The reception instants of ``cases`` cases over ``years`` ending at ``end``, seasonal,
    in order: case ``n`` arrives where the seasonal density has passed (n + 0.5) / cases."""

    def __init__(self, cases: int, years: int, end: datetime) -> None:
        self.cases = cases
        self.start = end - timedelta(days=365 * years)
        days = 365 * years
        self.cumulative = list(
            itertools.accumulate(
                MONTH_WEIGHTS[(self.start + timedelta(days=d)).month - 1] for d in range(days)
            )
        )

    def at(self, n: int) -> datetime:
        target = (n + 0.5) / self.cases * self.cumulative[-1]
        day = bisect.bisect_left(self.cumulative, target)
        before = self.cumulative[day - 1] if day else 0.0
        within = (target - before) / (self.cumulative[day] - before)
        return self.start + timedelta(days=day + within)


@dataclass(order=True)
class Later:
    """Something that happens to a case after its first weeks, written when arrivals reach it."""

    due: datetime
    seq: int
    log: str = field(compare=False)
    aggregate: Any = field(compare=False)
    act: Callable[[], None] = field(compare=False)


@dataclass
class Chunk:
    logs: dict[str, dict[Any, Any]] = field(
        default_factory=lambda: {"intake": {}, "consent": {}, "referral": {}}
    )

    def add(self, log: str, *aggregates: Any) -> None:
        for aggregate in aggregates:
            self.logs[log][aggregate.id] = aggregate


class History:
    """Deterministic lives of cases: case ``n`` is the same for the same seed and size."""

    def __init__(self, cases: int, *, years: int = 5, seed: int = 15, end: datetime) -> None:
        self.arrivals = Arrivals(cases, years, end)
        self.end = end
        self.seed = seed
        self.later: list[Later] = []
        self._seq = itertools.count()

    def _defer(self, due: datetime, log: str, aggregate: Any, act: Callable[[], None]) -> None:
        if due < self.end:
            heapq.heappush(self.later, Later(due, next(self._seq), log, aggregate, act))

    def due(self, now: datetime, chunk: Chunk) -> None:
        """Run what is due by ``now`` into the chunk."""
        while self.later and self.later[0].due <= now:
            item = heapq.heappop(self.later)
            item.act()
            chunk.add(item.log, item.aggregate)

    def rest(self, chunk: Chunk) -> None:
        self.due(self.end, chunk)

    def case(self, n: int, chunk: Chunk) -> None:
        rng = random.Random(self.seed * 1_000_003 + n)
        t = self.arrivals.at(n)
        province = _choose(rng, PROVINCES)
        a = AGENCIES[province]
        clock = [t]

        def ctx(actor: Actor, minutes: float = 0.0, at: datetime | None = None) -> CommandContext:
            clock[0] = at if at is not None else clock[0] + timedelta(minutes=minutes)
            return CommandContext(actor=actor, at=clock[0])

        route = _choose(rng, ROUTES)
        case = Case.record_reception(
            ctx(a.officer),
            route=route,
            received_at=t,
            place=Place(province=province, district=f"District {rng.randint(1, 9)}"),
            receiving_agency=a.border if route is ArrivalRoute.BORDER_HANDOVER else a.police,
            handed_over_by=FOREIGN if route is ArrivalRoute.BORDER_HANDOVER else None,
            returned_from_country=(
                rng.choice(("CN", "KH", "LA", "MY"))
                if route is ArrivalRoute.RETURNED_FROM_ABROAD
                else None
            ),
            present=(PartyPresent(agency=a.border, capacity="border guard"),),
        )
        case.register_person(
            ctx(a.officer, 20),
            PersonDetails(
                full_name=f"Person {n}",
                sex=Sex.FEMALE if rng.random() < 0.8 else Sex.MALE,
                estimated_age=rng.randint(18, 45),
                nationality="VN",
                languages=("vi",),
            ),
        )
        needs = rng.sample(
            [
                UrgentNeed.SHELTER_TONIGHT,
                UrgentNeed.MEDICAL_CHECK,
                UrgentNeed.PSYCHOLOGICAL_FIRST_AID,
                UrgentNeed.FOOD,
                UrgentNeed.PHONE,
            ],
            rng.randint(1, 3),
        )
        case.assess_needs(ctx(a.officer, 15), tuple(needs), "as told at reception")
        level = rng.choice((RiskLevel.LOW, RiskLevel.MEDIUM, RiskLevel.MEDIUM, RiskLevel.HIGH))
        case.assess_risk(ctx(a.officer, 10), level, (RiskSubject.PERSON,), "safety plan agreed")
        if rng.random() < 0.7:
            case.record_contact_preference(
                ctx(a.officer, 5), (ContactMode.PHONE,), (ContactMode.HOME_VISIT,), None
            )
        case.assign_case_manager(ctx(a.manager, 60), a.manager.user_id, a.swc)
        case.change_stage(ctx(a.manager, 30), CaseStage.CRISIS, None)
        chunk.add("intake", case)

        receiving = case.reception.receiving_agency.agency_id
        record = ConsentRecord.open(
            ctx(a.officer),
            case_id=case.id,
            person_id=case.person_id,
            province=province,
            received_at=t,
            receiving_agency_id=receiving,
        )
        record.note_age(ctx(a.officer, 1), minor=False, adult_on=None, estimated=True)
        record.note_case_manager(ctx(a.manager, 1), a.swc.agency_id)
        categories = EVERYTHING if rng.random() < 0.85 else EVERYTHING[:2]
        grant = record.grant(
            ctx(a.manager, 30),
            categories=categories,
            recipients=(Recipient(group=RecipientGroup.ANY),),
            purposes=(Purpose.SERVICE_PROVISION, Purpose.STATISTICS),
            valid_from=clock[0],
            valid_until=clock[0] + timedelta(days=730),
            collection=WRITTEN,
            given_by=ConsentGiver(kind=GiverKind.PERSON),
            child_views=None,
        )
        chunk.add("consent", record)
        if rng.random() < 0.06:  # withdrawn some weeks later
            withdrawn_at = clock[0] + timedelta(days=rng.uniform(10, 120))
            self._defer(
                withdrawn_at,
                "consent",
                record,
                functools.partial(
                    record.withdraw,
                    CommandContext(actor=a.manager, at=withdrawn_at),
                    grant,
                    a.swc,
                    "changed mind",
                ),
            )

        # The referral service's copy of the case, in memory only.
        file = CaseFile.open(ctx(a.officer), case.id, case.person_id, province, receiving)
        file.note_facts(ctx(a.officer), DataCategory.IDENTITY, {"full_name": f"Person {n}"})
        for event in record.history:
            file.note_consent(ctx(a.manager), event)

        handover = Handover.start(
            ctx(a.officer, 10),
            file,
            kind=HandoverKind.RECEPTION,
            parties=(
                HandoverParty(agency=a.police, role=PartyRole.FROM, capacity="police"),
                HandoverParty(agency=a.swc, role=PartyRole.TO, capacity="social worker"),
                HandoverParty(agency=a.border, role=PartyRole.WITNESS, capacity="border guard"),
            ),
        )
        confirming = (a.police, a.swc, a.border)
        if rng.random() < 0.05:  # one party has not confirmed yet
            confirming = confirming[:2]
        for agency in confirming:
            handover.confirm_by(ctx(a.manager, rng.uniform(5, 240)), agency.agency_id)
        chunk.add("referral", file, handover)

        services = rng.sample(SERVICES, rng.choice((1, 2, 2, 3, 3, 4)))
        still_open = False
        for service in services:
            legal = service in (ServiceType.LEGAL_AID, ServiceType.IDENTITY_DOCUMENTS)
            to, staff = (a.legal, a.legal_staff) if legal else (a.hospital, a.staff)
            referral = Referral.create(
                ctx(a.manager, rng.uniform(30, 600)),
                file,
                from_agency=a.swc,
                to_agency=to,
                service_type=service,
                urgency=Urgency.URGENT if rng.random() < 0.4 else Urgency.ROUTINE,
                purpose=Purpose.SERVICE_PROVISION,
                categories=(DataCategory.IDENTITY,),
                note=None,
                deadlines=DEFAULT_DEADLINES.get(service, OTHERWISE),
            )
            chunk.add("referral", referral)
            fate = rng.random()
            if fate < 0.04:  # not answered yet
                still_open = True
                continue
            referral.answer(ctx(staff, rng.uniform(10, 300)), "acknowledge")
            if fate < 0.14:
                referral.answer(ctx(staff, rng.uniform(60, 900)), "reject", "no capacity")
                continue
            referral.answer(ctx(staff, rng.uniform(10, 300)), "accept")
            referral.answer(ctx(staff, rng.uniform(60, 2000)), "start")
            if fate < 0.22:  # in progress for a long while, completed later
                at = clock[0] + timedelta(days=rng.uniform(20, 200))
                self._defer(
                    at,
                    "referral",
                    referral,
                    functools.partial(
                        referral.answer, CommandContext(actor=staff, at=at), "complete", "done"
                    ),
                )
                still_open = True
                continue
            referral.answer(ctx(staff, rng.uniform(600, 20000)), "complete", "done")

        case.change_stage(ctx(a.manager, rng.uniform(1000, 20000)), CaseStage.TRANSITIONAL, None)
        if still_open or rng.random() < 0.15:
            return  # still open at the end of its first weeks
        closed_at = clock[0] + timedelta(days=rng.uniform(20, 240))
        reason = rng.choice(
            (
                ClosureReason.GOALS_MET,
                ClosureReason.GOALS_MET,
                ClosureReason.PERSON_DECLINED_FURTHER_SUPPORT,
                ClosureReason.LOST_CONTACT,
                ClosureReason.TRANSFERRED_ELSEWHERE,
            )
        )
        reopen = rng.random() < 0.08
        reopen_at = closed_at + timedelta(days=rng.uniform(30, 400))

        def close() -> None:
            case.close(ctx(a.manager, at=closed_at), reason, None, rng.randint(1, 5))
            if reopen:
                self._defer(reopen_at, "intake", case, reopening)

        def reopening() -> None:
            case.reopen(
                ctx(a.manager, at=reopen_at),
                rng.choice((ReopeningReason.NEW_CRISIS, ReopeningReason.RE_TRAFFICKED)),
                CaseStage.CRISIS,
                None,
            )

        self._defer(closed_at, "intake", case, close)


def write(platform: Platform, chunk: Chunk) -> int:
    """Store a chunk: per log, one transaction that takes the log's write lock, COPYs the
    events in as the application's mapper encodes them (the person's fields encrypted), and
    seals them with the log's own recorder (a leaf per event, the tree's head moved, a
    checkpoint signed when one is due), as a command's save would. Returns the events."""
    events = 0
    for log, aggregates in chunk.logs.items():
        if not aggregates:
            continue
        app = getattr(platform, log)
        stored = [
            app.mapper.to_stored_event(event)
            for aggregate in aggregates.values()
            for event in aggregate.collect_events()
        ]
        copy_sealed(app.recorder, stored)
        events += len(stored)
    return events


def copy_sealed(recorder: Any, stored: list[Any]) -> None:
    """COPY stored events into a sealed PostgreSQL recorder's table and seal them, in one
    transaction under the table's write lock."""
    table = f'"{recorder.datastore.schema}"."{recorder.events_table_name}"'
    with recorder.datastore.transaction(commit=True) as curs:
        # The seal hashes a whole chunk in Python between two statements: longer than the
        # recorder's idle-in-transaction timeout allows on a busy machine.
        curs.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
        recorder._lock_table(curs)
        with curs.copy(
            f"COPY {table} (originator_id, originator_version, topic, state) "
            "FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["uuid", "int8", "text", "bytea"])
            for event in stored:
                copy.write_row(
                    (event.originator_id, event.originator_version, event.topic, event.state)
                )
        # What seal_backlog does: the rows past the seal's last position, sealed.
        curs.execute(recorder._select_head)
        row = curs.fetchone()
        curs.execute(recorder._select_backlog, (row["last_position"],))
        backlog = curs.fetchall()
        events = [
            StoredEvent(r["originator_id"], r["originator_version"], r["topic"], r["state"])
            for r in backlog
        ]
        head = Head(row["size"], row["last_position"], bytes(row["frontier"]))
        recorder._write_seal(curs, head, events, [r["notification_id"] for r in backlog])
    # The head this process last committed is no longer the log's: read it again next time.
    recorder.head_cache.missed()


def mark_followed(platform: Platform) -> None:
    """The services that follow other logs (consent follows intake; referral follows intake
    and consent) reacted to this history already: the history holds what they wrote. Their
    tracking positions are set to the head of each log they follow, so they do not react
    again when they start."""
    for app in platform.apps.values():
        for upstream in getattr(app, "follows", {}):
            if upstream not in platform.apps:
                continue
            head = platform.apps[upstream].recorder.max_notification_id() or 0
            table = f'"{app.recorder.datastore.schema}"."{app.recorder.tracking_table_name}"'
            with app.recorder.datastore.transaction(commit=True) as curs:
                curs.execute(
                    f"INSERT INTO {table} (application_name, notification_id) VALUES (%s, %s) "
                    "ON CONFLICT (application_name) DO UPDATE "
                    "SET notification_id = GREATEST("
                    f"{table}.notification_id, excluded.notification_id)",
                    (upstream, head),
                )


def generate(
    platform: Platform,
    cases: int,
    *,
    start: int = 0,
    chunk_cases: int = 500,
    years: int = 5,
    seed: int = 15,
    end: datetime | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Write the lives of cases ``start`` to ``cases - 1``; returns the events written.

    A run resumed at ``start`` loses what the previous one had deferred past it (a later
    withdrawal, closure or reopening of a case received before ``start``)."""
    end = end or datetime(2026, 12, 1, tzinfo=UTC)
    history = History(cases, years=years, seed=seed, end=end)
    keys = platform.intake.person_keys
    written = 0
    for first in range(start, cases, chunk_cases):
        chunk = Chunk()
        last = min(first + chunk_cases, cases)
        for n in range(first, last):
            history.case(n, chunk)
        history.due(history.arrivals.at(last - 1), chunk)
        if last == cases:
            history.rest(chunk)
        if keys is not None:
            # The persons' keys in one transaction, not one by one as their events are stored.
            keys.create_many([case.person_id for case in chunk.logs["intake"].values()])
        written += write(platform, chunk)
        if progress is not None:
            progress(last, written)
    mark_followed(platform)
    return written


def register_directory(settings: Any) -> None:
    """Every agency the history names, and each province's coordination office (the
    coordinators' agency), in the directory."""
    from bench.agencies import register_agencies

    for province, _ in PROVINCES:
        a = AGENCIES[province]
        office = AgencyRef(agency_id=f"{province}-dolisa", kind=AgencyKind.LOCAL_AUTHORITY)
        register_agencies(
            settings, (a.police, a.border, a.swc, a.hospital, a.legal, office), province
        )


def main() -> None:
    import os

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from services.cli.wiring import migrate, start
    from services.runtime.logging import configure_logging
    from services.runtime.settings import Settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="write a history into KETNOI_DATABASE_URL")
    gen.add_argument("--cases", type=int, default=10_000)
    gen.add_argument("--start", type=int, default=0, help="resume at this case number")
    gen.add_argument("--chunk", type=int, default=500, help="cases per transaction")
    gen.add_argument("--years", type=int, default=5)
    gen.add_argument("--seed", type=int, default=15)
    sub.add_parser("agencies", help="register the history's agencies in the directory")
    args = parser.parse_args()
    configure_logging("console", "warning")
    if not os.environ.get("KETNOI_DATABASE_URL"):
        parser.error("set KETNOI_DATABASE_URL to the database to write into")
    # A chunk's keys are made before its events are stored: keep them in the cache as long
    # as a chunk may take (nothing is erased meanwhile).
    os.environ.setdefault("KETNOI_KEY_CACHE_SECONDS", "60")
    settings = Settings()
    migrate(settings)
    register_directory(settings)
    if args.command == "agencies":
        return
    platform = start(settings, ("intake", "consent", "referral"), run_followers=False)
    started = time.perf_counter()
    try:
        with Progress(
            TextColumn("Writing cases"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[events]:,} events"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        ) as bar:
            task = bar.add_task("cases", total=args.cases, completed=args.start, events=0)

            def shown(done: int, events: int) -> None:
                bar.update(task, completed=done, events=events)

            events = generate(
                platform,
                args.cases,
                start=args.start,
                chunk_cases=args.chunk,
                years=args.years,
                seed=args.seed,
                progress=shown,
            )
    finally:
        platform.close()
    seconds = time.perf_counter() - started
    print(
        f"history: {args.cases - args.start:,} cases, {events:,} events in {seconds:.0f} s: "
        f"{events / seconds:,.0f} events/s, {(args.cases - args.start) / seconds:,.0f} cases/s"
    )


if __name__ == "__main__":
    main()
