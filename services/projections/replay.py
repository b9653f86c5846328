"""Auditors' replay: a case as it stood across all services at an instant, and who could see
what then. The case overview tells which referrals and handovers belong to the case; their
state as of the instant comes from the logs themselves."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import EventStore

from contracts import intake as i
from contracts import referral as r
from contracts.consent import consent_record_id
from contracts.consent_decision import state_at
from contracts.envelope import Event
from services.runtime.errors import NotFoundError
from services.runtime.follower import Upstream


class CaseNotKnownError(NotFoundError):
    def __init__(self, case_id: UUID) -> None:
        super().__init__(f"No case {case_id} in the logs you may see.", case_id=str(case_id))


def _history(upstream: Upstream, originator_id: UUID, at: datetime) -> list[Event]:
    store: EventStore[UUID] = EventStore(mapper=upstream.mapper, recorder=upstream.recorder)
    return [e for e in store.get(originator_id) if isinstance(e, Event) and e.timestamp <= at]


def replay_case(
    upstreams: dict[str, Upstream],
    case_id: UUID,
    at: datetime,
    referral_ids: list[str],
    handover_ids: list[str],
) -> dict[str, Any]:
    """The case as of ``at``; raises CaseNotKnownError when it was not yet received."""
    intake_events = _history(upstreams["intake"], case_id, at)
    if not intake_events:
        raise CaseNotKnownError(case_id)
    case = _fold_intake(intake_events)
    consent_events = _history(upstreams["consent"], consent_record_id(case_id), at)
    consent = _fold_consent(consent_events, at)
    referrals, visible = [], []
    for referral_id in referral_ids:
        events = _history(upstreams["referral"], UUID(referral_id), at)
        if not events:
            continue  # created after the instant
        referral, disclosure = _fold_referral(events)
        referrals.append(referral)
        if disclosure is not None and referral["status"] not in ("draft", "on-hold"):
            visible.append(disclosure)
    handovers = []
    for handover_id in handover_ids:
        events = _history(upstreams["referral"], UUID(handover_id), at)
        if events:
            handovers.append(_fold_handover(events))
    return {
        "case_id": str(case_id),
        "as_of": at.isoformat(),
        "intake": case,
        "consent": consent,
        "referrals": referrals,
        "handovers": handovers,
        "who_could_see_what": visible,
    }


def _fold_intake(events: list[Event]) -> dict[str, Any]:
    state: dict[str, Any] = {"stage": "reception", "episodes": 1, "person_registered": False}
    for e in events:
        if isinstance(e, i.ReceptionRecorded):
            state.update(
                province=e.place.province,
                received_at=e.received_at.isoformat(),
                receiving_agency=e.receiving_agency.agency_id,
            )
        elif isinstance(e, i.PersonRegistered | i.PersonDetailsCorrected):
            state.update(person_registered=True, minor=e.minor)
        elif isinstance(e, i.StageChanged):
            state["stage"] = e.to_stage.value
        elif isinstance(e, i.CaseClosed):
            state["stage"] = "closed"
        elif isinstance(e, i.CaseReopened):
            state.update(stage=e.to_stage.value, episodes=e.episode)
        elif isinstance(e, i.CaseManagerAssigned):
            state["case_manager"] = e.case_manager_id
    state["version"] = events[-1].originator_version
    return state


def _fold_consent(events: list[Event], at: datetime) -> dict[str, Any]:
    consent = state_at(events, at)
    return {
        "grants_in_force": [
            {
                "grant_id": str(g.grant.grant_id),
                "categories": [x.value for x in g.grant.categories],
                "recipients": [
                    x.model_dump(mode="json", exclude_none=True) for x in g.grant.recipients
                ],
                "purposes": [p.value for p in g.grant.purposes],
                "valid_until": g.valid_until.isoformat(),
                "given_by": g.grant.given_by.kind.value,
            }
            for g in consent.grants_in_force(at)
        ],
        "withdrawn": [str(g) for g, s in consent.grants.items() if s.withdrawn_at],
        "refusals_in_force": [str(x.refusal_id) for x in consent.refusals_in_force()],
        # From 18 (or once found adult) only the person's own grants count.
        "subject_is_adult": consent.own_consent_needed(at),
    }


_STATUS = {
    r.ReferralDispatched: "requested",
    r.ReferralAcknowledged: "received",
    r.ReferralAccepted: "accepted",
    r.ReferralRejected: "rejected",
    r.ReferralStarted: "in-progress",
    r.ReferralCompleted: "completed",
    r.ReferralCancelled: "cancelled",
    r.ReferralFailed: "failed",
    r.ReferralPutOnHold: "on-hold",
}


def _fold_referral(events: list[Event]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    created = events[0]
    assert isinstance(created, r.ReferralCreated)
    status, disclosure = "draft", None
    for e in events[1:]:
        if isinstance(e, r.ReferralResumed):
            status = e.to_status.value
        elif type(e) in _STATUS:
            status = _STATUS[type(e)]
        elif isinstance(e, r.DisclosureRecorded):
            disclosure = {
                "agency": e.recipient.agency_id,
                "referral_id": str(created.originator_id),
                "since": e.timestamp.isoformat(),
                "basis": e.basis.value,
                "categories": sorted({f.category.value for f in e.released}),
                "fields": [f"{f.category.value}.{f.field}" for f in e.released],
                "grant_ids": sorted({str(f.grant_id) for f in e.released if f.grant_id}),
            }
    referral = {
        "referral_id": str(created.originator_id),
        "to_agency": created.to_agency.agency_id,
        "service_type": created.service_type.value,
        "status": status,
    }
    return referral, disclosure


def _fold_handover(events: list[Event]) -> dict[str, Any]:
    started = events[0]
    assert isinstance(started, r.HandoverStarted)
    waiting = [p.agency.agency_id for p in started.parties]
    status = "open"
    for e in events[1:]:
        if isinstance(e, r.HandoverConfirmed):
            waiting = [a for a in waiting if a != e.agency_id]
        elif isinstance(e, r.HandoverCompleted):
            status = "completed"
        elif isinstance(e, r.HandoverCancelled):
            status = "cancelled"
    return {"handover_id": str(started.originator_id), "status": status, "waiting_for": waiting}
