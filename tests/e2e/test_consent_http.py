"""The consent API over HTTP on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from fastapi.testclient import TestClient

from contracts.vocabulary import AgencyKind, Role
from services.cli.wiring import Platform, http_app, migrate, start
from services.runtime.auth import TokenService
from services.runtime.settings import Settings
from tests.support.agencies import TEST_AGENCIES, register_agencies

pytestmark = pytest.mark.postgres

NOW = datetime.now(UTC).replace(microsecond=0)
RECEPTION = {
    "route": "rescued",
    "received_at": (NOW - timedelta(hours=3)).isoformat(),
    "place": {"province": "dong-thap"},
}
WRITTEN = {
    "method": "written_form",
    "form_reference": "DT-CF-1",
    "language": "vi",
    "withdrawal_explained": True,
}
GRANT: dict[str, Any] = {
    "categories": ["identity", "health"],
    "recipients": [{"agency_id": "dong-thap-swc"}, {"kind": "hospital"}],
    "purposes": ["service_provision", "case_coordination"],
    "valid_from": (NOW - timedelta(hours=3)).isoformat(),
    "valid_until": (NOW + timedelta(days=365)).isoformat(),
    "collection": WRITTEN,
    "given_by": {"kind": "person"},
}
HOSPITAL = {"agency_id": "dong-thap-hospital", "kind": "hospital"}


class Api:
    def __init__(self, client: TestClient, tokens: TokenService, platform: Platform) -> None:
        self.client, self.tokens, self.platform = client, tokens, platform

    def auth(
        self,
        *roles: Role,
        province: str = "dong-thap",
        kind: AgencyKind | None = None,
        agency: str = "dong-thap-swc",
    ) -> dict[str, str]:
        token = self.tokens.issue(
            user_id="user-1",
            agency_id=agency,
            province=province,
            roles=roles or [Role.CASE_MANAGER],
            agency_kind=kind or TEST_AGENCIES[agency][0],
        )
        return {"Authorization": f"Bearer {token}"}

    def case(self, *, age: int = 25, stage: str | None = "crisis") -> str:
        officer = self.auth(Role.INTAKE_OFFICER)
        r = self.client.post("/intake/cases", json=RECEPTION, headers=officer)
        case_id = str(r.json()["case_id"])
        person = {"full_name": "Lê Thị Mai", "sex": "female", "estimated_age": age}
        self.client.post(f"/intake/cases/{case_id}/person", json=person, headers=officer)
        if stage:
            self.client.post(
                f"/intake/cases/{case_id}/stage",
                json={"to_stage": stage},
                headers=self.auth(Role.CASE_MANAGER),
            )
        self.platform.catch_up()
        return case_id

    def grant(self, case_id: str, body: dict[str, Any] | None = None) -> str:
        r = self.client.post(
            f"/consent/cases/{case_id}/grants", json=body or GRANT, headers=self.auth()
        )
        assert r.status_code == 201, r.text
        return str(r.json()["grant_id"])

    def events(self) -> int:
        return self.platform.consent.recorder.max_notification_id() or 0


@pytest.fixture
def api(pg_settings: Settings) -> Iterator[Api]:
    migrate(pg_settings)
    platform = start(pg_settings, ("intake", "consent"), run_followers=False)
    register_agencies(pg_settings)
    tokens = TokenService(pg_settings)
    with TestClient(http_app(platform, tokens)) as client:
        yield Api(client, tokens, platform)
    platform.close()


def test_grant_read_decide_receipt_withdraw(api: Api) -> None:
    case_id = api.case()
    grant_id = api.grant(case_id)
    record = api.client.get(f"/consent/cases/{case_id}", headers=api.auth(Role.COORDINATOR))
    assert record.status_code == 200
    body = record.json()
    assert body["subject"]["minor"] is False
    assert [g["status"] for g in body["grants"]] == ["active"]

    ask = {
        "recipient": HOSPITAL,
        "purpose": "service_provision",
        "categories": ["health", "legal_case"],
    }
    decision = api.client.post(
        f"/consent/cases/{case_id}/decisions", json=ask, headers=api.auth()
    ).json()
    verdicts = {c["category"]: c["verdict"] for c in decision["categories"]}
    assert verdicts == {"health": "permitted", "legal_case": "not_granted"}
    assert decision["categories"][0]["grant_id"] == grant_id

    receipt = api.client.get(
        f"/consent/cases/{case_id}/grants/{grant_id}/receipt", headers=api.auth()
    ).json()
    assert receipt["consent_id"] == grant_id
    assert receipt["pii_categories"] == ["identity", "health"]
    assert receipt["status"] == "active"
    assert "withdraw" in receipt["how_to_withdraw"]["en"]
    page = api.client.get(
        f"/consent/cases/{case_id}/grants/{grant_id}/receipt.html", headers=api.auth()
    )
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "Cách rút lại sự đồng ý" in page.text
    assert "Lê Thị Mai" not in page.text  # the receipt names the person by reference only

    # Any agency that hears the withdrawal records it, even in another province.
    hospital_staff = api.auth(
        Role.AGENCY_STAFF, province="can-tho", kind=AgencyKind.HOSPITAL, agency="dong-thap-hospital"
    )
    r = api.client.post(
        f"/consent/cases/{case_id}/grants/{grant_id}/withdrawal",
        json={"reason": "changed her mind"},
        headers=hospital_staff,
    )
    assert r.status_code == 201, r.text
    decision = api.client.post(
        f"/consent/cases/{case_id}/decisions", json=ask, headers=api.auth()
    ).json()
    assert decision["categories"][0]["verdict"] == "withdrawn"
    again = api.client.post(
        f"/consent/cases/{case_id}/grants/{grant_id}/withdrawal", json={}, headers=hospital_staff
    )
    assert again.status_code == 409
    assert "already withdrawn" in again.json()["detail"]

    history = api.client.get(f"/consent/cases/{case_id}/history", headers=api.auth()).json()
    kinds = [h["type"] for h in history]
    assert kinds[-2:] == ["org.ketnoi.consent.granted", "org.ketnoi.consent.withdrawn"]
    assert history[-1]["data"]["heard_by"] == {
        "agency_id": "dong-thap-hospital",
        "kind": "hospital",
    }


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"categories": []}, "categories"),
        ({"valid_until": (NOW - timedelta(days=1)).isoformat()}, "valid_until"),
        ({"recipients": [{"kind": "army"}]}, "recipients.0.kind"),
        ({"recipients": [{"kind": "police", "agency_id": "x"}]}, "recipients.0"),
        ({"purposes": ["marketing"]}, "purposes.0"),
        ({"collection": {**WRITTEN, "form_reference": None}}, "collection"),
        ({"given_by": {"kind": "guardian"}}, "given_by.kind"),
    ],
)
def test_bad_grants_are_422_naming_the_field(api: Api, change: dict[str, Any], field: str) -> None:
    case_id = api.case()
    before = api.events()
    r = api.client.post(
        f"/consent/cases/{case_id}/grants", json={**GRANT, **change}, headers=api.auth()
    )
    assert r.status_code == 422, r.text
    assert field in [e["field"] for e in r.json()["errors"]], r.json()
    assert api.events() == before


def test_minor_needs_guardian_and_views(api: Api) -> None:
    case_id = api.case(age=16)
    r = api.client.post(f"/consent/cases/{case_id}/grants", json=GRANT, headers=api.auth())
    assert r.status_code == 422
    guardian = {**GRANT, "given_by": {"kind": "guardian", "relationship": "mother"}}
    r = api.client.post(f"/consent/cases/{case_id}/grants", json=guardian, headers=api.auth())
    assert r.json()["errors"][0]["field"] == "child_views"
    api.grant(case_id, {**guardian, "child_views": "He wants to go back to school."})
    record = api.client.get(f"/consent/cases/{case_id}", headers=api.auth()).json()
    assert record["subject"]["minor"] is True
    assert record["subject"]["age_is_estimated"] is True


def test_refusal_overrides_and_can_be_lifted(api: Api) -> None:
    case_id = api.case()
    police = {"agency_id": "dong-thap-police", "kind": "police"}
    api.grant(case_id, {**GRANT, "recipients": [{"group": "any"}]})
    refusal = {"recipients": [{"group": "government"}], "statement": "Not my government."}
    r = api.client.post(f"/consent/cases/{case_id}/refusals", json=refusal, headers=api.auth())
    assert r.status_code == 201
    refusal_id = r.json()["refusal_id"]
    ask = {"recipient": police, "purpose": "service_provision", "categories": ["identity"]}
    decision = api.client.post(
        f"/consent/cases/{case_id}/decisions", json=ask, headers=api.auth()
    ).json()
    assert decision["categories"][0]["verdict"] == "refused"
    assert decision["categories"][0]["refusal_id"] == refusal_id
    hospital = {**ask, "recipient": HOSPITAL}
    decision = api.client.post(
        f"/consent/cases/{case_id}/decisions", json=hospital, headers=api.auth()
    ).json()
    assert decision["categories"][0]["verdict"] == "permitted"
    r = api.client.post(
        f"/consent/cases/{case_id}/refusals/{refusal_id}/lifting",
        json={"collection": WRITTEN},
        headers=api.auth(),
    )
    assert r.status_code == 201
    decision = api.client.post(
        f"/consent/cases/{case_id}/decisions", json=ask, headers=api.auth()
    ).json()
    assert decision["categories"][0]["verdict"] == "permitted"


def test_authorisation(api: Api) -> None:
    case_id = api.case()
    url = f"/consent/cases/{case_id}/grants"
    assert api.client.post(url, json=GRANT).status_code == 401
    assert api.client.post(url, json=GRANT, headers=api.auth(Role.AGENCY_STAFF)).status_code == 403
    assert api.client.post(url, json=GRANT, headers=api.auth(Role.COORDINATOR)).status_code == 403
    elsewhere = api.auth(
        Role.CASE_MANAGER, Role.COORDINATOR, province="lao-cai", agency="lao-cai-swc"
    )
    assert api.client.post(url, json=GRANT, headers=elsewhere).status_code == 404
    assert api.client.get(f"/consent/cases/{case_id}", headers=elsewhere).status_code == 404
    # Another police station in the province has no part in the case: it does not exist.
    other = api.auth(Role.CASE_MANAGER, Role.INTAKE_OFFICER, agency="dong-thap-police-2")
    assert api.client.post(url, json=GRANT, headers=other).status_code == 404
    assert api.client.get(f"/consent/cases/{case_id}", headers=other).status_code == 404
    # The holding agency's staff follow the record; they do not record consent.
    r = api.client.get(f"/consent/cases/{case_id}", headers=api.auth(Role.AGENCY_STAFF))
    assert r.status_code == 200
    # Intake officers record consent at reception only; this case is in crisis now.
    r = api.client.post(url, json=GRANT, headers=api.auth(Role.INTAKE_OFFICER))
    assert r.status_code == 403
    at_reception = api.case(stage=None)
    r = api.client.post(
        f"/consent/cases/{at_reception}/grants", json=GRANT, headers=api.auth(Role.INTAKE_OFFICER)
    )
    assert r.status_code == 201


def test_whoever_meets_the_person_records_a_withdrawal_auditors_and_admins_do_not(
    api: Api,
) -> None:
    case_id = api.case()
    url = f"/consent/cases/{case_id}/grants/{api.grant(case_id)}/withdrawal"
    for role in (Role.AUDITOR, Role.ADMIN, Role.COORDINATOR):
        national = api.auth(role, province="*", agency="ministry")
        assert api.client.post(url, json={}, headers=national).status_code == 403
    # A hospital's desk in another province hears it: recorded, effective at once.
    desk = api.auth(
        Role.AGENCY_STAFF, province="lao-cai", kind=AgencyKind.HOSPITAL, agency="lao-cai-hospital"
    )
    r = api.client.post(url, json={"reason": "Nói với bệnh viện"}, headers=desk)
    assert r.status_code == 201, r.text
    record = api.client.get(f"/consent/cases/{case_id}", headers=api.auth()).json()
    assert [g["status"] for g in record["grants"]] == ["withdrawn"]


def test_unknown_case_and_grant_are_404(api: Api) -> None:
    r = api.client.get(f"/consent/cases/{uuid4()}", headers=api.auth())
    assert r.status_code == 404
    assert "appears here within seconds" in r.json()["detail"]
    case_id = api.case()
    r = api.client.post(
        f"/consent/cases/{case_id}/grants/{uuid4()}/withdrawal", json={}, headers=api.auth()
    )
    assert r.status_code == 404
    r = api.client.get(f"/consent/cases/{case_id}/grants/{uuid4()}/receipt", headers=api.auth())
    assert r.status_code == 404


def test_retried_grant_is_recorded_once(api: Api) -> None:
    case_id = api.case()
    headers = {**api.auth(), "Idempotency-Key": "grant-retry-0001"}
    first = api.client.post(f"/consent/cases/{case_id}/grants", json=GRANT, headers=headers)
    before = api.events()
    second = api.client.post(f"/consent/cases/{case_id}/grants", json=GRANT, headers=headers)
    assert first.json() == second.json()
    assert api.events() == before
