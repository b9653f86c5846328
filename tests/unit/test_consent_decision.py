"""The consent decision, held to its rules by random consent histories and an oracle.

The oracle below is written apart from ``contracts.consent_decision``: it folds the history
into plain sets of (category, purpose) pairs that grants open and refusals close, and the
tests check that ``decide`` permits exactly what the oracle does, names the right grant or
refusal, and says the right reason when nothing permits a category.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from itertools import product
from typing import Any
from uuid import UUID

import pytest
from hypothesis import HealthCheck, Phase, event, find, given, note, settings
from hypothesis import strategies as st

from contracts.consent import (
    Collection,
    CollectionMethod,
    ConsentGiver,
    ConsentGranted,
    ConsentRefused,
    ConsentRenewed,
    ConsentWithdrawn,
    GiverKind,
    Recipient,
    RecipientGroup,
    RefusalLifted,
    SubjectAgeNoted,
)
from contracts.consent_decision import ConsentDecision, Verdict, decide
from contracts.envelope import Actor, AgencyRef, Event
from contracts.vocabulary import AgencyKind, DataCategory, Purpose, Role

# -- a fixed world: one consent record, a handful of agencies ---------------------------------

BASE = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
VIETNAM = timezone(timedelta(hours=7))
RECORD = UUID("00000000-0000-4000-8000-0000000000a1")
PERSON = UUID("00000000-0000-4000-8000-0000000000b2")
ACTOR = Actor(user_id="case-manager-1", agency_id="dt-swc", role=Role.CASE_MANAGER)
WRITTEN = Collection(
    method=CollectionMethod.WRITTEN_FORM,
    form_reference="form-07",
    language="vi",
    withdrawal_explained=True,
)
VERBAL = Collection(
    method=CollectionMethod.VERBAL_WITH_WITNESS,
    witness_user_id="witness-1",
    language="km",
    interpreter_language="vi",
    withdrawal_explained=True,
)
SELF = ConsentGiver(kind=GiverKind.PERSON)
MOTHER = ConsentGiver(kind=GiverKind.GUARDIAN, relationship="mother")
AUTHORITY = ConsentGiver(
    kind=GiverKind.CHILD_PROTECTION_AUTHORITY,
    agency=AgencyRef(agency_id="dt-cpa", kind=AgencyKind.CHILD_PROTECTION_AUTHORITY),
)

DT_POLICE = AgencyRef(agency_id="dt-police", kind=AgencyKind.POLICE)
HCM_POLICE = AgencyRef(agency_id="hcm-police", kind=AgencyKind.POLICE)
BORDER = AgencyRef(agency_id="dt-border", kind=AgencyKind.BORDER_GUARD)
LOCAL = AgencyRef(agency_id="dt-commune", kind=AgencyKind.LOCAL_AUTHORITY)
SWC = AgencyRef(agency_id="dt-swc", kind=AgencyKind.SOCIAL_WORK_CENTRE)
HOSPITAL = AgencyRef(agency_id="dt-hospital", kind=AgencyKind.HOSPITAL)
CHILD_PROTECTION = AgencyRef(agency_id="dt-cpa", kind=AgencyKind.CHILD_PROTECTION_AUTHORITY)
FOREIGN = AgencyRef(agency_id="kh-police", kind=AgencyKind.FOREIGN_AUTHORITY)
NGO = AgencyRef(agency_id="ngo-1", kind=AgencyKind.NGO)
AGENCIES = (DT_POLICE, HCM_POLICE, BORDER, LOCAL, SWC, HOSPITAL, CHILD_PROTECTION, FOREIGN, NGO)

# Small pools, so that grants, refusals and requests overlap often.
CATEGORIES = (
    DataCategory.IDENTITY,
    DataCategory.CONTACT,
    DataCategory.HEALTH,
    DataCategory.LEGAL_CASE,
    DataCategory.LOCATION,
)
PURPOSES = (Purpose.SERVICE_PROVISION, Purpose.CASE_COORDINATION, Purpose.CRIMINAL_PROCEEDINGS)
ALL_CATEGORIES = frozenset(DataCategory)
ALL_PURPOSES = frozenset(Purpose)

# The whole history spans a few days, in minutes, so requests land before, inside and after
# validity windows.
SPAN_MINUTES = 4 * 24 * 60


def at_minute(minutes: int, seconds: int = 0) -> datetime:
    return BASE + timedelta(minutes=minutes, seconds=seconds)


def common(version: int, timestamp: datetime) -> dict[str, Any]:
    return {
        "originator_id": RECORD,
        "originator_version": version,
        "timestamp": timestamp,
        "actor": ACTOR,
    }


# -- strategies -------------------------------------------------------------------------------

# One draw per choice wherever possible: drawing dominates the runtime of these tests.
RECIPIENTS = (
    *(Recipient(agency_id=a.agency_id) for a in AGENCIES),
    *(Recipient(kind=k) for k in sorted({a.kind for a in AGENCIES})),
    *(Recipient(group=g) for g in RecipientGroup for _ in range(2)),  # groups cover more
)
recipients = st.sampled_from(RECIPIENTS)


def subsets(pool: Sequence[Any], *, empty: int = 0) -> st.SearchStrategy[tuple[Any, ...]]:
    """Any non-empty subset of ``pool``, all equally likely; ``empty`` extra chances of ()."""
    every = [
        tuple(x for i, x in enumerate(pool) if bits >> i & 1) for bits in range(1, 2 ** len(pool))
    ]
    return st.sampled_from([()] * empty + every)


class World:
    """The pools a history and its request draw from (strategies built once: building them
    inside the composites below would dominate the runtime)."""

    def __init__(
        self,
        *,
        agencies: tuple[AgencyRef, ...],
        categories: tuple[DataCategory, ...],
        purposes: tuple[Purpose, ...],
        recipients: st.SearchStrategy[Recipient],
        kinds: tuple[str, ...],
        steps: tuple[int, ...],
        starts: tuple[int, ...],
        lengths: tuple[int, ...],
    ) -> None:
        self.agencies = agencies
        self.kinds = kinds  # of event, weighted by repetition
        self.step = st.sampled_from(steps)  # minutes between events (0: simultaneous)
        self.start = st.sampled_from(starts)  # of a grant's period, minutes from its recording
        self.length = st.sampled_from(lengths)  # of a grant's period, in minutes
        self.recipients = recipients
        self.some_categories = subsets(categories)
        # For refusals, empty means all: about one in four.
        self.any_categories = subsets(categories, empty=2 ** len(categories) // 3)
        self.some_purposes = subsets(purposes)
        self.any_purposes = subsets(purposes, empty=2 ** len(purposes) // 3)
        # Mostly the pooled categories; sometimes one no grant ever names.
        self.requested = subsets([*categories, DataCategory.FAMILY])
        self.grant_recipients = st.lists(recipients, min_size=1, max_size=3).map(tuple)
        self.refusal_recipients = st.lists(recipients, min_size=1, max_size=2).map(tuple)
        self.agency = st.sampled_from(agencies)
        self.purpose = st.sampled_from(purposes)


WIDE = World(
    agencies=AGENCIES,
    categories=CATEGORIES,
    purposes=PURPOSES,
    recipients=recipients,
    kinds=("grant", "grant", "grant", "refusal", "refusal", "age"),
    steps=(0, 1, 17, 45, 90, 240, 333, 720),
    # Mostly from about now; sometimes backdated or starting later.
    starts=(0, 0, 0, 0, 13, -60, -24 * 60, 12 * 60),
    lengths=(1, 12 * 60, 3 * 24 * 60 + 25, 6 * 24 * 60, 6 * 24 * 60 + 50),
)
# Everything piles up on the Dong Thap police: several grants and refusals cover the same
# request, so specificity, ties and the edges of time are exercised often.
CROWDED = World(
    agencies=(DT_POLICE, DT_POLICE, HCM_POLICE, BORDER),
    categories=(DataCategory.IDENTITY, DataCategory.LEGAL_CASE),
    purposes=(Purpose.SERVICE_PROVISION, Purpose.CRIMINAL_PROCEEDINGS),
    recipients=st.sampled_from(
        [
            Recipient(agency_id="dt-police"),
            Recipient(agency_id="hcm-police"),
            Recipient(kind=AgencyKind.POLICE),
            Recipient(kind=AgencyKind.BORDER_GUARD),
            Recipient(group=RecipientGroup.ANY),
            Recipient(group=RecipientGroup.GOVERNMENT),
            Recipient(group=RecipientGroup.LAW_ENFORCEMENT),
        ]
    ),
    kinds=("grant", "grant", "grant", "refusal", "refusal", "refusal", "age"),
    steps=(0, 1, 10, 37, 60, 240),
    starts=(0, 0, -60, 60, 7),
    lengths=(12 * 60, 12 * 60 + 41, 3 * 24 * 60, 6 * 24 * 60),
)
COLLECTIONS = st.sampled_from([WRITTEN, VERBAL])
GIVERS = st.sampled_from([SELF, SELF, MOTHER, AUTHORITY])
AN_AGENCY = st.sampled_from(AGENCIES)


def pick(draw: st.DrawFn, items: Sequence[Any]) -> Any:
    return items[draw(st.integers(0, len(items) - 1))]


@dataclass
class History:
    events: list[Event]
    interesting: list[datetime]  # timestamps and window edges, where off-by-one bugs live

    @property
    def last(self) -> datetime:
        return self.events[-1].timestamp if self.events else BASE


@st.composite
def histories(
    draw: st.DrawFn, world: World = WIDE, *, min_size: int = 0, max_size: int = 14
) -> History:
    """A consent record's history: non-decreasing timestamps, consecutive versions."""
    size = draw(st.integers(min_size, max_size))
    events: list[Event] = []
    interesting: list[datetime] = []
    grant_ids: list[UUID] = []
    granted: list[ConsentGranted] = []
    refusal_ids: list[UUID] = []
    now = BASE + timedelta(minutes=draw(st.integers(0, 120)))
    for index in range(size):
        version = index + 1
        now += timedelta(minutes=draw(world.step))
        kinds = list(world.kinds)
        if grant_ids:
            kinds += ["withdraw", "renew"]
        if refusal_ids:
            kinds += ["lift"]
        kind = pick(draw, kinds)
        base = common(version, now)
        interesting.append(now)
        if kind == "grant":
            start = now + timedelta(minutes=draw(world.start))
            end = start + timedelta(minutes=draw(world.length))
            grant_id = UUID(int=0x1000 + version)
            grant_ids.append(grant_id)
            interesting += [start, end]
            giver = draw(GIVERS)
            ev: Event = ConsentGranted(
                **base,
                grant_id=grant_id,
                person_id=PERSON,
                categories=draw(world.some_categories),
                recipients=draw(world.grant_recipients),
                purposes=draw(world.some_purposes),
                valid_from=start,
                valid_until=end,
                collection=draw(COLLECTIONS),
                given_by=giver,
                child_views=None if giver is SELF else "wants to stay with her aunt",
            )
            granted.append(ev)
        elif kind == "refusal":
            refusal_id = UUID(int=0x2000 + version)
            refusal_ids.append(refusal_id)
            purposes = draw(world.any_purposes)
            # As the consent service insists: a purpose is either refused or excepted.
            excepted = tuple(p for p in draw(world.any_purposes) if p not in purposes)
            recipients_ = draw(world.refusal_recipients)
            categories = draw(world.any_categories)
            if granted and draw(st.booleans()):
                # Refuse part of what an earlier grant allows: the override cases.
                overridden = pick(draw, granted)
                recipients_ = (pick(draw, overridden.recipients), *recipients_[1:])
                categories = tuple(c for c in categories if c in overridden.categories)
            ev = ConsentRefused(
                **base,
                refusal_id=refusal_id,
                person_id=PERSON,
                recipients=recipients_,
                categories=categories,
                purposes=purposes,
                except_purposes=excepted,
            )
        elif kind == "withdraw":
            ev = ConsentWithdrawn(
                **base,
                grant_id=pick(draw, grant_ids),
                person_id=PERSON,
                heard_by=draw(AN_AGENCY),
            )
        elif kind == "renew":
            until = now + timedelta(minutes=draw(st.integers(-12 * 60, 3 * 24 * 60)))
            interesting.append(until)
            ev = ConsentRenewed(
                **base,
                grant_id=pick(draw, grant_ids),
                person_id=PERSON,
                valid_until=until,
                collection=WRITTEN,
            )
        elif kind == "lift":
            ev = RefusalLifted(
                **base,
                refusal_id=pick(draw, refusal_ids),
                person_id=PERSON,
                collection=WRITTEN,
            )
        else:
            # A minor turning 18 somewhere around the history; or a correction: found to be
            # an adult after all (later notes may correct again).
            minor = draw(st.integers(0, 3)) > 0
            adult_on = BASE.date() + timedelta(days=draw(st.integers(-1, 4))) if minor else None
            if adult_on is not None:
                # Midnight in Vietnam, where birthdays are counted, and midnight in UTC.
                midnight = datetime.combine(adult_on, datetime.min.time(), tzinfo=VIETNAM)
                interesting += [midnight, midnight + timedelta(hours=7)]
            ev = SubjectAgeNoted(
                **base,
                person_id=PERSON,
                minor=minor,
                adult_on=adult_on,
                age_is_estimated=draw(st.booleans()),
            )
        events.append(ev)
    return History(events, interesting)


def instant(draw: st.DrawFn, history: History) -> datetime:
    """Any instant over the span, one after the whole history, or one just at / around an
    interesting instant."""
    how = draw(st.integers(0, 3)) if history.interesting else 0
    if how == 0:
        return at_minute(draw(st.integers(-60, SPAN_MINUTES)), draw(st.integers(0, 59)))
    if how == 1:
        first = history.events[0].timestamp
        span = int((history.last - first).total_seconds()) // 60 + 12 * 60
        return first + timedelta(minutes=draw(st.integers(0, span)))
    return pick(draw, history.interesting) + timedelta(seconds=draw(NUDGES))


NUDGES = st.sampled_from([-1, 0, 0, 1])


@dataclass
class Request:
    agency: AgencyRef
    purpose: Purpose
    categories: tuple[DataCategory, ...]
    at: datetime


@dataclass
class Scenario:
    history: History
    request: Request

    @property
    def events(self) -> list[Event]:
        return self.history.events


def edges_of(grant: ConsentGranted, history: History) -> list[datetime]:
    """When the grant starts and ends, is renewed or withdrawn, and (given by a guardian or
    authority) when the person's age is noted or they turn 18, at midnight in Vietnam."""
    edges = [grant.valid_from, grant.valid_until]
    for ev in history.events:
        if isinstance(ev, ConsentRenewed) and ev.grant_id == grant.grant_id:
            edges += [ev.timestamp, ev.valid_until]
        elif isinstance(ev, ConsentWithdrawn) and ev.grant_id == grant.grant_id:
            edges.append(ev.timestamp)
        elif isinstance(ev, SubjectAgeNoted) and grant.given_by.kind != GiverKind.PERSON:
            edges.append(ev.timestamp)
            if ev.adult_on is not None:
                edges.append(datetime.combine(ev.adult_on, datetime.min.time(), tzinfo=VIETNAM))
    return edges


@st.composite
def scenarios(draw: st.DrawFn, world: World = WIDE) -> Scenario:
    history = draw(histories(world))
    at = instant(draw, history)
    grants = [e for e in history.events if isinstance(e, ConsentGranted) and e.timestamp <= at]
    if grants and draw(st.integers(0, 3)) > 0:
        # Aim at a recorded grant, so that grants and refusals often meet the request.
        aim = pick(draw, grants)
        covered = [a for a in world.agencies if any(r.covers(a) for r in aim.recipients)]
        agency = pick(draw, covered)
        purpose = pick(draw, aim.purposes)
        categories = tuple(dict.fromkeys([*draw(world.some_categories), *aim.categories]))
        start, end = max(aim.timestamp, aim.valid_from), aim.valid_until
        how = draw(st.integers(0, 2))
        if how == 0 and start < end:  # inside its first period
            seconds = int((end - start).total_seconds())
            at = start + timedelta(seconds=draw(st.integers(0, seconds - 1)))
        elif how == 1:  # on an edge of its life, where off-by-one mistakes show
            at = pick(draw, edges_of(aim, history)) + timedelta(seconds=draw(NUDGES))
    else:
        agency = draw(world.agency)
        purpose = draw(world.purpose)
        categories = draw(world.requested)
    request = Request(
        agency=agency,
        purpose=purpose,
        categories=categories,
        at=at,
    )
    return Scenario(history, request)


SCENARIOS = st.one_of(scenarios(WIDE), scenarios(CROWDED))


def run(scenario: Scenario, events: Iterable[Event] | None = None) -> ConsentDecision:
    req = scenario.request
    return decide(
        scenario.events if events is None else events,
        recipient=req.agency,
        purpose=req.purpose,
        categories=req.categories,
        at=req.at,
    )


def verdicts(decision: ConsentDecision) -> dict[DataCategory, tuple[Verdict, Any, Any]]:
    return {c.category: (c.verdict, c.grant_id, c.refusal_id) for c in decision.categories}


# -- the oracle -------------------------------------------------------------------------------


def rank(recipient: Recipient) -> int:
    """How precisely a recipient names the agency: named 3, kind 2, group 1, anyone 0."""
    if recipient.agency_id:
        return 3
    if recipient.kind:
        return 2
    return 1 if recipient.group != RecipientGroup.ANY else 0


@dataclass
class Oracle:
    """The record as seen at ``at`` by a reader who only knows sets."""

    at: datetime
    agency: AgencyRef
    grants: dict[UUID, ConsentGranted]
    until: dict[UUID, datetime]
    withdrawn: set[UUID]
    refusals: dict[UUID, ConsentRefused]  # in force
    adult: bool

    @classmethod
    def of(cls, events: Sequence[Event], agency: AgencyRef, at: datetime) -> Oracle:
        seen = [e for e in events if e.timestamp <= at]
        grants = {e.grant_id: e for e in seen if isinstance(e, ConsentGranted)}
        until = {gid: g.valid_until for gid, g in grants.items()}
        until |= {e.grant_id: e.valid_until for e in seen if isinstance(e, ConsentRenewed)}
        lifted = {e.refusal_id for e in seen if isinstance(e, RefusalLifted)}
        ages = [e for e in seen if isinstance(e, SubjectAgeNoted)]
        # Found to be an adult, or 18 by now on Vietnam's calendar (UTC+7).
        vietnam_day = (at + timedelta(hours=7)).astimezone(UTC).date()
        latest = ages[-1] if ages else None
        adult = latest is not None and (
            not latest.minor or (latest.adult_on is not None and latest.adult_on <= vietnam_day)
        )
        return cls(
            at=at,
            agency=agency,
            grants=grants,
            until=until,
            withdrawn={e.grant_id for e in seen if isinstance(e, ConsentWithdrawn)},
            refusals={
                e.refusal_id: e
                for e in seen
                if isinstance(e, ConsentRefused) and e.refusal_id not in lifted
            },
            adult=adult,
        )

    def reaches(self, recipients: Iterable[Recipient]) -> bool:
        return any(r.covers(self.agency) for r in recipients)

    def why_not(self, grant: ConsentGranted) -> Verdict | None:
        if grant.grant_id in self.withdrawn:
            return Verdict.WITHDRAWN
        if not grant.valid_from <= self.at < self.until[grant.grant_id]:
            return Verdict.EXPIRED
        if grant.given_by.kind != GiverKind.PERSON and self.adult:
            return Verdict.OWN_CONSENT_NEEDED
        return None

    def opened(self, grant: ConsentGranted) -> set[tuple[DataCategory, Purpose]]:
        if not self.reaches(grant.recipients):
            return set()
        return set(product(grant.categories, grant.purposes))

    def closed(self, refusal: ConsentRefused) -> set[tuple[DataCategory, Purpose]]:
        if not self.reaches(refusal.recipients):
            return set()
        purposes = set(refusal.purposes or ALL_PURPOSES) - set(refusal.except_purposes)
        return set(product(refusal.categories or ALL_CATEGORIES, purposes))

    @property
    def allowed(self) -> set[tuple[DataCategory, Purpose]]:
        pairs: set[tuple[DataCategory, Purpose]] = set()
        for grant in self.grants.values():
            if self.why_not(grant) is None:
                pairs |= self.opened(grant)
        return pairs

    @property
    def blocked(self) -> set[tuple[DataCategory, Purpose]]:
        pairs: set[tuple[DataCategory, Purpose]] = set()
        for refusal in self.refusals.values():
            pairs |= self.closed(refusal)
        return pairs

    def permitted(self, categories: Iterable[DataCategory], purpose: Purpose) -> set[DataCategory]:
        open_pairs = self.allowed - self.blocked
        return {c for c in categories if (c, purpose) in open_pairs}

    def covering_grants(self, category: DataCategory, purpose: Purpose) -> list[ConsentGranted]:
        return [g for g in self.grants.values() if (category, purpose) in self.opened(g)]

    def covering_refusals(self, category: DataCategory, purpose: Purpose) -> list[ConsentRefused]:
        return [r for r in self.refusals.values() if (category, purpose) in self.closed(r)]

    def refusal_rank(self, refusal: ConsentRefused) -> tuple[int, int, int]:
        return (
            max(rank(r) for r in refusal.recipients if r.covers(self.agency)),
            int(bool(refusal.categories)),
            int(bool(refusal.purposes)),
        )

    def grant_rank(self, grant: ConsentGranted) -> tuple[int, datetime]:
        return (max(rank(r) for r in grant.recipients if r.covers(self.agency)), grant.timestamp)

    def acceptable(
        self, category: DataCategory, purpose: Purpose
    ) -> set[tuple[Verdict, UUID | None, UUID | None]]:
        """Every (verdict, grant_id, refusal_id) a correct decision may give (ties allowed)."""
        refusals = self.covering_refusals(category, purpose)
        if refusals:
            top = max(self.refusal_rank(r) for r in refusals)
            return {
                (Verdict.REFUSED, None, r.refusal_id)
                for r in refusals
                if self.refusal_rank(r) == top
            }
        grants = self.covering_grants(category, purpose)
        counting = [g for g in grants if self.why_not(g) is None]
        if counting:
            best = max(self.grant_rank(g) for g in counting)
            return {
                (Verdict.PERMITTED, g.grant_id, None)
                for g in counting
                if self.grant_rank(g) == best
            }
        if grants:
            latest = max(g.timestamp for g in grants)
            return {
                (self.why_not(g), g.grant_id, None)  # type: ignore[misc]
                for g in grants
                if g.timestamp == latest
            }
        return {(Verdict.NOT_GRANTED, None, None)}


def oracle_for(scenario: Scenario, events: Sequence[Event] | None = None) -> Oracle:
    req = scenario.request
    return Oracle.of(scenario.events if events is None else events, req.agency, req.at)


def describe(scenario: Scenario) -> None:
    req = scenario.request
    note(f"request: {req.agency.agency_id} {req.purpose} {req.categories} at {req.at}")
    for ev in scenario.events:
        note(repr(ev))


# -- properties -------------------------------------------------------------------------------

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(SCENARIOS)
def test_never_permits_what_a_refusal_or_a_lapsed_grant_stops(scenario: Scenario) -> None:
    describe(scenario)
    decision = run(scenario)
    oracle = oracle_for(scenario)
    purpose = scenario.request.purpose
    for cd in decision.categories:
        event(f"verdict: {cd.verdict}")
        if cd.verdict is not Verdict.PERMITTED:
            continue
        assert (cd.category, purpose) not in oracle.blocked, "a refusal in force covers it"
        covering = oracle.covering_grants(cd.category, purpose)
        assert covering, "no grant ever covered it"
        reasons = {oracle.why_not(g) for g in covering}
        assert None in reasons, f"every covering grant has lapsed: {reasons}"


@PROPERTY
@given(SCENARIOS)
def test_permits_exactly_what_a_counting_grant_opens(scenario: Scenario) -> None:
    describe(scenario)
    decision = run(scenario)
    oracle = oracle_for(scenario)
    expected = oracle.permitted(scenario.request.categories, scenario.request.purpose)
    event(f"permitted {len(expected)} of {len(set(scenario.request.categories))}")
    assert set(decision.permitted) == expected
    assert len(decision.categories) == len(set(scenario.request.categories))


@PROPERTY
@given(SCENARIOS)
def test_every_verdict_names_the_right_grant_or_refusal(scenario: Scenario) -> None:
    describe(scenario)
    decision = run(scenario)
    oracle = oracle_for(scenario)
    req = scenario.request
    assert decision.recipient == req.agency
    assert decision.purpose is req.purpose
    assert decision.at == req.at
    for cd in decision.categories:
        if cd.verdict is Verdict.PERMITTED:
            grant = oracle.grants.get(cd.grant_id)  # type: ignore[arg-type]
            assert grant is not None, "names a grant that does not exist (yet)"
            assert (cd.category, req.purpose) in oracle.opened(grant)
            assert oracle.why_not(grant) is None
            assert cd.refusal_id is None
        elif cd.verdict is Verdict.REFUSED:
            refusal = oracle.refusals.get(cd.refusal_id)  # type: ignore[arg-type]
            assert refusal is not None, "names a refusal that is not in force"
            assert (cd.category, req.purpose) in oracle.closed(refusal)
            named = oracle.refusal_rank(refusal)
            for other in oracle.covering_refusals(cd.category, req.purpose):
                assert not oracle.refusal_rank(other) > named, f"{other.refusal_id} is stricter"
            assert cd.grant_id is None
        elif cd.verdict is Verdict.NOT_GRANTED:
            assert oracle.covering_grants(cd.category, req.purpose) == []
            assert cd.grant_id is None
            assert cd.refusal_id is None
        else:
            grant = oracle.grants[cd.grant_id]  # type: ignore[index]
            assert (cd.category, req.purpose) in oracle.opened(grant)
            assert oracle.why_not(grant) is cd.verdict
        assert cd.reason
        assert (cd.verdict, cd.grant_id, cd.refusal_id) in oracle.acceptable(
            cd.category, req.purpose
        )


@PROPERTY
@given(SCENARIOS, st.randoms(use_true_random=False))
def test_is_deterministic_and_ignores_the_order_of_requested_categories(
    scenario: Scenario, rnd: random.Random
) -> None:
    describe(scenario)
    first = run(scenario)
    assert run(scenario) == first
    # The same events as a one-shot iterator (decide takes any iterable).
    assert run(scenario, iter(list(scenario.events))) == first
    req = scenario.request
    shuffled = [*req.categories, *rnd.sample(req.categories, k=len(req.categories))]
    rnd.shuffle(shuffled)
    again = decide(
        scenario.events, recipient=req.agency, purpose=req.purpose, categories=shuffled, at=req.at
    )
    assert verdicts(again) == verdicts(first)
    assert [c.category for c in again.categories] == list(dict.fromkeys(shuffled))
    # The same instant written in another time zone is the same request.
    elsewhere = req.at.astimezone(timezone(timedelta(minutes=15 * rnd.randint(-48, 56))))
    moved = decide(
        scenario.events,
        recipient=req.agency,
        purpose=req.purpose,
        categories=req.categories,
        at=elsewhere,
    )
    assert verdicts(moved) == verdicts(first)


@settings(PROPERTY, max_examples=150)
@given(SCENARIOS)
def test_agrees_with_the_oracle_on_every_edge_of_time(scenario: Scenario) -> None:
    """The same request, asked a second before, at and a second after every instant where
    something changes: events, periods, renewals, withdrawals, birthdays."""
    describe(scenario)
    req = scenario.request
    edges = set(scenario.history.interesting)
    for ev in scenario.events:
        if isinstance(ev, ConsentGranted):
            edges.update(edges_of(ev, scenario.history))
    event(f"instants asked: {min(len(edges) // 10 * 10, 50)}+")
    for edge in sorted(edges):
        for at in (edge - timedelta(seconds=1), edge, edge + timedelta(seconds=1)):
            decision = decide(
                scenario.events,
                recipient=req.agency,
                purpose=req.purpose,
                categories=req.categories,
                at=at,
            )
            oracle = Oracle.of(scenario.events, req.agency, at)
            for cd in decision.categories:
                got = (cd.verdict, cd.grant_id, cd.refusal_id)
                assert got in oracle.acceptable(cd.category, req.purpose), (at, cd)


@PROPERTY
@given(SCENARIOS)
def test_events_after_the_instant_never_change_the_answer(scenario: Scenario) -> None:
    describe(scenario)
    at = scenario.request.at
    before = [e for e in scenario.events if e.timestamp <= at]
    later = len(scenario.events) - len(before)
    event(f"events after the instant: {min(later, 3)}{'+' if later >= 3 else ''}")
    assert run(scenario, before) == run(scenario)


@st.composite
def with_later_events(draw: st.DrawFn) -> tuple[Scenario, list[Event]]:
    """A scenario, and the same history continued past the request's instant."""
    scenario = draw(SCENARIOS)
    more = draw(histories(min_size=1, max_size=8))
    start = max(scenario.history.last, scenario.request.at) + timedelta(seconds=1)
    offset = len(scenario.events)
    later: list[Event] = []
    for ev in more.events:
        changes: dict[str, Any] = {
            "originator_version": ev.originator_version + offset,
            "timestamp": start + (ev.timestamp - BASE),
        }
        # Later events mostly touch the grants and refusals already recorded.
        if isinstance(ev, ConsentWithdrawn | ConsentRenewed):
            old = [e.grant_id for e in scenario.events if isinstance(e, ConsentGranted)]
            if old and draw(st.booleans()):
                changes["grant_id"] = pick(draw, old)
        if isinstance(ev, RefusalLifted):
            old = [e.refusal_id for e in scenario.events if isinstance(e, ConsentRefused)]
            if old and draw(st.booleans()):
                changes["refusal_id"] = pick(draw, old)
        if isinstance(ev, ConsentGranted):
            changes["grant_id"] = UUID(int=ev.grant_id.int + 0x10000)
        if isinstance(ev, ConsentRefused):
            changes["refusal_id"] = UUID(int=ev.refusal_id.int + 0x10000)
        later.append(ev.model_copy(update=changes))
    return scenario, later


@PROPERTY
@given(with_later_events())
def test_appending_later_events_never_changes_the_answer(
    case: tuple[Scenario, list[Event]],
) -> None:
    scenario, later = case
    describe(scenario)
    for ev in later:
        note(f"later: {ev!r}")
    assert all(ev.timestamp > scenario.request.at for ev in later)
    assert run(scenario, [*scenario.events, *later]) == run(scenario)


@PROPERTY
@given(SCENARIOS, st.data())
def test_a_new_refusal_only_takes_away(scenario: Scenario, data: st.DataObject) -> None:
    describe(scenario)
    req = scenario.request
    # Recorded after the history, at or before the instant when the history allows it.
    when = max(scenario.history.last, req.at - timedelta(minutes=1))
    refusal = ConsentRefused(
        **common(len(scenario.events) + 1, when),
        refusal_id=UUID(int=0xFFFF),
        person_id=PERSON,
        recipients=(data.draw(recipients),),
        categories=data.draw(WIDE.any_categories),
        purposes=data.draw(WIDE.any_purposes),
    )
    note(repr(refusal))
    before = run(scenario)
    after = run(scenario, [*scenario.events, refusal])
    assert set(after.permitted) <= set(before.permitted)
    if when <= req.at:
        covered = {
            c for c in req.categories if (c, req.purpose) in oracle_for(scenario, [refusal]).blocked
        }
        assert not covered & set(after.permitted)
        event(f"refusal took away something: {bool(covered & set(before.permitted))}")


# -- the generator reaches every verdict ------------------------------------------------------


# Generate only: finding one example is the point, shrinking it would only cost time.
SEARCH = settings(max_examples=1500, database=None, deadline=None, phases=[Phase.generate])


@pytest.mark.parametrize("verdict", list(Verdict))
def test_random_histories_reach_every_verdict(verdict: Verdict) -> None:
    """Guards the properties above against a generator that never exercises a rule."""
    found = find(
        SCENARIOS,
        lambda s: any(c.verdict is verdict for c in run(s).categories),
        settings=SEARCH,
    )
    assert any(c.verdict is verdict for c in run(found).categories)


def test_random_histories_reach_a_refusal_that_overrides_a_counting_grant() -> None:
    def overrides(s: Scenario) -> bool:
        oracle = oracle_for(s)
        pairs = oracle.allowed & oracle.blocked
        return any((c, s.request.purpose) in pairs for c in s.request.categories)

    found = find(SCENARIOS, overrides, settings=SEARCH)
    assert overrides(found)


# -- the domain's scenarios -------------------------------------------------------------------


class Log:
    """Writes one consent record's history, one event a call."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def _add(self, cls: Callable[..., Event], at: datetime, **fields: Any) -> Event:
        ev = cls(**common(len(self.events) + 1, at), person_id=PERSON, **fields)
        self.events.append(ev)
        return ev

    def grant(
        self,
        at: datetime,
        *,
        recipients: tuple[Recipient, ...],
        categories: tuple[DataCategory, ...] = tuple(DataCategory),
        purposes: tuple[Purpose, ...] = tuple(Purpose),
        valid_from: datetime | None = None,
        valid_until: datetime | None = None,
        given_by: ConsentGiver = SELF,
    ) -> UUID:
        grant_id = UUID(int=0x3000 + len(self.events))
        self._add(
            ConsentGranted,
            at,
            grant_id=grant_id,
            categories=categories,
            recipients=recipients,
            purposes=purposes,
            valid_from=valid_from or at,
            valid_until=valid_until or at + timedelta(days=365),
            collection=WRITTEN,
            given_by=given_by,
            child_views="wants to go home" if given_by is not SELF else None,
        )
        return grant_id

    def refuse(self, at: datetime, *, recipients: tuple[Recipient, ...], **fields: Any) -> UUID:
        refusal_id = UUID(int=0x4000 + len(self.events))
        self._add(ConsentRefused, at, refusal_id=refusal_id, recipients=recipients, **fields)
        return refusal_id

    def withdraw(self, at: datetime, grant_id: UUID) -> None:
        self._add(ConsentWithdrawn, at, grant_id=grant_id, heard_by=SWC)

    def renew(self, at: datetime, grant_id: UUID, valid_until: datetime) -> None:
        self._add(
            ConsentRenewed, at, grant_id=grant_id, valid_until=valid_until, collection=WRITTEN
        )

    def lift(self, at: datetime, refusal_id: UUID) -> None:
        self._add(RefusalLifted, at, refusal_id=refusal_id, collection=WRITTEN)

    def age(self, at: datetime, *, minor: bool, adult_on: date | None) -> None:
        self._add(SubjectAgeNoted, at, minor=minor, adult_on=adult_on, age_is_estimated=False)

    def decide(
        self,
        agency: AgencyRef,
        purpose: Purpose,
        at: datetime,
        categories: tuple[DataCategory, ...] = (DataCategory.IDENTITY,),
    ) -> dict[DataCategory, tuple[Verdict, Any, Any]]:
        return verdicts(
            decide(self.events, recipient=agency, purpose=purpose, categories=categories, at=at)
        )

    def one(self, agency: AgencyRef, purpose: Purpose, at: datetime) -> tuple[Verdict, Any, Any]:
        return self.decide(agency, purpose, at)[DataCategory.IDENTITY]


T0 = datetime(2026, 3, 1, 21, 30, tzinfo=UTC)
POLICE_KIND = Recipient(kind=AgencyKind.POLICE)
ANYONE = Recipient(group=RecipientGroup.ANY)
GOVERNMENT = Recipient(group=RecipientGroup.GOVERNMENT)


def test_dong_thap_woman_allows_police_only_what_the_criminal_case_requires() -> None:
    log = Log()
    refusal = log.refuse(
        T0,
        recipients=(POLICE_KIND,),
        except_purposes=(Purpose.CRIMINAL_PROCEEDINGS,),
        statement="Nothing to the police beyond what the criminal case requires.",
    )
    for_the_case = log.grant(
        T0,
        recipients=(POLICE_KIND,),
        categories=(DataCategory.IDENTITY, DataCategory.LEGAL_CASE),
        purposes=(Purpose.CRIMINAL_PROCEEDINGS,),
    )
    broad = log.grant(T0, recipients=(ANYONE,))
    later = T0 + timedelta(hours=1)

    assert log.one(DT_POLICE, Purpose.CRIMINAL_PROCEEDINGS, later) == (
        Verdict.PERMITTED,
        for_the_case,
        None,
    )
    # The broader grant to anyone covers it, but the refusal overrides every grant.
    for purpose in (Purpose.SERVICE_PROVISION, Purpose.CASE_COORDINATION, Purpose.STATISTICS):
        assert log.one(DT_POLICE, purpose, later) == (Verdict.REFUSED, None, refusal)
        assert log.one(HCM_POLICE, purpose, later) == (Verdict.REFUSED, None, refusal)
    # Health goes to the police for the criminal case only through the broad grant.
    assert log.decide(DT_POLICE, Purpose.CRIMINAL_PROCEEDINGS, later, (DataCategory.HEALTH,)) == {
        DataCategory.HEALTH: (Verdict.PERMITTED, broad, None)
    }
    # Everyone else still receives what the broad grant allows.
    assert log.one(SWC, Purpose.SERVICE_PROVISION, later) == (Verdict.PERMITTED, broad, None)
    assert log.one(BORDER, Purpose.SERVICE_PROVISION, later) == (Verdict.PERMITTED, broad, None)


def test_nothing_to_the_government_of_my_country() -> None:
    log = Log()
    grant = log.grant(T0, recipients=(ANYONE,))
    refusal = log.refuse(T0, recipients=(GOVERNMENT,), statement="Nothing to the government.")
    later = T0 + timedelta(minutes=5)
    for agency in (DT_POLICE, HCM_POLICE, BORDER, LOCAL, CHILD_PROTECTION):
        decided = log.decide(agency, Purpose.CASE_COORDINATION, later, tuple(DataCategory))
        assert set(decided.values()) == {(Verdict.REFUSED, None, refusal)}, agency
    for agency in (HOSPITAL, SWC, NGO, FOREIGN):
        decided = log.decide(agency, Purpose.CASE_COORDINATION, later, tuple(DataCategory))
        assert set(decided.values()) == {(Verdict.PERMITTED, grant, None)}, agency
    # Lifting the refusal lets the grant count for the authorities again.
    log.lift(later, refusal)
    assert log.one(DT_POLICE, Purpose.SERVICE_PROVISION, later) == (Verdict.PERMITTED, grant, None)
    assert log.one(DT_POLICE, Purpose.SERVICE_PROVISION, later - timedelta(seconds=1)) == (
        Verdict.REFUSED,
        None,
        refusal,
    )


def test_the_most_specific_refusal_and_grant_are_named() -> None:
    log = Log()
    anyone = log.refuse(T0, recipients=(ANYONE,), purposes=(Purpose.RESEARCH,))
    police = log.refuse(T0, recipients=(GOVERNMENT, POLICE_KIND), purposes=(Purpose.RESEARCH,))
    named = log.refuse(
        T0, recipients=(Recipient(agency_id="dt-police"),), categories=(DataCategory.HEALTH,)
    )
    assert log.decide(DT_POLICE, Purpose.RESEARCH, T0, (DataCategory.HEALTH,)) == {
        DataCategory.HEALTH: (Verdict.REFUSED, None, named)
    }
    assert log.one(DT_POLICE, Purpose.RESEARCH, T0) == (Verdict.REFUSED, None, police)
    assert log.one(HOSPITAL, Purpose.RESEARCH, T0) == (Verdict.REFUSED, None, anyone)

    to_all = log.grant(T0, recipients=(ANYONE,))
    to_police = log.grant(T0, recipients=(Recipient(agency_id="dt-police"), POLICE_KIND))
    later = T0 + timedelta(minutes=1)
    to_all_again = log.grant(later, recipients=(ANYONE,))
    assert log.one(DT_POLICE, Purpose.SERVICE_PROVISION, later) == (
        Verdict.PERMITTED,
        to_police,
        None,
    )
    assert log.one(HOSPITAL, Purpose.SERVICE_PROVISION, later) == (
        Verdict.PERMITTED,
        to_all_again,
        None,
    )
    assert log.one(HOSPITAL, Purpose.SERVICE_PROVISION, T0) == (Verdict.PERMITTED, to_all, None)


def test_only_recipients_that_cover_the_agency_make_a_rule_specific() -> None:
    log = Log()
    mixed = log.refuse(T0, recipients=(Recipient(agency_id="hcm-police"), ANYONE))
    by_kind = log.refuse(T0, recipients=(POLICE_KIND,))
    # To the Dong Thap police, ``mixed`` covers only as "anyone": the kind is more specific.
    assert log.one(DT_POLICE, Purpose.SERVICE_PROVISION, T0) == (Verdict.REFUSED, None, by_kind)
    assert log.one(HCM_POLICE, Purpose.SERVICE_PROVISION, T0) == (Verdict.REFUSED, None, mixed)

    log = Log()
    to_police = log.grant(T0, recipients=(POLICE_KIND,))
    later = T0 + timedelta(minutes=1)
    mixed_grant = log.grant(later, recipients=(Recipient(agency_id="hcm-police"), ANYONE))
    assert log.one(DT_POLICE, Purpose.SERVICE_PROVISION, later) == (
        Verdict.PERMITTED,
        to_police,
        None,
    )
    assert log.one(HCM_POLICE, Purpose.SERVICE_PROVISION, later) == (
        Verdict.PERMITTED,
        mixed_grant,
        None,
    )


def test_a_withdrawal_takes_effect_at_its_timestamp() -> None:
    log = Log()
    grant = log.grant(T0, recipients=(Recipient(kind=AgencyKind.HOSPITAL),))
    withdrawn_at = T0 + timedelta(days=2)
    log.withdraw(withdrawn_at, grant)
    assert log.one(HOSPITAL, Purpose.SERVICE_PROVISION, withdrawn_at - timedelta(seconds=1)) == (
        Verdict.PERMITTED,
        grant,
        None,
    )
    for after in (timedelta(0), timedelta(seconds=1), timedelta(days=30)):
        assert log.one(HOSPITAL, Purpose.SERVICE_PROVISION, withdrawn_at + after) == (
            Verdict.WITHDRAWN,
            grant,
            None,
        )
    # A renewal cannot revive a withdrawn grant; a new grant can permit again.
    log.renew(withdrawn_at + timedelta(hours=1), grant, T0 + timedelta(days=800))
    assert log.one(HOSPITAL, Purpose.SERVICE_PROVISION, withdrawn_at + timedelta(hours=2))[0] is (
        Verdict.WITHDRAWN
    )
    again = log.grant(withdrawn_at + timedelta(hours=3), recipients=(ANYONE,))
    assert log.one(HOSPITAL, Purpose.SERVICE_PROVISION, withdrawn_at + timedelta(hours=3)) == (
        Verdict.PERMITTED,
        again,
        None,
    )


def test_a_renewal_extends_the_period_from_when_it_is_recorded() -> None:
    log = Log()
    ends = T0 + timedelta(days=30)
    grant = log.grant(T0, recipients=(ANYONE,), valid_until=ends)
    renewed_on = T0 + timedelta(days=31)  # a late renewal, a day after the period ended
    new_end = T0 + timedelta(days=90)
    log.renew(renewed_on, grant, new_end)
    request = (SWC, Purpose.SERVICE_PROVISION)
    assert log.one(*request, ends - timedelta(seconds=1)) == (Verdict.PERMITTED, grant, None)
    assert log.one(*request, ends) == (Verdict.EXPIRED, grant, None)
    assert log.one(*request, renewed_on - timedelta(seconds=1)) == (Verdict.EXPIRED, grant, None)
    assert log.one(*request, renewed_on) == (Verdict.PERMITTED, grant, None)
    assert log.one(*request, new_end - timedelta(seconds=1)) == (Verdict.PERMITTED, grant, None)
    assert log.one(*request, new_end) == (Verdict.EXPIRED, grant, None)


def test_a_grant_does_not_count_before_its_period() -> None:
    log = Log()
    grant = log.grant(T0, recipients=(ANYONE,), valid_from=T0 + timedelta(days=1))
    assert log.one(SWC, Purpose.SERVICE_PROVISION, T0) == (Verdict.EXPIRED, grant, None)
    assert log.one(SWC, Purpose.SERVICE_PROVISION, T0 + timedelta(days=1)) == (
        Verdict.PERMITTED,
        grant,
        None,
    )
    assert log.one(SWC, Purpose.SERVICE_PROVISION, T0 - timedelta(seconds=1)) == (
        Verdict.NOT_GRANTED,
        None,
        None,
    )


def test_a_guardians_grant_for_a_minor_counts_until_the_day_they_turn_18() -> None:
    log = Log()
    turns_18 = date(2026, 6, 15)
    log.age(T0, minor=True, adult_on=turns_18)
    guardian = log.grant(
        T0,
        recipients=(Recipient(kind=AgencyKind.SOCIAL_WORK_CENTRE),),
        given_by=MOTHER,
        valid_until=T0 + timedelta(days=365),
    )
    # Birthdays are counted on Vietnam's calendar: midnight there is 17:00 UTC the day before.
    midnight = datetime.combine(turns_18, datetime.min.time(), tzinfo=UTC) - timedelta(hours=7)
    request = (SWC, Purpose.SERVICE_PROVISION)
    assert log.one(*request, midnight - timedelta(seconds=1)) == (Verdict.PERMITTED, guardian, None)
    for after in (timedelta(0), timedelta(hours=13), timedelta(days=100)):
        assert log.one(*request, midnight + after) == (Verdict.OWN_CONSENT_NEEDED, guardian, None)
    # Once adult, the person's own grant counts.
    own = log.grant(midnight + timedelta(days=1), recipients=(ANYONE,))
    assert log.one(*request, midnight + timedelta(days=1)) == (Verdict.PERMITTED, own, None)


def test_the_latest_age_note_decides_when_own_consent_is_needed() -> None:
    log = Log()
    log.age(T0, minor=True, adult_on=date(2027, 1, 1))  # estimated at reception
    guardian = log.grant(T0, recipients=(ANYONE,), given_by=MOTHER)
    july = datetime(2026, 7, 1, 12, tzinfo=UTC)
    assert log.one(SWC, Purpose.SERVICE_PROVISION, july) == (Verdict.PERMITTED, guardian, None)
    # The birth certificate arrives: she turned 18 on 15 June.
    log.age(T0 + timedelta(days=1), minor=True, adult_on=date(2026, 6, 15))
    assert log.one(SWC, Purpose.SERVICE_PROVISION, july) == (
        Verdict.OWN_CONSENT_NEEDED,
        guardian,
        None,
    )
    # A grant the person gives herself is never affected by her age.
    log = Log()
    log.age(T0, minor=True, adult_on=date(2026, 6, 15))
    own = log.grant(T0, recipients=(ANYONE,))
    assert log.one(SWC, Purpose.SERVICE_PROVISION, july) == (Verdict.PERMITTED, own, None)


def test_a_guardians_grant_stops_counting_when_the_person_is_found_to_be_adult() -> None:
    log = Log()
    log.age(T0, minor=True, adult_on=date(2027, 1, 1))  # estimated 16 at reception
    guardian = log.grant(T0, recipients=(ANYONE,), given_by=MOTHER)
    corrected = T0 + timedelta(days=3)
    log.age(corrected, minor=False, adult_on=None)  # documents show they are 19
    assert log.one(SWC, Purpose.SERVICE_PROVISION, corrected - timedelta(seconds=1)) == (
        Verdict.PERMITTED,
        guardian,
        None,
    )
    assert log.one(SWC, Purpose.SERVICE_PROVISION, corrected) == (
        Verdict.OWN_CONSENT_NEEDED,
        guardian,
        None,
    )


def test_the_same_instant_in_another_timezone_gets_the_same_answer() -> None:
    log = Log()
    log.age(T0, minor=True, adult_on=date(2026, 6, 15))
    log.grant(T0, recipients=(ANYONE,), given_by=MOTHER)
    in_utc = datetime(2026, 6, 14, 20, 0, tzinfo=UTC)
    in_vietnam = in_utc.astimezone(timezone(timedelta(hours=7)))  # 15 June, 03:00
    assert in_utc == in_vietnam
    assert log.one(SWC, Purpose.SERVICE_PROVISION, in_utc) == log.one(
        SWC, Purpose.SERVICE_PROVISION, in_vietnam
    )
