"""The Nghe An livelihood scenario of DOMAIN.md, seeded through the intake service's commands:
a woman returns from forced labour abroad; assessments, a reintegration plan made with her
(a garment course at the vocational training centre, then a job with a local business),
measures at three stages, contacts as she prefers them, exit, and a reopening after a crisis.

The story spans months, so each step carries its own time (``started`` days before the
seeding anchor); every command has an Idempotency-Key, so a second run appends nothing.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from uuid import UUID

from contracts.casework import (
    EducationLivelihood,
    Exploitation,
    FamilySituation,
    LegalNeedsAssessment,
    PsychosocialAssessment,
)
from contracts.envelope import Actor, AgencyRef
from contracts.intake import PersonDetails, Place
from contracts.plan import AgreementMethod, PlanDomain, TaskStatus, TeamMember, TeamRole
from contracts.vocabulary import (
    ArrivalRoute,
    CaseStage,
    ClosureReason,
    ContactMode,
    DataCategory,
    EducationLevel,
    ExploitationType,
    IdentificationStatus,
    IdentityDocumentStatus,
    LegalNeed,
    LivelihoodStatus,
    MeansOfControl,
    MentalState,
    ReopeningReason,
    ReturnSafety,
    RiskLevel,
    RiskSubject,
    Role,
    Sex,
    UrgentNeed,
)
from services.intake.application import IntakeService
from services.intake.plan import GoalDraft, TaskDraft
from services.runtime.aggregate import CommandContext

STARTED_DAYS_AGO = 240


def seed_livelihood(
    intake: IntakeService,
    anchor: datetime,
    police: AgencyRef,
    centre: AgencyRef,
    training: AgencyRef,
    employer: AgencyRef,
) -> UUID:
    """Seed the scenario; returns the case id."""
    start = anchor - timedelta(days=STARTED_DAYS_AGO)
    officer = Actor(
        user_id="na-police-officer-1", agency_id=police.agency_id, role=Role.INTAKE_OFFICER
    )
    manager = Actor(
        user_id="na-swc-caseworker-1", agency_id=centre.agency_id, role=Role.CASE_MANAGER
    )

    def ctx(step: str, actor: Actor, days: float) -> CommandContext:
        return CommandContext(
            actor=actor,
            at=start + timedelta(days=days),
            idempotency_key=f"demo-seed:nghe-an-1:{step}",
        )

    def on(days: float) -> datetime:
        return start + timedelta(days=days)

    received = intake.record_reception(
        ctx("reception", officer, 0),
        route=ArrivalRoute.RETURNED_FROM_ABROAD,
        received_at=on(0),
        place=Place(province="nghe-an", district="Kỳ Sơn", location="Nậm Cắn border gate"),
        receiving_agency=police,
        returned_from_country="CN",
    )
    case_id = UUID(received["case_id"])
    intake.register_person(
        ctx("person", officer, 0.01),
        case_id,
        PersonDetails(
            full_name="Vi Thị Hoa",
            sex=Sex.FEMALE,
            date_of_birth=date(1999, 7, 21),
            nationality="VN",
            languages=("vi",),
            identity_document_status=IdentityDocumentStatus.DOCUMENTS_HELD_BY_OTHERS,
        ),
    )
    intake.assess_needs(
        ctx("needs", officer, 0.02),
        case_id,
        (UrgentNeed.SHELTER_TONIGHT, UrgentNeed.MEDICAL_CHECK, UrgentNeed.IDENTITY_DOCUMENTS),
    )
    intake.assess_risk(
        ctx("risk", officer, 0.03),
        case_id,
        RiskLevel.MEDIUM,
        (RiskSubject.PERSON,),
        "Shelter at the social work centre; the recruiter lives in the next commune.",
    )
    intake.record_contact_preference(
        ctx("contact", officer, 0.04),
        case_id,
        (ContactMode.PHONE, ContactMode.MEETING_NEARBY_TOWN),
        (ContactMode.HOME_VISIT,),
        "No home visits: the village would know.",
    )
    intake.record_exploitation(
        ctx("exploitation", officer, 0.05),
        case_id,
        Exploitation(
            types=(ExploitationType.FORCED_LABOUR,),
            countries=("CN",),
            place="A garment workshop",
            started_on=(start - timedelta(days=400)).date(),
            ended_on=(start - timedelta(days=3)).date(),
            means_of_control=(
                MeansOfControl.DEBT_BONDAGE,
                MeansOfControl.WITHHOLDS_DOCUMENTS,
                MeansOfControl.EXCESSIVE_WORKING_HOURS,
            ),
        ),
    )
    intake.record_identification(
        ctx("identification", officer, 2),
        case_id,
        IdentificationStatus.IDENTIFIED,
        police,
        on(2).date(),
    )
    intake.assign_case_manager(ctx("manager", manager, 0.1), case_id, manager.user_id, centre)
    intake.change_stage(ctx("crisis", manager, 0.2), case_id, CaseStage.CRISIS, "Shelter tonight.")
    intake.assess_psychosocial(
        ctx("psychosocial", manager, 1),
        case_id,
        PsychosocialAssessment(
            assessed_at=on(1),
            mental_state=MentalState.ANXIOUS,
            psychological_support_needed=True,
            observations="Sleeps badly; worried about the debt her family owes.",
        ),
    )
    intake.assess_family(
        ctx("family", manager, 3),
        case_id,
        FamilySituation(
            assessed_at=on(3),
            return_safety=ReturnSafety.SAFE,
            wishes_to_return_home=True,
            family_aware_of_return=True,
        ),
    )
    intake.assess_legal_needs(
        ctx("legal", manager, 3.1),
        case_id,
        LegalNeedsAssessment(
            assessed_at=on(3),
            needs=(LegalNeed.IDENTITY_DOCUMENTS, LegalNeed.COMPENSATION),
        ),
    )
    intake.assess_livelihood(
        ctx("livelihood", manager, 3.2),
        case_id,
        EducationLivelihood(
            assessed_at=on(3),
            education_level=EducationLevel.LOWER_SECONDARY,
            livelihood=LivelihoodStatus.UNEMPLOYED,
            skills=("sewing",),
            wishes="A short garment course, then work near home.",
        ),
    )
    intake.measure(ctx("baseline", manager, 3.3), case_id, on(3.3), 0.15, 0.35, 0.3)
    trainer = TeamMember(team_role=TeamRole.TRAINER, agency=training)
    hiring = TeamMember(team_role=TeamRole.EMPLOYER, agency=employer)
    social_worker = TeamMember(
        team_role=TeamRole.SOCIAL_WORKER, agency=centre, member_id=manager.user_id
    )
    goals = (
        GoalDraft(PlanDomain.INCOME, "A job in garment making near home"),
        GoalDraft(PlanDomain.LEGAL, "A new identity card"),
        GoalDraft(PlanDomain.FAMILY, "Back home with her parents, safely"),
    )
    tasks = (
        TaskDraft(0, "Three-month garment course", trainer, on(100).date()),
        TaskDraft(0, "Interview and trial month at the garment company", hiring, on(130).date()),
        TaskDraft(1, "Apply for the identity card at the commune", social_worker, on(30).date()),
        TaskDraft(2, "Meet her parents in Kỳ Sơn town", social_worker, on(14).date()),
    )
    intake.revise_plan(ctx("plan-1", manager, 5), case_id, goals, tasks)
    intake.agree_plan(
        ctx("plan-1-agreed", manager, 5.1),
        case_id,
        AgreementMethod.SIGNED,
        "I want to learn to sew properly and earn near my parents.",
    )
    plan = intake.get_case(case_id)
    course, job, card, parents = plan.tasks
    intake.progress_task(
        ctx("course-started", manager, 10), case_id, course, TaskStatus.IN_PROGRESS
    )
    intake.progress_task(ctx("parents-met", manager, 12), case_id, parents, TaskStatus.DONE)
    intake.change_stage(
        ctx("transitional", manager, 14),
        case_id,
        CaseStage.TRANSITIONAL,
        "Back home; course started.",
    )
    intake.log_contact(
        ctx("call-1", manager, 40),
        case_id,
        mode=ContactMode.PHONE,
        occurred_at=on(40),
        note="Enjoys the course; the identity card is ready.",
    )
    intake.progress_task(ctx("card-done", manager, 40.1), case_id, card, TaskStatus.DONE)
    intake.progress_task(
        ctx("course-done", manager, 100), case_id, course, TaskStatus.DONE, "Certificate received."
    )
    intake.measure(ctx("measure-2", manager, 101), case_id, on(101), 0.45, 0.55, 0.5)
    intake.progress_task(ctx("job-started", manager, 105), case_id, job, TaskStatus.IN_PROGRESS)
    intake.change_stage(
        ctx("external", manager, 110),
        case_id,
        CaseStage.EXTERNAL_SUPPORT,
        "Working; living at home.",
    )
    intake.log_contact(
        ctx("meeting-1", manager, 135),
        case_id,
        mode=ContactMode.MEETING_NEARBY_TOWN,
        occurred_at=on(135),
        place="Café in Kỳ Sơn town",
        note="Hired after the trial month.",
    )
    intake.progress_task(ctx("job-done", manager, 135.1), case_id, job, TaskStatus.DONE, "Hired.")
    intake.measure(ctx("measure-3", manager, 150), case_id, on(150), 0.7, 0.65, 0.65)
    intake.plan_exit(
        ctx("exit-plan", manager, 152),
        case_id,
        on(160).date(),
        30,
        on(340).date(),
        (ContactMode.PHONE, ContactMode.MEETING_NEARBY_TOWN),
        "Call the centre's hotline or her case manager; the support resumes at once.",
    )
    intake.close_case(
        ctx("exit", manager, 160),
        case_id,
        ClosureReason.SAFE_INDEPENDENCE,
        "The course and the job changed everything.",
        5,
    )
    intake.log_contact(
        ctx("follow-up-1", manager, 190),
        case_id,
        mode=ContactMode.PHONE,
        occurred_at=on(190),
        note="Still working; saving for a sewing machine.",
    )
    intake.reopen_case(
        ctx("reopened", manager, 220),
        case_id,
        ReopeningReason.NEW_CRISIS,
        CaseStage.CRISIS,
        "The workshop closed; the old recruiter called her again.",
    )
    intake.write_note(
        ctx("note-reopened", manager, 220.1),
        case_id,
        DataCategory.RISK,
        "Safety planning by phone; she asked for a new job placement.",
    )
    return case_id
