"""When a referral's deadlines fall due, and how a hold for consent moves them.

One rule, read by the Referral aggregate, the referral index and the projections' queue alike,
so that the deadline check, the referral it loads and the agencies' queues never disagree
about what is due:

- a deadline waits for its step while the referral is in a status that owes that step
  (acknowledgement: requested; first service: requested, received or accepted) and it has
  not been escalated yet; it is missed once an instant is past its due time;
- a referral on hold for consent owes nothing: nobody can act on it;
- when it resumes, the deadlines it still owed when it was put on hold move later by the
  time it spent on hold, measured between the two events' timestamps, so a replay of the
  log gives the same due times.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from contracts.referral import DeadlineKind, ReferralStatus

S = ReferralStatus
OWED_WHILE: dict[DeadlineKind, frozenset[ReferralStatus]] = {
    DeadlineKind.ACKNOWLEDGE: frozenset({S.REQUESTED}),
    DeadlineKind.FIRST_SERVICE: frozenset({S.REQUESTED, S.RECEIVED, S.ACCEPTED}),
}


def owes(kind: DeadlineKind, status: ReferralStatus, escalated: Collection[DeadlineKind]) -> bool:
    """True while a referral in ``status`` still waits for the step of deadline ``kind``."""
    return status in OWED_WHILE[kind] and kind not in escalated


@dataclass(frozen=True, slots=True)
class DueTimes:
    """A referral's due times: set when it is dispatched, moved by each hold."""

    acknowledge_by: datetime | None = None
    first_service_by: datetime | None = None

    def due(self, kind: DeadlineKind) -> datetime | None:
        return self.acknowledge_by if kind is DeadlineKind.ACKNOWLEDGE else self.first_service_by

    def missed(
        self, status: ReferralStatus, escalated: Collection[DeadlineKind], now: datetime
    ) -> list[tuple[DeadlineKind, datetime]]:
        """The deadlines owed in ``status``, not yet escalated, whose due time ``now`` is
        past, with their due times (in the order acknowledge, first service)."""
        missed = []
        for kind in DeadlineKind:
            due = self.due(kind)
            if due is not None and owes(kind, status, escalated) and now > due:
                missed.append((kind, due))
        return missed

    def after_hold(
        self,
        held_in: ReferralStatus,
        escalated: Collection[DeadlineKind],
        held_at: datetime,
        resumed_at: datetime,
    ) -> DueTimes:
        """The due times after a hold that began in status ``held_in`` at ``held_at`` and
        ended at ``resumed_at``: each deadline still owed then moves by the time on hold."""
        paused = max(resumed_at - held_at, timedelta(0))

        def moved(kind: DeadlineKind) -> datetime | None:
            due = self.due(kind)
            if due is None or not owes(kind, held_in, escalated):
                return due
            return due + paused

        return DueTimes(moved(DeadlineKind.ACKNOWLEDGE), moved(DeadlineKind.FIRST_SERVICE))
