"""Who can find which referral: an index kept from the referral service's own log.

It reads only the lifecycle events (never disclosures), catches up incrementally before
each use, and can always be rebuilt from the log, so several processes of the service each
keep their own. What is due, and when an override has ended, it judges with the very rules
the Referral aggregate applies (``contracts.deadlines`` and ``override_past_its_end``), fed by
the same events, so the deadline check never disagrees with the referral it loads.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from eventsourcing.persistence import ApplicationRecorder, Mapper

from contracts.deadlines import DueTimes
from contracts.envelope import Event
from contracts.referral import (
    TERMINAL_STATUSES,
    DeadlineKind,
    DeadlineMissed,
    HandoverCancelled,
    HandoverCompleted,
    HandoverStarted,
    OverrideApproved,
    OverrideLapsed,
    OverrideRequested,
    OverrideReviewed,
    ReferralAccepted,
    ReferralAcknowledged,
    ReferralCancelled,
    ReferralCompleted,
    ReferralCreated,
    ReferralDeclinedByPerson,
    ReferralDispatched,
    ReferralFailed,
    ReferralPutOnHold,
    ReferralRejected,
    ReferralResumed,
    ReferralStarted,
    ReferralStatus,
)
from services.referral.domain.overrides import Override, override_past_its_end
from services.runtime.follower import topics_of
from services.runtime.persistence import decode_stored, new_mapper

S = ReferralStatus
STATUS_OF: dict[type[Event], ReferralStatus] = {
    ReferralDispatched: S.REQUESTED,
    ReferralAcknowledged: S.RECEIVED,
    ReferralAccepted: S.ACCEPTED,
    ReferralRejected: S.REJECTED,
    ReferralStarted: S.IN_PROGRESS,
    ReferralCompleted: S.COMPLETED,
    ReferralCancelled: S.CANCELLED,
    ReferralDeclinedByPerson: S.CANCELLED,
    ReferralFailed: S.FAILED,
    ReferralPutOnHold: S.ON_HOLD,
}
INDEXED: tuple[type[Event], ...] = (
    ReferralCreated,
    ReferralResumed,
    DeadlineMissed,
    *STATUS_OF,
    HandoverStarted,
    HandoverCompleted,
    HandoverCancelled,
    OverrideRequested,
    OverrideApproved,
    OverrideReviewed,
    OverrideLapsed,
)


@dataclass
class ReferralEntry:
    referral_id: UUID
    case_id: UUID
    province: str
    from_agency_id: str
    to_agency_id: str
    status: ReferralStatus = S.DRAFT
    due: DueTimes = field(default_factory=DueTimes)
    escalated: set[DeadlineKind] = field(default_factory=set)
    dispatched: bool = False
    held_at: datetime | None = None
    resume_to: ReferralStatus | None = None
    overrides: dict[UUID, Override] = field(default_factory=dict)
    latest_override: UUID | None = None

    @property
    def acknowledge_by(self) -> datetime | None:
        return self.due.acknowledge_by

    @property
    def first_service_by(self) -> datetime | None:
        return self.due.first_service_by


@dataclass
class HandoverEntry:
    handover_id: UUID
    case_id: UUID
    province: str
    party_ids: tuple[str, ...]
    status: str = "open"


@dataclass
class ReferralIndex:
    recorder: ApplicationRecorder
    mapper: Mapper[UUID] = field(default_factory=new_mapper)
    position: int = 0
    referrals: dict[UUID, ReferralEntry] = field(default_factory=dict)
    handovers: dict[UUID, HandoverEntry] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def refresh(self) -> None:
        mapper = self.mapper
        topics = topics_of(INDEXED)
        with self._lock:
            while True:
                batch = self.recorder.select_notifications(
                    start=self.position + 1, limit=500, topics=topics
                )
                if not batch:
                    return
                for notification in batch:
                    self._apply(decode_stored(mapper, notification))
                    self.position = notification.id

    def _apply(self, event: Event) -> None:
        if isinstance(event, ReferralCreated):
            self.referrals[event.originator_id] = ReferralEntry(
                event.originator_id,
                event.case_id,
                event.province,
                event.from_agency.agency_id,
                event.to_agency.agency_id,
            )
        elif isinstance(event, HandoverStarted):
            self.handovers[event.originator_id] = HandoverEntry(
                event.originator_id,
                event.case_id,
                event.province,
                tuple(p.agency.agency_id for p in event.parties),
            )
        elif isinstance(event, HandoverCompleted | HandoverCancelled):
            handover = self.handovers[event.originator_id]
            handover.status = "completed" if isinstance(event, HandoverCompleted) else "cancelled"
        else:
            self._apply_to_referral(self.referrals[event.originator_id], event)

    @staticmethod
    def _apply_to_referral(entry: ReferralEntry, event: Event) -> None:
        # The same state changes as the aggregate's appliers, for the fields read here.
        if isinstance(event, DeadlineMissed):
            entry.escalated.add(event.deadline)
        elif isinstance(event, OverrideRequested):
            entry.overrides[event.override_id] = Override(event)
        elif isinstance(event, OverrideApproved | OverrideReviewed | OverrideLapsed):
            override = entry.overrides.get(event.override_id)
            if override is None:
                return  # a log always holds the request first
            if isinstance(event, OverrideApproved):
                override.approval = event
                entry.latest_override = event.override_id
            elif isinstance(event, OverrideReviewed):
                override.review = event
            else:
                override.lapse = event
        elif isinstance(event, ReferralResumed):
            if entry.held_at is not None and entry.resume_to is not None:
                entry.due = entry.due.after_hold(
                    entry.resume_to, entry.escalated, entry.held_at, event.timestamp
                )
            entry.held_at = entry.resume_to = None
            entry.status = event.to_status
        else:
            if isinstance(event, ReferralDispatched):
                entry.dispatched = True
                entry.due = DueTimes(event.acknowledge_by, event.first_service_by)
            elif isinstance(event, ReferralPutOnHold):
                entry.held_at = event.timestamp
                entry.resume_to = event.resume_to
            entry.status = STATUS_OF[type(event)]

    def referrals_where(
        self,
        *,
        to_agency_id: str | None = None,
        case_id: UUID | None = None,
        provinces: frozenset[str] | None = None,
        status: ReferralStatus | None = None,
    ) -> list[ReferralEntry]:
        self.refresh()
        return [
            e
            for e in self.referrals.values()
            if (to_agency_id is None or e.to_agency_id == to_agency_id)
            and (case_id is None or e.case_id == case_id)
            and (provinces is None or e.province in provinces)
            and (status is None or e.status is status)
        ]

    def with_deadlines_due(self, now: datetime) -> list[UUID]:
        """Referrals with a deadline missed by ``now`` and not yet escalated."""
        self.refresh()
        entries = self.referrals.values()
        return [e.referral_id for e in entries if e.due.missed(e.status, e.escalated, now)]

    def with_overrides_ended(self, now: datetime) -> list[UUID]:
        """Open referrals whose emergency override passed its end by ``now`` with neither a
        review nor a lapse on record: they must follow the consent in force again."""
        self.refresh()
        return [
            e.referral_id
            for e in self.referrals.values()
            if e.status not in TERMINAL_STATUSES
            and override_past_its_end(e.overrides, e.latest_override, now) is not None
        ]
