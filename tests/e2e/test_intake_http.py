"""The intake API over HTTP on PostgreSQL: the happy path, bad input, auth, idempotency."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from fastapi.testclient import TestClient

from contracts.vocabulary import DataCategory, Role
from services.cli.wiring import http_app, migrate, start
from services.intake.application import IntakeService
from services.runtime.auth import TokenService
from services.runtime.read_audit import ReadAudit
from services.runtime.settings import Settings
from tests.support.agencies import register_agencies

pytestmark = pytest.mark.postgres

RECEIVED_AT = (datetime.now(UTC) - timedelta(hours=2)).replace(microsecond=0).isoformat()
RECEPTION: dict[str, Any] = {
    "route": "rescued",
    "received_at": RECEIVED_AT,
    "place": {"province": "dong-thap", "district": "Hồng Ngự"},
    "receiving_agency": "dong-thap-police",
    "returned_from_country": "KH",
    "present": [{"agency": "dong-thap-border-guard", "capacity": "border guard officer"}],
}
PERSON = {
    "full_name": "Lê Thị Mai",
    "sex": "female",
    "date_of_birth": "2002-03-14",
    "nationality": "VN",
    "languages": ["vi"],
}


class Api:
    def __init__(
        self, client: TestClient, tokens: TokenService, intake: IntakeService, audit: ReadAudit
    ) -> None:
        self.client = client
        self.tokens = tokens
        self.intake = intake
        self.audit = audit

    def auth(
        self,
        *roles: Role,
        province: str = "dong-thap",
        user: str = "user-1",
        agency: str = "dong-thap-police",
    ) -> dict[str, str]:
        token = self.tokens.issue(
            user_id=user,
            agency_id=agency,
            province=province,
            roles=roles or [Role.INTAKE_OFFICER],
        )
        return {"Authorization": f"Bearer {token}"}

    def receive(self, **changes: Any) -> str:
        response = self.client.post(
            "/intake/cases", json={**RECEPTION, **changes}, headers=self.auth(Role.INTAKE_OFFICER)
        )
        assert response.status_code == 201, response.text
        return str(response.json()["case_id"])

    def events(self) -> int:
        return self.intake.recorder.max_notification_id() or 0


@pytest.fixture
def api(pg_settings: Settings) -> Iterator[Api]:
    migrate(pg_settings)
    platform = start(pg_settings, ("intake",))
    register_agencies(platform)
    tokens = TokenService(pg_settings)
    assert platform.intake is not None
    assert platform.read_audit is not None
    with TestClient(http_app(platform, tokens)) as client:
        yield Api(client, tokens, platform.intake, platform.read_audit)
    platform.close()


def test_a_reception_through_to_reopening(api: Api) -> None:
    officer, manager = api.auth(Role.INTAKE_OFFICER), api.auth(Role.CASE_MANAGER, user="cw-1")
    case_id = api.receive()
    c = api.client
    assert (
        c.post(f"/intake/cases/{case_id}/person", json=PERSON, headers=officer).status_code == 201
    )
    r = c.post(
        f"/intake/cases/{case_id}/needs-assessments",
        json={"needs": ["shelter_tonight", "medical_check"]},
        headers=officer,
    )
    assert r.status_code == 201
    r = c.post(
        f"/intake/cases/{case_id}/risk-assessments",
        json={"level": "medium", "at_risk": ["person"], "management_plan": "Shelter."},
        headers=officer,
    )
    assert r.status_code == 201
    r = c.put(
        f"/intake/cases/{case_id}/contact-preference",
        json={"preferred": ["phone"], "refused": ["home_visit"]},
        headers=officer,
    )
    assert r.status_code == 200
    r = c.put(
        f"/intake/cases/{case_id}/case-manager",
        json={
            "case_manager_id": "cw-1",
            "agency": "dong-thap-swc",
        },
        headers=manager,
    )
    assert r.status_code == 200
    assert (
        c.post(
            f"/intake/cases/{case_id}/stage", json={"to_stage": "crisis"}, headers=manager
        ).json()["stage"]
        == "crisis"
    )
    r = c.post(
        f"/intake/cases/{case_id}/closure",
        json={"reason": "goals_met", "feedback": "Cảm ơn", "satisfaction": 5},
        headers=manager,
    )
    assert r.status_code == 201
    assert r.json()["stage"] == "closed"
    r = c.post(
        f"/intake/cases/{case_id}/reopening",
        json={"reason": "new_crisis", "to_stage": "crisis"},
        headers=manager,
    )
    assert r.status_code == 201

    case = c.get(f"/intake/cases/{case_id}", headers=officer).json()
    assert case["version"] == 9
    assert case["stage"] == "crisis"
    assert case["person"]["full_name"] == "Lê Thị Mai"
    assert case["minor"] is False
    assert case["contact_refused"] == ["home_visit"]
    assert case["case_manager_id"] == "cw-1"
    assert [e["number"] for e in case["episodes"]] == [1, 2]
    assert case["episodes"][0]["closure_reason"] == "goals_met"
    # The read of her data was recorded before it was returned, on the holder's basis.
    (read,) = api.audit.reads_of_case(UUID(case_id))
    assert read.basis.value == "own_case"
    assert read.actor.agency_id == "dong-thap-police"
    assert read.what == "intake.case"
    assert set(read.categories) == set(DataCategory)

    # The coordinator follows the case's progress, not the person.
    progress = c.get(f"/intake/cases/{case_id}", headers=api.auth(Role.COORDINATOR)).json()
    assert progress["stage"] == "crisis"
    assert progress["shown"] == []
    for field in ("person", "minor", "urgent_needs", "risk_management_plan", "place"):
        assert progress[field] is None
    assert "Lê Thị Mai" not in str(progress)
    assert len(api.audit.reads_of_case(UUID(case_id))) == 1  # nothing personal: no record


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**RECEPTION, "route": "teleported"}, "route"),
        ({**RECEPTION, "place": {"province": "Dong Thap!"}}, "place.province"),
        # A client names agencies by id only: a kind is never taken from it.
        (
            {**RECEPTION, "receiving_agency": {"agency_id": "x", "kind": "hospital"}},
            "receiving_agency",
        ),
        (
            {**RECEPTION, "present": [{"agency": "no-such-agency", "capacity": "x"}]},
            "present.0.agency",
        ),
        (
            {**RECEPTION, "route": "border_handover", "handed_over_by": "no-such-authority"},
            "handed_over_by",
        ),
        ({k: v for k, v in RECEPTION.items() if k != "received_at"}, "received_at"),
        ({**RECEPTION, "received_at": "2999-01-01T00:00:00+00:00"}, "received_at"),
        ({**RECEPTION, "route": "border_handover"}, "handed_over_by"),
        ({**RECEPTION, "surprise": 1}, "surprise"),
    ],
)
def test_bad_reception_input_is_422_naming_the_field_and_writes_nothing(
    api: Api, body: dict[str, Any], field: str
) -> None:
    before = api.events()
    r = api.client.post("/intake/cases", json=body, headers=api.auth(Role.INTAKE_OFFICER))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert field in [e["field"] for e in problem["errors"]]
    assert "Dong Thap!" not in r.text  # the input is never echoed back
    assert api.events() == before


def test_a_reception_is_recorded_for_the_officers_own_agency(api: Api) -> None:
    officer = api.auth(Role.INTAKE_OFFICER)
    before = api.events()
    other = {**RECEPTION, "receiving_agency": "dong-thap-hospital"}
    r = api.client.post("/intake/cases", json=other, headers=officer)
    assert r.status_code == 403
    assert "own agency" in r.json()["detail"]
    assert api.events() == before
    unnamed = {k: v for k, v in RECEPTION.items() if k != "receiving_agency"}
    r = api.client.post("/intake/cases", json=unnamed, headers=officer)
    assert r.status_code == 201
    case = api.client.get(f"/intake/cases/{r.json()['case_id']}", headers=officer).json()
    # The kinds come from the directory, for the officer's agency and every other one named.
    assert case["receiving_agency"] == {"agency_id": "dong-thap-police", "kind": "police"}
    assert case["present"][0]["agency"] == {
        "agency_id": "dong-thap-border-guard",
        "kind": "border_guard",
    }


def test_case_manager_agency_kind_comes_from_the_directory(api: Api) -> None:
    case_id = api.receive()
    manager = api.auth(Role.CASE_MANAGER, user="cw-1")
    url = f"/intake/cases/{case_id}/case-manager"
    claimed = {
        "case_manager_id": "cw-1",
        "agency": {"agency_id": "dong-thap-swc", "kind": "hospital"},
    }
    assert api.client.put(url, json=claimed, headers=manager).status_code == 422
    unknown = {"case_manager_id": "cw-1", "agency": "no-such-agency"}
    r = api.client.put(url, json=unknown, headers=manager)
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "agency"
    r = api.client.put(
        url, json={"case_manager_id": "cw-1", "agency": "dong-thap-swc"}, headers=manager
    )
    assert r.status_code == 200
    case = api.client.get(f"/intake/cases/{case_id}", headers=manager).json()
    assert case["case_manager_agency"] == {
        "agency_id": "dong-thap-swc",
        "kind": "social_work_centre",
    }


def test_person_without_age_is_422(api: Api) -> None:
    case_id = api.receive()
    body = {k: v for k, v in PERSON.items() if k != "date_of_birth"}
    r = api.client.post(f"/intake/cases/{case_id}/person", json=body, headers=api.auth())
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "details.date_of_birth"


def test_unknown_case_is_404(api: Api) -> None:
    r = api.client.get(f"/intake/cases/{uuid4()}", headers=api.auth(Role.COORDINATOR))
    assert r.status_code == 404
    assert r.json()["type"] == "urn:ketnoi:problem:not-found"
    r = api.client.post(
        f"/intake/cases/{uuid4()}/stage",
        json={"to_stage": "crisis"},
        headers=api.auth(Role.CASE_MANAGER),
    )
    assert r.status_code == 404


def test_malformed_case_id_is_422(api: Api) -> None:
    r = api.client.get("/intake/cases/not-a-uuid", headers=api.auth(Role.COORDINATOR))
    assert r.status_code == 422


def test_forbidden_transition_is_409_saying_what_is_allowed(api: Api) -> None:
    case_id = api.receive()
    before = api.events()
    r = api.client.post(
        f"/intake/cases/{case_id}/stage",
        json={"to_stage": "external_support"},
        headers=api.auth(Role.CASE_MANAGER),
    )
    assert r.status_code == 409
    problem = r.json()
    assert set(problem["allowed"]) == {"crisis", "transitional", "close"}
    assert "can move to: crisis, transitional" in problem["detail"]
    assert api.events() == before


def test_missing_or_bad_token_is_401(api: Api) -> None:
    r = api.client.post("/intake/cases", json=RECEPTION)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    r = api.client.post("/intake/cases", json=RECEPTION, headers={"Authorization": "Bearer abc"})
    assert r.status_code == 401


def test_token_signed_by_another_key_is_401(api: Api, tmp_path: Any) -> None:
    stranger = TokenService(Settings(data_dir=tmp_path / "elsewhere"))
    token = stranger.issue(
        user_id="u", agency_id="a", province="dong-thap", roles=[Role.INTAKE_OFFICER]
    )
    r = api.client.post(
        "/intake/cases", json=RECEPTION, headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 401


def test_expired_token_is_401(api: Api) -> None:
    token = api.tokens.issue(
        user_id="u",
        agency_id="a",
        province="dong-thap",
        roles=[Role.INTAKE_OFFICER],
        ttl=timedelta(seconds=-1),
    )
    r = api.client.post(
        "/intake/cases", json=RECEPTION, headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 401
    assert "expired" in r.json()["detail"]


def test_wrong_role_is_403_and_writes_nothing(api: Api) -> None:
    before = api.events()
    r = api.client.post("/intake/cases", json=RECEPTION, headers=api.auth(Role.AGENCY_STAFF))
    assert r.status_code == 403
    assert "intake_officer" in r.json()["detail"]
    case_id = api.receive()
    r = api.client.post(
        f"/intake/cases/{case_id}/stage",
        json={"to_stage": "crisis"},
        headers=api.auth(Role.INTAKE_OFFICER),
    )
    assert r.status_code == 403
    assert api.events() == before + 1
    # An agency with no part in the case does not learn that it exists.
    stranger = api.auth(Role.INTAKE_OFFICER, agency="dong-thap-police-2")
    r = api.client.get(f"/intake/cases/{case_id}", headers=stranger)
    assert r.status_code == 404
    unknown = api.client.get(f"/intake/cases/{uuid4()}", headers=stranger)
    assert unknown.json()["detail"].replace(str(unknown.json()["case_id"]), "") == r.json()[
        "detail"
    ].replace(case_id, "")
    r = api.client.post(f"/intake/cases/{case_id}/person", json=PERSON, headers=stranger)
    assert r.status_code == 404
    assert api.events() == before + 1


def test_other_provinces_cannot_see_or_change_a_case(api: Api) -> None:
    case_id = api.receive()
    elsewhere = api.auth(
        Role.COORDINATOR, Role.CASE_MANAGER, province="lao-cai", agency="lao-cai-dolisa"
    )
    assert api.client.get(f"/intake/cases/{case_id}", headers=elsewhere).status_code == 404
    r = api.client.post(
        f"/intake/cases/{case_id}/stage", json={"to_stage": "crisis"}, headers=elsewhere
    )
    assert r.status_code == 404
    r = api.client.post(
        "/intake/cases", json=RECEPTION, headers=api.auth(Role.INTAKE_OFFICER, province="lao-cai")
    )
    assert r.status_code == 403
    national = api.auth(Role.COORDINATOR, province="*", agency="ministry")
    r = api.client.get(f"/intake/cases/{case_id}", headers=national)
    assert r.status_code == 200
    assert r.json()["shown"] == []


def test_idempotency_key_returns_the_first_result(api: Api) -> None:
    headers = {**api.auth(Role.INTAKE_OFFICER), "Idempotency-Key": "f3b0c442-98fc-1c14"}
    first = api.client.post("/intake/cases", json=RECEPTION, headers=headers)
    before = api.events()
    second = api.client.post("/intake/cases", json=RECEPTION, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert api.events() == before
    changed = api.client.post(
        "/intake/cases", json={**RECEPTION, "route": "hotline"}, headers=headers
    )
    assert changed.status_code == 422
    assert changed.json()["type"] == "urn:ketnoi:problem:idempotency-key-reused"
    bad = api.client.post(
        "/intake/cases", json=RECEPTION, headers={**headers, "Idempotency-Key": "no spaces allowed"}
    )
    assert bad.status_code == 422


def test_openapi_documents_the_intake_routes(api: Api) -> None:
    paths = api.client.get("/openapi.json").json()["paths"]
    assert "/intake/cases" in paths
    assert "/intake/cases/{case_id}/reopening" in paths
    assert api.client.get("/docs").status_code == 200


def test_every_response_carries_a_correlation_id(api: Api) -> None:
    given = "6f1c1f3a-8d0e-4c55-9f6e-0b7a0f3f9e21"
    r = api.client.get(
        f"/intake/cases/{uuid4()}", headers={**api.auth(), "X-Correlation-ID": given}
    )
    assert r.headers["x-correlation-id"] == given
    r = api.client.get(f"/intake/cases/{uuid4()}", headers=api.auth())
    assert len(r.headers["x-correlation-id"]) == 36


def test_breaking_the_glass_shows_the_case_to_a_coordinator_and_is_recorded(api: Api) -> None:
    case_id = api.receive()
    officer = api.auth(Role.INTAKE_OFFICER)
    assert api.client.post(f"/intake/cases/{case_id}/person", json=PERSON, headers=officer)
    url = f"/intake/cases/{case_id}/break-glass"
    reason = {"reason": "The hospital needs her identity now; the police cannot be reached."}
    coordinator = api.auth(Role.COORDINATOR, agency="dong-thap-dolisa")
    r = api.client.post(url, json=reason, headers=coordinator)
    assert r.status_code == 200, r.text
    assert r.json()["person"]["full_name"] == "Lê Thị Mai"
    (read,) = api.audit.reads_of_case(UUID(case_id))
    assert read.basis.value == "break_glass"
    assert read.reason == reason["reason"]
    assert read.actor.role is Role.COORDINATOR
    # Without a reason, or without a tie to the case, or in a role that has no need: nothing.
    assert api.client.post(url, json={"reason": ""}, headers=coordinator).status_code == 422
    stranger = api.auth(Role.INTAKE_OFFICER, agency="lao-cai-police", province="lao-cai")
    assert api.client.post(url, json=reason, headers=stranger).status_code == 404
    auditor = api.auth(Role.AUDITOR, agency="ministry", province="*")
    r = api.client.post(url, json=reason, headers=auditor)
    assert r.status_code == 403
    assert "Lê Thị Mai" not in r.text
    assert len(api.audit.reads_of_case(UUID(case_id))) == 1
