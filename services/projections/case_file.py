"""The case file: a case's story arranged for a newcomer taking it over.

Staff turn over (seed 003: "high turnover in key positions loses continuity"); whoever takes
a case over reads it in this order, each part from the timeline's own entries:

1. ``person``: who the person is and how to reach them: how they came (the reception), their
   registration, how they agree to be contacted, who manages the case now, and its stage;
2. ``consent``: the consent in force: grants neither withdrawn nor past their end (renewals
   counted), and refusals not lifted, because every step after depends on it;
3. ``plan``: the current plan revision, whether the person agreed to it, the exit planned,
   and the open tasks (soonest due first), each with the referrals that serve it and their
   status;
4. ``referrals``: the referrals still open, with their status;
5. ``risks``: the latest risk and psychosocial assessments, contacts made against the
   person's wish, and missed deadlines;
6. ``history``: everything, newest first.

Every entry is a timeline entry, told as the timeline tells it: the reader's sight (the
access policy) decides which entries tell their details; the route does the telling.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from contracts import casework as w
from contracts import consent as c
from contracts import intake as i
from contracts import plan as pl
from contracts import referral as r
from contracts.envelope import Event
from contracts.plan import TaskStatus
from contracts.referral import TERMINAL_STATUSES

Doc = dict[str, Any]

OPEN_TASKS = frozenset({TaskStatus.PLANNED.value, TaskStatus.IN_PROGRESS.value})
ENDED = frozenset(s.value for s in TERMINAL_STATUSES)


def _type(event_type: type[Event]) -> str:
    return event_type.topic().rsplit(".", 1)[0]


RECEPTION = _type(i.ReceptionRecorded)
PERSON = frozenset({_type(i.PersonRegistered), _type(i.PersonDetailsCorrected)})
CONTACT_PREFERENCE = _type(i.ContactPreferenceRecorded)
MANAGER = _type(i.CaseManagerAssigned)
STAGE = frozenset({_type(i.StageChanged), _type(i.CaseClosed), _type(i.CaseReopened)})
GRANTED = _type(c.ConsentGranted)
RENEWED = _type(c.ConsentRenewed)
WITHDRAWN = _type(c.ConsentWithdrawn)
REFUSED = _type(c.ConsentRefused)
LIFTED = _type(c.RefusalLifted)
REVISED = _type(pl.ReintegrationPlanRevised)
AGREED = _type(pl.ReintegrationPlanAgreed)
EXIT_PLANNED = _type(pl.ExitPlanned)
REOPENED = _type(i.CaseReopened)
RISK = _type(i.RiskAssessed)
PSYCHOSOCIAL = _type(w.PsychosocialAssessed)
CONTACT_LOGGED = _type(w.ContactLogged)
MISSED = _type(r.DeadlineMissed)

SECTIONS = ("person", "consent", "plan", "referrals", "risks", "history")


def _latest(entries: list[Doc], *types: str) -> list[Doc]:
    """The latest entry of each of ``types`` (oldest first), none for a type not seen."""
    found: dict[str, Doc] = {}
    for entry in entries:
        if entry["type"] in types:
            found[entry["type"]] = entry
    return sorted(found.values(), key=lambda e: (e["at"], e["seq"]))


def _person(entries: list[Doc]) -> list[Doc]:
    person = [e for e in entries if e["type"] in PERSON][-1:]
    stage = [e for e in entries if e["type"] in STAGE][-1:]
    told = _latest(entries, RECEPTION, CONTACT_PREFERENCE, MANAGER) + person + stage
    return sorted(told, key=lambda e: (e["at"], e["seq"]))


def _consent(entries: list[Doc], now: datetime) -> list[Doc]:
    """Grants in force (not withdrawn, not past their end) and refusals not lifted."""
    until: dict[str, str] = {}
    withdrawn: set[str] = set()
    lifted: set[str] = set()
    for e in entries:
        if e["type"] in (GRANTED, RENEWED) and "valid_until" in e:
            until[e["grant_id"]] = e["valid_until"]
        elif e["type"] == WITHDRAWN:
            withdrawn.add(e["grant_id"])
        elif e["type"] == LIFTED:
            lifted.add(e["refusal_id"])
    return [
        e
        for e in entries
        if (
            e["type"] == GRANTED
            and e["grant_id"] not in withdrawn
            and datetime.fromisoformat(until[e["grant_id"]]) > now
        )
        or (e["type"] == REFUSED and e.get("refusal_id") not in lifted)
    ]


def _plan(doc: Doc, entries: list[Doc], today: date) -> Doc:
    revisions = [e for e in entries if e["type"] == REVISED]
    current = revisions[-1:]
    # Agreement to the current revision only: an agreement comes after its revision.
    agreed = [e for e in entries if e["type"] == AGREED and current and e["at"] >= current[0]["at"]]
    # An exit plan belongs to its episode: a reopening plans its own.
    reopened = [e["at"] for e in entries if e["type"] == REOPENED][-1:]
    exits = [
        e for e in entries if e["type"] == EXIT_PLANNED and (not reopened or e["at"] > reopened[0])
    ]
    referrals = list(doc.get("referrals", {}).values())
    tasks = [
        {
            **task,
            "overdue": date.fromisoformat(task["due_on"]) < today,
            "referrals": [ref for ref in referrals if ref["plan_task_id"] == task["task_id"]],
        }
        for task in doc.get("tasks", {}).values()
        if task["status"] in OPEN_TASKS
    ]
    tasks.sort(key=lambda t: (t["due_on"], t["task_id"]))
    return {
        "entries": current + agreed[-1:] + exits[-1:],
        "agreed": bool(agreed),
        "open_tasks": tasks,
    }


def _risks(entries: list[Doc]) -> list[Doc]:
    latest = _latest(entries, RISK, PSYCHOSOCIAL)
    against = [e for e in entries if e["type"] == CONTACT_LOGGED and e.get("against_preference")]
    missed = [e for e in entries if e["type"] == MISSED]
    return sorted(latest + against + missed, key=lambda e: (e["at"], e["seq"]))


def arrange(doc: Doc, now: datetime, today: date) -> Doc:
    """The case file of a timeline document (its entries in time order), in the order a
    newcomer reads it (the module's docstring). Pure: the same document gives the same file.
    """
    entries: list[Doc] = doc["entries"]
    open_referrals = [
        ref for ref in doc.get("referrals", {}).values() if ref["status"] not in ENDED
    ]
    return {
        "case_id": doc["case_id"],
        "person": _person(entries),
        "consent": _consent(entries, now),
        "plan": _plan(doc, entries, today),
        "referrals": open_referrals,
        "risks": _risks(entries),
        "history": entries[::-1],
    }
