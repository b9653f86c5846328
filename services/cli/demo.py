"""The demo scenarios of DOMAIN.md, seeded through the services' own commands.

Every command carries an Idempotency-Key, so seeding the same data directory again returns
the first results and appends nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from contracts.consent import (
    Collection,
    CollectionMethod,
    ConsentGiver,
    GiverKind,
    Recipient,
)
from contracts.envelope import Actor, AgencyRef
from contracts.intake import PartyPresent, PersonDetails, Place
from contracts.referral import HandoverKind, PartyRole, Urgency
from contracts.vocabulary import (
    AgencyKind,
    ArrivalRoute,
    CaseStage,
    ContactMode,
    DataCategory,
    IdentityDocumentStatus,
    Purpose,
    RiskLevel,
    RiskSubject,
    Role,
    ServiceType,
    Sex,
    UrgentNeed,
)
from services.cli.demo_directory import DEMO_AGENCIES, seed_directory
from services.cli.demo_livelihood import seed_livelihood
from services.cli.wiring import Platform
from services.consent.application import ConsentService
from services.directory.application import DirectoryService
from services.intake.application import IntakeService
from services.referral.application import NamedParty, ReferralService
from services.runtime.aggregate import CommandContext
from services.runtime.persistence import application_env
from services.web.session import DemoUser


def agency(agency_id: str) -> AgencyRef:
    """A demo agency, with its kind as the demo directory holds it."""
    return AgencyRef(agency_id=agency_id, kind=DEMO_AGENCIES[agency_id].kind)


DT_POLICE = agency("dong-thap-police")
DT_BORDER_GUARD = agency("dong-thap-border-guard")
DT_SWC = agency("dong-thap-social-work-centre")
LC_FOREIGN = agency("cn-border-authority")
LC_BORDER_GUARD = agency("lao-cai-border-guard")
LC_POLICE = agency("lao-cai-police")
LC_LOCAL = agency("lao-cai-commune-office")
LC_SWC = agency("lao-cai-social-work-centre")


@dataclass(frozen=True)
class SeededCase:
    label: str
    province: str
    case_id: UUID
    key: str


def _anchor(data_dir: Path) -> datetime:
    """The seeding time, kept so a second run sends exactly the same commands."""
    path = data_dir / "demo-seed.json"
    if path.exists():
        return datetime.fromisoformat(json.loads(path.read_text())["anchor"])
    # Two hours ago: every seeded step (about an hour of them) has happened by now.
    anchor = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
    path.write_text(json.dumps({"anchor": anchor.isoformat()}))
    return anchor


class _Seeder:
    def __init__(self, intake: IntakeService, anchor: datetime) -> None:
        self.intake = intake
        self.anchor = anchor

    def ctx(self, key: str, actor: Actor, minutes_after: int) -> CommandContext:
        return CommandContext(
            actor=actor,
            at=self.anchor + timedelta(minutes=minutes_after),
            idempotency_key=f"demo-seed:{key}",
        )

    def case(self, key: str, spec: dict[str, Any]) -> UUID:
        officer: Actor = spec["officer"]
        manager: Actor = spec["manager"]
        received_at = self.anchor - timedelta(hours=spec["hours_ago"])
        result = self.intake.record_reception(
            self.ctx(f"{key}:reception", officer, 0),
            route=spec["route"],
            received_at=received_at,
            place=spec["place"],
            receiving_agency=spec["receiving"],
            handed_over_by=spec.get("handed_over_by"),
            returned_from_country=spec.get("returned_from"),
            present=spec["present"],
        )
        case_id = UUID(result["case_id"])
        self.intake.register_person(self.ctx(f"{key}:person", officer, 1), case_id, spec["person"])
        self.intake.assess_needs(
            self.ctx(f"{key}:needs", officer, 2), case_id, spec["needs"], spec.get("needs_notes")
        )
        level, at_risk, plan = spec["risk"]
        self.intake.assess_risk(self.ctx(f"{key}:risk", officer, 3), case_id, level, at_risk, plan)
        preferred, refused, note = spec["contact"]
        self.intake.record_contact_preference(
            self.ctx(f"{key}:contact", officer, 4), case_id, preferred, refused, note
        )
        self.intake.assign_case_manager(
            self.ctx(f"{key}:manager", manager, 5), case_id, manager.user_id, spec["manager_agency"]
        )
        self.intake.change_stage(
            self.ctx(f"{key}:crisis", manager, 6),
            case_id,
            CaseStage.CRISIS,
            "Shelter, health check and counselling the same night.",
        )
        return case_id


def seed(platform: Platform, data_dir: Path) -> list[SeededCase]:
    """Seed the directory and the Dong Thap, Lao Cai and Nghe An scenarios; a second run
    changes nothing."""
    anchor = _anchor(data_dir)
    if "directory" in platform.apps:
        seed_directory(platform.directory)
    else:  # a platform without the directory in its process: seed the directory's own log
        directory = DirectoryService(env=application_env(platform.settings, "directory"))
        try:
            seed_directory(directory)
        finally:
            directory.close()
    seeded = seed_receptions(platform.intake, anchor)
    platform.catch_up()  # the consent service learns of the new cases from the intake log
    seed_consents(platform.consent, anchor, seeded)
    platform.catch_up()  # the referral service copies the cases and their consents
    seed_referrals(platform.referral, anchor, seeded)
    livelihood = seed_livelihood(
        platform.intake,
        anchor,
        agency("nghe-an-police"),
        agency("nghe-an-social-work-centre"),
        agency("nghe-an-vocational-training-centre"),
        agency("nghe-an-garment-company"),
    )
    platform.catch_up()
    return [
        *seeded,
        SeededCase(
            "Nghe An livelihood (course, job, exit, reopening)", "nghe-an", livelihood, "nghe-an-1"
        ),
    ]


def seed_receptions(intake: IntakeService, anchor: datetime) -> list[SeededCase]:
    seeder = _Seeder(intake, anchor)
    dt_officer = Actor(
        user_id="dt-police-officer-1", agency_id=DT_POLICE.agency_id, role=Role.INTAKE_OFFICER
    )
    dt_manager = Actor(
        user_id="dt-swc-caseworker-1", agency_id=DT_SWC.agency_id, role=Role.CASE_MANAGER
    )
    dong_thap = Place(
        province="dong-thap", district="Hồng Ngự", location="Provincial police station"
    )
    dt_present = (
        PartyPresent(agency=DT_BORDER_GUARD, capacity="border guard officer"),
        PartyPresent(agency=DT_SWC, capacity="social worker"),
    )
    dt_needs = (
        UrgentNeed.SHELTER_TONIGHT,
        UrgentNeed.MEDICAL_CHECK,
        UrgentNeed.PSYCHOLOGICAL_FIRST_AID,
        UrgentNeed.FOOD,
        UrgentNeed.CLOTHING,
        UrgentNeed.PHONE,
    )
    dt_risk = (
        RiskLevel.MEDIUM,
        (RiskSubject.PERSON,),
        "Shelter at the social work centre tonight; no contact with the recruiter's network.",
    )
    dt_contact = (
        (ContactMode.PHONE, ContactMode.MEETING_NEARBY_TOWN),
        (ContactMode.HOME_VISIT,),
        "No home visits: they mark her in the village.",
    )
    women = [
        ("dong-thap-1", "Lê Thị Mai", date(2002, 3, 14)),
        ("dong-thap-2", "Phạm Thị Lan", date(2006, 9, 2)),
    ]
    seeded: list[SeededCase] = []
    for key, name, born in women:
        case_id = seeder.case(
            key,
            {
                "officer": dt_officer,
                "manager": dt_manager,
                "manager_agency": DT_SWC,
                "route": ArrivalRoute.RESCUED,
                "returned_from": "KH",
                "hours_ago": 3,
                "place": dong_thap,
                "receiving": DT_POLICE,
                "present": dt_present,
                "person": PersonDetails(
                    full_name=name,
                    sex=Sex.FEMALE,
                    date_of_birth=born,
                    nationality="VN",
                    languages=("vi",),
                    identity_document_status=IdentityDocumentStatus.DOCUMENTS_HELD_BY_OTHERS,
                ),
                "needs": dt_needs,
                "risk": dt_risk,
                "contact": dt_contact,
            },
        )
        seeded.append(
            SeededCase(f"Dong Thap night reception ({key[-1]} of 2)", "dong-thap", case_id, key)
        )

    lc_officer = Actor(
        user_id="lc-border-guard-1", agency_id=LC_BORDER_GUARD.agency_id, role=Role.INTAKE_OFFICER
    )
    lc_manager = Actor(
        user_id="lc-swc-caseworker-1", agency_id=LC_SWC.agency_id, role=Role.CASE_MANAGER
    )
    case_id = seeder.case(
        "lao-cai-1",
        {
            "officer": lc_officer,
            "manager": lc_manager,
            "manager_agency": LC_SWC,
            "route": ArrivalRoute.BORDER_HANDOVER,
            "handed_over_by": LC_FOREIGN,
            "returned_from": "CN",
            "hours_ago": 5,
            "place": Place(
                province="lao-cai", district="Lào Cai", location="International border gate"
            ),
            "receiving": LC_BORDER_GUARD,
            "present": (
                PartyPresent(agency=LC_POLICE, capacity="police officer"),
                PartyPresent(agency=LC_LOCAL, capacity="local officer"),
                PartyPresent(agency=LC_SWC, capacity="psychological officer"),
            ),
            "person": PersonDetails(
                full_name="N.T.M.",
                sex=Sex.MALE,
                estimated_age=16,
                nationality="VN",
                languages=("vi",),
                identity_document_status=IdentityDocumentStatus.LOST_OR_DESTROYED,
            ),
            "needs": (
                UrgentNeed.SAFETY,
                UrgentNeed.PSYCHOLOGICAL_FIRST_AID,
                UrgentNeed.SHELTER_TONIGHT,
                UrgentNeed.IDENTITY_DOCUMENTS,
            ),
            "needs_notes": (
                "Rescued from a marriage brokerage ring; a psychologist within 24 hours."
            ),
            "risk": (
                RiskLevel.HIGH,
                (RiskSubject.PERSON, RiskSubject.FAMILY),
                "Child-protection plan with the guardian; "
                "the ring's contacts in the home commune are known.",
            ),
            "contact": (
                (ContactMode.THROUGH_TRUSTED_PERSON, ContactMode.PHONE),
                (),
                "Through his guardian.",
            ),
        },
    )
    seeded.append(
        SeededCase(
            "Lao Cai border handover (a minor: guardian consent)", "lao-cai", case_id, "lao-cai-1"
        )
    )
    return seeded


def _written(form: str) -> Collection:
    return Collection(
        method=CollectionMethod.WRITTEN_FORM,
        form_reference=form,
        language="vi",
        withdrawal_explained=True,
    )


def seed_consents(consent: ConsentService, anchor: datetime, cases: list[SeededCase]) -> None:
    """Dong Thap: both women share identity and health data with the social work centre and
    the hospital; one refuses the police anything beyond the criminal case. Lao Cai: his
    guardian consents, with his own views recorded."""
    until = anchor + timedelta(days=365)
    dt_manager = Actor(
        user_id="dt-swc-caseworker-1", agency_id=DT_SWC.agency_id, role=Role.CASE_MANAGER
    )
    lc_manager = Actor(
        user_id="lc-swc-caseworker-1", agency_id=LC_SWC.agency_id, role=Role.CASE_MANAGER
    )
    care = (Purpose.SERVICE_PROVISION, Purpose.CASE_COORDINATION)
    for case in cases:

        def ctx(step: str, actor: Actor, minutes: int, case: SeededCase = case) -> CommandContext:
            return CommandContext(
                actor=actor,
                at=anchor + timedelta(minutes=minutes),
                idempotency_key=f"demo-seed:{case.key}:consent:{step}",
            )

        received = anchor - timedelta(hours=5 if case.province == "lao-cai" else 3)
        if case.province == "dong-thap":
            consent.grant(
                ctx("care", dt_manager, 10),
                case.case_id,
                categories=(DataCategory.IDENTITY, DataCategory.HEALTH),
                recipients=(
                    Recipient(agency_id=DT_SWC.agency_id),
                    Recipient(kind=AgencyKind.HOSPITAL),
                ),
                purposes=care,
                valid_from=received,
                valid_until=until,
                collection=_written(f"DT-CF-{case.key}"),
                given_by=ConsentGiver(kind=GiverKind.PERSON),
            )
            if case.key == "dong-thap-2":
                consent.refuse(
                    ctx("police-refusal", dt_manager, 11),
                    case.case_id,
                    recipients=(Recipient(kind=AgencyKind.POLICE),),
                    except_purposes=(Purpose.CRIMINAL_PROCEEDINGS,),
                    statement="Nothing to the police beyond what the criminal case requires.",
                )
                consent.grant(
                    ctx("criminal-case", dt_manager, 12),
                    case.case_id,
                    categories=(DataCategory.IDENTITY, DataCategory.LEGAL_CASE),
                    recipients=(Recipient(agency_id=DT_POLICE.agency_id),),
                    purposes=(Purpose.CRIMINAL_PROCEEDINGS,),
                    valid_from=received,
                    valid_until=until,
                    collection=_written(f"DT-CF-{case.key}-criminal"),
                    given_by=ConsentGiver(kind=GiverKind.PERSON),
                )
        else:
            consent.grant(
                ctx("guardian", lc_manager, 10),
                case.case_id,
                categories=(DataCategory.IDENTITY, DataCategory.HEALTH, DataCategory.PSYCHOSOCIAL),
                recipients=(
                    Recipient(agency_id=LC_SWC.agency_id),
                    Recipient(kind=AgencyKind.HOSPITAL),
                    Recipient(kind=AgencyKind.SCHOOL),
                ),
                purposes=care,
                valid_from=received,
                valid_until=until,
                collection=_written("LC-CF-lao-cai-1"),
                given_by=ConsentGiver(kind=GiverKind.GUARDIAN, relationship="mother"),
                child_views=(
                    "He agrees to see the psychologist and wants to go back to school; "
                    "he does not want the commune told what happened."
                ),
            )
            consent.refuse(
                ctx("commune-refusal", lc_manager, 11),
                case.case_id,
                recipients=(Recipient(kind=AgencyKind.LOCAL_AUTHORITY),),
                categories=(DataCategory.HEALTH, DataCategory.PSYCHOSOCIAL),
                statement="The child's own view: the commune is not to be told.",
            )


DT_HOSPITAL = agency("dong-thap-general-hospital")
LC_HOSPITAL = agency("lao-cai-general-hospital")
LC_SCHOOL = agency("lao-cai-bat-xat-secondary-school")


def _staff(of: AgencyRef, role: Role = Role.AGENCY_STAFF) -> Actor:
    return Actor(user_id=f"{of.agency_id}-staff-1", agency_id=of.agency_id, role=role)


def _party(of: AgencyRef, role: PartyRole, capacity: str) -> NamedParty:
    return NamedParty(agency_id=of.agency_id, role=role, capacity=capacity)


def seed_referrals(referral: ReferralService, anchor: datetime, cases: list[SeededCase]) -> None:
    """The handovers and referrals of the scenarios, each left in its real state."""
    steps = iter(range(20, 100))

    def ctx(case: SeededCase, step: str, actor: Actor) -> CommandContext:
        return CommandContext(
            actor=actor,
            at=anchor + timedelta(minutes=next(steps)),
            idempotency_key=f"demo-seed:{case.key}:referral:{step}",
        )

    def handover(
        case: SeededCase,
        key: str,
        parties: tuple[NamedParty, ...],
        starter: Actor,
        confirming: tuple[AgencyRef, ...],
    ) -> None:
        started = referral.start_handover(
            ctx(case, f"{key}:start", starter),
            case.case_id,
            kind=HandoverKind.RECEPTION,
            parties=parties,
        )
        for party in confirming:
            referral.confirm_handover(
                ctx(case, f"{key}:confirm:{party.agency_id}", _staff(party)),
                UUID(started["handover_id"]),
                party.agency_id,
            )

    def refer(
        case: SeededCase,
        key: str,
        sender: Actor,
        from_agency: AgencyRef,
        to: AgencyRef,
        service: ServiceType,
        purpose: Purpose,
        categories: tuple[DataCategory, ...],
        answers: tuple[tuple[str, str | None], ...],
    ) -> None:
        created = referral.create_referral(
            ctx(case, f"{key}:create", sender),
            case.case_id,
            from_agency=from_agency,
            to_agency_id=to.agency_id,
            service_type=service,
            urgency=Urgency.URGENT,
            purpose=purpose,
            categories=categories,
        )
        for action, text in answers:
            referral.answer(
                ctx(case, f"{key}:{action}", _staff(to)),
                UUID(created["referral_id"]),
                action,
                text,
            )

    dt_manager = _staff(DT_SWC, Role.CASE_MANAGER)
    lc_manager = _staff(LC_SWC, Role.CASE_MANAGER)
    for case in cases:
        if case.province == "dong-thap":
            handover(
                case,
                "night-handover",
                (
                    _party(DT_POLICE, PartyRole.FROM, "police officer"),
                    _party(DT_SWC, PartyRole.TO, "social worker"),
                    _party(DT_BORDER_GUARD, PartyRole.WITNESS, "border guard officer"),
                ),
                _staff(DT_POLICE, Role.INTAKE_OFFICER),
                (DT_POLICE, DT_BORDER_GUARD, DT_SWC),
            )
            done = case.key == "dong-thap-1"
            refer(
                case,
                "health-check",
                dt_manager,
                DT_SWC,
                DT_HOSPITAL,
                ServiceType.HEALTH_CHECK,
                Purpose.SERVICE_PROVISION,
                (DataCategory.IDENTITY, DataCategory.HEALTH),
                (("acknowledge", None), ("accept", None), ("start", None))
                + (
                    (("complete", "Health check done the same night; no urgent treatment."),)
                    if done
                    else ()
                ),
            )
            if case.key == "dong-thap-2":
                # Only what the criminal case requires goes to the police.
                refer(
                    case,
                    "criminal-case",
                    dt_manager,
                    DT_SWC,
                    DT_POLICE,
                    ServiceType.LEGAL_AID,
                    Purpose.CRIMINAL_PROCEEDINGS,
                    (DataCategory.IDENTITY, DataCategory.LEGAL_CASE),
                    (("acknowledge", None),),
                )
        else:
            handover(
                case,
                "border-handover",
                (
                    _party(LC_FOREIGN, PartyRole.FROM, "foreign liaison officer"),
                    _party(LC_BORDER_GUARD, PartyRole.TO, "border guard officer"),
                    _party(LC_POLICE, PartyRole.WITNESS, "police officer"),
                ),
                _staff(LC_BORDER_GUARD, Role.INTAKE_OFFICER),
                (LC_FOREIGN, LC_BORDER_GUARD, LC_POLICE),
            )
            # The onward handover to the social work centre waits for the local officer.
            handover(
                case,
                "onward-handover",
                (
                    _party(LC_BORDER_GUARD, PartyRole.FROM, "border guard officer"),
                    _party(LC_SWC, PartyRole.TO, "psychological officer"),
                    _party(LC_POLICE, PartyRole.WITNESS, "police officer"),
                    _party(LC_LOCAL, PartyRole.WITNESS, "local officer"),
                ),
                _staff(LC_BORDER_GUARD, Role.INTAKE_OFFICER),
                (LC_BORDER_GUARD, LC_SWC, LC_POLICE),
            )
            refer(
                case,
                "psychologist",
                lc_manager,
                LC_SWC,
                LC_HOSPITAL,
                ServiceType.PSYCHOLOGICAL_FIRST_AID,
                Purpose.SERVICE_PROVISION,
                (DataCategory.IDENTITY, DataCategory.HEALTH, DataCategory.PSYCHOSOCIAL),
                (("acknowledge", None), ("accept", None)),
            )
            refer(
                case,
                "back-to-school",
                lc_manager,
                LC_SWC,
                LC_SCHOOL,
                ServiceType.EDUCATION,
                Purpose.SERVICE_PROVISION,
                (DataCategory.IDENTITY,),
                (),
            )


NA_SWC = "nghe-an-social-work-centre"


def demo_users() -> list[DemoUser]:
    """The users of the demo's sign-in page: one per role and agency of the scenarios."""
    users = [
        DemoUser("dong-thap-coordinator", "dong-thap-dolisa", "dong-thap", Role.COORDINATOR),
        DemoUser("lao-cai-coordinator", "lao-cai-dolisa", "lao-cai", Role.COORDINATOR),
        DemoUser("nghe-an-coordinator", "nghe-an-dolisa", "nghe-an", Role.COORDINATOR),
        DemoUser("dt-police-officer-1", DT_POLICE.agency_id, "dong-thap", Role.INTAKE_OFFICER),
        DemoUser("lc-border-guard-1", LC_BORDER_GUARD.agency_id, "lao-cai", Role.INTAKE_OFFICER),
        DemoUser("dt-swc-caseworker-1", DT_SWC.agency_id, "dong-thap", Role.CASE_MANAGER),
        DemoUser("lc-swc-caseworker-1", LC_SWC.agency_id, "lao-cai", Role.CASE_MANAGER),
        DemoUser("dt-swc-health-worker-1", DT_SWC.agency_id, "dong-thap", Role.HEALTH_WORKER),
        DemoUser("dt-swc-supervisor-1", DT_SWC.agency_id, "dong-thap", Role.SUPERVISOR),
        DemoUser("na-swc-caseworker-1", NA_SWC, "nghe-an", Role.CASE_MANAGER),
        DemoUser("na-swc-supervisor-1", NA_SWC, "nghe-an", Role.SUPERVISOR),
        DemoUser("inspector-1", "molisa-inspectorate", "*", Role.AUDITOR),
    ]
    staffed = {
        "dong-thap": (DT_POLICE, DT_BORDER_GUARD, DT_SWC, DT_HOSPITAL),
        "lao-cai": (LC_BORDER_GUARD, LC_POLICE, LC_LOCAL, LC_SWC, LC_HOSPITAL, LC_SCHOOL),
        "yunnan": (LC_FOREIGN,),
    }
    for province, agencies in staffed.items():
        for of in agencies:
            staff = _staff(of)
            users.append(DemoUser(staff.user_id, of.agency_id, province, Role.AGENCY_STAFF))
    return users
