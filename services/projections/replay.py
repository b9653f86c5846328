"""Auditors' replay: a case as it stood across all services at an instant, and who could see
what then. The case overview tells which referrals and handovers belong to the case; their
state as of the instant comes from the logs themselves."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.persistence import EventStore

from contracts import intake as i
from contracts import referral as r
from contracts.access_policy import Asker, CaseTies, sight
from contracts.consent import consent_record_id
from contracts.consent_decision import decide, state_at
from contracts.envelope import Event
from contracts.vocabulary import DataCategory, Role
from services.runtime.errors import NotFoundError
from services.runtime.follower import Upstream


class CaseNotKnownError(NotFoundError):
    def __init__(self, case_id: UUID) -> None:
        super().__init__(f"No case {case_id} in the logs you may see.", case_id=str(case_id))


def history(upstream: Upstream, originator_id: UUID, at: datetime | None = None) -> list[Event]:
    """One aggregate's events in a log, up to instant ``at`` (all of them without it)."""
    store: EventStore[UUID] = EventStore(mapper=upstream.mapper, recorder=upstream.recorder)
    return [
        e
        for e in store.get(originator_id)
        if isinstance(e, Event) and (at is None or e.timestamp <= at)
    ]


def replay_case(
    upstreams: dict[str, Upstream],
    case_id: UUID,
    at: datetime,
    referral_ids: list[str],
    handover_ids: list[str],
) -> dict[str, Any]:
    """The case as of ``at``; raises CaseNotKnownError when it was not yet received."""
    intake_events = history(upstreams["intake"], case_id, at)
    if not intake_events:
        raise CaseNotKnownError(case_id)
    case = _fold_intake(intake_events)
    consent_events = history(upstreams["consent"], consent_record_id(case_id), at)
    consent = _fold_consent(consent_events, at)
    referrals, visible = [], []
    for referral_id in referral_ids:
        events = history(upstreams["referral"], UUID(referral_id), at)
        if not events:
            continue  # created after the instant
        referral, disclosure = _fold_referral(events)
        referrals.append(referral)
        seen = _seen_then(events, disclosure, consent_events, at)
        if seen is not None:
            visible.append(seen)
    handovers = []
    for handover_id in handover_ids:
        events = history(upstreams["referral"], UUID(handover_id), at)
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
    r.ReferralDeclinedByPerson: "cancelled",
    r.ReferralFailed: "failed",
    r.ReferralPutOnHold: "on-hold",
}


def _seen_then(
    events: list[Event],
    disclosure: dict[str, Any] | None,
    consent_events: list[Event],
    at: datetime,
) -> dict[str, Any] | None:
    """What the recipient of a sent referral could read at ``at``, by the same access policy
    and consent decision that serve its reads: the disclosed categories the consent in force
    then permitted (or all of them under an approved override still in force)."""
    created = events[0]
    assert isinstance(created, r.ReferralCreated)
    if disclosure is None or not any(isinstance(e, r.ReferralDispatched) for e in events):
        return None
    recipient = created.to_agency.agency_id
    ties = CaseTies(province=created.province, recipients=frozenset({recipient}))
    asker = Asker("replay", recipient, created.province, frozenset({Role.AGENCY_STAFF}))
    disclosed = tuple(DataCategory(c) for c in disclosure["categories"])
    override = _override_then(events, at)
    consent = decide(
        consent_events,
        recipient=created.to_agency,
        purpose=created.purpose,
        categories=disclosed,
        at=at,
    )
    seen = sight(asker, ties, disclosed, consent=consent, override_id=override)
    if not seen.categories:
        return None
    return {
        **disclosure,
        "categories": sorted(c.value for c in seen.categories),
        "fields": [f for f in disclosure["fields"] if f.split(".", 1)[0] in seen.categories],
        "grant_ids": sorted(str(g) for g in seen.grant_ids),
        "basis_then": seen.basis.value if seen.basis else None,
    }


def _override_then(events: list[Event], at: datetime) -> UUID | None:
    """The override in force at ``at`` (approved, not reviewed or lapsed, not past its end)."""
    requested: dict[UUID, r.OverrideRequested] = {}
    approved: dict[UUID, datetime] = {}
    ended: set[UUID] = set()
    for e in events:
        if isinstance(e, r.OverrideRequested):
            requested[e.override_id] = e
        elif isinstance(e, r.OverrideApproved):
            approved[e.override_id] = e.timestamp
        elif isinstance(e, r.OverrideReviewed | r.OverrideLapsed):
            ended.add(e.override_id)
    for override_id, since in approved.items():
        hours = requested[override_id].needed_for_hours if override_id in requested else 0
        if override_id not in ended and at < since + timedelta(hours=hours):
            return override_id
    return None


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
