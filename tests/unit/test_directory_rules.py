"""The agency's rules, and the register's reading of the directory log, without I/O."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from contracts.directory import (
    AgencyContact,
    AgencyDeactivated,
    AgencyDetails,
    AgencyDetailsChanged,
    AgencyRegistered,
    agency_record_id,
)
from contracts.envelope import Actor
from contracts.vocabulary import AgencyKind, Role, ServiceType
from services.directory.domain import Agency, AgencyRuleError
from services.runtime.agencies import AgencyRegister, resolve_agency
from services.runtime.aggregate import CommandContext
from services.runtime.errors import InvalidRequestError

CTX = CommandContext(actor=Actor(user_id="admin-1", agency_id="ministry", role=Role.ADMIN))
POLICE = AgencyDetails(
    kind=AgencyKind.POLICE,
    name_vi="Công an tỉnh Đồng Tháp",
    name_en="Dong Thap Provincial Police",
    country="VN",
    province="dong-thap",
)


def test_an_agency_record_id_derives_from_its_public_id() -> None:
    agency = Agency.register(CTX, "dong-thap-police", POLICE)
    assert agency.id == agency_record_id("dong-thap-police")
    assert agency_record_id("dong-thap-police") != agency_record_id("dong-thap-hospital")
    assert agency.active
    assert agency.current.kind is AgencyKind.POLICE


def test_the_platforms_own_id_is_reserved() -> None:
    with pytest.raises(InvalidRequestError) as refused:
        Agency.register(CTX, "ketnoi", POLICE)
    assert refused.value.field == "agency_id"


def test_details_that_contradict_each_other_are_refused_naming_the_field() -> None:
    twice = POLICE.model_copy(update={"services": (ServiceType.LEGAL_AID, ServiceType.LEGAL_AID)})
    with pytest.raises(InvalidRequestError) as duplicated:
        Agency.register(CTX, "dt-police", twice)
    assert duplicated.value.field == "services"
    national = POLICE.model_copy(update={"province": "*", "district": "Cao Lãnh"})
    with pytest.raises(InvalidRequestError) as district:
        Agency.register(CTX, "dt-police", national)
    assert district.value.field == "district"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"country": "Vietnam"}, "country"),
        ({"province": "Dong Thap"}, "province"),
        ({"name_en": ""}, "name_en"),
        ({"kind": "army"}, "kind"),
        ({"contact": {"email": "not an email"}}, "contact.email"),
        ({"contact": {"phone": "call me"}}, "contact.phone"),
    ],
)
def test_malformed_details_fail_validation(change: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as bad:
        AgencyDetails.model_validate({**POLICE.model_dump(), **change})
    assert field in [".".join(str(p) for p in e["loc"]) for e in bad.value.errors()]


def test_deactivation_and_reactivation_alternate() -> None:
    agency = Agency.register(CTX, "dt-police", POLICE)
    agency.deactivate(CTX, "merged")
    assert not agency.active
    with pytest.raises(AgencyRuleError) as again:
        agency.deactivate(CTX)
    assert again.value.allowed == ["reactivate"]
    agency.reactivate(CTX)
    assert agency.active
    with pytest.raises(AgencyRuleError):
        agency.reactivate(CTX)
    assert [type(e).__name__ for e in agency.collect_events()] == [
        "AgencyRegistered",
        "AgencyDeactivated",
        "AgencyReactivated",
    ]


def test_unchanged_details_record_nothing() -> None:
    agency = Agency.register(CTX, "dt-police", POLICE)
    agency.collect_events()
    assert agency.change_details(CTX, POLICE) is False
    assert agency.collect_events() == []
    moved = POLICE.model_copy(update={"contact": AgencyContact(phone="+84 277 3851 234")})
    assert agency.change_details(CTX, moved) is True
    assert agency.current.contact.phone == "+84 277 3851 234"
    assert agency.version == 2


def _register_of(*agencies: Agency) -> AgencyRegister:
    def no_log() -> object:
        raise AssertionError("this register reads no log")

    register = AgencyRegister(no_log, max_age=float("inf"))  # type: ignore[arg-type]
    register.load(e for a in agencies for e in a.collect_events())
    return register


def test_the_register_follows_registration_changes_and_deactivation() -> None:
    police = Agency.register(CTX, "dt-police", POLICE)
    hospital = Agency.register(
        CTX, "dt-hospital", POLICE.model_copy(update={"kind": AgencyKind.HOSPITAL})
    )
    register = _register_of(police, hospital)
    assert register.resolve("dt-police", "to_agency").kind is AgencyKind.POLICE
    register.load(
        [
            AgencyDetailsChanged(
                originator_id=hospital.id,
                originator_version=2,
                timestamp=CTX.at,
                actor=CTX.actor,
                agency_id="dt-hospital",
                details=POLICE.model_copy(update={"kind": AgencyKind.NGO}),
            ),
            AgencyDeactivated(
                originator_id=police.id,
                originator_version=2,
                timestamp=CTX.at,
                actor=CTX.actor,
                agency_id="dt-police",
            ),
        ]
    )
    known = register._agencies
    assert known["dt-hospital"].kind is AgencyKind.NGO
    assert known["dt-hospital"].active
    assert not known["dt-police"].active
    with pytest.raises(InvalidRequestError, match="inactive") as inactive:
        resolve_agency(register, "dt-police", "to_agency")
    assert inactive.value.field == "to_agency"


def test_an_agency_registered_inactive_is_known_but_inactive() -> None:
    register = _register_of()
    register.load(
        [
            AgencyRegistered(
                originator_id=agency_record_id("dt-old"),
                originator_version=1,
                timestamp=CTX.at,
                actor=CTX.actor,
                agency_id="dt-old",
                details=POLICE,
                active=False,
            )
        ]
    )
    assert register._agencies["dt-old"].active is False
