"""The access policy: who may see which of a case's data, and who may do what to it.

One pure function decides it for every read and every command of every service, beside the
consent decision it builds on (``contracts/consent_decision.py``); nothing else decides who
sees what. It answers from three things only:

- the principal: their agency, province and roles, as the server verified them;
- their *ties* to the case, as the service's own log knows them: the agencies that hold the
  case (the receiving agency and the case manager's agency), the agencies a sent referral
  names as recipient or sender, the parties of a handover, and the case's province;
- for a referral's recipient, the consent decision at the instant of the read.

Need-to-know by default: a coordinator or an auditor sees a case's progress, never the
person's details; an agency with no tie to a case does not learn that it exists (404). A
recipient sees only what the consent in force now permits, whatever the referral's status.
An emergency ("break glass") read is for the roles that may need one, with a reason; it is
recorded and flagged for review like an emergency override.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from uuid import UUID

from contracts.audit import ReadBasis
from contracts.consent_decision import ConsentDecision
from contracts.vocabulary import DataCategory, Role

NATIONAL = "*"  # the province of users who work across provinces

ALL_CATEGORIES = frozenset(DataCategory)


class Tie(StrEnum):
    """How a principal stands to a case."""

    HOLDER = "holder"  # their agency received the case or manages it
    RECIPIENT = "recipient"  # a referral sent to their agency
    SENDER = "sender"  # their agency sent a referral for the case
    HANDOVER_PARTY = "handover_party"  # their agency is a party to a handover of the case
    COORDINATOR = "coordinator"  # the coordinator of the case's province
    AUDITOR = "auditor"  # an auditor whose scope covers the case's province


class Action(StrEnum):
    """What a principal asks to do with a case."""

    SEE_PROGRESS = "see_progress"  # that it exists, its stage, steps and times; no details
    READ_PERSONAL = "read_personal"  # the person's details (the categories decide what)
    BREAK_GLASS = "break_glass"  # an emergency read of the person's details, with a reason
    RECORD_RECEPTION = "record_reception"
    RECORD_FACTS = "record_facts"  # the person, needs, risk, contact preference, exploitation
    RECORD_MEDICAL_EXAMINATION = "record_medical_examination"
    RECORD_PSYCHOSOCIAL_ASSESSMENT = "record_psychosocial_assessment"
    RECORD_ASSESSMENT = "record_assessment"  # family, legal needs, education and livelihood
    RECORD_CONTACT = "record_contact"  # the contact log and case notes
    MANAGE_PLAN = "manage_plan"  # the reintegration plan, its agreement, progress, measures
    REVIEW_CASE = "review_case"  # supervision: a periodic review, signed off
    ASSIGN_CASE_MANAGER = "assign_case_manager"
    MANAGE_CASE = "manage_case"  # stages, closure, reopening
    RECORD_CONSENT = "record_consent"  # grants, refusals, renewals, lifting a refusal
    WITHDRAW_CONSENT = "withdraw_consent"
    SEND_REFERRAL = "send_referral"
    CANCEL_REFERRAL = "cancel_referral"
    ANSWER_REFERRAL = "answer_referral"  # the recipient's steps of the closed loop
    RECORD_SERVICE_FEEDBACK = "record_service_feedback"  # the person's, on a referral's service
    REQUEST_OVERRIDE = "request_override"
    APPROVE_OVERRIDE = "approve_override"
    REVIEW_OVERRIDE = "review_override"  # by someone in a third role
    START_HANDOVER = "start_handover"
    CONFIRM_HANDOVER = "confirm_handover"
    AUDIT = "audit"  # replay, rebuild, disclosures and reads
    GIVE_PERSON_COPY = "give_person_copy"  # everything held about the person, for them
    REQUEST_ERASURE = "request_erasure"  # forget the person: asked for by one person...
    APPROVE_ERASURE = "approve_erasure"  # ...and approved by another, who destroys the key


@dataclass(frozen=True)
class Rule:
    roles: frozenset[Role]
    ties: frozenset[Tie] | None  # None: no tie to the case needed


def _rule(roles: Iterable[Role], ties: Iterable[Tie] | None) -> Rule:
    return Rule(frozenset(roles), None if ties is None else frozenset(ties))


R, T = Role, Tie
# Which roles may act, and through which ties. Withdrawal needs no tie: any agency that
# hears it from the person, anywhere, records it (seed 002), except auditors and admins.
# Each assessment is made by the role whose work it is: a health worker examines; a health
# worker (a psychologist) or the case manager assesses the mental state; the case manager the
# rest.
RULES: dict[Action, Rule] = {
    Action.SEE_PROGRESS: _rule(
        (
            R.INTAKE_OFFICER,
            R.CASE_MANAGER,
            R.AGENCY_STAFF,
            R.HEALTH_WORKER,
            R.SUPERVISOR,
            R.COORDINATOR,
            R.AUDITOR,
        ),
        (T.HOLDER, T.RECIPIENT, T.SENDER, T.HANDOVER_PARTY, T.COORDINATOR, T.AUDITOR),
    ),
    Action.READ_PERSONAL: _rule(
        (R.INTAKE_OFFICER, R.CASE_MANAGER, R.AGENCY_STAFF, R.HEALTH_WORKER, R.SUPERVISOR),
        (T.HOLDER, T.RECIPIENT),
    ),
    Action.BREAK_GLASS: _rule(
        (R.INTAKE_OFFICER, R.CASE_MANAGER, R.COORDINATOR),
        (T.HOLDER, T.SENDER, T.HANDOVER_PARTY, T.COORDINATOR),
    ),
    Action.RECORD_RECEPTION: _rule((R.INTAKE_OFFICER, R.CASE_MANAGER), None),
    Action.RECORD_FACTS: _rule((R.INTAKE_OFFICER, R.CASE_MANAGER), (T.HOLDER,)),
    Action.RECORD_MEDICAL_EXAMINATION: _rule((R.HEALTH_WORKER,), (T.HOLDER,)),
    Action.RECORD_PSYCHOSOCIAL_ASSESSMENT: _rule((R.CASE_MANAGER, R.HEALTH_WORKER), (T.HOLDER,)),
    Action.RECORD_ASSESSMENT: _rule((R.CASE_MANAGER,), (T.HOLDER,)),
    Action.RECORD_CONTACT: _rule((R.INTAKE_OFFICER, R.CASE_MANAGER, R.HEALTH_WORKER), (T.HOLDER,)),
    Action.MANAGE_PLAN: _rule((R.CASE_MANAGER,), (T.HOLDER,)),
    Action.REVIEW_CASE: _rule((R.SUPERVISOR,), (T.HOLDER,)),
    Action.ASSIGN_CASE_MANAGER: _rule((R.COORDINATOR, R.CASE_MANAGER), (T.COORDINATOR, T.HOLDER)),
    Action.MANAGE_CASE: _rule((R.CASE_MANAGER,), (T.HOLDER,)),
    Action.RECORD_CONSENT: _rule((R.INTAKE_OFFICER, R.CASE_MANAGER), (T.HOLDER,)),
    Action.WITHDRAW_CONSENT: _rule(
        (R.INTAKE_OFFICER, R.CASE_MANAGER, R.AGENCY_STAFF, R.HEALTH_WORKER), None
    ),
    Action.SEND_REFERRAL: _rule((R.CASE_MANAGER,), (T.HOLDER,)),
    Action.CANCEL_REFERRAL: _rule((R.CASE_MANAGER,), (T.SENDER,)),
    Action.ANSWER_REFERRAL: _rule((R.AGENCY_STAFF,), (T.RECIPIENT,)),
    Action.RECORD_SERVICE_FEEDBACK: _rule((R.CASE_MANAGER,), (T.SENDER,)),
    Action.REQUEST_OVERRIDE: _rule((R.CASE_MANAGER, R.COORDINATOR), (T.SENDER, T.COORDINATOR)),
    Action.APPROVE_OVERRIDE: _rule((R.CASE_MANAGER, R.COORDINATOR), (T.SENDER, T.COORDINATOR)),
    Action.REVIEW_OVERRIDE: _rule(
        (R.CASE_MANAGER, R.COORDINATOR, R.AUDITOR), (T.SENDER, T.COORDINATOR, T.AUDITOR)
    ),
    Action.START_HANDOVER: _rule(
        (R.INTAKE_OFFICER, R.CASE_MANAGER, R.COORDINATOR), (T.HOLDER, T.COORDINATOR)
    ),
    Action.CONFIRM_HANDOVER: _rule(
        (R.INTAKE_OFFICER, R.CASE_MANAGER, R.AGENCY_STAFF, R.COORDINATOR), (T.HANDOVER_PARTY,)
    ),
    Action.AUDIT: _rule((R.AUDITOR,), (T.AUDITOR,)),
    # The person asks the agencies that hold their case, who print it for them.
    Action.GIVE_PERSON_COPY: _rule((R.INTAKE_OFFICER, R.CASE_MANAGER), (T.HOLDER,)),
    # The person asks the agency holding their case to forget them; its case manager or
    # supervisor asks, and a supervisor of the holding agency or the province's coordinator
    # (another person, which the case checks) approves.
    Action.REQUEST_ERASURE: _rule((R.CASE_MANAGER, R.SUPERVISOR), (T.HOLDER,)),
    Action.APPROVE_ERASURE: _rule((R.SUPERVISOR, R.COORDINATOR), (T.HOLDER, T.COORDINATOR)),
}


@dataclass(frozen=True)
class Asker:
    """The principal, as far as the policy needs it."""

    user_id: str
    agency_id: str
    province: str
    roles: frozenset[Role]

    def covers(self, province: str) -> bool:
        return self.province in (NATIONAL, province)


@dataclass(frozen=True)
class CaseTies:
    """What a service's own log knows of the agencies tied to one case."""

    province: str
    holders: frozenset[str] = frozenset()
    recipients: frozenset[str] = frozenset()  # of referrals that have been sent
    senders: frozenset[str] = frozenset()
    handover_parties: frozenset[str] = frozenset()

    @classmethod
    def held_by(
        cls, province: str, receiving_agency_id: str | None, case_manager_agency_id: str | None
    ) -> CaseTies:
        """A case as the services holding it know it: it is held by the agency that received
        the person and by the current case manager's agency (either may not be known)."""
        held = (receiving_agency_id, case_manager_agency_id)
        return cls(province=province, holders=frozenset(a for a in held if a is not None))


def ties_of(asker: Asker, case: CaseTies) -> frozenset[Tie]:
    """The principal's ties to the case. Agency ties count in any province (an agency may
    receive a referral from another province); oversight ties only in the case's province."""
    ties = set()
    agency = asker.agency_id
    if agency in case.holders:
        ties.add(Tie.HOLDER)
    if agency in case.recipients:
        ties.add(Tie.RECIPIENT)
    if agency in case.senders:
        ties.add(Tie.SENDER)
    if agency in case.handover_parties:
        ties.add(Tie.HANDOVER_PARTY)
    if asker.covers(case.province):
        if Role.COORDINATOR in asker.roles:
            ties.add(Tie.COORDINATOR)
        if Role.AUDITOR in asker.roles:
            ties.add(Tie.AUDITOR)
    return frozenset(ties)


@dataclass(frozen=True)
class Permission:
    """The policy's answer to "may this principal do that to this case?"."""

    allowed: bool
    visible: bool  # False: the case does not exist for this principal (answer 404)
    role: Role | None  # the role the principal acts in when allowed
    reason: str
    # Refused for the principal's roles alone, whatever the case: answered 403 before the
    # case is looked at, which tells nothing of whether it exists.
    by_role: bool = False


def permits(asker: Asker, case: CaseTies, action: Action) -> Permission:
    """May ``asker`` perform ``action`` on ``case``? Pure and total."""
    ties = ties_of(asker, case)
    visible = bool(ties & RULES[Action.SEE_PROGRESS].ties)  # type: ignore[operator]
    rule = RULES[action]
    roles = [r for r in Role if r in rule.roles and r in asker.roles]
    if not roles:
        names = ", ".join(sorted(r.value for r in rule.roles))
        return Permission(
            False, visible, None, f"This needs one of the roles: {names}.", by_role=True
        )
    if rule.ties is not None and not ties & rule.ties:
        return Permission(
            False, visible, None, "Your agency has no part in this case that allows this."
        )
    return Permission(True, visible or rule.ties is None, roles[0], "allowed")


@dataclass(frozen=True)
class Sight:
    """What a read may show: these categories, on this basis (None: nothing personal)."""

    categories: frozenset[DataCategory]
    basis: ReadBasis | None
    role: Role | None = None  # the role the principal reads in
    grant_ids: tuple[UUID, ...] = ()
    override_id: UUID | None = None
    withheld: dict[DataCategory, str] = field(default_factory=dict)


NOTHING = Sight(frozenset(), None)


def sight(
    asker: Asker,
    case: CaseTies,
    requested: Iterable[DataCategory] = ALL_CATEGORIES,
    *,
    consent: ConsentDecision | None = None,
    override_id: UUID | None = None,
    break_glass_reason: str | None = None,
) -> Sight:
    """Which of the ``requested`` categories of a person's data ``asker`` may read now.

    - The agencies holding the case read everything (basis ``own_case``).
    - A referral's recipient reads what ``consent`` (the decision at the instant of the read,
      for that recipient and the referral's purpose) permits (``grant``), or, while an
      approved emergency override is in force, what the referral asked for (``override``).
    - With a reason, the roles allowed to break the glass read everything (``break_glass``).
    - Everyone else, coordinators and auditors included, reads nothing personal.
    """
    wanted = frozenset(requested)
    ties = ties_of(asker, case)
    if break_glass_reason is not None:
        glass = permits(asker, case, Action.BREAK_GLASS)
        if break_glass_reason.strip() and glass.allowed:
            return Sight(wanted, ReadBasis.BREAK_GLASS, glass.role)
        return NOTHING
    reading = permits(asker, case, Action.READ_PERSONAL)
    if not reading.allowed:
        return NOTHING
    if Tie.HOLDER in ties:
        return Sight(wanted, ReadBasis.OWN_CASE, reading.role)
    if override_id is not None:
        return Sight(wanted, ReadBasis.OVERRIDE, reading.role, override_id=override_id)
    if consent is None or consent.recipient.agency_id != asker.agency_id:
        return NOTHING
    permitted = {
        c.category: c.grant_id
        for c in consent.categories
        if c.category in wanted and c.grant_id is not None and c.category in consent.permitted
    }
    withheld = {c.category: c.reason for c in consent.withheld if c.category in wanted}
    if not permitted:
        return Sight(frozenset(), None, withheld=withheld)
    grants = tuple(dict.fromkeys(g for g in permitted.values() if g is not None))
    return Sight(frozenset(permitted), ReadBasis.GRANT, reading.role, grants, withheld=withheld)


def family_member_sight(asker: Asker, case: CaseTies) -> Sight:
    """Who reads the details of a family member referred on the person's case (the
    ``family`` category): the agencies holding the case (``own_case``), and the recipient
    of the referral once it was sent, on the family member's own consent to that recipient
    (``family_member_consent``); nobody else, coordinators and auditors included. ``case``
    holds the referral's recipient only once it was sent."""
    reading = permits(asker, case, Action.READ_PERSONAL)
    if not reading.allowed:
        return NOTHING
    family = frozenset({DataCategory.FAMILY})
    ties = ties_of(asker, case)
    if Tie.HOLDER in ties:
        return Sight(family, ReadBasis.OWN_CASE, reading.role)
    if Tie.RECIPIENT in ties:
        return Sight(family, ReadBasis.FAMILY_MEMBER_CONSENT, reading.role)
    return NOTHING
