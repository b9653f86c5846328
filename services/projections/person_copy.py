"""The person's own copy: everything Ketnoi holds about one case's person, to print and keep.

Seed 002: the person is told how their data is stored and how they can see it. The copy is
read from the logs themselves, not from the read models: the record as intake holds it, the
consent record (every grant, refusal, renewal and withdrawal), the referrals and handovers of
the case with every disclosure (to whom, when, on which basis, which fields), and every
recorded read of the person's data (from the read audit). It names agencies and roles, never
the staff's user ids.

A copy is itself a read of everything about the person: the route records it before it
answers, and it appears in the next copy's reads. It ends with a signed checkpoint of every
log, made after it was read (``sealed_now``, through recorders the service keeps open):
anyone with Ketnoi's public key can check that the logs the copy was read from held those
events, and that nothing was removed since.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

from contracts import referral as r
from contracts.audit import PersonalDataRead
from contracts.consent import consent_record_id
from contracts.envelope import Event
from services.projections.replay import history
from services.runtime.follower import Upstream
from services.runtime.seal.operations import Checkpoints

COPY_VERSION = "ketnoi-person-copy-1"
# What an entry of the copy leaves out of an event: ids of the record and of the staff.
_ENVELOPE = {"originator_id", "originator_version", "timestamp", "actor", "caused_by"}
_ENVELOPE |= {"correlation_id"}


def entry(event: Event) -> dict[str, Any]:
    """One fact of the copy: when, what, by which agency in which role, and what it said."""
    return {
        "at": event.timestamp.isoformat(),
        "what": event.event_type,
        "by_agency": event.actor.agency_id,
        "by_role": event.actor.role.value,
        "facts": event.model_dump(mode="json", exclude=_ENVELOPE),
    }


def disclosure_entry(referral: r.ReferralCreated, event: r.DisclosureRecorded) -> dict[str, Any]:
    return {
        "at": event.timestamp.isoformat(),
        "referral_id": str(event.originator_id),
        "to_agency": event.recipient.agency_id,
        "service_type": referral.service_type.value,
        "purpose": event.purpose.value,
        "basis": event.basis.value,
        "grant_ids": sorted({str(f.grant_id) for f in event.released if f.grant_id}),
        "override_id": str(event.override_id) if event.override_id else None,
        "released": [{"category": f.category.value, "field": f.field} for f in event.released],
        "flagged_for_review": event.flagged_for_review,
    }


def read_entry(read: PersonalDataRead) -> dict[str, Any]:
    return {
        "at": read.timestamp.isoformat(),
        "by_agency": read.actor.agency_id,
        "by_role": read.actor.role.value,
        "categories": [c.value for c in read.categories],
        "basis": read.basis.value,
        "what": read.what,
        "grant_ids": [str(g) for g in read.grant_ids],
        "override_id": str(read.override_id) if read.override_id else None,
        "reason": read.reason,
    }


def person_copy(
    upstreams: dict[str, Upstream],
    case_id: UUID,
    referral_ids: Iterable[str],
    handover_ids: Iterable[str],
    reads: Iterable[PersonalDataRead],
    produced_at: datetime,
) -> dict[str, Any] | None:
    """The copy of everything held about the case's person, or None when intake does not
    hold the case. Entries are in the order they happened within each section."""
    record = history(upstreams["intake"], case_id)
    if not record:
        return None
    consent = history(upstreams["consent"], consent_record_id(case_id))
    referrals: list[dict[str, Any]] = []
    disclosures: list[dict[str, Any]] = []
    for referral_id in referral_ids:
        events = history(upstreams["referral"], UUID(referral_id))
        if not events or not isinstance(events[0], r.ReferralCreated):
            continue
        created = events[0]
        referrals.append(
            {
                "referral_id": referral_id,
                "to_agency": created.to_agency.agency_id,
                "from_agency": created.from_agency.agency_id,
                "service_type": created.service_type.value,
                "purpose": created.purpose.value,
                "categories": [c.value for c in created.categories],
                "steps": [
                    {"at": e.timestamp.isoformat(), "what": e.event_type, "by": e.actor.agency_id}
                    for e in events
                ],
            }
        )
        disclosures += [
            disclosure_entry(created, e) for e in events if isinstance(e, r.DisclosureRecorded)
        ]
    handovers = []
    for handover_id in handover_ids:
        events = history(upstreams["referral"], UUID(handover_id))
        if events:
            handovers.append({"handover_id": handover_id, "steps": [entry(e) for e in events]})
    person_ids = {str(p) for e in consent if (p := getattr(e, "person_id", None)) is not None}
    return {
        "copy_version": COPY_VERSION,
        "case_id": str(case_id),
        "person_ids": sorted(person_ids),
        "produced_at": produced_at.isoformat(),
        "record": [entry(e) for e in record],
        "consent": [entry(e) for e in consent],
        "referrals": referrals,
        "disclosures": sorted(disclosures, key=lambda d: d["at"]),
        "handovers": handovers,
        "reads": [read_entry(read) for read in reads],
    }


def sealed_now(checkpoints: Checkpoints) -> list[dict[str, Any]]:
    """A checkpoint of every log as it stands now (signed first where it grew since its last
    one, else the latest stored, which covers the log's head): the proof that the copy, read
    before, was read from the sealed record."""
    return [
        {"log": log, "size": size, "checkpoint": text}
        for log, size, text in checkpoints.sealed_now()
    ]
