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
    IdentityDocumentStatus,
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
