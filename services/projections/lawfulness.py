"""The auditor's lawfulness check: every disclosure and every recorded read, replayed against
the logs, and each one that no grant covered named.

The check is pure: a ``Ledger`` is folded from the events of the intake, consent and referral
logs (what it needs of them, nothing personal kept), and ``check_disclosure`` and
``check_read`` judge one event against it, at that event's own instant, with the same consent
decision the services run. Findings name ids, categories, agencies and, for an emergency
read, its reason; never a personal value.

- A disclosure on the basis of consent is lawful when, at its instant, the grant it names for
  each released category permitted that category to its recipient for its purpose (refusals
  in force count as always). A vital-interest disclosure needs an approved override on its
  referral before it; with one it is flagged for review, without one it is unlawful.
- A read on a grant is lawful when a referral of the case had been sent to the reader's
  agency and the grants the read names permitted every category read to that recipient, for
  that referral's purpose, at the read's instant. A read of one's own case needs the reader's
  agency to hold the case then (it received the person, or a case manager of it had been
  assigned). A read under an override needs that override approved on a referral of the case
  to the reader's agency before the read. Emergency and audit reads are flagged for review.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from contracts.access_policy import CaseTies
from contracts.audit import PersonalDataRead, ReadBasis
from contracts.consent import (
    ConsentGranted,
    ConsentRefused,
    ConsentRenewed,
    ConsentWithdrawn,
    RefusalLifted,
    SubjectAgeNoted,
    consent_record_id,
)
from contracts.consent_decision import CategoryDecision, Verdict, decide
from contracts.envelope import Event
from contracts.intake import CaseManagerAssigned, ReceptionRecorded
from contracts.referral import (
    DisclosureBasis,
    DisclosureRecorded,
    OverrideApproved,
    ReferralCreated,
    ReferralDispatched,
)
from contracts.vocabulary import DataCategory
from services.runtime.follower import Upstream
from services.runtime.persistence import decode_stored

# What the check reads of each log.
CHECKED_EVENTS: dict[str, tuple[type[Event], ...]] = {
    "intake": (ReceptionRecorded, CaseManagerAssigned),
    "consent": (
        ConsentGranted,
        ConsentRefused,
        ConsentRenewed,
        ConsentWithdrawn,
        RefusalLifted,
        SubjectAgeNoted,
    ),
    "referral": (ReferralCreated, ReferralDispatched, OverrideApproved, DisclosureRecorded),
}


class Lawfulness(StrEnum):
    LAWFUL = "lawful"
    UNLAWFUL = "unlawful"
    FLAGGED = "flagged"  # lawful only if a reviewer agrees: emergencies and audits


class FindingKind(StrEnum):
    DISCLOSURE = "disclosure"
    READ = "read"


@dataclass(frozen=True)
class Finding:
    """The verdict on one disclosure (by its disclosure id) or one read (by its event id)."""

    kind: FindingKind
    id: UUID
    case_id: UUID | None
    at: datetime
    verdict: Lawfulness
    why: str

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "id": str(self.id),
            "case_id": None if self.case_id is None else str(self.case_id),
            "at": self.at.isoformat(),
            "verdict": self.verdict.value,
            "why": self.why,
        }


@dataclass
class ReferralFacts:
    created: ReferralCreated
    dispatched_at: datetime | None = None
    approvals: dict[UUID, OverrideApproved] = field(default_factory=dict)


@dataclass
class Ledger:
    """What the check knows of the logs: each case's holders and consent events, and each
    referral's recipient, purpose, dispatch and approved overrides."""

    received_by: dict[UUID, tuple[datetime, str]] = field(default_factory=dict)
    managers: dict[UUID, list[tuple[datetime, str]]] = field(default_factory=dict)
    consent: dict[UUID, list[Event]] = field(default_factory=dict)  # by consent record id
    referrals: dict[UUID, ReferralFacts] = field(default_factory=dict)
    referrals_of_case: dict[UUID, list[UUID]] = field(default_factory=dict)
    disclosures: list[DisclosureRecorded] = field(default_factory=list)

    def add(self, event: Event) -> None:
        """Take in one event of the intake, consent or referral log (others are ignored)."""
        if isinstance(event, ReceptionRecorded):
            received = (event.timestamp, event.receiving_agency.agency_id)
            self.received_by[event.originator_id] = received
        elif isinstance(event, CaseManagerAssigned):
            assigned = (event.timestamp, event.agency.agency_id)
            self.managers.setdefault(event.originator_id, []).append(assigned)
        elif isinstance(event, CHECKED_EVENTS["consent"]):
            self.consent.setdefault(event.originator_id, []).append(event)
        elif isinstance(event, ReferralCreated):
            self.referrals[event.originator_id] = ReferralFacts(event)
            self.referrals_of_case.setdefault(event.case_id, []).append(event.originator_id)
        elif isinstance(event, ReferralDispatched):
            facts = self.referrals.get(event.originator_id)
            if facts is not None and facts.dispatched_at is None:
                facts.dispatched_at = event.timestamp
        elif isinstance(event, OverrideApproved):
            facts = self.referrals.get(event.originator_id)
            if facts is not None:
                facts.approvals[event.override_id] = event
        elif isinstance(event, DisclosureRecorded):
            self.disclosures.append(event)

    def holders_at(self, case_id: UUID, at: datetime) -> frozenset[str]:
        """The agencies holding the case at ``at``, by the access policy's rule: the
        receiving agency and the case manager's agency then (the latest assigned by then)."""
        received = self.received_by.get(case_id)
        managers = [a for since, a in self.managers.get(case_id, ()) if since <= at]
        return CaseTies.held_by(
            "",
            received[1] if received and received[0] <= at else None,
            managers[-1] if managers else None,
        ).holders

    def consent_of(self, case_id: UUID) -> list[Event]:
        return self.consent.get(consent_record_id(case_id), [])

    def referrals_to(self, case_id: UUID, agency_id: str) -> list[ReferralFacts]:
        found = (self.referrals[r] for r in self.referrals_of_case.get(case_id, ()))
        return [f for f in found if f.created.to_agency.agency_id == agency_id]


def ledger_of(events: Iterable[Event]) -> Ledger:
    """A ledger of these events, taken in the order given (each log in its own order)."""
    ledger = Ledger()
    for event in events:
        ledger.add(event)
    return ledger


# -- disclosures ------------------------------------------------------------------------------


def check_disclosure(ledger: Ledger, disclosure: DisclosureRecorded) -> Finding:
    """Was this disclosure covered, at its instant, by what it says covered it?"""
    referral = ledger.referrals.get(disclosure.originator_id)
    case_id = referral.created.case_id if referral is not None else None

    def found(verdict: Lawfulness, why: str) -> Finding:
        return Finding(
            FindingKind.DISCLOSURE,
            disclosure.disclosure_id,
            case_id,
            disclosure.timestamp,
            verdict,
            why,
        )

    if referral is None or case_id is None:
        return found(Lawfulness.UNLAWFUL, "it belongs to no referral in the referral log")
    recipient = disclosure.recipient.agency_id
    spec = referral.created
    if (disclosure.recipient, disclosure.purpose) != (spec.to_agency, spec.purpose):
        return found(
            Lawfulness.UNLAWFUL,
            f"released to {recipient} for {disclosure.purpose.value}, but its referral goes "
            f"to {spec.to_agency.agency_id} for {spec.purpose.value}",
        )
    if disclosure.basis is DisclosureBasis.VITAL_INTEREST:
        approval = (
            referral.approvals.get(disclosure.override_id) if disclosure.override_id else None
        )
        if approval is None or approval.originator_version > disclosure.originator_version:
            return found(
                Lawfulness.UNLAWFUL,
                f"released to {recipient} for vital interest with no approved override before it",
            )
        return found(
            Lawfulness.FLAGGED,
            f"released to {recipient} for vital interest under override "
            f"{disclosure.override_id}, approved by a {approval.actor.role.value} of "
            f"{approval.actor.agency_id}",
        )
    named: dict[DataCategory, set[UUID | None]] = {}
    for released in disclosure.released:
        named.setdefault(released.category, set()).add(released.grant_id)
    if not named:
        return found(Lawfulness.LAWFUL, f"nothing released to {recipient}")
    problems: list[str] = []
    covered: list[str] = []
    events = ledger.consent_of(case_id)
    for category, grants in named.items():
        for grant_id in sorted(grants, key=str):
            if grant_id is None:
                problems.append(f"{category.value} released without naming a grant")
                continue
            decision = _decided_by(events, {grant_id}, disclosure, category)
            if decision.verdict is Verdict.PERMITTED:
                covered.append(f"{category.value} by grant {grant_id}")
            else:
                problems.append(f"{category.value}: grant {grant_id} {_why_not(decision)}")
    to = f"referral {disclosure.originator_id} to {recipient} for {disclosure.purpose.value}"
    if problems:
        return found(Lawfulness.UNLAWFUL, f"{to}: " + "; ".join(problems))
    return found(Lawfulness.LAWFUL, f"{to}: " + ", ".join(covered))


def _decided_by(
    events: list[Event],
    grant_ids: set[UUID],
    disclosure: DisclosureRecorded,
    category: DataCategory,
) -> CategoryDecision:
    decision = decide(
        only_grants(events, grant_ids),
        recipient=disclosure.recipient,
        purpose=disclosure.purpose,
        categories=(category,),
        at=disclosure.timestamp,
    )
    return decision.categories[0]


def only_grants(events: Iterable[Event], grant_ids: set[UUID]) -> list[Event]:
    """The consent events with every grant but these left out (refusals all kept): the
    decision on them says whether these grants, and nothing else, permitted a request."""
    return [e for e in events if not isinstance(e, ConsentGranted) or e.grant_id in grant_ids]


def _why_not(decision: CategoryDecision) -> str:
    if decision.verdict is Verdict.NOT_GRANTED:
        return "did not cover it (not in the record, or another recipient, purpose or category)"
    return f"did not permit it then: {decision.verdict.value} ({decision.reason})"


# -- reads ------------------------------------------------------------------------------------


def check_read(ledger: Ledger, read: PersonalDataRead) -> Finding:
    """Was this read of personal data allowed, at its instant, on the basis it names?"""
    agency, at = read.actor.agency_id, read.timestamp
    categories = ", ".join(c.value for c in read.categories)

    def found(verdict: Lawfulness, why: str) -> Finding:
        return Finding(FindingKind.READ, read.originator_id, read.case_id, at, verdict, why)

    if read.basis is ReadBasis.BREAK_GLASS:
        return found(
            Lawfulness.FLAGGED,
            f"emergency read of {categories} by a {read.actor.role.value} of {agency} "
            f"({read.what}): {read.reason}",
        )
    if read.basis is ReadBasis.AUDIT:
        return found(Lawfulness.FLAGGED, f"audit read of {categories} by {agency} ({read.what})")
    if read.basis is ReadBasis.OWN_CASE:
        if agency in ledger.holders_at(read.case_id, at):
            return found(Lawfulness.LAWFUL, f"{agency} held the case ({read.what})")
        return found(
            Lawfulness.UNLAWFUL, f"{agency} read {categories} of a case it did not hold then"
        )
    sent = [
        r
        for r in ledger.referrals_to(read.case_id, agency)
        if r.dispatched_at is not None and r.dispatched_at <= at
    ]
    if read.basis is ReadBasis.OVERRIDE:
        for referral in sent:
            approval = referral.approvals.get(read.override_id) if read.override_id else None
            if approval is not None and approval.timestamp <= at:
                return found(
                    Lawfulness.LAWFUL,
                    f"override {read.override_id} approved on referral "
                    f"{referral.created.originator_id} to {agency}",
                )
        return found(
            Lawfulness.UNLAWFUL,
            f"{agency} read {categories} under override {read.override_id}, which no referral "
            "of the case to it had approved before",
        )
    if read.basis is ReadBasis.FAMILY_MEMBER_CONSENT:
        family = [r for r in sent if r.created.family_member is not None]
        if family and set(read.categories) <= {DataCategory.FAMILY}:
            return found(
                Lawfulness.LAWFUL,
                f"the family member referred by referral {family[0].created.originator_id} "
                f"consented to {agency} reading their details",
            )
        return found(
            Lawfulness.UNLAWFUL,
            f"{agency} read {categories} on a family member's consent, but no family "
            "referral of the case had been sent to it",
        )
    if not sent:
        return found(
            Lawfulness.UNLAWFUL,
            f"{agency} read {categories} on a grant, but no referral of the case had been sent "
            "to it",
        )
    events = only_grants(ledger.consent_of(read.case_id), set(read.grant_ids))
    problems: list[str] = []
    for referral in sent:
        spec = referral.created
        decision = decide(
            events,
            recipient=spec.to_agency,
            purpose=spec.purpose,
            categories=read.categories,
            at=at,
        )
        if not decision.withheld:
            grants = ", ".join(str(g) for g in read.grant_ids)
            return found(
                Lawfulness.LAWFUL,
                f"{categories} permitted to {agency} for {spec.purpose.value} by grants "
                f"{grants} (referral {spec.originator_id})",
            )
        problems.extend(
            f"{c.category.value} for {spec.purpose.value}: {c.verdict.value}"
            for c in decision.withheld
        )
    return found(
        Lawfulness.UNLAWFUL,
        f"the grants the read names did not permit it to {agency}: " + "; ".join(problems),
    )


# -- everything -------------------------------------------------------------------------------


@dataclass
class Report:
    disclosures: int = 0
    reads: int = 0
    findings: list[Finding] = field(default_factory=list)

    def count(self, verdict: Lawfulness) -> int:
        return sum(1 for f in self.findings if f.verdict is verdict)

    @property
    def summary(self) -> str:
        return (
            f"{self.disclosures} disclosures, {self.reads} reads checked: "
            f"{self.count(Lawfulness.UNLAWFUL)} unlawful, "
            f"{self.count(Lawfulness.FLAGGED)} flagged for review"
        )


def check_all(
    ledger: Ledger, reads: Iterable[PersonalDataRead], since: datetime | None = None
) -> Report:
    """Every disclosure of the ledger and every read given, at or after ``since``."""
    report = Report()
    for disclosure in ledger.disclosures:
        if since is None or disclosure.timestamp >= since:
            report.disclosures += 1
            report.findings.append(check_disclosure(ledger, disclosure))
    for read in reads:
        if since is None or read.timestamp >= since:
            report.reads += 1
            report.findings.append(check_read(ledger, read))
    return report


def events_of(
    upstream: Upstream, progress: Callable[[int], None] | None = None, page: int = 1000
) -> Iterator[Event]:
    """Every event of the upstream's topics in its log, in the log's order; ``progress`` is
    told how many positions each page moved on."""
    start, done = 1, 0
    while True:
        batch = upstream.recorder.select_notifications(
            start=start, limit=page, topics=upstream.topics
        )
        for notification in batch:
            yield decode_stored(upstream.mapper, notification)
        if batch and progress is not None:
            progress(batch[-1].id - done)
            done = batch[-1].id
        if len(batch) < page:
            return
        start = batch[-1].id + 1
