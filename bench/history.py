"""A realistic national history, written fast through the services' own aggregates.

``python -m bench.history generate --cases 10000`` writes the lives of that many cases into the
intake, consent and referral logs of the database named by ``KETNOI_DATABASE_URL`` (migrated
first). Every event is made by the domain aggregates (``Case``, ``ConsentRecord``,
``Referral``, ``Handover``; the steps both benches share are in ``bench/lives.py``), encoded
by the applications' own mappers (the person's fields encrypted under the person's key),
COPYed into the logs under each log's write lock and sealed in the same transaction (the
seal's own leaves, head and checkpoints). Only the commands' HTTP, access checks and
idempotency are skipped: many cases are saved in one transaction per log (a chunk).
``--jobs N`` makes and encodes the chunks in N processes; this one writes them in case order.

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
import atexit
import bisect
import contextlib
import functools
import gc
import heapq
import itertools
import multiprocessing
import random
import struct
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from bench import lives
from contracts.consent import (
    Collection,
    CollectionMethod,
)
from contracts.envelope import Actor, AgencyRef
from contracts.intake import PartyPresent, Place
from contracts.referral import Urgency
from contracts.vocabulary import (
    AgencyKind,
    ArrivalRoute,
    CaseStage,
    ClosureReason,
    ContactMode,
    DataCategory,
    ReopeningReason,
    RiskLevel,
    RiskSubject,
    Role,
    ServiceType,
    Sex,
    UrgentNeed,
)
from services.cli.wiring import Platform
from services.intake.domain import Case
from services.projections.runner import without_cycle_collection
from services.runtime.aggregate import CommandContext
from services.runtime.seal.leaves import leaf_hashes, sealed_at_now
from services.runtime.seal.recorders import Head, SealError

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
class Life:
    """One case's aggregates as its first weeks leave them (with the log each is stored in),
    and what happens to it later, in the order it happens."""

    end: datetime
    aggregates: list[tuple[str, Any]] = field(default_factory=list)
    later: list[Later] = field(default_factory=list)
    _seq: Iterator[int] = field(default_factory=itertools.count)

    def add(self, log: str, *aggregates: Any) -> None:
        self.aggregates.extend((log, aggregate) for aggregate in aggregates)

    def defer(self, due: datetime, log: str, aggregate: Any, act: Callable[[], None]) -> None:
        """Something that happens at ``due``, if before the history's end."""
        if due < self.end:
            heapq.heappush(self.later, Later(due, next(self._seq), log, aggregate, act))

    @property
    def person_id(self) -> Any:
        return self.aggregates[0][1].person_id


class History:
    """Deterministic lives of cases: case ``n`` is the same for the same seed and size."""

    def __init__(self, cases: int, *, years: int = 5, seed: int = 15, end: datetime) -> None:
        self.arrivals = Arrivals(cases, years, end)
        self.cases, self.years, self.end, self.seed = cases, years, end, seed

    def case(self, n: int) -> Life:
        """Case ``n``'s first weeks done; its later acts (``Life.later``) not yet run. They
        draw from the case's own random numbers after its first weeks, in the order they
        happen, so running them at once or when their day comes gives the same events."""
        life = Life(self.end)
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
        lives.register_person(
            case,
            ctx(a.officer, 20),
            n,
            Sex.FEMALE if rng.random() < 0.8 else Sex.MALE,
            rng.randint(18, 45),
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
        life.add("intake", case)

        receiving = case.reception.receiving_agency.agency_id
        record = lives.open_consent(
            ctx(a.officer),
            ctx(a.officer, 1),
            case,
            province=province,
            received_at=t,
            receiving_agency_id=receiving,
        )
        record.note_case_manager(ctx(a.manager, 1), a.swc.agency_id)
        categories = EVERYTHING if rng.random() < 0.85 else EVERYTHING[:2]
        grant = lives.grant(
            record,
            ctx(a.manager, 30),
            categories=categories,
            valid_from=clock[0],
            valid_until=clock[0] + timedelta(days=730),
            collection=WRITTEN,
        )
        life.add("consent", record)
        if rng.random() < 0.06:  # withdrawn some weeks later
            withdrawn_at = clock[0] + timedelta(days=rng.uniform(10, 120))
            life.defer(
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
        file = lives.case_file(
            ctx(a.officer),
            ctx(a.officer),
            ctx(a.manager),
            case,
            record,
            n=n,
            province=province,
            receiving_agency_id=receiving,
        )
        handover = lives.reception_handover(
            ctx(a.officer, 10), file, police=a.police, swc=a.swc, border=a.border
        )
        confirming = (a.police, a.swc, a.border)
        if rng.random() < 0.05:  # one party has not confirmed yet
            confirming = confirming[:2]
        for agency in confirming:
            handover.confirm_by(ctx(a.manager, rng.uniform(5, 240)), agency.agency_id)
        life.add("referral", file, handover)

        services = rng.sample(SERVICES, rng.choice((1, 2, 2, 3, 3, 4)))
        still_open = False
        for service in services:
            legal = service in (ServiceType.LEGAL_AID, ServiceType.IDENTITY_DOCUMENTS)
            to, staff = (a.legal, a.legal_staff) if legal else (a.hospital, a.staff)
            referral = lives.refer(
                ctx(a.manager, rng.uniform(30, 600)),
                file,
                from_agency=a.swc,
                to_agency=to,
                service=service,
                urgency=Urgency.URGENT if rng.random() < 0.4 else Urgency.ROUTINE,
            )
            life.add("referral", referral)
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
                life.defer(
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
            return life  # still open at the end of its first weeks
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
                life.defer(reopen_at, "intake", case, reopening)

        def reopening() -> None:
            case.reopen(
                ctx(a.manager, at=reopen_at),
                rng.choice((ReopeningReason.NEW_CRISIS, ReopeningReason.RE_TRAFFICKED)),
                CaseStage.CRISIS,
                None,
            )

        life.defer(closed_at, "intake", case, close)
        return life


# A stored event as the generator carries it between processes and into COPY: the aggregate's
# id (16 bytes), its version, the topic and the stored state (the person's fields encrypted).
Row = tuple[bytes, int, str, bytes]
LOGS = ("intake", "consent", "referral")


@dataclass
class Encoded:
    """Cases ``first`` to ``last - 1`` encoded: the rows of their first weeks per log, and
    their later acts as (due, case, order, log, rows), to be written when arrivals reach
    ``due``."""

    first: int
    last: int
    logs: dict[str, list[Row]]
    later: list[tuple[datetime, int, int, str, list[Row]]]


def encode_cases(apps: Mapping[str, Any], history: History, first: int, last: int) -> Encoded:
    """Make the lives of cases ``first`` to ``last - 1`` and encode every event with the
    mapper of the application of its log (``apps``, by log). The persons' keys are made
    first, in one transaction (not one by one as their events are encoded).

    Python's cycle collector is paused meanwhile: the chunk's aggregates and events pile up
    until they are encoded, and the collector traversing them again and again measured as
    more than half the time of making them. They hold no reference cycles once their later
    acts have run, so reference counting frees them when the chunk is done."""
    with without_cycle_collection():
        return _encode_cases(apps, history, first, last)


def _encode_cases(apps: Mapping[str, Any], history: History, first: int, last: int) -> Encoded:
    lives_ = [history.case(n) for n in range(first, last)]
    keys = apps["intake"].person_keys
    if keys is not None:
        keys.create_many([life.person_id for life in lives_])
    mappers = {log: apps[log].mapper for log in LOGS}

    def rows(log: str, aggregate: Any) -> list[Row]:
        encode = mappers[log].to_stored_event
        out = []
        for event in aggregate.collect_events():
            stored = encode(event)
            out.append(
                (stored.originator_id.bytes, stored.originator_version, stored.topic, stored.state)
            )
        return out

    logs: dict[str, list[Row]] = {log: [] for log in LOGS}
    later: list[tuple[datetime, int, int, str, list[Row]]] = []
    for n, life in zip(range(first, last), lives_, strict=True):
        for log, aggregate in life.aggregates:
            logs[log].extend(rows(log, aggregate))
        order = itertools.count()
        while life.later:
            item = heapq.heappop(life.later)
            item.act()  # may defer another (a reopening after a closure)
            later.append((item.due, n, next(order), item.log, rows(item.log, item.aggregate)))
    return Encoded(first, last, logs, later)


class Writer:
    """Writes encoded chunks in case order, each with the later acts now due, per log in one
    sealed transaction; the later acts not yet due wait in a heap."""

    def __init__(self, platform: Platform, history: History) -> None:
        self.platform = platform
        self.history = history
        self.waiting: list[tuple[datetime, int, int, str, list[Row]]] = []

    def write(self, encoded: Encoded, *, final: bool) -> int:
        """Store a chunk and what is due by its last arrival (everything left when
        ``final``); returns the events written."""
        logs = {log: list(rows) for log, rows in encoded.logs.items()}
        for item in encoded.later:
            heapq.heappush(self.waiting, item)
        now = self.history.end if final else self.history.arrivals.at(encoded.last - 1)
        while self.waiting and self.waiting[0][0] <= now:
            _due, _n, _order, log, rows = heapq.heappop(self.waiting)
            logs[log].extend(rows)
        written = 0
        for log, rows in logs.items():
            if rows:
                copy_sealed(getattr(self.platform, log).recorder, rows)
                written += len(rows)
        return written


_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, no header extension
# 8 fields; uuid; int8 version; the topic's length (then the topic, the state's length and
# the state), and after them the position, the leaf's index and sealing time, and its hash.
_COPY_ROW = struct.Struct(">hi16siqi")
_COPY_LEAF = struct.Struct(">iqiqiqi32s")
_COPY_LENGTH = struct.Struct(">i")


class _TopicBytes(dict[str, bytes]):
    def __missing__(self, topic: str) -> bytes:
        encoded = self[topic] = topic.encode()
        return encoded


_topic_bytes = _TopicBytes()


def binary_copy(rows: list[Row], ids: list[int], first_idx: int, at: int) -> bytes:
    """Rows in PostgreSQL's binary COPY format (originator_id uuid, originator_version int8,
    topic text, state bytea, notification_id int8, and the seal's leaf_idx int8, sealed_at
    int8, leaf_hash bytea), built in one pass rather than one ``write_row`` each: the rows at
    the positions ``ids``, their leaves numbered from ``first_idx``."""
    pack, leaf, length, topics = _COPY_ROW.pack, _COPY_LEAF.pack, _COPY_LENGTH.pack, _topic_bytes
    hashes = leaf_hashes(
        (p, at, oid, version, topic, state)
        for p, (oid, version, topic, state) in zip(ids, rows, strict=True)
    )
    parts = [_COPY_HEADER]
    for n, ((oid, version, topic, state), position, hashed) in enumerate(
        zip(rows, ids, hashes, strict=True)
    ):
        raw = topics[topic]
        parts.append(
            pack(8, 16, oid, 8, version, len(raw))
            + raw
            + length(len(state))
            + state
            + leaf(8, position, 8, first_idx + n, 8, at, 32, hashed)
        )
    parts.append(b"\xff\xff")
    return b"".join(parts)


def copy_sealed(recorder: Any, rows: list[Row]) -> None:
    """COPY rows into a sealed PostgreSQL recorder's table, sealed, in one transaction under
    the table's write lock, as a command's save seals what it stores: positions drawn from the
    log's sequence, the same leaf hashes in the rows' seal columns (computed here, where the
    insert has the server compute them), numbered after the last sealed row, and the seal's
    mark moved and a checkpoint signed when one is due (the recorder's own ``_write_seal``)."""
    table = f'"{recorder.datastore.schema}"."{recorder.events_table_name}"'
    with recorder.datastore.transaction(commit=True) as curs:
        # The seal hashes a whole chunk in Python between two statements: longer than the
        # recorder's idle-in-transaction timeout allows on a busy machine.
        curs.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
        recorder._lock_table(curs)
        curs.execute(recorder._select_head)
        row = curs.fetchone()
        head = Head(row["size"], row["last_position"])
        ids = recorder.draw_positions(curs, len(rows))
        if ids[0] <= head.last_position:
            msg = f"position {ids[0]} does not follow the last sealed one {head.last_position}"
            raise SealError(msg)
        payload = binary_copy(rows, ids, head.size, sealed_at_now())
        with curs.copy(
            f"COPY {table} (originator_id, originator_version, topic, state, notification_id, "
            "leaf_idx, sealed_at, leaf_hash) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.write(payload)
        recorder._write_seal(curs, Head(head.size + len(ids), ids[-1]), len(ids))


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
    jobs: int = 1,
) -> int:
    """Write the lives of cases ``start`` to ``cases - 1``; returns the events written.

    With ``jobs`` above 1, that many processes make and encode the chunks (each constructs
    the three applications on ``platform.settings`` for their mappers and the key store) and
    this one writes and seals them, in case order: the logs hold the same history as with
    one.

    A run resumed at ``start`` loses what the previous one had deferred past it (a later
    withdrawal, closure or reopening of a case received before ``start``)."""
    end = end or datetime(2026, 12, 1, tzinfo=UTC)
    history = History(cases, years=years, seed=seed, end=end)
    writer = Writer(platform, history)
    bounds = [
        (first, min(first + chunk_cases, cases)) for first in range(start, cases, chunk_cases)
    ]
    written = 0
    # One thread writes (mostly waiting on PostgreSQL, the GIL released) while the next chunk
    # is made: the database's work overlaps the Python work instead of following it.
    with ThreadPoolExecutor(1) as writing, _encoders(platform, history, jobs) as encoded_chunks:
        previous: tuple[Future[int], int] | None = None
        for encoded in encoded_chunks(bounds):
            if previous is not None:
                written += previous[0].result()
                if progress is not None:
                    progress(previous[1], written)
            previous = (
                writing.submit(writer.write, encoded, final=encoded.last == cases),
                encoded.last,
            )
        if previous is not None:
            written += previous[0].result()
            if progress is not None:
                progress(previous[1], written)
    mark_followed(platform)
    analyze(platform)
    return written


def analyze(platform: Platform) -> None:
    """Give the planner statistics of what was just loaded. A bulk load leaves a table
    without them until autovacuum analyses it (after a while; never where it is off), and
    without them PostgreSQL guessed some 86,000 rows for one consent record's events and
    read them by a parallel scan: 68 ms a record instead of 0.1 ms, which made the relay
    over a 1,000,000-case history wait on the database four fifths of its time."""
    target = platform.settings.postgres
    if target is None:
        return
    with psycopg.connect(target.conninfo(), autocommit=True) as conn:
        conn.execute("ANALYZE")


Encoders = Callable[[list[tuple[int, int]]], Iterator[Encoded]]


@contextlib.contextmanager
def _encoders(platform: Platform, history: History, jobs: int) -> Iterator[Encoders]:
    """What makes and encodes the chunks, in order: this process, or ``jobs`` others with a
    few chunks ahead of the writer at most (memory stays bounded)."""
    if jobs <= 1:
        yield lambda bounds: (encode_cases(platform.apps, history, *b) for b in bounds)
        return
    context = multiprocessing.get_context("spawn")  # no copy of this process's connections
    with ProcessPoolExecutor(
        jobs,
        mp_context=context,
        initializer=_start_encoder,
        initargs=(
            platform.settings,
            history.cases,
            history.years,
            history.seed,
            history.end,
        ),
    ) as pool:

        def in_order(bounds: list[tuple[int, int]]) -> Iterator[Encoded]:
            pending: deque[Future[Encoded]] = deque()
            queued = iter(bounds)
            for b in itertools.islice(queued, 2 * jobs):
                pending.append(pool.submit(_encode, *b))
            while pending:
                encoded = pending.popleft().result()
                for b in itertools.islice(queued, 1):
                    pending.append(pool.submit(_encode, *b))
                yield encoded

        yield in_order


_encoder: tuple[dict[str, Any], History] | None = None


def _start_encoder(settings: Any, cases: int, years: int, seed: int, end: datetime) -> None:
    """A process that makes and encodes chunks: the three applications constructed as
    ``ketnoi`` starts them, for their mappers and the key store, and nothing else of the
    platform (no directory, followers or audit), so it holds few of the database's
    connections."""
    from services.cli.wiring import APPLICATIONS
    from services.runtime.logging import configure_logging
    from services.runtime.persistence import application_env

    global _encoder  # one per encoding process
    configure_logging("console", "warning")
    few = settings.model_copy(update={"pg_pool_size": 1, "pg_max_overflow": 1})
    apps = {log: APPLICATIONS[log](env=application_env(few, log)) for log in LOGS}
    for app in apps.values():
        atexit.register(app.close)
    gc.freeze()  # what starting left alive is not traversed again at every collection
    _encoder = (apps, History(cases, years=years, seed=seed, end=end))


def _encode(first: int, last: int) -> Encoded:
    assert _encoder is not None
    return encode_cases(*_encoder, first, last)


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
    gen.add_argument(
        "--jobs", type=int, default=1, help="processes that make and encode the chunks"
    )
    sub.add_parser("agencies", help="register the history's agencies in the directory")
    args = parser.parse_args()
    configure_logging("console", "warning")
    if not os.environ.get("KETNOI_DATABASE_URL"):
        parser.error("set KETNOI_DATABASE_URL to the database to write into")
    # A chunk's keys are made before its events are stored: keep them in the cache as long
    # as a chunk may take (nothing is erased meanwhile).
    os.environ.setdefault("KETNOI_KEY_CACHE_SECONDS", "60")
    # One transaction at a time per log: a few connections, not a server's pools (the
    # database is shared, and each encoding process starts the services too).
    os.environ.setdefault("KETNOI_PG_POOL_SIZE", "2")
    os.environ.setdefault("KETNOI_PG_MAX_OVERFLOW", "2")
    settings = Settings()
    migrate(settings)
    register_directory(settings)
    if args.command == "agencies":
        return
    platform = start(settings, LOGS, run_followers=False)
    gc.freeze()  # what starting left alive is not traversed again at every collection
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
                jobs=args.jobs,
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
