"""The read models, as functions from stored facts to documents.

Views read events as they were stored (validated when they were written, upcast to the
current version by ``contracts``), as plain JSON: they need the recorded facts, not the
objects, and this keeps a rebuild of every view close to the cost of reading the logs.

Each view keeps its own documents (``case:<id>``, ``ref:<id>``...) and the few links it needs
(``rec:<consent record id>`` -> case), always learnt from the same log as the events that use
them, so a view gives the same documents whatever order the logs are merged in.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

import orjson
from eventsourcing.persistence import Mapper, Notification
from pydantic import TypeAdapter

from contracts import casework as w
from contracts import consent as c
from contracts import erasure as e
from contracts import intake as i
from contracts import plan as pl
from contracts import referral as r
from contracts.access_policy import CaseTies
from contracts.deadlines import DueTimes
from contracts.envelope import Event, resolve
from contracts.referral import DeadlineKind, ReferralStatus
from contracts.vocabulary import DataCategory
from services.projections.statistics import counted
from services.runtime.persistence import OrjsonTranscoder, open_all

Doc = dict[str, Any]
Loader = Callable[[str], tuple[Any, Any, Any] | None]

STEP_SERVICES = ("health_check", "psychological_first_aid", "safe_accommodation")
TERMINAL = {s.value for s in r.TERMINAL_STATUSES}
ID_CACHE_SIZE = 100_000


@dataclass(slots=True)
class Fact:
    """One stored event, as the views read it."""

    type: str  # e.g. org.ketnoi.intake.reception_recorded
    originator_id: str
    version: int
    at: str  # ISO 8601, as stored
    data: dict[str, Any]


def fact_reader(mapper: Mapper[Any]) -> Callable[[Sequence[Notification]], list[Fact]]:
    """How to read a batch of one log's stored events as facts, decided once rather than
    per event. The persons' keys for the batch are read in one query (``open_all``)."""
    cipher, compressor = mapper.cipher, mapper.compressor
    decode: Callable[[bytes], Any] = mapper.transcoder.decode
    if isinstance(mapper.transcoder, OrjsonTranscoder):
        decode = orjson.loads  # the same, without a method call per event

    # An aggregate's events come several at a time: formatting its id once (str() of a UUID
    # is pure Python) is a fifth of the cost of reading the JSON. Bounded for a long follower.
    ids: dict[int | str, str] = {}

    def state_of(notification: Notification) -> dict[str, Any]:
        state = notification.state
        if cipher:
            state = cipher.decrypt(state)
        if compressor:
            state = compressor.decompress(state)
        data: dict[str, Any] = decode(state)
        return data

    def read(notifications: Sequence[Notification]) -> list[Fact]:
        states = [state_of(notification) for notification in notifications]
        open_all(mapper, notifications, states)
        facts = []
        for notification, state in zip(notifications, states, strict=True):
            cls, data = resolve(notification.topic, state)
            uuid = notification.originator_id
            key = uuid.int if isinstance(uuid, UUID) else uuid
            originator_id = ids.get(key)
            if originator_id is None:
                if len(ids) >= ID_CACHE_SIZE:
                    ids.clear()
                originator_id = ids[key] = str(uuid)
            facts.append(
                Fact(
                    cls.event_type,
                    originator_id,
                    notification.originator_version,
                    data["timestamp"],
                    data,
                )
            )
        return facts

    return read


def _name(event_type: type[Event]) -> str:
    return event_type.event_type


class Docs:
    """The documents of one view that a batch of events touches."""

    def __init__(self, loader: Loader) -> None:
        self._loader = loader
        self.rows: dict[str, tuple[str | None, str | None, Doc]] = {}
        self.dirty: set[str] = set()

    def get(self, key: str) -> Doc | None:
        row = self.rows.get(key)
        if row is None:
            row = self._loader(key)
            if row is None:
                return None
            self.rows[key] = row
        return row[2]

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


LINK_PREFIXES = {"intake": (), "consent": ("rec:",), "referral": ("ref:", "hand:")}


def keys_of(upstream: str, fact: Fact) -> list[str]:
    """The documents a view may read for a fact, as every view keys them: the case (by the
    originator in the intake log, by ``case_id`` where the event names it), and the links
    from a consent record, referral or handover to its case. A rebuild in bounded memory
    loads them ahead, many in one query; a key missed here is still read, one at a time."""
    oid = fact.originator_id
    if upstream == "intake":
        return ["case:" + oid]
    # An aggregate's first event makes its link: there is none to read yet.
    keys = [] if fact.version == 1 else [prefix + oid for prefix in LINK_PREFIXES[upstream]]
    case_id = fact.data.get("case_id")
    if case_id:
        keys.append("case:" + str(case_id))
    return keys


def linked_key(key: str, doc: Doc) -> str | None:
    """The case document a link document points to."""
    if key.startswith("case:"):
        return None
    case_id = doc.get("case_id")
    return None if case_id is None else "case:" + str(case_id)


class View:
    name: ClassVar[str]
    handles: ClassVar[dict[str, tuple[type[Event], ...]]]

    def apply(self, docs: Docs, upstream: str, fact: Fact) -> None:
        raise NotImplementedError

    def finalize(self, doc: Doc) -> None:
        """Called on each document before it is written."""


def _case_of(docs: Docs, link: str) -> str | None:
    found = docs.get(link)
    return found["case_id"] if found else None


# -- the case overview: the coordinator's board, and the statistics ---------------------------

RECEPTION = _name(i.ReceptionRecorded)
ASSIGNED = _name(i.CaseManagerAssigned)
PERSON = {_name(i.PersonRegistered), _name(i.PersonDetailsCorrected)}
STAGE = _name(i.StageChanged)
CLOSED = _name(i.CaseClosed)
REOPENED = _name(i.CaseReopened)
EXPLOITATION = _name(w.ExploitationRecorded)
IDENTIFICATION = _name(w.IdentificationRecorded)
CONTACT_LOGGED = _name(w.ContactLogged)
NOTE_WRITTEN = _name(w.CaseNoteWritten)
MEASURED = _name(pl.ReintegrationMeasured)
EXIT_PLANNED = _name(pl.ExitPlanned)
REVIEWED = _name(w.CaseReviewed)
ERASURE_PROPOSED = _name(e.ErasureProposed)
ERASURE_REQUESTED = _name(e.ErasureRequested)
RECORD_OPENED = _name(c.ConsentRecordOpened)
GRANTED = _name(c.ConsentGranted)
WITHDRAWN = _name(c.ConsentWithdrawn)
# The consent events the consent decision reads (contracts.consent_decision.state_at),
# kept in each case's document so statistics run the same decision as everything else.
DECISION_EVENTS: tuple[type[Event], ...] = (
    c.SubjectAgeNoted,
    c.ConsentGranted,
    c.ConsentRefused,
    c.ConsentWithdrawn,
    c.ConsentRenewed,
    c.RefusalLifted,
)
# Free text the person or a guardian gave: the decision does not read it, so it stays out.
_FREE_TEXT = frozenset({"child_views", "statement", "reason"})
CREATED = _name(r.ReferralCreated)
DISPATCHED = _name(r.ReferralDispatched)
ACKNOWLEDGED = _name(r.ReferralAcknowledged)
STARTED = _name(r.ReferralStarted)
RESUMED = _name(r.ReferralResumed)
MISSED = _name(r.DeadlineMissed)
HELD_ = _name(r.ReferralPutOnHold)
HANDOVER_STARTED = _name(r.HandoverStarted)
HANDOVER_CONFIRMED = _name(r.HandoverConfirmed)
HANDOVER_COMPLETED = _name(r.HandoverCompleted)
HANDOVER_CANCELLED = _name(r.HandoverCancelled)
# The events that tie a consent record, referral or handover to its case.
_LINKING = {RECORD_OPENED, CREATED, HANDOVER_STARTED}
DISCLOSED = _name(r.DisclosureRecorded)
STATUS: dict[str, str] = {
    DISPATCHED: "requested",
    ACKNOWLEDGED: "received",
    _name(r.ReferralAccepted): "accepted",
    _name(r.ReferralRejected): "rejected",
    STARTED: "in-progress",
    _name(r.ReferralCompleted): "completed",
    _name(r.ReferralCancelled): "cancelled",
    _name(r.ReferralDeclinedByPerson): "cancelled",
    _name(r.ReferralFailed): "failed",
    _name(r.ReferralPutOnHold): "on-hold",
}


class CasesView(View):
    """One document per case: where it stands, who holds it, its handovers, and each
    referral's steps; and an index of the agencies holding each case (``held:<case>:<agency>``,
    the agency as its column), for an agency's list of the cases it holds."""

    name = "cases"
    handles = {
        "intake": (
            i.ReceptionRecorded,
            i.CaseManagerAssigned,
            i.PersonRegistered,
            i.PersonDetailsCorrected,
            i.StageChanged,
            i.CaseClosed,
            i.CaseReopened,
            w.ExploitationRecorded,
            w.IdentificationRecorded,
            w.ContactLogged,
            pl.ReintegrationMeasured,
            pl.ExitPlanned,
            w.CaseReviewed,
            e.ErasureRequested,
            e.ErasureProposed,
        ),
        "consent": (c.ConsentRecordOpened, *DECISION_EVENTS),
        "referral": (
            r.ReferralCreated,
            r.ReferralDispatched,
            r.ReferralAcknowledged,
            r.ReferralAccepted,
            r.ReferralRejected,
            r.ReferralStarted,
            r.ReferralCompleted,
            r.ReferralCancelled,
            r.ReferralDeclinedByPerson,
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
        key = "case:" + case_id
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
                "consent": [],
                "referrals": {},
                "handovers": {},
            }
            docs.put(key, doc, province=province)
        elif province and not doc.get("province"):
            doc["province"] = province
            docs.touch(key, province=province)
        else:
            docs.dirty.add(key)  # the common case, on every event: no new row tuple
        return doc

    def finalize(self, doc: Doc) -> None:
        # What the case adds to the statistics' counters over time (``derived``).
        if "referrals" in doc:
            doc["counted"] = counted(doc, doc.get("counted"))

    def apply(self, docs: Docs, upstream: str, fact: Fact) -> None:
        if upstream == "intake":
            self._intake(docs, fact)
        elif upstream == "consent":
            self._consent(docs, fact)
        else:
            self._referral(docs, fact)

    def _intake(self, docs: Docs, f: Fact) -> None:
        d = f.data
        if f.type == RECEPTION:
            doc = self.case(docs, f.originator_id, d["place"]["province"])
            held = holders(doc)
            doc.update(
                received_at=d["received_at"],
                route=d["route"],
                receiving_agency=d["receiving_agency"]["agency_id"],
            )
            doc["stage"] = doc["stage"] or "reception"
            _index_holders(docs, doc, held)
            return
        doc = self.case(docs, f.originator_id)
        if f.type == ASSIGNED:
            held = holders(doc)
            doc["case_manager_agency"] = d["agency"]["agency_id"]
            _index_holders(docs, doc, held)
            return
        if f.type in PERSON:
            doc["minor"] = d["minor"]
        elif f.type == STAGE:
            doc["stage"] = d["to_stage"]
        elif f.type == CLOSED:
            doc.update(stage="closed", closed=True, closed_at=f.at, closure_reason=d["reason"])
        elif f.type == REOPENED:
            doc.update(stage=d["to_stage"], closed=False, reopened_at=f.at)
            doc.pop("follow_up", None)  # the new episode plans its own exit
            doc.pop("next_review_on", None)  # and is reviewed from its reopening
            doc["reopenings"] += 1
            if d["reason"] == "re_trafficked":
                doc["re_trafficked"] = doc.get("re_trafficked", 0) + 1
        elif f.type == EXPLOITATION:
            # What statistics count (the CTDC's variables), nothing that tells who.
            x = d["exploitation"]
            doc["exploitation"] = {"types": x["types"], "means_of_control": x["means_of_control"]}
        elif f.type == MEASURED:
            scores = {k: d[k] for k in ("economic", "social", "psychosocial")}
            # The baseline and the latest: what progress per dimension is counted from.
            if d["baseline"]:
                doc["measures"] = {"baseline": scores}
            elif "measures" in doc:
                doc["measures"]["latest"] = scores
        elif f.type == IDENTIFICATION:
            doc["identification"] = d["status"]
        elif f.type == ERASURE_PROPOSED:
            # The retention period after closure ran out: the agency is asked to erase.
            doc["erasure_proposed"] = {"closed_at": d["closed_at"], "proposed_at": f.at}
        elif f.type == ERASURE_REQUESTED:
            doc["erasure_requested_at"] = f.at
        elif f.type == REVIEWED:
            doc["next_review_on"] = d["next_review_on"]
        elif f.type == EXIT_PLANNED:
            # The follow-up schedule after exit: dates only.
            doc["follow_up"] = {
                "every_days": d["follow_up_every_days"],
                "until": d["follow_up_until"],
            }
        elif f.type == CONTACT_LOGGED:
            # When each contact happened, to tell the follow-ups made from those missed.
            doc.setdefault("contacts_at", []).append(d["occurred_at"])
            if not d["against_preference"]:
                return
            # The board shows the breach of the person's wish: when, how and by whom, not
            # where or what was said.
            doc.setdefault("contacts_against_preference", []).append(
                {
                    "contact_id": d["contact_id"],
                    "occurred_at": d["occurred_at"],
                    "mode": d["mode"],
                    "by_agency": d["actor"]["agency_id"],
                }
            )

    def _consent(self, docs: Docs, f: Fact) -> None:
        d = f.data
        if f.type == RECORD_OPENED:
            docs.put("rec:" + f.originator_id, {"case_id": d["case_id"]})
            self.case(docs, d["case_id"], d["province"])
            return
        case_id = _case_of(docs, "rec:" + f.originator_id)
        if case_id is None:
            return
        # In the consent log's order, which is the order the decision reads them in.
        kept = {k: v for k, v in d.items() if k not in _FREE_TEXT}
        self.case(docs, case_id)["consent"].append([f.type, kept])

    def _referral(self, docs: Docs, f: Fact) -> None:
        rid, d = f.originator_id, f.data
        if f.type == CREATED:
            docs.put("ref:" + rid, {"case_id": d["case_id"]})
            doc = self.case(docs, d["case_id"], d["province"])
            doc["referrals"][rid] = {
                "plan_task_id": d.get("plan_task_id"),
                "family": d.get("family_member") is not None,
                "service_type": d["service_type"],
                "to_agency": d["to_agency"]["agency_id"],
                "from_agency": d["from_agency"]["agency_id"],
                "urgency": d["urgency"],
                "status": "draft",
                "created_at": f.at,
                "dispatched_at": None,
                "acknowledged_at": None,
                "started_at": None,
                "ended_at": None,
                "escalations": [],
            }
            return
        if f.type == HANDOVER_STARTED:
            docs.put("hand:" + rid, {"case_id": d["case_id"]})
            doc = self.case(docs, d["case_id"], d["province"])
            parties = [p["agency"]["agency_id"] for p in d["parties"]]
            doc["handovers"][rid] = {
                "kind": d["kind"],
                "parties": parties,
                "waiting_for": parties,
                "started_at": f.at,
                "completed_at": None,
                "seconds_by_party": {},
                "status": "open",
            }
            return
        if f.type in (HANDOVER_CONFIRMED, HANDOVER_COMPLETED, HANDOVER_CANCELLED):
            case_id = _case_of(docs, "hand:" + rid)
            assert case_id is not None
            handover = self.case(docs, case_id)["handovers"][rid]
            if f.type == HANDOVER_CONFIRMED:
                handover["waiting_for"] = [
                    a for a in handover["waiting_for"] if a != d["agency_id"]
                ]
                handover["seconds_by_party"][d["agency_id"]] = d["waited_seconds"]
            elif f.type == HANDOVER_COMPLETED:
                handover.update(status="completed", completed_at=f.at)
            else:
                handover["status"] = "cancelled"
            return
        case_id = _case_of(docs, "ref:" + rid)
        assert case_id is not None
        ref = self.case(docs, case_id)["referrals"][rid]
        if f.type == MISSED:
            ref["escalations"].append({"deadline": d["deadline"], "due_at": d["due_at"]})
            return
        status = d["to_status"] if f.type == RESUMED else STATUS.get(f.type)
        if f.type == DISPATCHED:
            ref["dispatched_at"] = f.at
        elif f.type == ACKNOWLEDGED:
            ref["acknowledged_at"] = f.at
        elif f.type == STARTED:
            ref["started_at"] = f.at
        if status in TERMINAL:
            ref["ended_at"] = f.at
        if status:
            ref["status"] = status


def case_ties(doc: Doc) -> CaseTies:
    """A case document's ties, as the access policy reads them: held by the agency that
    received the person and by the current case manager's (``CaseTies.held_by``)."""
    return CaseTies.held_by(
        doc.get("province") or "", doc.get("receiving_agency"), doc.get("case_manager_agency")
    )


def holders(doc: Doc) -> frozenset[str]:
    return case_ties(doc).holders


def _index_holders(docs: Docs, doc: Doc, before: frozenset[str]) -> None:
    """Keep the index of the agencies holding a case in step with its document: an agency
    that no longer holds it keeps a row with no agency (documents are never deleted here)."""
    case_id, now = doc["case_id"], holders(doc)
    for agency in before - now:
        docs.put(f"held:{case_id}:{agency}", {"case_id": case_id, "held": False})
    for agency in now - before:
        docs.put(
            f"held:{case_id}:{agency}",
            {"case_id": case_id, "held": True},
            province=doc.get("province"),
            agency=agency,
        )


# -- the agency queue ---------------------------------------------------------------------

STATUS_EVENTS: tuple[type[Event], ...] = (
    r.ReferralDispatched,
    r.ReferralAcknowledged,
    r.ReferralAccepted,
    r.ReferralRejected,
    r.ReferralStarted,
    r.ReferralCompleted,
    r.ReferralCancelled,
    r.ReferralDeclinedByPerson,
    r.ReferralFailed,
    r.ReferralPutOnHold,
)


class QueueView(View):
    """One document per referral sent to an agency: what the agency owes, and by when."""

    name = "queue"
    handles = {"referral": (r.ReferralCreated, *STATUS_EVENTS, r.ReferralResumed, r.DeadlineMissed)}

    def apply(self, docs: Docs, upstream: str, fact: Fact) -> None:
        key, d = "ref:" + fact.originator_id, fact.data
        if fact.type == CREATED:
            docs.put(
                key,
                {
                    "referral_id": fact.originator_id,
                    "case_id": d["case_id"],
                    "to_agency": d["to_agency"]["agency_id"],
                    "from_agency": d["from_agency"]["agency_id"],
                    "service_type": d["service_type"],
                    "urgency": d["urgency"],
                    "status": "draft",
                    "acknowledge_by": None,
                    "first_service_by": None,
                    "escalated": [],
                    "updated_at": fact.at,
                },
                province=d["province"],
            )
            return
        doc = docs.get(key)
        assert doc is not None
        if fact.type == DISPATCHED:
            doc.update(acknowledge_by=d["acknowledge_by"], first_service_by=d["first_service_by"])
        elif fact.type == HELD_ and doc["status"] != "on-hold":
            doc.update(held_in=doc["status"], held_at=fact.at)
        elif fact.type == RESUMED and doc.get("held_at") is not None:
            _move_due_times(doc, resumed_at=fact.at)
        if fact.type == MISSED:
            doc["escalated"].append(d["deadline"])
        else:
            doc["status"] = d["to_status"] if fact.type == RESUMED else STATUS[fact.type]
        doc["updated_at"] = fact.at
        doc["waiting_for"] = _waiting_for(doc["status"])
        # Until it is sent, a referral is nobody's queue.
        agency = doc["to_agency"] if doc["status"] != "draft" else None
        docs.touch(key, agency=agency)


def _move_due_times(doc: dict[str, Any], *, resumed_at: str) -> None:
    """The due times a referral owed when it was put on hold move later by the time it spent
    on hold (``contracts.deadlines``, the rule the referral service follows)."""
    due = DueTimes(_instant(doc["acknowledge_by"]), _instant(doc["first_service_by"]))
    moved = due.after_hold(
        ReferralStatus(doc.pop("held_in")),
        [DeadlineKind(kind) for kind in doc["escalated"]],
        datetime.fromisoformat(doc.pop("held_at")),
        datetime.fromisoformat(resumed_at),
    )
    doc["acknowledge_by"] = _iso(moved.acknowledge_by)
    doc["first_service_by"] = _iso(moved.first_service_by)


def _instant(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


def _iso(value: datetime | None) -> str | None:
    """As the events write their times (pydantic's JSON: UTC as ``Z``)."""
    return _INSTANT.dump_python(value, mode="json") if value is not None else None


_INSTANT: TypeAdapter[datetime] = TypeAdapter(datetime)


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
        "intake": (
            *i.INTAKE_EVENTS,
            *w.CASEWORK_EVENTS,
            *pl.PLAN_EVENTS,
            e.ErasureRequested,
            e.ErasureProposed,
        ),
        # Not the facts the consent service copies from intake: the story tells them once.
        "consent": tuple(
            t for t in c.CONSENT_EVENTS if t not in (c.SubjectAgeNoted, c.CaseStageNoted)
        ),
        "referral": (*r.REFERRAL_EVENTS, *r.HANDOVER_EVENTS),
    }

    def apply(self, docs: Docs, upstream: str, fact: Fact) -> None:
        # Every event passes here on a rebuild: keep this path lean.
        t, d = fact.type, fact.data
        if upstream == "intake":
            case_id = fact.originator_id
        else:
            link = ("rec:" if upstream == "consent" else "ref:") + fact.originator_id
            if t in _LINKING:
                case_id = d["case_id"]
                docs.put(link, {"case_id": case_id})
                if t == RECORD_OPENED:
                    return
            else:
                found = docs.get(link)
                if found is None:
                    return
                case_id = found["case_id"]
        key = "case:" + case_id
        entry = {
            "at": fact.at,
            "service": upstream,
            "type": t,
            "what": describe(fact),
            "actor": d["actor"],
            "seq": f"{fact.originator_id}:{fact.version:09d}",
        }
        grant = d.get("grant_id")
        if grant:
            entry["grant_id"] = grant
        # What the case file needs to tell the consent in force (contracts.consent).
        for kept in ("valid_until", "refusal_id"):
            if kept in d:
                entry[kept] = d[kept]
        if d.get("against_preference"):
            entry["against_preference"] = True
        category = DETAILED.get(t) or (d["about"] if t == NOTE_WRITTEN else None)
        if category is not None:
            entry["category"] = category
        if t == DISCLOSED:
            entry["grants"] = sorted({f["grant_id"] for f in d["released"] if f["grant_id"]})
        province = d.get("province")
        if province is None and t == RECEPTION:
            province = d["place"]["province"]
        doc = docs.get(key)
        if doc is None:
            doc = {"case_id": case_id, "entries": [entry]}
            docs.put(key, doc, province=province)
            province = None
        else:
            doc["entries"].append(entry)
        # The agencies holding the case (the access policy's tie for reading its details): the
        # receiving agency and the current case manager's.
        if t == RECEPTION:
            doc["receiving_agency"] = d["receiving_agency"]["agency_id"]
        elif t == MANAGER_:
            doc["case_manager_agency"] = d["agency"]["agency_id"]
        _track_work(doc, upstream, fact)
        if province and province != docs.rows[key][0]:
            docs.touch(key, province=province)
        else:
            docs.dirty.add(key)

    def finalize(self, doc: Doc) -> None:
        if "entries" in doc:
            doc["entries"].sort(key=_entry_order)


def _track_work(doc: Doc, upstream: str, fact: Fact) -> None:
    """Keep the plan's current tasks and each referral's status in the case's document: the
    case file shows the open tasks with the referrals that serve them
    (``services.projections.case_file``)."""
    t, d = fact.type, fact.data
    if t == PLAN_REVISED:
        doc["tasks"] = {
            task["task_id"]: {
                "task_id": task["task_id"],
                "action": task["action"],
                "agency": task["responsible"]["agency"]["agency_id"],
                "team_role": task["responsible"]["team_role"],
                "service_type": task.get("service_type"),
                "due_on": task["due_on"],
                "status": task["status"],
            }
            for task in d["tasks"]
        }
    elif t == TASK_PROGRESSED:
        task = doc.get("tasks", {}).get(d["task_id"])
        if task is not None:
            task["status"] = d["to_status"]
    elif upstream == "referral" and t == CREATED:
        doc.setdefault("referrals", {})[fact.originator_id] = {
            "referral_id": fact.originator_id,
            "to_agency": d["to_agency"]["agency_id"],
            "service_type": d["service_type"],
            "plan_task_id": d.get("plan_task_id"),
            "family": d.get("family_member") is not None,
            "status": "draft",
        }
    elif upstream == "referral" and fact.originator_id in doc.get("referrals", {}):
        status = d["to_status"] if t == RESUMED else STATUS.get(t)
        if status:
            doc["referrals"][fact.originator_id]["status"] = status


def _entry_order(entry: Doc) -> tuple[datetime, str, str]:
    return datetime.fromisoformat(entry["at"]), entry["service"], entry["seq"]


def _values(items: list[Any], field: str | None = None) -> str:
    return ", ".join(str(x[field] if field else x) for x in items)


NEEDS_ = _name(i.RapidNeedsAssessed)
RISK_ = _name(i.RiskAssessed)
CONTACT_ = _name(i.ContactPreferenceRecorded)
MANAGER_ = _name(i.CaseManagerAssigned)
PLAN_REVISED = _name(pl.ReintegrationPlanRevised)
TASK_PROGRESSED = _name(pl.PlanTaskProgressed)
REFUSED_ = _name(c.ConsentRefused)
BLOCKED_ = _name(r.ReferralBlocked)

# Sentences that tell the person's details: told to the agencies holding the case only.
DETAILED: dict[str, DataCategory] = {
    NEEDS_: DataCategory.NEEDS,
    RISK_: DataCategory.RISK,
    CONTACT_: DataCategory.CONTACT,
    **{_name(t): category for t, category in w.CATEGORY_OF.items()},
    # The plan and the measures are the person's needs, as the comprehensive assessment's.
    **{_name(t): DataCategory.NEEDS for t in pl.PLAN_EVENTS},
}


def category_of(entry: Doc) -> DataCategory | None:
    """The category of the person's data a timeline entry tells (None: progress only). A
    note tells the category it is about."""
    told = entry.get("category") or DETAILED.get(entry["type"])
    return DataCategory(told) if told else None


def describe_type(event_type: str) -> str:
    """A sentence for an event's type alone, telling none of its details."""
    return _sentence(event_type)


def describe(f: Fact) -> str:
    """A newcomer's sentence for an event, without personal data."""
    sentence = _DESCRIBE.get(f.type)
    return _sentence(f.type) if sentence is None else sentence(f.data)


def _handover_parties(d: Doc) -> str:
    return "Handover: " + " / ".join(
        f"{p['agency']['agency_id']} ({p['role']})" for p in d["parties"]
    )


_DESCRIBE: dict[str, Callable[[Doc], str]] = {
    RECEPTION: lambda d: (
        f"Received ({d['route']}) by {d['receiving_agency']['agency_id']} "
        f"in {d['place']['province']}"
    ),
    STAGE: lambda d: f"Stage {d['from_stage']} -> {d['to_stage']}",
    CLOSED: lambda d: f"Case closed: {d['reason']}",
    REOPENED: lambda d: f"Reopened as episode {d['episode']}: {d['reason']}",
    NEEDS_: lambda d: "Urgent needs: " + _values(d["needs"]),
    RISK_: lambda d: f"Risk assessed: {d['level']}",
    CONTACT_: lambda d: (
        f"Contact: {_values(d['preferred'])}; refused: {_values(d['refused']) or 'none'}"
    ),
    _name(w.MedicalExaminationRecorded): lambda d: (
        "Medical examination: urgent treatment "
        + ("given" if d["examination"]["urgent_treatment"] else "none")
        + ", follow-up "
        + ("needed" if d["examination"]["follow_up_needed"] else "not needed")
    ),
    _name(w.PsychosocialAssessed): lambda d: (
        f"Mental state: {d['assessment']['mental_state']}; psychological support "
        + ("needed" if d["assessment"]["psychological_support_needed"] else "not needed")
    ),
    _name(w.FamilySituationAssessed): lambda d: (
        f"Family situation: return home {d['situation']['return_safety']}"
    ),
    _name(w.LegalNeedsAssessed): lambda d: (
        "Legal needs: " + (_values(d["assessment"]["needs"]) or "none")
    ),
    _name(w.EducationLivelihoodAssessed): lambda d: (
        f"Education and livelihood: {d['assessment']['livelihood']}"
    ),
    EXPLOITATION: lambda d: "Exploitation: " + _values(d["exploitation"]["types"]),
    IDENTIFICATION: lambda d: (
        f"Identification: {d['status']}"
        + (f" by {d['authority']['agency_id']} on {d['decided_on']}" if d["authority"] else "")
    ),
    CONTACT_LOGGED: lambda d: (
        f"Contact: {d['mode']}"
        + (f" against the person's wish ({d['reason']})" if d["against_preference"] else "")
    ),
    NOTE_WRITTEN: lambda d: f"Note ({d['about']}): {d['text']}",
    _name(w.ServiceDeclined): lambda d: (
        f"The person {d['choice']} {d['service_type']}: their choice; told how to come back"
    ),
    _name(pl.ReintegrationPlanRevised): lambda d: (
        f"Reintegration plan, revision {d['revision']}: "
        + _values(sorted({g["domain"] for g in d["goals"]}))
        + f"; {len(d['tasks'])} tasks"
    ),
    _name(pl.ReintegrationPlanAgreed): lambda d: (
        f"The person agreed to plan revision {d['revision']} ({d['method']})"
    ),
    _name(pl.PlanTaskProgressed): lambda d: f"Plan task {d['from_status']} -> {d['to_status']}",
    REVIEWED: lambda d: (
        f"Case review ({d['stage']}): " + _values(d["decisions"]) + f"; next {d['next_review_on']}"
    ),
    _name(pl.CaseConferenceHeld): lambda d: (
        "Case conference: "
        + _values([a["agency"]["agency_id"] for a in d["attendees"]])
        + f"; {len(d['decisions'])} decisions, {len(d['tasks_added'])} tasks"
    ),
    EXIT_PLANNED: lambda d: (
        f"Exit planned for {d['planned_exit_on']}; follow-up every "
        f"{d['follow_up_every_days']} days until {d['follow_up_until']} by "
        + _values(d["follow_up_modes"])
    ),
    MEASURED: lambda d: (
        ("Baseline" if d["baseline"] else "Measure")
        + f" ({d['stage']}): economic {d['economic']:.2f}, social {d['social']:.2f}, "
        + f"psychosocial {d['psychosocial']:.2f}"
    ),
    MANAGER_: lambda d: (
        f"Case manager {d['case_manager_id']} ({d['agency']['agency_id']})"
        + (", by a case transfer" if d.get("handover_id") else "")
    ),
    GRANTED: lambda d: (
        f"Consent granted by {d['given_by']['kind']}: {_values(d['categories'])} "
        f"for {_values(d['purposes'])}"
    ),
    REFUSED_: lambda _d: "Refusal recorded",
    WITHDRAWN: lambda d: f"Consent withdrawn (heard by {d['heard_by']['agency_id']})",
    CREATED: lambda d: (
        ("Referral of a family member" if d.get("family_member") else "Referral")
        + f" to {d['to_agency']['agency_id']} for {d['service_type']}"
        + (" (a task of the plan)" if d.get("plan_task_id") else "")
    ),
    _name(r.ReferralDeclinedByPerson): lambda d: (
        f"Referral ended: the person {d['choice']} the service (their choice)"
    ),
    DISCLOSED: lambda d: (
        f"Disclosed {len(d['released'])} fields to {d['recipient']['agency_id']} ({d['basis']})"
    ),
    BLOCKED_: lambda d: "Waiting: consent for " + _values(d["withheld"], "category"),
    HELD_: lambda d: "On hold: consent for " + _values(d["withheld"], "category"),
    MISSED: lambda d: f"Deadline missed: {d['deadline']}",
    HANDOVER_STARTED: _handover_parties,
    HANDOVER_CONFIRMED: lambda d: (
        f"Handover confirmed by {d['agency_id']} after {d['waited_seconds'] / 60:.0f} min"
    ),
}


@functools.cache
def _sentence(event_type: str) -> str:
    """``org.ketnoi.referral.acknowledged`` -> ``Referral acknowledged``."""
    service, _, what = event_type.removeprefix("org.ketnoi.").partition(".")
    words = what.replace("_", " ")
    if service == "referral" and not words.startswith("handover"):
        words = "referral " + words
    return words[:1].upper() + words[1:]


VIEWS: dict[str, View] = {view.name: view for view in (CasesView(), QueueView(), TimelineView())}


def case_key(case_id: UUID | str) -> str:
    return f"case:{case_id}"
