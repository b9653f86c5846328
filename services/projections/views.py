"""The read models, as functions from events to documents.

Each view keeps its own documents (``case:<id>``, ``ref:<id>``...) and the few links it needs
(``rec:<consent record id>`` -> case), always learnt from the same log as the events that use
them, so a view gives the same documents whatever order the logs are merged in.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar
from uuid import UUID

from contracts import consent as c
from contracts import intake as i
from contracts import referral as r
from contracts.envelope import Event
from contracts.vocabulary import Purpose

Doc = dict[str, Any]

STEP_SERVICES = ("health_check", "psychological_first_aid", "safe_accommodation")
TERMINAL = {s.value for s in r.TERMINAL_STATUSES}


class Docs:
    """The documents of one view that a batch of events touches."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader
        self.rows: dict[str, tuple[str | None, str | None, Doc]] = {}
        self.dirty: set[str] = set()

    def get(self, key: str) -> Doc | None:
        if key not in self.rows:
            loaded = self._loader(key)
            if loaded is None:
                return None
            self.rows[key] = loaded
        return self.rows[key][2]

    def put(
        self, key: str, doc: Doc, province: str | None = None, agency: str | None = None
    ) -> None:
        self.rows[key] = (province, agency, doc)
        self.dirty.add(key)

    def touch(self, key: str, province: str | None = None, agency: str | None = None) -> None:
        """Mark a document changed, setting its columns where given."""
        old_province, old_agency, doc = self.rows[key]
        self.rows[key] = (province or old_province, agency or old_agency, doc)
        self.dirty.add(key)


class View:
    name: ClassVar[str]
    handles: ClassVar[dict[str, tuple[type[Event], ...]]]

    def apply(self, docs: Docs, upstream: str, event: Event) -> None:
        raise NotImplementedError

    def finalize(self, doc: Doc) -> None:
        """Called on each document before it is written."""


def _case_of(docs: Docs, link: str) -> str | None:
    found = docs.get(link)
    return found["case_id"] if found else None


def _at(event: Event) -> str:
    return event.timestamp.isoformat()


# -- the case overview: the coordinator's board, and the statistics ---------------------------


class CasesView(View):
    """One document per case: where it stands, its handovers, and each referral's steps."""

    name = "cases"
    handles = {
        "intake": (
            i.ReceptionRecorded,
            i.PersonRegistered,
            i.PersonDetailsCorrected,
            i.StageChanged,
            i.CaseClosed,
            i.CaseReopened,
        ),
        "consent": (c.ConsentRecordOpened, c.ConsentGranted, c.ConsentWithdrawn),
        "referral": (
            r.ReferralCreated,
            r.ReferralDispatched,
            r.ReferralAcknowledged,
            r.ReferralAccepted,
            r.ReferralRejected,
            r.ReferralStarted,
            r.ReferralCompleted,
            r.ReferralCancelled,
            r.ReferralFailed,
            r.ReferralPutOnHold,
            r.ReferralResumed,
            r.DeadlineMissed,
            r.HandoverStarted,
            r.HandoverConfirmed,
            r.HandoverCompleted,
            r.HandoverCancelled,
        ),
    }

    @staticmethod
    def case(docs: Docs, case_id: str, province: str | None = None) -> Doc:
        key = f"case:{case_id}"
        doc = docs.get(key)
        if doc is None:
            doc = {
                "case_id": case_id,
                "province": province,
                "received_at": None,
                "route": None,
                "stage": None,
                "closed": False,
                "reopenings": 0,
                "minor": None,
                "statistics_grants": [],
                "withdrawn_grants": [],
                "referrals": {},
                "handovers": {},
            }
        if province and not doc.get("province"):
            doc["province"] = province
        docs.put(key, doc, province=doc.get("province"))
        return doc

    def apply(self, docs: Docs, upstream: str, event: Event) -> None:
        if upstream == "intake":
            self._intake(docs, event)
        elif upstream == "consent":
            self._consent(docs, event)
        else:
            self._referral(docs, event)

    def _intake(self, docs: Docs, e: Event) -> None:
        case_id = str(e.originator_id)
        if isinstance(e, i.ReceptionRecorded):
            doc = self.case(docs, case_id, e.place.province)
            doc.update(
                received_at=e.received_at.isoformat(),
                route=e.route.value,
                receiving_agency=e.receiving_agency.agency_id,
            )
            doc["stage"] = doc["stage"] or "reception"
            return
        doc = self.case(docs, case_id)
        if isinstance(e, i.PersonRegistered | i.PersonDetailsCorrected):
            doc["minor"] = e.minor
        elif isinstance(e, i.StageChanged):
            doc["stage"] = e.to_stage.value
        elif isinstance(e, i.CaseClosed):
            doc.update(stage="closed", closed=True, closed_at=_at(e), closure_reason=e.reason.value)
        elif isinstance(e, i.CaseReopened):
            doc.update(stage=e.to_stage.value, closed=False)
            doc["reopenings"] += 1

    def _consent(self, docs: Docs, e: Event) -> None:
        if isinstance(e, c.ConsentRecordOpened):
            docs.put(f"rec:{e.originator_id}", {"case_id": str(e.case_id)})
            self.case(docs, str(e.case_id), e.province)
            return
        case_id = _case_of(docs, f"rec:{e.originator_id}")
        if case_id is None:
            return
        doc = self.case(docs, case_id)
        if isinstance(e, c.ConsentGranted) and Purpose.STATISTICS in e.purposes:
            doc["statistics_grants"].append(str(e.grant_id))
        elif isinstance(e, c.ConsentWithdrawn):
            doc["withdrawn_grants"].append(str(e.grant_id))

    def _referral(self, docs: Docs, e: Event) -> None:
        rid = str(e.originator_id)
        if isinstance(e, r.ReferralCreated):
            docs.put(f"ref:{rid}", {"case_id": str(e.case_id)})
            doc = self.case(docs, str(e.case_id), e.province)
            doc["referrals"][rid] = {
                "service_type": e.service_type.value,
                "to_agency": e.to_agency.agency_id,
                "from_agency": e.from_agency.agency_id,
                "urgency": e.urgency.value,
                "status": "draft",
                "created_at": _at(e),
                "dispatched_at": None,
                "acknowledged_at": None,
                "started_at": None,
                "ended_at": None,
                "escalations": [],
            }
            return
        if isinstance(e, r.HandoverStarted):
            docs.put(f"hand:{rid}", {"case_id": str(e.case_id)})
            doc = self.case(docs, str(e.case_id), e.province)
            parties = [p.agency.agency_id for p in e.parties]
            doc["handovers"][rid] = {
                "kind": e.kind.value,
                "parties": parties,
                "waiting_for": parties,
                "started_at": _at(e),
                "completed_at": None,
                "seconds_by_party": {},
                "status": "open",
            }
            return
        if isinstance(e, r.HandoverConfirmed | r.HandoverCompleted | r.HandoverCancelled):
            case_id = _case_of(docs, f"hand:{rid}")
            assert case_id is not None
            handover = self.case(docs, case_id)["handovers"][rid]
            if isinstance(e, r.HandoverConfirmed):
                handover["waiting_for"] = [a for a in handover["waiting_for"] if a != e.agency_id]
                handover["seconds_by_party"][e.agency_id] = e.waited_seconds
            elif isinstance(e, r.HandoverCompleted):
                handover.update(status="completed", completed_at=_at(e))
            else:
                handover["status"] = "cancelled"
            return
        case_id = _case_of(docs, f"ref:{rid}")
        assert case_id is not None
        ref = self.case(docs, case_id)["referrals"][rid]
        if isinstance(e, r.DeadlineMissed):
            ref["escalations"].append(
                {"deadline": e.deadline.value, "due_at": e.due_at.isoformat()}
            )
            return
        status = _STATUS.get(type(e))
        if isinstance(e, r.ReferralResumed):
            status = e.to_status.value
        if isinstance(e, r.ReferralDispatched):
            ref["dispatched_at"] = _at(e)
        elif isinstance(e, r.ReferralAcknowledged):
            ref["acknowledged_at"] = _at(e)
        elif isinstance(e, r.ReferralStarted):
            ref["started_at"] = _at(e)
        if status in TERMINAL:
            ref["ended_at"] = _at(e)
        if status:
            ref["status"] = status


_STATUS: dict[type[Event], str] = {
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


def statistics_consent(doc: Doc) -> bool:
    """The case counts in statistics only while a statistics grant stands."""
    return bool(set(doc["statistics_grants"]) - set(doc["withdrawn_grants"]))


# -- the agency queue ---------------------------------------------------------------------


class QueueView(View):
    """One document per referral sent to an agency: what the agency owes, and by when."""

    name = "queue"
    handles = {
        "referral": (r.ReferralCreated, *tuple(_STATUS), r.ReferralResumed, r.DeadlineMissed)
    }

    def apply(self, docs: Docs, upstream: str, event: Event) -> None:
        key = f"ref:{event.originator_id}"
        if isinstance(event, r.ReferralCreated):
            docs.put(
                key,
                {
                    "referral_id": str(event.originator_id),
                    "case_id": str(event.case_id),
                    "to_agency": event.to_agency.agency_id,
                    "from_agency": event.from_agency.agency_id,
                    "service_type": event.service_type.value,
                    "urgency": event.urgency.value,
                    "status": "draft",
                    "acknowledge_by": None,
                    "first_service_by": None,
                    "escalated": [],
                    "updated_at": _at(event),
                },
                province=event.province,
            )
            return
        doc = docs.get(key)
        assert doc is not None
        if isinstance(event, r.ReferralDispatched):
            doc.update(
                acknowledge_by=event.acknowledge_by.isoformat(),
                first_service_by=event.first_service_by.isoformat(),
            )
        if isinstance(event, r.DeadlineMissed):
            doc["escalated"].append(event.deadline.value)
        else:
            doc["status"] = (
                event.to_status.value
                if isinstance(event, r.ReferralResumed)
                else _STATUS[type(event)]
            )
        doc["updated_at"] = _at(event)
        doc["waiting_for"] = _waiting_for(doc["status"])
        # Until it is sent, a referral is nobody's queue.
        agency = doc["to_agency"] if doc["status"] != "draft" else None
        docs.touch(key, agency=agency)


def _waiting_for(status: str) -> str | None:
    return {
        "requested": "acknowledgement",
        "received": "acceptance",
        "accepted": "first service",
        "in-progress": "outcome",
        "on-hold": "consent",
    }.get(status)


# -- the case timeline --------------------------------------------------------------------


class TimelineView(View):
    """One ordered story of each case across intake, consent and referral."""

    name = "timeline"
    handles = {
        "intake": i.INTAKE_EVENTS,
        # Not the facts the consent service copies from intake: the story tells them once.
        "consent": tuple(
            t for t in c.CONSENT_EVENTS if t not in (c.SubjectAgeNoted, c.CaseStageNoted)
        ),
        "referral": (*r.REFERRAL_EVENTS, *r.HANDOVER_EVENTS),
    }

    def apply(self, docs: Docs, upstream: str, event: Event) -> None:
        # Every event passes here on a rebuild: keep this path lean (no sorting, no lookups
        # of attributes an event may not have).
        oid = str(event.originator_id)
        case_id = self._case_id(docs, upstream, event, oid)
        if case_id is None or isinstance(event, c.ConsentRecordOpened):
            return
        key = "case:" + case_id
        doc = docs.get(key)
        fields = event.__dict__
        if doc is None:
            doc = {"case_id": case_id, "entries": []}
        actor = event.actor
        entry = {
            "at": event.timestamp.isoformat(),
            "service": upstream,
            "type": event.event_type,
            "what": describe(event),
            "actor": {
                "user_id": actor.user_id,
                "agency_id": actor.agency_id,
                "role": actor.role.value,
            },
            "seq": f"{oid}:{event.originator_version:09d}",
        }
        grant = fields.get("grant_id")
        if grant:
            entry["grant_id"] = str(grant)
        if isinstance(event, r.DisclosureRecorded):
            entry["grants"] = sorted({str(f.grant_id) for f in event.released if f.grant_id})
        doc["entries"].append(entry)
        province = fields.get("province")
        if province is None and isinstance(event, i.ReceptionRecorded):
            province = event.place.province
        known = docs.rows.get(key)
        docs.put(key, doc, province=province or (known[0] if known else None))

    def finalize(self, doc: Doc) -> None:
        if "entries" in doc:
            doc["entries"].sort(key=_entry_order)

    def _case_id(self, docs: Docs, upstream: str, e: Event, oid: str) -> str | None:
        if upstream == "intake":
            return oid
        if isinstance(e, c.ConsentRecordOpened | r.ReferralCreated | r.HandoverStarted):
            case_id = str(e.case_id)
            docs.put(("rec:" if upstream == "consent" else "ref:") + oid, {"case_id": case_id})
            return case_id
        return _case_of(docs, ("rec:" if upstream == "consent" else "ref:") + oid)


def _entry_order(entry: Doc) -> tuple[str, str, str]:
    return entry["at"], entry["service"], entry["seq"]


def _province(e: Event) -> str | None:
    if isinstance(e, i.ReceptionRecorded):
        return e.place.province
    return getattr(e, "province", None)


def describe(e: Event) -> str:
    """A newcomer's sentence for an event, without personal data."""
    name = type(e).__name__
    if isinstance(e, i.ReceptionRecorded):
        return f"Received ({e.route.value}) by {e.receiving_agency.agency_id} in {e.place.province}"
    if isinstance(e, i.StageChanged):
        return f"Stage {e.from_stage.value} -> {e.to_stage.value}"
    if isinstance(e, i.CaseClosed):
        return f"Case closed: {e.reason.value}"
    if isinstance(e, i.CaseReopened):
        return f"Reopened as episode {e.episode}: {e.reason.value}"
    if isinstance(e, i.RapidNeedsAssessed):
        return "Urgent needs: " + ", ".join(n.value for n in e.needs)
    if isinstance(e, i.RiskAssessed):
        return f"Risk assessed: {e.level.value}"
    if isinstance(e, i.ContactPreferenceRecorded):
        refused = ", ".join(m.value for m in e.refused) or "none"
        return "Contact: " + ", ".join(m.value for m in e.preferred) + f"; refused: {refused}"
    if isinstance(e, i.CaseManagerAssigned):
        return f"Case manager {e.case_manager_id} ({e.agency.agency_id})"
    if isinstance(e, c.ConsentGranted):
        return (
            f"Consent granted by {e.given_by.kind.value}: "
            + ", ".join(x.value for x in e.categories)
            + " for "
            + ", ".join(p.value for p in e.purposes)
        )
    if isinstance(e, c.ConsentRefused):
        return "Refusal recorded"
    if isinstance(e, c.ConsentWithdrawn):
        return f"Consent withdrawn (heard by {e.heard_by.agency_id})"
    if isinstance(e, r.ReferralCreated):
        return f"Referral to {e.to_agency.agency_id} for {e.service_type.value}"
    if isinstance(e, r.DisclosureRecorded):
        fields = len(e.released)
        return f"Disclosed {fields} fields to {e.recipient.agency_id} ({e.basis.value})"
    if isinstance(e, r.ReferralBlocked):
        return "Waiting: consent for " + ", ".join(w.category.value for w in e.withheld)
    if isinstance(e, r.ReferralPutOnHold):
        return "On hold: consent for " + ", ".join(w.category.value for w in e.withheld)
    if isinstance(e, r.DeadlineMissed):
        return f"Deadline missed: {e.deadline.value}"
    if isinstance(e, r.HandoverStarted):
        return "Handover: " + " / ".join(
            f"{p.agency.agency_id} ({p.role.value})" for p in e.parties
        )
    if isinstance(e, r.HandoverConfirmed):
        return f"Handover confirmed by {e.agency_id} after {e.waited_seconds / 60:.0f} min"
    return _sentence(name)


@functools.cache
def _sentence(class_name: str) -> str:
    """``ReferralAcknowledged`` -> ``Referral acknowledged``."""
    words = "".join(f" {ch.lower()}" if ch.isupper() else ch for ch in class_name).strip()
    return words[:1].upper() + words[1:]


VIEWS: dict[str, View] = {view.name: view for view in (CasesView(), QueueView(), TimelineView())}


def case_key(case_id: UUID | str) -> str:
    return f"case:{case_id}"
