"""The consent decision: a pure, deterministic function over a case's consent events.

Given the events of one consent record (in their recorded order) and a request (these data
categories, to this agency, for this purpose, at this instant), it says for each category
whether it may go, and why: the grant that permits it, or the refusal, withdrawal, expiry or
absence that stops it. The consent service and the referral service both run it, each on its
own copy of the consent log, which is why it lives in ``contracts``.

Rules:
- only events recorded at or before the instant count;
- a refusal in force overrides every grant it covers; when several cover a category, the most
  specific one is named;
- a grant counts while its period (as last renewed) holds and until it is withdrawn;
- a grant given by a guardian or authority stops counting once the person is 18 (or is found
  to be an adult): from then on their own consent is needed. Birthdays are judged on the
  calendar of Vietnam (UTC+7), whatever time zone the instant is given in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from enum import StrEnum
from uuid import UUID

from contracts.consent import (
    ConsentGranted,
    ConsentRefused,
    ConsentRenewed,
    ConsentWithdrawn,
    GiverKind,
    RefusalLifted,
    SubjectAgeNoted,
)
from contracts.envelope import AgencyRef, Event, Model
from contracts.vocabulary import DataCategory, Purpose

# Vietnam keeps one offset all year; the law counts ages on its calendar.
JURISDICTION_TZ = timezone(timedelta(hours=7), "ICT")


def local_date(at: datetime) -> date:
    """The calendar day of an instant in the jurisdiction (Vietnam)."""
    return at.astimezone(JURISDICTION_TZ).date()


class Verdict(StrEnum):
    PERMITTED = "permitted"
    REFUSED = "refused"
    WITHDRAWN = "withdrawn"
    EXPIRED = "expired"
    OWN_CONSENT_NEEDED = "own_consent_needed"
    NOT_GRANTED = "not_granted"


class CategoryDecision(Model):
    category: DataCategory
    verdict: Verdict
    grant_id: UUID | None = None
    refusal_id: UUID | None = None
    reason: str


class ConsentDecision(Model):
    recipient: AgencyRef
    purpose: Purpose
    at: datetime
    categories: tuple[CategoryDecision, ...]

    @property
    def permitted(self) -> tuple[DataCategory, ...]:
        return tuple(c.category for c in self.categories if c.verdict is Verdict.PERMITTED)

    @property
    def withheld(self) -> tuple[CategoryDecision, ...]:
        return tuple(c for c in self.categories if c.verdict is not Verdict.PERMITTED)


@dataclass
class GrantState:
    grant: ConsentGranted
    valid_until: datetime
    withdrawn_at: datetime | None = None


@dataclass
class RefusalState:
    refusal: ConsentRefused
    lifted_at: datetime | None = None


@dataclass
class ConsentState:
    """The consent record as of an instant."""

    grants: dict[UUID, GrantState] = field(default_factory=dict)
    refusals: dict[UUID, RefusalState] = field(default_factory=dict)
    minor: bool | None = None
    adult_on: date | None = None

    def grants_in_force(self, at: datetime) -> list[GrantState]:
        return [g for g in self.grants.values() if _counts(g, self, at) is None]

    def refusals_in_force(self) -> list[ConsentRefused]:
        return [r.refusal for r in self.refusals.values() if r.lifted_at is None]

    def own_consent_needed(self, at: datetime) -> bool:
        """True once the person is an adult: found to be one, or 18 by now."""
        if self.minor is False:
            return True
        return self.adult_on is not None and local_date(at) >= self.adult_on


def state_at(events: Iterable[Event], at: datetime) -> ConsentState:
    """Fold the consent events recorded at or before ``at`` into the record's state."""
    state = ConsentState()
    for event in events:
        if event.timestamp > at:
            continue
        if isinstance(event, ConsentGranted):
            state.grants[event.grant_id] = GrantState(event, event.valid_until)
        elif isinstance(event, ConsentRenewed) and event.grant_id in state.grants:
            state.grants[event.grant_id].valid_until = event.valid_until
        elif isinstance(event, ConsentWithdrawn) and event.grant_id in state.grants:
            grant = state.grants[event.grant_id]
            grant.withdrawn_at = grant.withdrawn_at or event.timestamp
        elif isinstance(event, ConsentRefused):
            state.refusals[event.refusal_id] = RefusalState(event)
        elif isinstance(event, RefusalLifted) and event.refusal_id in state.refusals:
            state.refusals[event.refusal_id].lifted_at = event.timestamp
        elif isinstance(event, SubjectAgeNoted):
            state.minor = event.minor
            state.adult_on = event.adult_on if event.minor else None
    return state


def decide(
    events: Iterable[Event],
    *,
    recipient: AgencyRef,
    purpose: Purpose,
    categories: Iterable[DataCategory],
    at: datetime,
) -> ConsentDecision:
    """Decide, for each requested category, whether it may go to ``recipient`` for
    ``purpose`` at instant ``at``. Pure: the same events and request give the same answer."""
    state = state_at(events, at)
    decided = tuple(
        _decide_category(state, category, recipient, purpose, at)
        for category in dict.fromkeys(categories)
    )
    return ConsentDecision(recipient=recipient, purpose=purpose, at=at, categories=decided)


def refusal_covers(
    refusal: ConsentRefused, category: DataCategory, recipient: AgencyRef, purpose: Purpose
) -> bool:
    return (
        any(r.covers(recipient) for r in refusal.recipients)
        and (not refusal.categories or category in refusal.categories)
        and (not refusal.purposes or purpose in refusal.purposes)
        and purpose not in refusal.except_purposes
    )


def grant_covers(
    grant: ConsentGranted, category: DataCategory, recipient: AgencyRef, purpose: Purpose
) -> bool:
    return (
        category in grant.categories
        and purpose in grant.purposes
        and any(r.covers(recipient) for r in grant.recipients)
    )


def _refusal_specificity(refusal: ConsentRefused, recipient: AgencyRef) -> tuple[int, int, int]:
    return (
        max(r.specificity for r in refusal.recipients if r.covers(recipient)),
        1 if refusal.categories else 0,
        1 if refusal.purposes else 0,
    )


def _grant_specificity(grant: ConsentGranted, recipient: AgencyRef) -> tuple[int, datetime]:
    return (max(r.specificity for r in grant.recipients if r.covers(recipient)), grant.timestamp)


def _counts(grant: GrantState, state: ConsentState, at: datetime) -> Verdict | None:
    """None when the grant counts at ``at``; otherwise the verdict that says why not."""
    if grant.withdrawn_at is not None and grant.withdrawn_at <= at:
        return Verdict.WITHDRAWN
    if not (grant.grant.valid_from <= at < grant.valid_until):
        return Verdict.EXPIRED
    if grant.grant.given_by.kind is not GiverKind.PERSON and state.own_consent_needed(at):
        return Verdict.OWN_CONSENT_NEEDED
    return None


_REASONS = {
    Verdict.WITHDRAWN: "the grant that covered it was withdrawn",
    Verdict.EXPIRED: "the grant that covered it is not valid at this time",
    Verdict.OWN_CONSENT_NEEDED: "the person is now 18: their own consent is needed",
}


def _decide_category(
    state: ConsentState,
    category: DataCategory,
    recipient: AgencyRef,
    purpose: Purpose,
    at: datetime,
) -> CategoryDecision:
    refusals = [
        r for r in state.refusals_in_force() if refusal_covers(r, category, recipient, purpose)
    ]
    if refusals:
        strongest = max(refusals, key=lambda r: _refusal_specificity(r, recipient))
        return CategoryDecision(
            category=category,
            verdict=Verdict.REFUSED,
            refusal_id=strongest.refusal_id,
            reason="the person refused sharing this with this recipient for this purpose",
        )
    covering = [
        g for g in state.grants.values() if grant_covers(g.grant, category, recipient, purpose)
    ]
    counting = [g for g in covering if _counts(g, state, at) is None]
    if counting:
        best = max(counting, key=lambda g: _grant_specificity(g.grant, recipient))
        return CategoryDecision(
            category=category,
            verdict=Verdict.PERMITTED,
            grant_id=best.grant.grant_id,
            reason="permitted by the person's grant",
        )
    if covering:
        # Say why the most recent covering grant does not count.
        latest = max(covering, key=lambda g: g.grant.timestamp)
        verdict = _counts(latest, state, at)
        assert verdict is not None
        return CategoryDecision(
            category=category,
            verdict=verdict,
            grant_id=latest.grant.grant_id,
            reason=_REASONS[verdict],
        )
    return CategoryDecision(
        category=category,
        verdict=Verdict.NOT_GRANTED,
        reason="no grant covers this category, recipient and purpose",
    )
