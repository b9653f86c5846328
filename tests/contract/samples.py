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

from contracts.consent import (
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
from contracts.envelope import Actor, AgencyRef, CommandRecorded, Event
from contracts.intake import (
    CaseClosed,
    CaseManagerAssigned,
    CaseReopened,
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
)
from contracts.vocabulary import (
    AgencyKind,
    ArrivalRoute,
    CaseStage,
    ClosureReason,
    ContactMode,
    DataCategory,
    IdentityDocumentStatus,
    Purpose,
    ReopeningReason,
    RiskLevel,
    RiskSubject,
    Role,
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
        CaseManagerAssigned(originator_version=7, case_manager_id="cw-1", agency=POLICE, **common),
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
        *consent_samples(),
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


if __name__ == "__main__":
    GOLDEN.mkdir(exist_ok=True)
    for event in samples():
        path = GOLDEN / f"{type(event).topic()}.json"
        if not path.exists():
            path.write_text(json.dumps(stored_form(event), indent=2, ensure_ascii=False) + "\n")
            sys.stdout.write(f"wrote {path.name}\n")
