"""The follow-up after exit: contacts due on a schedule, made or missed (seed 002: follow-up
only as the person wishes; the exit plan says how often and until when)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta


@dataclass(frozen=True)
class FollowUp:
    """One contact due: met by a contact within half a period either side of it."""

    due_at: datetime
    status: str  # made, missed, due (now in its window, not made yet), upcoming


def schedule(
    closed_at: datetime,
    every_days: int,
    until: date,
    contacts_at: list[datetime],
    now: datetime,
) -> list[FollowUp]:
    """The follow-up contacts due after a closure at ``closed_at``: every ``every_days``
    until ``until``, each with its status at ``now``."""
    every = timedelta(days=every_days)
    half = every / 2
    due_at = closed_at + every
    due: list[FollowUp] = []
    while due_at.date() <= until:
        start, end = due_at - half, due_at + half
        if any(start < at <= end for at in contacts_at):
            status = "made"
        elif now > end:
            status = "missed"
        elif now > start:
            status = "due"
        else:
            status = "upcoming"
        due.append(FollowUp(due_at, status))
        due_at += every
    return due
