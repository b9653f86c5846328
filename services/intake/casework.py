"""Case work on a case: the comprehensive assessments, exploitation and identification, and
the contact log with its notes. The rules of each live here; ``Case`` inherits them."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from uuid import UUID, uuid4

from contracts.casework import (
    CaseNoteWritten,
    ContactLogged,
    EducationLivelihood,
    EducationLivelihoodAssessed,
    Exploitation,
    ExploitationRecorded,
    FamilySituation,
    FamilySituationAssessed,
    IdentificationRecorded,
    LegalNeedsAssessed,
    LegalNeedsAssessment,
    MedicalExamination,
    MedicalExaminationRecorded,
    PsychosocialAssessed,
    PsychosocialAssessment,
    ServiceDeclined,
)
from contracts.consent_decision import local_date
from contracts.envelope import AgencyRef
from contracts.intake import ContactPreferenceRecorded
from contracts.vocabulary import (
    ContactMode,
    DataCategory,
    DeclineKind,
    ExploitationType,
    IdentificationStatus,
    MeansOfControl,
    MentalState,
    ServiceType,
)
from services.intake.plan import Planning
from services.runtime.aggregate import CommandContext, applies
from services.runtime.errors import InvalidRequestError, RuleViolationError

# Clocks on phones and laptops drift; a time a few minutes "in the future" is not an error.
CLOCK_TOLERANCE = timedelta(minutes=10)


class CaseWorkRuleError(RuleViolationError):
    """A piece of case work the rules forbid as asked."""


def check_past(ctx: CommandContext, field: str, at: datetime) -> None:
    """``at`` has its time zone and is not in the future."""
    if at.tzinfo is None:
        raise InvalidRequestError(field, f"Give {field} with its time zone.")
    if at > ctx.at + CLOCK_TOLERANCE:
        raise InvalidRequestError(field, f"{field} is in the future.")


def check_past_day(ctx: CommandContext, field: str, day: date | None) -> None:
    if day is not None and day > local_date(ctx.at):
        raise InvalidRequestError(field, f"{field} is in the future.")


class CaseWork(Planning):
    """The case work part of a case (and, inherited, its reintegration plan). ``Case``
    provides the person, the contact preference and whether the case is open."""

    person_id: UUID
    contact: ContactPreferenceRecorded | None

    def __init__(self, aggregate_id: UUID) -> None:
        super().__init__(aggregate_id)
        self.medical: MedicalExamination | None = None
        self.psychosocial: PsychosocialAssessment | None = None
        self.family: FamilySituation | None = None
        self.legal_needs: LegalNeedsAssessment | None = None
        self.livelihood: EducationLivelihood | None = None
        self.exploitation: Exploitation | None = None
        self.identification: IdentificationRecorded | None = None
        self.contacts: list[ContactLogged] = []
        self.notes: list[CaseNoteWritten] = []
        self.declined: list[ServiceDeclined] = []

    def check_open(self, doing: str) -> None:
        raise NotImplementedError

    # -- the comprehensive assessments -----------------------------------------------------

    def record_medical_examination(self, ctx: CommandContext, exam: MedicalExamination) -> None:
        """Raises InvalidRequestError when the follow-up is needed but not said (or said but
        not needed), or the examination is in the future."""
        self.check_open("record a medical examination")
        check_past(ctx, "examined_at", exam.examined_at)
        if exam.follow_up_needed and exam.follow_up is None:
            raise InvalidRequestError("follow_up", "Say what follow-up is needed, where and when.")
        if not exam.follow_up_needed and exam.follow_up is not None:
            raise InvalidRequestError(
                "follow_up_needed", "A follow-up is described: set follow_up_needed to true."
            )
        self.trigger(ctx, MedicalExaminationRecorded, person_id=self.person_id, examination=exam)

    @applies(MedicalExaminationRecorded)
    def _examined(self, event: MedicalExaminationRecorded) -> None:
        self.medical = event.examination

    def assess_psychosocial(self, ctx: CommandContext, assessment: PsychosocialAssessment) -> None:
        """Raises InvalidRequestError when an acute crisis or a risk of self-harm is recorded
        without psychological support being needed."""
        self.check_open("record a psychosocial assessment")
        check_past(ctx, "assessed_at", assessment.assessed_at)
        urgent = assessment.mental_state is MentalState.ACUTE_CRISIS or assessment.self_harm_risk
        if urgent and not assessment.psychological_support_needed:
            raise InvalidRequestError(
                "psychological_support_needed",
                "An acute crisis or a risk of self-harm needs psychological support: set "
                "psychological_support_needed to true.",
            )
        self.trigger(ctx, PsychosocialAssessed, person_id=self.person_id, assessment=assessment)

    @applies(PsychosocialAssessed)
    def _psychosocial(self, event: PsychosocialAssessed) -> None:
        self.psychosocial = event.assessment

    def assess_family(self, ctx: CommandContext, situation: FamilySituation) -> None:
        self.check_open("record the family situation")
        check_past(ctx, "assessed_at", situation.assessed_at)
        self.trigger(ctx, FamilySituationAssessed, person_id=self.person_id, situation=situation)

    @applies(FamilySituationAssessed)
    def _family(self, event: FamilySituationAssessed) -> None:
        self.family = event.situation

    def assess_legal_needs(self, ctx: CommandContext, assessment: LegalNeedsAssessment) -> None:
        self.check_open("record the legal needs")
        check_past(ctx, "assessed_at", assessment.assessed_at)
        self.trigger(ctx, LegalNeedsAssessed, person_id=self.person_id, assessment=assessment)

    @applies(LegalNeedsAssessed)
    def _legal(self, event: LegalNeedsAssessed) -> None:
        self.legal_needs = event.assessment

    def assess_livelihood(self, ctx: CommandContext, assessment: EducationLivelihood) -> None:
        self.check_open("record education and livelihood")
        check_past(ctx, "assessed_at", assessment.assessed_at)
        self.trigger(
            ctx, EducationLivelihoodAssessed, person_id=self.person_id, assessment=assessment
        )

    @applies(EducationLivelihoodAssessed)
    def _livelihood(self, event: EducationLivelihoodAssessed) -> None:
        self.livelihood = event.assessment

    # -- exploitation and identification ----------------------------------------------------

    def record_exploitation(self, ctx: CommandContext, exploitation: Exploitation) -> None:
        """Raises InvalidRequestError naming the field: "other" without saying what, what is
        said without "other", dates in the future or ending before they start."""
        self.check_open("record the exploitation")
        other = ExploitationType.OTHER in exploitation.types
        if other != (exploitation.other_type is not None):
            raise InvalidRequestError(
                "other_type", "Say what the other exploitation was exactly when types has other."
            )
        other_means = MeansOfControl.OTHER in exploitation.means_of_control
        if other_means != (exploitation.other_means is not None):
            raise InvalidRequestError(
                "other_means",
                "Say what the other means of control were exactly when means_of_control has other.",
            )
        check_past_day(ctx, "started_on", exploitation.started_on)
        check_past_day(ctx, "ended_on", exploitation.ended_on)
        started, ended = exploitation.started_on, exploitation.ended_on
        if started is not None and ended is not None and ended < started:
            raise InvalidRequestError("ended_on", "ended_on is before started_on.")
        if exploitation == self.exploitation:
            raise CaseWorkRuleError("This exploitation is already recorded; nothing changed.")
        self.trigger(ctx, ExploitationRecorded, person_id=self.person_id, exploitation=exploitation)

    @applies(ExploitationRecorded)
    def _exploitation(self, event: ExploitationRecorded) -> None:
        self.exploitation = event.exploitation

    def record_identification(
        self,
        ctx: CommandContext,
        status: IdentificationStatus,
        authority: AgencyRef | None,
        decided_on: date | None,
    ) -> None:
        """A presumed victim names no authority; an authority's decision names it and its
        date; once an authority decided, only another decision replaces it."""
        self.check_open("record the identification")
        if status is IdentificationStatus.PRESUMED:
            if authority is not None or decided_on is not None:
                raise InvalidRequestError(
                    "authority", "A presumed victim has no authority's decision yet."
                )
            decided = self.identification
            if decided is not None and decided.status is not IdentificationStatus.PRESUMED:
                raise CaseWorkRuleError(
                    f"An authority decided ({decided.status.value}); only another decision "
                    "replaces it.",
                    allowed=[IdentificationStatus.IDENTIFIED, IdentificationStatus.NOT_IDENTIFIED],
                )
        else:
            if authority is None:
                raise InvalidRequestError("authority", "Name the authority that decided.")
            if decided_on is None:
                raise InvalidRequestError("decided_on", "Give the date of the decision.")
            check_past_day(ctx, "decided_on", decided_on)
        self.trigger(
            ctx,
            IdentificationRecorded,
            person_id=self.person_id,
            status=status,
            authority=authority,
            decided_on=decided_on,
        )

    @applies(IdentificationRecorded)
    def _identified(self, event: IdentificationRecorded) -> None:
        self.identification = event

    # -- the contact log and notes ----------------------------------------------------------

    def refuses(self, mode: ContactMode) -> bool:
        """True when the person refused to be contacted this way."""
        return self.contact is not None and mode in self.contact.refused

    def log_contact(
        self,
        ctx: CommandContext,
        *,
        mode: ContactMode,
        occurred_at: datetime,
        place: str | None,
        note: str | None,
        reason: str | None,
    ) -> UUID:
        """Contacts are logged after closure too (follow-up after exit). A contact in a mode
        the person refused needs the reason; it stays on the record as against their wish.
        Raises CaseWorkRuleError without it."""
        check_past(ctx, "occurred_at", occurred_at)
        against = self.refuses(mode)
        if against and (reason is None or not reason.strip()):
            raise CaseWorkRuleError(
                f"The person refused contact by {mode.value}: give the reason it could not be "
                "avoided, or contact them as they prefer.",
                allowed=[m.value for m in self.contact.preferred] if self.contact else [],
            )
        if not against and reason is not None:
            raise InvalidRequestError(
                "reason", "A reason is asked only for a contact the person refused."
            )
        contact_id = uuid4()
        self.trigger(
            ctx,
            ContactLogged,
            person_id=self.person_id,
            contact_id=contact_id,
            mode=mode,
            occurred_at=occurred_at,
            place=place,
            note=note,
            against_preference=against,
            reason=reason,
        )
        return contact_id

    @applies(ContactLogged)
    def _contact_logged(self, event: ContactLogged) -> None:
        self.contacts.append(event)

    def write_note(self, ctx: CommandContext, about: DataCategory, text: str) -> UUID:
        note_id = uuid4()
        self.trigger(
            ctx, CaseNoteWritten, person_id=self.person_id, note_id=note_id, about=about, text=text
        )
        return note_id

    @applies(CaseNoteWritten)
    def _note_written(self, event: CaseNoteWritten) -> None:
        self.notes.append(event)

    # -- the person's choices ----------------------------------------------------------------

    def record_declined(
        self,
        ctx: CommandContext,
        service_type: ServiceType,
        choice: DeclineKind,
        referral_id: UUID | None,
        in_their_words: str | None,
        how_to_come_back: str,
    ) -> None:
        """The person refused or dropped a service: recorded as their choice, on an open
        or a closed case alike. Raises InvalidRequestError when what they were told about
        coming back is blank."""
        if not how_to_come_back.strip():
            raise InvalidRequestError(
                "how_to_come_back", "Tell the person how to come back, and record what you said."
            )
        self.trigger(
            ctx,
            ServiceDeclined,
            person_id=self.person_id,
            service_type=service_type,
            choice=choice,
            referral_id=referral_id,
            in_their_words=in_their_words,
            how_to_come_back=how_to_come_back,
        )

    @applies(ServiceDeclined)
    def _declined(self, event: ServiceDeclined) -> None:
        self.declined.append(event)
