"""The referral service: follows intake and consent, and is where agencies meet."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from contracts.casework import (
    EducationLivelihoodAssessed,
    ExploitationRecorded,
    FamilySituationAssessed,
    IdentificationRecorded,
    LegalNeedsAssessed,
    MedicalExaminationRecorded,
    PsychosocialAssessed,
    ServiceDeclined,
)
from contracts.consent import (
    ConsentGranted,
    ConsentRefused,
    ConsentRenewed,
    ConsentWithdrawn,
    RefusalLifted,
    SubjectAgeNoted,
)
from contracts.directory import PLATFORM_AGENCY_ID
from contracts.envelope import Actor, AgencyRef, Event
from contracts.erasure import PersonErased
from contracts.intake import (
    CaseManagerAssigned,
    ContactPreferenceRecorded,
    PersonDetailsCorrected,
    PersonRegistered,
    RapidNeedsAssessed,
    ReceptionRecorded,
    RiskAssessed,
)
from contracts.plan import PlanTaskProgressed, ReintegrationPlanRevised, Task
from contracts.referral import (
    OVERRIDE_DEFAULT_HOURS,
    FamilyMember,
    HandoverKind,
    HandoverParty,
    HandoverStarted,
    OverrideConclusion,
    PartyRole,
    PlannedTask,
    ReferralCreated,
    ServiceDelivery,
    Urgency,
    case_file_id,
    case_file_id_of_record,
)
from contracts.vocabulary import DataCategory, Purpose, Role, ServiceType
from services.referral.domain import (
    CaseFile,
    CaseFileNotFoundError,
    Handover,
    HandoverNotFoundError,
    Referral,
    ReferralNotFoundError,
)
from services.referral.index import ReferralIndex
from services.referral.settings import Deadlines, ReferralSettings
from services.runtime.agencies import AgencyLookup, resolve_agency
from services.runtime.aggregate import CommandContext, utcnow
from services.runtime.application import Result
from services.runtime.follower import FollowingApplication, Processing, UpstreamAheadError
from services.runtime.logging import get_logger
from services.runtime.metrics import DEADLINE_ESCALATIONS

log = get_logger("ketnoi.referral")
_SYSTEM = Actor(user_id="ketnoi-deadline-watch", agency_id=PLATFORM_AGENCY_ID, role=Role.ADMIN)

INTAKE_FACTS: tuple[type[Event], ...] = (
    ReceptionRecorded,
    PersonRegistered,
    PersonDetailsCorrected,
    RapidNeedsAssessed,
    RiskAssessed,
    ContactPreferenceRecorded,
    CaseManagerAssigned,
    MedicalExaminationRecorded,
    PsychosocialAssessed,
    FamilySituationAssessed,
    LegalNeedsAssessed,
    EducationLivelihoodAssessed,
    ExploitationRecorded,
    IdentificationRecorded,
    PersonErased,
    # Tasks a referral may name, and the person's choice to refuse or drop a referral's
    # service.
    ReintegrationPlanRevised,
    PlanTaskProgressed,
    ServiceDeclined,
)
CONSENT_FACTS: tuple[type[Event], ...] = (
    SubjectAgeNoted,
    ConsentGranted,
    ConsentRefused,
    ConsentWithdrawn,
    ConsentRenewed,
    RefusalLifted,
)


def _prefixed(prefix: str, facts: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}_{name}": value for name, value in facts.items()}


def facts_of(event: Event) -> list[tuple[DataCategory, dict[str, Any]]]:
    """The data categories an intake event holds, field by field, as agencies would see them.

    Each event gives the fields it is the source of; a category gathered from several events
    (``legal_case``, ``needs``) keeps each event's fields under names of their own, and a
    later event of the same kind replaces its own fields only (``CaseFile.note_facts``).
    """
    casework = _casework_facts(event)
    if casework is not None:
        return [casework]
    if isinstance(event, ReceptionRecorded):
        return [
            (DataCategory.LOCATION, event.place.model_dump(mode="json", exclude_none=True)),
            (
                DataCategory.LEGAL_CASE,
                {
                    "arrival_route": event.route.value,
                    "returned_from_country": event.returned_from_country,
                    "handed_over_by": event.handed_over_by.agency_id
                    if event.handed_over_by
                    else None,
                },
            ),
        ]
    if isinstance(event, PersonRegistered | PersonDetailsCorrected):
        return [
            (
                DataCategory.IDENTITY,
                {
                    **event.details.model_dump(mode="json"),
                    "minor": event.minor,
                },
            )
        ]
    if isinstance(event, RapidNeedsAssessed):
        return [
            (
                DataCategory.NEEDS,
                {
                    "urgent_needs": [n.value for n in event.needs],
                    "notes": event.notes,
                },
            )
        ]
    if isinstance(event, RiskAssessed):
        return [
            (
                DataCategory.RISK,
                {
                    "level": event.level.value,
                    "at_risk": [s.value for s in event.at_risk],
                    "management_plan": event.management_plan,
                },
            )
        ]
    if isinstance(event, ContactPreferenceRecorded):
        return [
            (
                DataCategory.CONTACT,
                {
                    "preferred": [m.value for m in event.preferred],
                    "refused": [m.value for m in event.refused],
                    "note": event.note,
                },
            )
        ]
    return []


def _casework_facts(event: Event) -> tuple[DataCategory, dict[str, Any]] | None:
    """The facts of the comprehensive assessments, exploitation and identification."""
    if isinstance(event, MedicalExaminationRecorded):  # the medical findings, and only them
        return DataCategory.HEALTH, event.examination.model_dump(mode="json")
    if isinstance(event, PsychosocialAssessed):
        return DataCategory.PSYCHOSOCIAL, event.assessment.model_dump(mode="json")
    if isinstance(event, FamilySituationAssessed):
        return DataCategory.FAMILY, event.situation.model_dump(mode="json")
    if isinstance(event, LegalNeedsAssessed):
        return DataCategory.LEGAL_CASE, _prefixed(
            "legal_needs", event.assessment.model_dump(mode="json")
        )
    if isinstance(event, ExploitationRecorded):
        return DataCategory.LEGAL_CASE, _prefixed(
            "exploitation", event.exploitation.model_dump(mode="json")
        )
    if isinstance(event, IdentificationRecorded):
        return DataCategory.LEGAL_CASE, {
            "identification_status": event.status.value,
            "identification_authority": event.authority.agency_id if event.authority else None,
            "identification_decided_on": event.decided_on.isoformat() if event.decided_on else None,
        }
    if isinstance(event, EducationLivelihoodAssessed):
        return DataCategory.NEEDS, _prefixed("livelihood", event.assessment.model_dump(mode="json"))
    return None


def planned_task(task: Task) -> PlannedTask:
    """What the referral service keeps of a plan task: none of its words."""
    return PlannedTask(
        task_id=task.task_id,
        agency_id=task.responsible.agency.agency_id,
        service_type=task.service_type,
        status=task.status,
    )


@dataclass(frozen=True)
class NamedParty:
    """A party to a handover as a request names it: by agency id only (its kind comes from
    the agency directory)."""

    agency_id: str
    role: PartyRole
    capacity: str


class ReferralService(FollowingApplication):
    """Referrals, handovers and disclosures; follows the intake and consent logs."""

    name = "referral"
    follows: ClassVar[dict[str, tuple[type[Event], ...]]] = {
        "intake": INTAKE_FACTS,
        "consent": CONSENT_FACTS,
    }

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        settings: ReferralSettings | None = None,
        agencies: AgencyLookup | None = None,
    ) -> None:
        super().__init__(env=env)
        self.referral_settings = settings or ReferralSettings()
        self.index = ReferralIndex(self.recorder, self.mapper)
        # The agency directory, which alone says what kind an agency is (set by the wiring).
        self.agencies = agencies

    def _agency(self, agency_id: str, field: str) -> AgencyRef:
        if self.agencies is None:
            msg = "the referral service needs the agency directory to name agencies"
            raise RuntimeError(msg)
        return resolve_agency(self.agencies, agency_id, field)

    # -- following intake and consent --------------------------------------------------------

    def policy(self, upstream: str, event: Event, processing: Processing) -> None:
        # The upstream event's own time: replaying the logs gives the same decisions.
        ctx = CommandContext(
            actor=event.actor,
            at=event.timestamp,
            caused_by=event.event_id,
            correlation_id=event.correlation_id,
        )
        if isinstance(event, ReceptionRecorded):
            case_file = CaseFile.open(
                ctx,
                event.originator_id,
                event.person_id,
                event.place.province,
                event.receiving_agency.agency_id,
            )
        elif upstream == "intake":
            case_file = self._case_file(event.originator_id)
            if isinstance(event, CaseManagerAssigned):
                case_file.note_case_manager(ctx, event.agency.agency_id)
            elif isinstance(event, PersonErased):
                referrals = [self.load(Referral, r) for r in case_file.referral_ids]
                case_file.record_erased(ctx, told_agencies(referrals))
                processing.collect_events(case_file)
                return
            elif isinstance(event, ReintegrationPlanRevised):
                case_file.note_plan(ctx, tuple(planned_task(t) for t in event.tasks))
            elif isinstance(event, PlanTaskProgressed):
                case_file.note_task_status(ctx, event.task_id, event.to_status)
            elif isinstance(event, ServiceDeclined) and event.referral_id is not None:
                self._declined(ctx, case_file, event, processing)
        else:
            try:
                case_file = self.load(CaseFile, case_file_id_of_record(event.originator_id))
            except AggregateNotFoundError:
                raise UpstreamAheadError("consent arrived before its case's reception") from None
        for category, facts in facts_of(event):
            case_file.note_facts(ctx, category, facts)
        if upstream == "consent":
            case_file.note_consent(ctx, event)
            for referral_id in case_file.referral_ids:
                referral = self.load(Referral, referral_id)
                referral.reconsider(ctx, case_file, self._deadlines(referral))
                processing.collect_events(referral)
        processing.collect_events(case_file)

    def _declined(
        self,
        ctx: CommandContext,
        case_file: CaseFile,
        event: ServiceDeclined,
        processing: Processing,
    ) -> None:
        """The person refused or dropped a referral's service: it ends as their choice. A
        referral of another case, or unknown here, is left alone (intake cannot check it)."""
        referral_id = event.referral_id
        if referral_id not in case_file.referral_ids:
            log.warning("declined_referral_not_of_case", referral_id=str(referral_id))
            return
        referral = self.load(Referral, referral_id)
        if referral.declined_by_person(ctx, event.choice, event.event_id):
            processing.collect_events(referral)

    def _deadlines(self, referral: Referral) -> Deadlines:
        return self.referral_settings.deadlines_for(referral.spec.service_type)

    # -- reading -----------------------------------------------------------------------------

    def _case_file(self, case_id: UUID) -> CaseFile:
        try:
            return self.load(CaseFile, case_file_id(case_id))
        except AggregateNotFoundError:
            raise CaseFileNotFoundError(case_id) from None

    def get_case_file(self, case_id: UUID) -> CaseFile:
        return self._case_file(case_id)

    def get_referral(self, referral_id: UUID) -> Referral:
        try:
            return self.load(Referral, referral_id)
        except AggregateNotFoundError:
            raise ReferralNotFoundError(referral_id) from None

    def get_handover(self, handover_id: UUID) -> Handover:
        try:
            return self.load(Handover, handover_id)
        except AggregateNotFoundError:
            raise HandoverNotFoundError(handover_id) from None

    def kind_of(self, aggregate_id: UUID) -> type[Referral] | type[Handover] | None:
        """Whether the id is a referral's or a handover's (the feed's key ids name either),
        as its first event says; None for any other id."""
        first = self.recorder.select_events(aggregate_id, lte=1)
        topic = first[0].topic if first else None
        if topic == ReferralCreated.topic():
            return Referral
        if topic == HandoverStarted.topic():
            return Handover
        return None

    # -- commands ----------------------------------------------------------------------------

    def create_referral(
        self,
        ctx: CommandContext,
        case_id: UUID,
        *,
        from_agency: AgencyRef,
        to_agency_id: str,
        service_type: ServiceType,
        urgency: Urgency,
        purpose: Purpose,
        categories: tuple[DataCategory, ...],
        note: str | None = None,
        plan_task_id: UUID | None = None,
        family_member: FamilyMember | None = None,
        scope: Callable[[CaseFile], None] | None = None,
    ) -> Result:
        """Create a referral and send it if consent allows; returns its id and status.

        The recipient is named by id; its kind is the directory's at this moment. Raises
        InvalidRequestError (422, field ``to_agency``) when the directory does not know the
        agency or it is inactive.
        """
        request: dict[str, Any] = {
            "case_id": str(case_id),
            "from_agency": from_agency.model_dump(mode="json"),
            "to_agency_id": to_agency_id,
            "service_type": service_type.value,
            "urgency": urgency.value,
            "purpose": purpose.value,
            "categories": [c.value for c in categories],
            "note": note,
        }
        # Absent unless given: earlier requests keep their digests.
        if plan_task_id is not None:
            request["plan_task_id"] = str(plan_task_id)
        if family_member is not None:
            request["family_member"] = family_member.model_dump(mode="json")

        def run() -> tuple[list[Any], Result]:
            case_file = self._case_file(case_id)
            if scope is not None:
                scope(case_file)
            to_agency = self._agency(to_agency_id, "to_agency")
            referral = Referral.create(
                ctx,
                case_file,
                from_agency=from_agency,
                to_agency=to_agency,
                service_type=service_type,
                urgency=urgency,
                purpose=purpose,
                categories=categories,
                note=note,
                deadlines=self.referral_settings.deadlines_for(service_type),
                plan_task_id=plan_task_id,
                family_member=family_member,
            )
            return [referral, case_file], _summary(referral)

        return self.execute(ctx, "create_referral", request, run)

    def on_referral(
        self,
        ctx: CommandContext,
        referral_id: UUID,
        command: str,
        request: dict[str, Any],
        change: Callable[[Referral], Any],
        scope: Callable[[Referral], None] | None = None,
    ) -> Result:
        def run() -> tuple[list[Any], Result]:
            referral = self.get_referral(referral_id)
            if scope is not None:
                scope(referral)
            extra = change(referral) or {}
            return [referral], {**_summary(referral), **extra}

        return self.execute(ctx, command, {"referral_id": str(referral_id), **request}, run)

    def answer(
        self,
        ctx: CommandContext,
        referral_id: UUID,
        action: str,
        text: str | None = None,
        scope: Callable[[Referral], None] | None = None,
        delivery: ServiceDelivery | None = None,
        why: str | None = None,
    ) -> Result:
        request: dict[str, Any] = {"text": text}
        if delivery is not None or why is not None:
            request |= {"delivery": delivery.value if delivery else None, "why": why}
        return self.on_referral(
            ctx,
            referral_id,
            action,
            request,
            lambda referral: referral.answer(ctx, action, text, delivery, why),
            scope,
        )

    def report_progress(
        self,
        ctx: CommandContext,
        referral_id: UUID,
        note: str,
        scope: Callable[[Referral], None] | None = None,
    ) -> Result:
        return self.on_referral(
            ctx,
            referral_id,
            "report_progress",
            {"note": note},
            lambda referral: referral.report_progress(ctx, note),
            scope,
        )

    def record_feedback(
        self,
        ctx: CommandContext,
        referral_id: UUID,
        satisfaction: int,
        comment: str | None = None,
        scope: Callable[[Referral], None] | None = None,
    ) -> Result:
        return self.on_referral(
            ctx,
            referral_id,
            "record_feedback",
            {"satisfaction": satisfaction, "comment": comment},
            lambda referral: referral.record_feedback(ctx, satisfaction, comment),
            scope,
        )

    def request_override(
        self,
        ctx: CommandContext,
        referral_id: UUID,
        reason: str,
        scope: Callable[[Referral], None] | None = None,
        needed_for_hours: int = OVERRIDE_DEFAULT_HOURS,
    ) -> Result:
        """Ask for an emergency override needed for ``needed_for_hours`` (1 to 72) from its
        approval; returns the referral's summary and the override's id."""
        request: dict[str, Any] = {"reason": reason}
        if needed_for_hours != OVERRIDE_DEFAULT_HOURS:  # keeps earlier requests' digests
            request["needed_for_hours"] = needed_for_hours
        return self.on_referral(
            ctx,
            referral_id,
            "request_override",
            request,
            lambda referral: {
                "override_id": str(referral.request_override(ctx, reason, needed_for_hours))
            },
            scope,
        )

    def approve_override(
        self,
        ctx: CommandContext,
        referral_id: UUID,
        override_id: UUID,
        scope: Callable[[Referral], None] | None = None,
    ) -> Result:
        def approve(referral: Referral) -> None:
            case_file = self._case_file(referral.spec.case_id)
            referral.approve_override(ctx, override_id, case_file, self._deadlines(referral))

        return self.on_referral(
            ctx,
            referral_id,
            "approve_override",
            {"override_id": str(override_id)},
            approve,
            scope,
        )

    def review_override(
        self,
        ctx: CommandContext,
        referral_id: UUID,
        override_id: UUID,
        conclusion: OverrideConclusion,
        note: str,
        scope: Callable[[Referral], None] | None = None,
    ) -> Result:
        """Record the review of an approved override (by someone in a third role); the
        override stops counting and the referral follows the consent in force again."""

        def review(referral: Referral) -> None:
            case_file = self._case_file(referral.spec.case_id)
            referral.review_override(
                ctx, override_id, conclusion, note, case_file, self._deadlines(referral)
            )

        return self.on_referral(
            ctx,
            referral_id,
            "review_override",
            {"override_id": str(override_id), "conclusion": conclusion.value, "note": note},
            review,
            scope,
        )

    def start_handover(
        self,
        ctx: CommandContext,
        case_id: UUID,
        *,
        kind: HandoverKind,
        parties: tuple[NamedParty, ...],
        to_case_manager_id: str | None = None,
        scope: Callable[[CaseFile], None] | None = None,
    ) -> Result:
        """Start a handover between the named parties, each with its kind from the directory.

        Raises InvalidRequestError (422, field ``parties.<i>.agency``) for an agency the
        directory does not know or holds inactive.
        """
        request = {
            "case_id": str(case_id),
            "kind": kind.value,
            "parties": [
                {"agency_id": p.agency_id, "role": p.role.value, "capacity": p.capacity}
                for p in parties
            ],
            "to_case_manager_id": to_case_manager_id,
        }

        def run() -> tuple[list[Any], Result]:
            case_file = self._case_file(case_id)
            if scope is not None:
                scope(case_file)
            named = tuple(
                HandoverParty(
                    agency=self._agency(p.agency_id, f"parties.{i}.agency"),
                    role=p.role,
                    capacity=p.capacity,
                )
                for i, p in enumerate(parties)
            )
            handover = Handover.start(
                ctx, case_file, kind=kind, parties=named, to_case_manager_id=to_case_manager_id
            )
            return [handover], _handover_summary(handover)

        return self.execute(ctx, "start_handover", request, run)

    def confirm_handover(
        self,
        ctx: CommandContext,
        handover_id: UUID,
        agency_id: str,
        scope: Callable[[Handover], None] | None = None,
    ) -> Result:
        def run() -> tuple[list[Any], Result]:
            handover = self.get_handover(handover_id)
            if scope is not None:
                scope(handover)
            handover.confirm_by(ctx, agency_id)
            return [handover], _handover_summary(handover)

        request = {"handover_id": str(handover_id), "agency_id": agency_id}
        return self.execute(ctx, "confirm_handover", request, run)

    # -- deadlines ---------------------------------------------------------------------------

    def check_deadlines(self, now: datetime | None = None) -> int:
        """Append one escalation per missed deadline, and make every referral whose
        emergency override has passed its end follow the consent in force again (its lapse
        recorded). Safe with several processes running: a concurrent change of the same
        referral loses the race and is not repeated. Returns the number of escalations."""
        now = now or utcnow()
        escalated = 0
        ended = self.index.with_overrides_ended(now)
        for referral_id in dict.fromkeys([*ended, *self.index.with_deadlines_due(now)]):
            referral = self.load(Referral, referral_id)
            version = referral.version
            ctx = CommandContext(actor=_SYSTEM, at=now)
            lapsed = referral.override_ended_by(now)
            if lapsed is not None:
                case_file = self._case_file(referral.spec.case_id)
                referral.reconsider(ctx, case_file, self._deadlines(referral))
            kinds = referral.escalate(ctx, now)
            if referral.version == version:
                continue
            try:
                self.save(referral)
            except IntegrityError:
                continue  # another process changed it first; the next check sees its state
            if lapsed is not None:
                log.info("override_lapsed", referral_id=str(referral_id), override_id=str(lapsed))
            if kinds:
                escalated += len(kinds)
                DEADLINE_ESCALATIONS.inc(len(kinds))
                log.warning(
                    "deadline_missed",
                    referral_id=str(referral_id),
                    deadlines=[k.value for k in kinds],
                )
        return escalated


def _summary(referral: Referral) -> Result:
    return {
        "referral_id": str(referral.id),
        "version": referral.version,
        "status": referral.status.value,
        "blocked_by": [w.category.value for w in referral.withheld],
    }


def _handover_summary(handover: Handover) -> Result:
    return {
        "handover_id": str(handover.id),
        "version": handover.version,
        "status": handover.status,
        "waiting_for": handover.waiting_for,
    }


def told_agencies(referrals: Iterable[Referral]) -> tuple[str, ...]:
    """Every agency the feed told about these referrals: each sender, and each recipient of
    a referral that was sent (a draft or blocked one never reached it)."""
    found: dict[str, None] = {}
    for referral in referrals:
        found[referral.spec.from_agency.agency_id] = None
        if referral.dispatched_at is not None:
            found[referral.spec.to_agency.agency_id] = None
    return tuple(sorted(found))
