"""The agency directory over HTTP on PostgreSQL, and tokens checked against it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from contracts.vocabulary import AgencyKind, Role
from services.cli.wiring import Platform, http_app, migrate, start
from services.runtime.auth import NATIONAL, TokenService
from services.runtime.settings import Settings
from tests.support.agencies import register_agencies

pytestmark = pytest.mark.postgres

HOSPITAL: dict[str, Any] = {
    "agency_id": "dong-thap-general-hospital",
    "kind": "hospital",
    "name_vi": "Bệnh viện Đa khoa Đồng Tháp",
    "name_en": "Dong Thap General Hospital",
    "country": "VN",
    "province": "dong-thap",
    "district": "Cao Lãnh",
    "services": ["health_check", "medical_care"],
    "contact": {"phone": "+84 277 3851 234", "email": "bvdk@dongthap.gov.vn"},
}


class Api:
    def __init__(self, client: TestClient, tokens: TokenService, platform: Platform) -> None:
        self.client, self.tokens, self.platform = client, tokens, platform

    def as_(
        self,
        *roles: Role,
        agency: str = "national-inspectorate",
        province: str = NATIONAL,
        kind: AgencyKind | None = None,
    ) -> dict[str, str]:
        token = self.tokens.issue(
            user_id=f"{agency}-{roles[0].value}",
            agency_id=agency,
            province=province,
            roles=roles,
            agency_kind=kind,
        )
        return {"Authorization": f"Bearer {token}"}

    @property
    def admin(self) -> dict[str, str]:
        return self.as_(Role.ADMIN)

    @property
    def staff(self) -> dict[str, str]:
        return self.as_(Role.CASE_MANAGER, agency="dt-swc", province="dong-thap")

    def events(self) -> int:
        return self.platform.directory.recorder.max_notification_id() or 0


@pytest.fixture
def api(pg_settings: Settings) -> Iterator[Api]:
    migrate(pg_settings)
    platform = start(pg_settings, run_followers=False)
    register_agencies(platform, ["national-inspectorate", "dt-swc", "dt-police"])
    tokens = TokenService(pg_settings)
    with TestClient(http_app(platform, tokens)) as client:
        yield Api(client, tokens, platform)
    platform.close()


def test_an_administrator_registers_changes_and_deactivates_an_agency(api: Api) -> None:
    c = api.client
    r = c.post("/directory/agencies", json=HOSPITAL, headers=api.admin)
    assert r.status_code == 201, r.text
    assert r.json() == {
        "agency_id": HOSPITAL["agency_id"],
        "version": 1,
        "active": True,
        "changed": None,
    }

    url = f"/directory/agencies/{HOSPITAL['agency_id']}"
    read = c.get(url, headers=api.staff).json()  # anyone signed in reads
    assert read["kind"] == "hospital"
    assert read["name_vi"] == "Bệnh viện Đa khoa Đồng Tháp"
    assert read["contact"]["email"] == "bvdk@dongthap.gov.vn"

    details = {k: v for k, v in HOSPITAL.items() if k != "agency_id"}
    moved = {**details, "services": ["health_check", "medical_care", "mental_health_care"]}
    r = c.put(url, json=moved, headers=api.admin)
    assert r.status_code == 200
    assert r.json()["changed"] is True
    before = api.events()
    assert c.put(url, json=moved, headers=api.admin).json()["changed"] is False
    assert api.events() == before  # the same details record nothing

    r = c.post(f"{url}/deactivation", json={"reason": "merged"}, headers=api.admin)
    assert r.status_code == 201
    assert r.json()["active"] is False
    again = c.post(f"{url}/deactivation", json={}, headers=api.admin)
    assert again.status_code == 409
    assert again.json()["allowed"] == ["reactivate"]
    assert c.get(url, headers=api.staff).json()["active"] is False
    r = c.post(f"{url}/reactivation", json={}, headers=api.admin)
    assert r.status_code == 201
    assert r.json() == {
        "agency_id": HOSPITAL["agency_id"],
        "version": 4,
        "active": True,
        "changed": None,
    }


def test_search_by_province_kind_service_and_state(api: Api) -> None:
    c = api.client
    for body in (
        HOSPITAL,
        {**HOSPITAL, "agency_id": "lao-cai-general-hospital", "province": "lao-cai"},
        {
            **HOSPITAL,
            "agency_id": "dt-legal-aid",
            "kind": "legal_aid_centre",
            "services": ["legal_aid"],
        },
    ):
        assert c.post("/directory/agencies", json=body, headers=api.admin).status_code == 201
    c.post("/directory/agencies/dt-legal-aid/deactivation", json={}, headers=api.admin)

    def ids(query: str) -> list[str]:
        r = c.get(f"/directory/agencies{query}", headers=api.staff)
        assert r.status_code == 200, r.text
        return [a["agency_id"] for a in r.json()]

    assert ids("?kind=hospital") == ["dong-thap-general-hospital", "lao-cai-general-hospital"]
    assert ids("?province=dong-thap&kind=hospital") == ["dong-thap-general-hospital"]
    assert ids("?service=legal_aid") == ["dt-legal-aid"]
    assert ids("?service=legal_aid&active=true") == []
    assert ids("?province=*") == ["national-inspectorate"]
    assert ids("?country=CN") == []
    assert "dt-police" in ids("")
    assert c.get("/directory/agencies?kind=army", headers=api.staff).status_code == 422


def test_only_administrators_write(api: Api) -> None:
    c = api.client
    url = f"/directory/agencies/{HOSPITAL['agency_id']}"
    assert c.post("/directory/agencies", json=HOSPITAL, headers=api.admin).status_code == 201
    before = api.events()
    for headers in (api.staff, api.as_(Role.AUDITOR), api.as_(Role.COORDINATOR)):
        assert (
            c.post(
                "/directory/agencies", json={**HOSPITAL, "agency_id": "x-1"}, headers=headers
            ).status_code
            == 403
        )
        details = {k: v for k, v in HOSPITAL.items() if k != "agency_id"}
        assert c.put(url, json=details, headers=headers).status_code == 403
        r = c.post(f"{url}/deactivation", json={}, headers=headers)
        assert r.status_code == 403
        assert "admin" in r.json()["detail"]
        assert c.post(f"{url}/reactivation", json={}, headers=headers).status_code == 403
    assert api.events() == before
    assert c.get("/directory/agencies").status_code == 401
    assert c.get(url).status_code == 401


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"agency_id": "Dong Thap Hospital"}, "agency_id"),
        ({"agency_id": "ketnoi"}, "agency_id"),  # the platform's own, reserved
        ({"kind": "army"}, "kind"),
        ({"country": "VNM"}, "country"),
        ({"province": "Đồng Tháp"}, "province"),
        ({"province": "*"}, "district"),  # a national agency has no district
        ({"services": ["health_check", "health_check"]}, "services"),
        ({"contact": {"email": "nobody"}}, "contact.email"),
        ({"name_vi": ""}, "name_vi"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_input_is_422_naming_the_field_and_writes_nothing(
    api: Api, change: dict[str, Any], field: str
) -> None:
    before = api.events()
    r = api.client.post("/directory/agencies", json={**HOSPITAL, **change}, headers=api.admin)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert field in [e["field"] for e in r.json()["errors"]]
    assert api.events() == before


def test_unknown_and_duplicate_agencies(api: Api) -> None:
    c = api.client
    r = c.get("/directory/agencies/no-such-agency", headers=api.staff)
    assert r.status_code == 404
    assert r.json()["type"] == "urn:ketnoi:problem:not-found"
    r = c.post("/directory/agencies/no-such-agency/deactivation", json={}, headers=api.admin)
    assert r.status_code == 404
    assert c.post("/directory/agencies", json=HOSPITAL, headers=api.admin).status_code == 201
    again = c.post("/directory/agencies", json={**HOSPITAL, "kind": "police"}, headers=api.admin)
    assert again.status_code == 409
    assert "already in the directory" in again.json()["detail"]
    kind = c.get(f"/directory/agencies/{HOSPITAL['agency_id']}", headers=api.staff).json()["kind"]
    assert kind == "hospital"


def test_an_idempotency_key_returns_the_first_result(api: Api) -> None:
    headers = {**api.admin, "Idempotency-Key": "register-hospital-0001"}
    first = api.client.post("/directory/agencies", json=HOSPITAL, headers=headers)
    before = api.events()
    second = api.client.post("/directory/agencies", json=HOSPITAL, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert api.events() == before
    changed = api.client.post(
        "/directory/agencies", json={**HOSPITAL, "name_en": "Another"}, headers=headers
    )
    assert changed.status_code == 422
    assert changed.json()["type"] == "urn:ketnoi:problem:idempotency-key-reused"


def test_hsds_export_names_every_agency(api: Api) -> None:
    api.client.post("/directory/agencies", json=HOSPITAL, headers=api.admin)
    page = api.client.get("/directory/hsds/organizations", headers=api.staff).json()
    assert page["total_items"] == 4
    hospital = next(o for o in page["contents"] if o["alternate_name"] == HOSPITAL["name_en"])
    assert hospital["organization_identifiers"][0]["identifier"] == HOSPITAL["agency_id"]
    assert [s["name"] for s in hospital["services"]] == ["Health check", "Medical care"]


# -- tokens are checked against the directory -------------------------------------------------


def test_a_token_for_an_agency_not_in_the_directory_is_refused(api: Api) -> None:
    r = api.client.get("/directory/agencies", headers=api.as_(Role.ADMIN, agency="dt-nowhere"))
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert "not in the agency directory" in r.json()["detail"]
    # The platform's own id is no agency: nobody can hold a token that speaks for it.
    r = api.client.get("/directory/agencies", headers=api.as_(Role.ADMIN, agency="ketnoi"))
    assert r.status_code == 401


def test_an_agency_registered_a_moment_ago_is_known_on_the_next_request(api: Api) -> None:
    nurse = api.as_(Role.AGENCY_STAFF, agency=HOSPITAL["agency_id"], province="dong-thap")
    assert api.client.get("/directory/agencies", headers=nurse).status_code == 401
    api.client.post("/directory/agencies", json=HOSPITAL, headers=api.admin)
    assert api.client.get("/directory/agencies", headers=nurse).status_code == 200


def test_a_token_of_an_inactive_agency_is_refused_until_it_is_reactivated(api: Api) -> None:
    police = api.as_(Role.AGENCY_STAFF, agency="dt-police", province="dong-thap")
    assert api.client.get("/directory/agencies", headers=police).status_code == 200
    url = "/directory/agencies/dt-police"
    api.client.post(f"{url}/deactivation", json={}, headers=api.admin)
    r = api.client.get("/directory/agencies", headers=police)
    assert r.status_code == 401
    assert "inactive" in r.json()["detail"]
    api.client.post(f"{url}/reactivation", json={}, headers=api.admin)
    assert api.client.get("/directory/agencies", headers=police).status_code == 200


def test_a_token_whose_kind_disagrees_with_the_directory_is_refused(api: Api) -> None:
    claims_hospital = api.as_(
        Role.AGENCY_STAFF, agency="dt-police", province="dong-thap", kind=AgencyKind.HOSPITAL
    )
    r = api.client.get("/directory/agencies", headers=claims_hospital)
    assert r.status_code == 401
    assert "police" in r.json()["detail"]
    honest = api.as_(
        Role.AGENCY_STAFF, agency="dt-police", province="dong-thap", kind=AgencyKind.POLICE
    )
    assert api.client.get("/directory/agencies", headers=honest).status_code == 200
    # After the directory changes the kind, the old claim no longer holds.
    url = "/directory/agencies/dt-police"
    details = api.client.get(url, headers=api.admin).json()
    body = {
        k: details[k]
        for k in ("name_vi", "name_en", "country", "province", "district", "services", "contact")
    }
    assert (
        api.client.put(url, json={**body, "kind": "border_guard"}, headers=api.admin).status_code
        == 200
    )
    assert api.client.get("/directory/agencies", headers=honest).status_code == 401
