"""Who can find which referral: an index kept from the referral service's own log.

It reads only the lifecycle events (never disclosures), catches up incrementally before
each use, and can always be rebuilt from the log, so several processes of the service each
keep their own.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from eventsourcing.persistence import ApplicationRecorder

from contracts.envelope import Event
from contracts.referral import (
    DeadlineKind,
    DeadlineMissed,
    HandoverCancelled,
    HandoverCompleted,
    HandoverStarted,
    ReferralAccepted,
    ReferralAcknowledged,
    ReferralCancelled,
    ReferralCompleted,
    ReferralCreated,
    ReferralDispatched,
    ReferralFailed,
    ReferralPutOnHold,
    ReferralRejected,
    ReferralResumed,
    ReferralStarted,
    ReferralStatus,
)
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
)


@dataclass
class ReferralEntry:
    referral_id: UUID
    case_id: UUID
    province: str
    from_agency_id: str
    to_agency_id: str
    status: ReferralStatus = S.DRAFT
    acknowledge_by: datetime | None = None
    first_service_by: datetime | None = None
    escalated: set[DeadlineKind] = field(default_factory=set)
    dispatched: bool = False


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
    position: int = 0
    referrals: dict[UUID, ReferralEntry] = field(default_factory=dict)
    handovers: dict[UUID, HandoverEntry] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def refresh(self) -> None:
        mapper = new_mapper()
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
            entry = self.referrals[event.originator_id]
            if isinstance(event, ReferralDispatched):
                entry.dispatched = True
                entry.acknowledge_by = event.acknowledge_by
                entry.first_service_by = event.first_service_by
            if isinstance(event, DeadlineMissed):
                entry.escalated.add(event.deadline)
            elif isinstance(event, ReferralResumed):
                entry.status = event.to_status
            else:
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
        self.refresh()
        due = []
        for e in self.referrals.values():
            ack_due = (
                e.status is S.REQUESTED
                and DeadlineKind.ACKNOWLEDGE not in e.escalated
                and e.acknowledge_by is not None
                and now > e.acknowledge_by
            )
            service_due = (
                e.status in (S.REQUESTED, S.RECEIVED, S.ACCEPTED)
                and DeadlineKind.FIRST_SERVICE not in e.escalated
                and e.first_service_by is not None
                and now > e.first_service_by
            )
            if ack_due or service_due:
                due.append(e.referral_id)
        return due
