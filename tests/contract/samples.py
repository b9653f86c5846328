"""Sample events, one per event type, for the golden fixtures.

``python -m tests.contract.samples`` writes a golden fixture for each event version that has
none yet, and never overwrites one: a released version's stored form is frozen.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from uuid import UUID

from contracts.audit import PersonalDataRead, ReadBasis
from contracts.casework import (
    CaseNoteWritten,
    CaseReviewed,
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
from contracts.consent import (
    CaseManagerNoted,
    CaseStageNoted,
    Collection,
    CollectionMethod,
    ConsentGiver,
    ConsentGranted,
    ConsentRecordOpened,
    ConsentRefused,
    ConsentRenewed,
    ConsentWithdrawn,
    GiverKind,
    Recipient,
    RecipientGroup,
    RefusalLifted,
    SubjectAgeNoted,
)
from contracts.consent_decision import Verdict
from contracts.directory import (
    AgencyContact,
    AgencyDeactivated,
    AgencyDetails,
    AgencyDetailsChanged,
    AgencyReactivated,
    AgencyRegistered,
    agency_record_id,
)
from contracts.envelope import Actor, AgencyRef, CommandRecorded, Event
from contracts.erasure import (
    CaseFileErased,
    ErasureProposed,
    ErasureReason,
    ErasureRequested,
    PersonErased,
)
from contracts.intake import (
    CaseClosed,
    CaseManagerAssigned,
    CaseReopened,
    CaseTransferAwaited,
    ContactPreferenceRecorded,
    PartyPresent,
    PersonDetails,
    PersonDetailsCorrected,
    PersonRegistered,
    Place,
    RapidNeedsAssessed,
    ReceptionRecorded,
    RiskAssessed,
    StageChanged,
    transfer_id,
)
from contracts.plan import (
    AgreementMethod,
    Attendee,
    CaseConferenceHeld,
    ExitPlanned,
    Goal,
    PlanDomain,
    PlanTaskProgressed,
    ReintegrationMeasured,
    ReintegrationPlanAgreed,
    ReintegrationPlanRevised,
    Task,
    TaskStatus,
    TeamMember,
    TeamRole,
)
from contracts.referral import (
    CaseFactsNoted,
    CaseFileManagerNoted,
    CaseFileOpened,
    CasePlanNoted,
    ConsentNoted,
    DeadlineKind,
    DeadlineMissed,
    DisclosureBasis,
    DisclosureRecorded,
    FamilyConsentGiver,
    FamilyMember,
    FamilyMemberConsent,
    FamilyRelationship,
    HandoverCancelled,
    HandoverCompleted,
    HandoverConfirmed,
    HandoverKind,
    HandoverParty,
    HandoverStarted,
    OverrideApproved,
    OverrideConclusion,
    OverrideLapsed,
    OverrideRequested,
    OverrideReviewed,
    PartyRole,
    PlannedTask,
    ReferralAccepted,
    ReferralAcknowledged,
    ReferralBlocked,
    ReferralCancelled,
    ReferralCompleted,
    ReferralCreated,
    ReferralDeclinedByPerson,
    ReferralDispatched,
    ReferralFailed,
    ReferralLinked,
    ReferralProgressReported,
    ReferralPutOnHold,
    ReferralRejected,
    ReferralResumed,
    ReferralStarted,
    ReferralStatus,
    ReleasedField,
    ServiceFeedbackRecorded,
    Urgency,
    WithdrawalNotedDuringOverride,
    WithheldCategory,
)
from contracts.vocabulary import (
    AgencyKind,
    ArrivalRoute,
    CaseStage,
    ClosureReason,
    ContactMode,
    DataCategory,
    DeclineKind,
    EducationLevel,
    ExploitationType,
    IdentificationStatus,
    IdentityDocumentStatus,
    LegalNeed,
    LivelihoodStatus,
    MeansOfControl,
    MentalState,
    Purpose,
    ReopeningReason,
    ReturnSafety,
    ReviewDecision,
    RiskLevel,
    RiskSubject,
    Role,
    ServiceType,
    Sex,
    UrgentNeed,
)
from services.runtime.persistence import new_mapper

GOLDEN = Path(__file__).with_name("golden")
CASE = UUID("0b8f2c3e-5d7a-4e1b-9c2d-3f4a5b6c7d8e")
PERSON = UUID("1c9a3d4f-6e8b-4f2c-8d3e-4a5b6c7d8e9f")
AT = datetime(2026, 3, 1, 21, 30, tzinfo=UTC)
ACTOR = Actor(user_id="officer-1", agency_id="dong-thap-police", role=Role.INTAKE_OFFICER)
POLICE = AgencyRef(agency_id="dong-thap-police", kind=AgencyKind.POLICE)
DETAILS = PersonDetails(
    full_name="Sample Person",
    sex=Sex.FEMALE,
    date_of_birth=date(2002, 3, 14),
    nationality="VN",
    languages=("vi",),
    identity_document_status=IdentityDocumentStatus.UNKNOWN,
)


def samples() -> list[Event]:
    common = {"originator_id": CASE, "timestamp": AT, "actor": ACTOR}
    return [
        ReceptionRecorded(
            originator_version=1,
            person_id=PERSON,
            route=ArrivalRoute.RESCUED,
            received_at=AT,
            place=Place(province="dong-thap", district="Hồng Ngự"),
            receiving_agency=POLICE,
            returned_from_country="KH",
            present=(PartyPresent(agency=POLICE, capacity="investigating officer"),),
            **common,
        ),
        PersonRegistered(
            originator_version=2, person_id=PERSON, details=DETAILS, minor=False, **common
        ),
        PersonDetailsCorrected(
            originator_version=3, person_id=PERSON, details=DETAILS, minor=False, **common
        ),
        RapidNeedsAssessed(
            originator_version=4,
            person_id=PERSON,
            needs=(UrgentNeed.SHELTER_TONIGHT,),
            notes="n",
            **common,
        ),
        RiskAssessed(
            originator_version=5,
            person_id=PERSON,
            level=RiskLevel.HIGH,
            at_risk=(RiskSubject.PERSON,),
            management_plan="plan",
            **common,
        ),
        ContactPreferenceRecorded(
            originator_version=6,
            person_id=PERSON,
            preferred=(ContactMode.PHONE,),
            refused=(ContactMode.HOME_VISIT,),
            **common,
        ),
        CaseManagerAssigned(
            originator_version=7,
            case_manager_id="cw-1",
            agency=POLICE,
            handover_id=HANDOVER,
            **common,
        ),
        StageChanged(
            originator_version=8,
            from_stage=CaseStage.RECEPTION,
            to_stage=CaseStage.CRISIS,
            reason="r",
            **common,
        ),
        CaseClosed(
            originator_version=9,
            person_id=PERSON,
            from_stage=CaseStage.CRISIS,
            reason=ClosureReason.GOALS_MET,
            feedback="f",
            satisfaction=4,
            **common,
        ),
        CaseReopened(
            originator_version=10,
            episode=2,
            reason=ReopeningReason.NEW_CRISIS,
            to_stage=CaseStage.CRISIS,
            **common,
        ),
        CommandRecorded(
            originator_version=1,
            command="record_reception",
            request_digest="ab",
            result={"case_id": str(CASE)},
            **common,
        ),
        *casework_samples(),
        *plan_samples(),
        *consent_samples(),
        *referral_samples(),
        *audit_samples(),
        *directory_samples(),
        *erasure_samples(),
    ]


def casework_samples() -> list[Event]:
    health = Actor(user_id="doctor-1", agency_id="dong-thap-swc", role=Role.HEALTH_WORKER)
    manager = Actor(user_id="manager-1", agency_id="dong-thap-swc", role=Role.CASE_MANAGER)
    common = {"originator_id": CASE, "timestamp": AT, "actor": manager}
    return [
        MedicalExaminationRecorded(
            originator_version=20,
            person_id=PERSON,
            examination=MedicalExamination(
                examined_at=AT,
                findings="bruises",
                urgent_treatment="dressing",
                follow_up_needed=True,
                follow_up="in 2 weeks",
            ),
            **{**common, "actor": health},
        ),
        PsychosocialAssessed(
            originator_version=21,
            person_id=PERSON,
            assessment=PsychosocialAssessment(
                assessed_at=AT,
                mental_state=MentalState.DISTRESSED,
                psychological_support_needed=True,
                observations="o",
            ),
            **common,
        ),
        FamilySituationAssessed(
            originator_version=22,
            person_id=PERSON,
            situation=FamilySituation(
                assessed_at=AT, return_safety=ReturnSafety.SAFE, wishes_to_return_home=True
            ),
            **common,
        ),
        LegalNeedsAssessed(
            originator_version=23,
            person_id=PERSON,
            assessment=LegalNeedsAssessment(
                assessed_at=AT, needs=(LegalNeed.CRIMINAL_CASE, LegalNeed.COMPENSATION)
            ),
            **common,
        ),
        EducationLivelihoodAssessed(
            originator_version=24,
            person_id=PERSON,
            assessment=EducationLivelihood(
                assessed_at=AT,
                education_level=EducationLevel.LOWER_SECONDARY,
                livelihood=LivelihoodStatus.UNEMPLOYED,
                skills=("sewing",),
                wishes="garment course",
            ),
            **common,
        ),
        ExploitationRecorded(
            originator_version=25,
            person_id=PERSON,
            exploitation=Exploitation(
                types=(ExploitationType.FORCED_LABOUR, ExploitationType.SEXUAL),
                countries=("KH",),
                started_on=date(2025, 6, 1),
                ended_on=date(2026, 2, 20),
                means_of_control=(MeansOfControl.DEBT_BONDAGE,),
            ),
            **common,
        ),
        IdentificationRecorded(
            originator_version=26,
            person_id=PERSON,
            status=IdentificationStatus.IDENTIFIED,
            authority=POLICE,
            decided_on=date(2026, 3, 1),
            **common,
        ),
        ContactLogged(
            originator_version=27,
            person_id=PERSON,
            contact_id=UUID("5ade7182-ac2f-4d60-a172-8e9fa0b1c2d3"),
            mode=ContactMode.HOME_VISIT,
            occurred_at=AT,
            place="p",
            note="n",
            against_preference=True,
            reason="r",
            **common,
        ),
        ServiceDeclined(
            originator_version=29,
            person_id=PERSON,
            service_type=ServiceType.VOCATIONAL_TRAINING,
            choice=DeclineKind.DROPPED,
            in_their_words="w",
            how_to_come_back="h",
            **common,
        ),
        CaseReviewed(
            originator_version=35,
            person_id=PERSON,
            stage=CaseStage.TRANSITIONAL,
            case_manager_id="manager-1",
            findings="f",
            decisions=(ReviewDecision.CONTINUE,),
            next_review_on=date(2026, 4, 1),
            **common,
        ),
        CaseNoteWritten(
            originator_version=28,
            person_id=PERSON,
            note_id=UUID("6bef8293-bd30-4e71-8283-9fa0b1c2d3e4"),
            about=DataCategory.PSYCHOSOCIAL,
            text="t",
            **common,
        ),
    ]


def plan_samples() -> list[Event]:
    manager = Actor(user_id="manager-1", agency_id="dong-thap-swc", role=Role.CASE_MANAGER)
    common = {"originator_id": CASE, "timestamp": AT, "actor": manager, "person_id": PERSON}
    goal = Goal(
        goal_id=UUID("7cf093a4-ce41-4f82-9394-a0b1c2d3e4f5"),
        domain=PlanDomain.INCOME,
        goal="A job after a garment course",
    )
    task = Task(
        task_id=UUID("8d01a4b5-df52-4093-a4a5-b1c2d3e4f506"),
        goal_id=goal.goal_id,
        action="Enrol in the garment course",
        responsible=TeamMember(
            team_role=TeamRole.TRAINER,
            agency=AgencyRef(agency_id="nghe-an-vtc", kind=AgencyKind.VOCATIONAL_TRAINING_CENTRE),
        ),
        due_on=date(2026, 4, 1),
        service_type=ServiceType.VOCATIONAL_TRAINING,
    )
    return [
        ReintegrationPlanRevised(
            originator_version=30, revision=1, goals=(goal,), tasks=(task,), **common
        ),
        ReintegrationPlanAgreed(
            originator_version=31,
            revision=1,
            method=AgreementMethod.SIGNED,
            person_views="v",
            **common,
        ),
        PlanTaskProgressed(
            originator_version=32,
            task_id=task.task_id,
            from_status=TaskStatus.PLANNED,
            to_status=TaskStatus.IN_PROGRESS,
            **common,
        ),
        CaseConferenceHeld(
            originator_version=36,
            held_on=date(2026, 3, 2),
            attendees=(
                Attendee(agency=POLICE, capacity="investigator"),
                Attendee(agency=task.responsible.agency, capacity="trainer"),
            ),
            decisions=("d",),
            tasks_added=(task.task_id,),
            **common,
        ),
        ExitPlanned(
            originator_version=34,
            planned_exit_on=date(2026, 6, 1),
            follow_up_every_days=30,
            follow_up_until=date(2026, 12, 1),
            follow_up_modes=(ContactMode.PHONE,),
            how_to_come_back="Call the centre",
            **common,
        ),
        ReintegrationMeasured(
            originator_version=33,
            measured_at=AT,
            stage=CaseStage.CRISIS,
            economic=0.2,
            social=0.35,
            psychosocial=0.3,
            baseline=True,
            **common,
        ),
    ]


def directory_samples() -> list[Event]:
    admin = Actor(user_id="admin-1", agency_id="moet-inspectorate", role=Role.ADMIN)
    common = {"originator_id": agency_record_id("dong-thap-police"), "timestamp": AT}
    details = AgencyDetails(
        kind=AgencyKind.POLICE,
        name_vi="Công an tỉnh Đồng Tháp",
        name_en="Dong Thap Provincial Police",
        country="VN",
        province="dong-thap",
        district="Cao Lãnh",
        services=(ServiceType.LEGAL_AID,),
        contact=AgencyContact(phone="+84 277 3851 234", email="congan@dongthap.gov.vn"),
    )
    return [
        AgencyRegistered(
            originator_version=1,
            agency_id="dong-thap-police",
            details=details,
            actor=admin,
            **common,
        ),
        AgencyDetailsChanged(
            originator_version=2,
            agency_id="dong-thap-police",
            details=details.model_copy(update={"district": None}),
            actor=admin,
            **common,
        ),
        AgencyDeactivated(
            originator_version=3,
            agency_id="dong-thap-police",
            reason="merged",
            actor=admin,
            **common,
        ),
        AgencyReactivated(
            originator_version=4, agency_id="dong-thap-police", reason="r", actor=admin, **common
        ),
    ]


RECORD = UUID("2dab4e5f-7f9c-4a3d-9e4f-5b6c7d8e9fa0")
GRANT = UUID("3ebc5f60-8a0d-4b4e-8f50-6c7d8e9fa0b1")
REFUSAL = UUID("4fcd6071-9b1e-4c5f-9061-7d8e9fa0b1c2")
WRITTEN = Collection(
    method=CollectionMethod.WRITTEN_FORM,
    form_reference="F-1",
    language="vi",
    withdrawal_explained=True,
)


def consent_samples() -> list[Event]:
    common = {"originator_id": RECORD, "timestamp": AT, "actor": ACTOR}
    return [
        ConsentRecordOpened(
            originator_version=1,
            case_id=CASE,
            person_id=PERSON,
            province="dong-thap",
            received_at=AT,
            **common,
        ),
        SubjectAgeNoted(
            originator_version=2,
            person_id=PERSON,
            minor=True,
            adult_on=date(2028, 3, 14),
            age_is_estimated=False,
            **common,
        ),
        CaseStageNoted(originator_version=3, stage=CaseStage.CRISIS, **common),
        CaseManagerNoted(originator_version=3, agency_id="dong-thap-swc", **common),
        ConsentGranted(
            originator_version=4,
            grant_id=GRANT,
            person_id=PERSON,
            categories=(DataCategory.IDENTITY, DataCategory.HEALTH),
            recipients=(Recipient(agency_id="dong-thap-swc"), Recipient(kind=AgencyKind.HOSPITAL)),
            purposes=(Purpose.SERVICE_PROVISION,),
            valid_from=AT,
            valid_until=AT.replace(year=2027),
            collection=WRITTEN,
            given_by=ConsentGiver(kind=GiverKind.GUARDIAN, relationship="mother"),
            child_views="agrees",
            **common,
        ),
        ConsentRefused(
            originator_version=5,
            refusal_id=REFUSAL,
            person_id=PERSON,
            recipients=(Recipient(group=RecipientGroup.LAW_ENFORCEMENT),),
            except_purposes=(Purpose.CRIMINAL_PROCEEDINGS,),
            statement="s",
            **common,
        ),
        ConsentRenewed(
            originator_version=6,
            grant_id=GRANT,
            person_id=PERSON,
            valid_until=AT.replace(year=2028),
            collection=WRITTEN,
            **common,
        ),
        ConsentWithdrawn(
            originator_version=7,
            grant_id=GRANT,
            person_id=PERSON,
            heard_by=POLICE,
            reason="r",
            **common,
        ),
        RefusalLifted(
            originator_version=8, refusal_id=REFUSAL, person_id=PERSON, collection=WRITTEN, **common
        ),
    ]


def stored_form(event: Event) -> dict[str, object]:
    stored = new_mapper().to_stored_event(event)
    return {
        "topic": stored.topic,
        "originator_id": str(stored.originator_id),
        "originator_version": stored.originator_version,
        "state": json.loads(stored.state),
    }


REFERRAL = UUID("5ade7182-ac2f-4d60-a172-8e9fa0b1c2d3")
HANDOVER = UUID("6bef8293-bd30-4e71-b283-9fa0b1c2d3e4")
HOSPITAL = AgencyRef(agency_id="dong-thap-hospital", kind=AgencyKind.HOSPITAL)
WITHHELD = (
    WithheldCategory(category=DataCategory.HEALTH, verdict=Verdict.WITHDRAWN, reason="withdrawn"),
)


def referral_samples() -> list[Event]:
    file = {"originator_id": RECORD, "timestamp": AT, "actor": ACTOR}
    ref = {"originator_id": REFERRAL, "timestamp": AT, "actor": ACTOR}
    hand = {"originator_id": HANDOVER, "timestamp": AT, "actor": ACTOR}
    party = HandoverParty(agency=POLICE, role=PartyRole.FROM, capacity="officer")
    return [
        CaseFileOpened(
            originator_version=1, case_id=CASE, person_id=PERSON, province="dong-thap", **file
        ),
        CaseFileManagerNoted(originator_version=2, agency_id="dong-thap-swc", **file),
        CaseFactsNoted(
            originator_version=2,
            person_id=PERSON,
            category=DataCategory.IDENTITY,
            facts={"full_name": "Sample Person"},
            **file,
        ),
        ConsentNoted(
            originator_version=3,
            person_id=PERSON,
            upstream_topic="org.ketnoi.consent.refusal_lifted.v1",
            upstream_state={"x": 1},
            **file,
        ),
        ReferralLinked(originator_version=4, referral_id=REFERRAL, **file),
        CasePlanNoted(
            originator_version=5,
            person_id=PERSON,
            tasks=(
                PlannedTask(
                    task_id=GRANT,
                    agency_id="dong-thap-hospital",
                    service_type=ServiceType.MEDICAL_CARE,
                    status=TaskStatus.PLANNED,
                ),
            ),
            **file,
        ),
        ReferralCreated(
            originator_version=1,
            case_id=CASE,
            person_id=PERSON,
            province="dong-thap",
            from_agency=POLICE,
            to_agency=HOSPITAL,
            service_type=ServiceType.HEALTH_CHECK,
            urgency=Urgency.URGENT,
            purpose=Purpose.SERVICE_PROVISION,
            categories=(DataCategory.IDENTITY,),
            note="n",
            plan_task_id=GRANT,
            family_member=FamilyMember(
                full_name="Sample Child",
                relationship=FamilyRelationship.CHILD,
                age=7,
                consent=FamilyMemberConsent(
                    given_by=FamilyConsentGiver.GUARDIAN,
                    collection=Collection(
                        method=CollectionMethod.WRITTEN_FORM,
                        form_reference="F-9",
                        language="vi",
                        withdrawal_explained=True,
                    ),
                    given_on=date(2026, 3, 1),
                ),
            ),
            **ref,
        ),
        ReferralBlocked(originator_version=2, withheld=WITHHELD, **ref),
        DisclosureRecorded(
            originator_version=3,
            disclosure_id=GRANT,
            person_id=PERSON,
            recipient=HOSPITAL,
            purpose=Purpose.SERVICE_PROVISION,
            basis=DisclosureBasis.CONSENT,
            released=(
                ReleasedField(category=DataCategory.IDENTITY, field="full_name", grant_id=GRANT),
            ),
            data={"identity": {"full_name": "Sample Person"}},
            **ref,
        ),
        ReferralDispatched(originator_version=4, acknowledge_by=AT, first_service_by=AT, **ref),
        ReferralAcknowledged(originator_version=5, **ref),
        ReferralAccepted(originator_version=6, note="ok", **ref),
        ReferralStarted(originator_version=7, **ref),
        ReferralPutOnHold(
            originator_version=8, withheld=WITHHELD, resume_to=ReferralStatus.IN_PROGRESS, **ref
        ),
        ReferralResumed(originator_version=9, to_status=ReferralStatus.IN_PROGRESS, **ref),
        ReferralCompleted(originator_version=10, outcome="done", **ref),
        ReferralProgressReported(originator_version=30, note="n", **ref),
        ServiceFeedbackRecorded(originator_version=31, satisfaction=4, comment="c", **ref),
        ReferralRejected(originator_version=11, reason="r", **ref),
        ReferralCancelled(originator_version=12, reason="r", **ref),
        ReferralFailed(originator_version=13, reason="r", **ref),
        ReferralDeclinedByPerson(
            originator_version=13,
            choice=DeclineKind.DROPPED,
            service_declined=GRANT,
            **ref,
        ),
        DeadlineMissed(
            originator_version=14,
            deadline=DeadlineKind.ACKNOWLEDGE,
            due_at=AT,
            status=ReferralStatus.REQUESTED,
            **ref,
        ),
        OverrideRequested(
            originator_version=15, override_id=GRANT, reason="unconscious, needs surgery", **ref
        ),
        OverrideApproved(originator_version=16, override_id=GRANT, **ref),
        OverrideReviewed(
            originator_version=17,
            override_id=GRANT,
            conclusion=OverrideConclusion.JUSTIFIED,
            note="surgery could not wait for consent",
            **ref,
        ),
        OverrideLapsed(originator_version=18, override_id=GRANT, ended_at=AT, **ref),
        WithdrawalNotedDuringOverride(
            originator_version=19,
            override_id=GRANT,
            approved_by=Actor(
                user_id="coord-1", agency_id="dong-thap-dolisa", role=Role.COORDINATOR
            ),
            withheld=WITHHELD,
            **ref,
        ),
        HandoverStarted(
            originator_version=1,
            case_id=CASE,
            province="dong-thap",
            kind=HandoverKind.RECEPTION,
            parties=(party,),
            **hand,
        ),
        HandoverConfirmed(
            originator_version=2, agency_id="dong-thap-police", waited_seconds=60.0, **hand
        ),
        HandoverCompleted(
            originator_version=3, seconds_by_party={"dong-thap-police": 60.0}, **hand
        ),
        HandoverCancelled(originator_version=4, reason="r", **hand),
        CaseTransferAwaited(
            originator_id=transfer_id(HANDOVER),
            originator_version=1,
            timestamp=AT,
            actor=ACTOR,
            case_id=CASE,
            handover_id=HANDOVER,
            to_agency=POLICE,
            to_case_manager_id="cw-2",
        ),
    ]


READ = UUID("7cf0a3a4-ce41-4f82-b394-a0b1c2d3e4f5")
CORRELATION = UUID("8d01b4b5-df52-4093-84a5-b1c2d3e4f506")


def audit_samples() -> list[Event]:
    return [
        PersonalDataRead(
            originator_id=READ,
            originator_version=1,
            timestamp=AT,
            actor=ACTOR,
            correlation_id=CORRELATION,
            case_id=CASE,
            person_id=PERSON,
            categories=(DataCategory.IDENTITY, DataCategory.HEALTH),
            basis=ReadBasis.GRANT,
            grant_ids=(GRANT,),
            what="referral.referral",
        )
    ]


def erasure_samples() -> list[Event]:
    common = {"originator_id": CASE, "timestamp": AT, "actor": ACTOR}
    request = UUID("9e12c5c6-e063-41a4-95b6-c2d3e4f50617")
    return [
        ErasureProposed(originator_version=11, closed_at=AT, retention_days=1825, **common),
        ErasureRequested(
            originator_version=12, request_id=request, reason=ErasureReason.PERSON_REQUEST, **common
        ),
        PersonErased(
            originator_version=13,
            person_id=PERSON,
            request_id=request,
            reason=ErasureReason.PERSON_REQUEST,
            requested_by=ACTOR,
            **common,
        ),
        CaseFileErased(
            originator_id=RECORD,
            originator_version=9,
            timestamp=AT,
            actor=ACTOR,
            case_id=CASE,
            person_id=PERSON,
            referral_ids=(REFERRAL,),
            notify=("dong-thap-hospital",),
        ),
    ]


if __name__ == "__main__":
    GOLDEN.mkdir(exist_ok=True)
    for event in samples():
        path = GOLDEN / f"{type(event).topic()}.json"
        if not path.exists():
            path.write_text(json.dumps(stored_form(event), indent=2, ensure_ascii=False) + "\n")
            sys.stdout.write(f"wrote {path.name}\n")
