"""The referral service through HTTP on PostgreSQL: the Dong Thap and Lao Cai scenarios."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from contracts.vocabulary import AgencyKind, Role
from services.cli.wiring import Platform, http_app, migrate, start
from services.runtime.auth import TokenService
from services.runtime.settings import Settings
from tests.support.agencies import register_agencies

pytestmark = pytest.mark.postgres

NOW = datetime.now(UTC).replace(microsecond=0)
WRITTEN = {
    "method": "written_form",
    "form_reference": "F-1",
    "language": "vi",
    "withdrawal_explained": True,
}
AGENCIES = {
    "dt-police": AgencyKind.POLICE,
    "dt-border-guard": AgencyKind.BORDER_GUARD,
    "dt-swc": AgencyKind.SOCIAL_WORK_CENTRE,
    "dt-hospital": AgencyKind.HOSPITAL,
    "cn-border": AgencyKind.FOREIGN_AUTHORITY,
    "lc-border-guard": AgencyKind.BORDER_GUARD,
    "lc-police": AgencyKind.POLICE,
    "lc-swc": AgencyKind.SOCIAL_WORK_CENTRE,
    "lc-hospital": AgencyKind.HOSPITAL,
    "lc-school": AgencyKind.SCHOOL,
    "dt-dolisa": AgencyKind.LOCAL_AUTHORITY,
    "lc-dolisa": AgencyKind.LOCAL_AUTHORITY,
}
# The social work centre that manages the cases of each province.
MANAGING = {"dong-thap": "dt-swc", "lao-cai": "lc-swc"}


def ref(agency_id: str) -> str:
    """Agencies are named by id; the directory says what kind each is."""
    assert agency_id in AGENCIES
    return agency_id


class Api:
    def __init__(self, client: TestClient, tokens: TokenService, platform: Platform) -> None:
        self.client, self.tokens, self.platform = client, tokens, platform

    def as_(self, agency: str, *roles: Role, province: str | None = None) -> dict[str, str]:
        province = province or ("lao-cai" if agency.startswith(("lc-", "cn-")) else "dong-thap")
        token = self.tokens.issue(
            user_id=f"{agency}-{roles[0].value}",
            agency_id=agency,
            province=province,
            roles=roles,
            agency_kind=AGENCIES[agency],
        )
        return {"Authorization": f"Bearer {token}"}

    def post(
        self, url: str, body: dict[str, Any], headers: dict[str, str], expect: int = 201
    ) -> dict[str, Any]:
        r = self.client.post(url, json=body, headers=headers)
        assert r.status_code == expect, r.text
        self.platform.catch_up()
        result: dict[str, Any] = r.json()
        return result

    def get(self, url: str, headers: dict[str, str], expect: int = 200) -> Any:
        r = self.client.get(url, headers=headers)
        assert r.status_code == expect, r.text
        return r.json()

    def receive(self, agency: str, province: str, age: int, **extra: Any) -> str:
        officer = self.as_(agency, Role.INTAKE_OFFICER)
        case = self.post(
            "/intake/cases",
            {
                "route": extra.pop("route", "rescued"),
                "received_at": (NOW - timedelta(hours=2)).isoformat(),
                "place": {"province": province},
                "receiving_agency": ref(agency),
                **extra,
            },
            officer,
        )
        self.post(
            f"/intake/cases/{case['case_id']}/person",
            {"full_name": "Person Name", "sex": "female", "estimated_age": age},
            officer,
        )
        self.post(
            f"/intake/cases/{case['case_id']}/needs-assessments",
            {"needs": ["medical_check", "shelter_tonight"]},
            officer,
        )
        # The coordinator gives the case to the province's social work centre.
        manager = MANAGING[province]
        self.client.put(
            f"/intake/cases/{case['case_id']}/case-manager",
            json={"case_manager_id": f"{manager}-case_manager", "agency": ref(manager)},
            headers=self.as_(manager.replace("swc", "dolisa"), Role.COORDINATOR),
        ).raise_for_status()
        self.platform.catch_up()
        return str(case["case_id"])

    def grant(self, case_id: str, manager: dict[str, str], **changes: Any) -> str:
        body = {
            "categories": ["identity", "needs"],
            "recipients": [{"kind": "hospital"}],
            "purposes": ["service_provision"],
            "valid_from": (NOW - timedelta(days=1)).isoformat(),
            "valid_until": (NOW + timedelta(days=365)).isoformat(),
            "collection": WRITTEN,
            "given_by": {"kind": "person"},
            **changes,
        }
        return str(self.post(f"/consent/cases/{case_id}/grants", body, manager)["grant_id"])


@pytest.fixture
def api(pg_settings: Settings) -> Iterator[Api]:
    migrate(pg_settings)
    platform = start(pg_settings, run_followers=False)
    register_agencies(platform)
    tokens = TokenService(pg_settings)
    with TestClient(http_app(platform, tokens)) as client:
        yield Api(client, tokens, platform)
    platform.close()


def test_dong_thap_night_reception(api: Api) -> None:
    manager = api.as_("dt-swc", Role.CASE_MANAGER)
    nurse = api.as_("dt-hospital", Role.AGENCY_STAFF)
    investigator = api.as_("dt-police", Role.AGENCY_STAFF)
    mai = api.receive("dt-police", "dong-thap", 23)
    lan = api.receive("dt-police", "dong-thap", 19)

    # The three-way handover: police -> social work centre, border guard present.
    parties = [
        {"agency": ref("dt-police"), "role": "from", "capacity": "police officer"},
        {"agency": ref("dt-swc"), "role": "to", "capacity": "social worker"},
        {"agency": ref("dt-border-guard"), "role": "witness", "capacity": "border guard"},
    ]
    handover = api.post(f"/referral/cases/{mai}/handovers", {"parties": parties}, manager)
    hid = handover["handover_id"]
    for agency in ("dt-police", "dt-border-guard"):
        api.post(f"/referral/handovers/{hid}/confirmations", {}, api.as_(agency, Role.AGENCY_STAFF))
    board = api.get(f"/referral/handovers/{hid}", manager)
    assert board["status"] == "open"
    assert board["waiting_for"] == ["dt-swc"]
    api.post(f"/referral/handovers/{hid}/confirmations", {}, manager)
    done = api.get(f"/referral/handovers/{hid}", manager)
    assert done["status"] == "completed"
    assert set(done["confirmed_after_seconds"]) == {"dt-police", "dt-border-guard", "dt-swc"}

    # Both women consent to identity and needs going to the hospital; Lan refuses the police
    # everything beyond what the criminal case requires.
    for case in (mai, lan):
        api.grant(case, manager)
    api.grant(
        lan,
        manager,
        recipients=[{"kind": "police"}],
        purposes=["criminal_proceedings"],
        categories=["identity"],
    )
    api.post(
        f"/consent/cases/{lan}/refusals",
        {
            "recipients": [{"kind": "police"}],
            "except_purposes": ["criminal_proceedings"],
        },
        manager,
    )

    health = {
        "to_agency": ref("dt-hospital"),
        "service_type": "health_check",
        "urgency": "urgent",
        "categories": ["identity", "needs"],
    }
    sent = api.post(f"/referral/cases/{mai}/referrals", health, manager)
    assert sent["status"] == "requested"

    # The hospital sees its queue and exactly what was disclosed to it.
    queue = api.get("/referral/referrals", nurse)
    assert [r["referral_id"] for r in queue] == [sent["referral_id"]]
    seen = queue[0]
    assert seen["disclosure"]["data"]["identity"]["full_name"] == "Person Name"
    assert seen["disclosure"]["data"]["needs"]["urgent_needs"] == [
        "medical_check",
        "shelter_tonight",
    ]
    assert {f["category"] for f in seen["disclosure"]["released"]} == {"identity", "needs"}
    assert api.get("/referral/referrals", investigator) == []  # nothing addressed to police

    rid = sent["referral_id"]
    for action in ("acknowledge", "accept", "start"):
        api.post(f"/referral/referrals/{rid}/{action}", {}, nurse, expect=200)
    r = api.client.post(f"/referral/referrals/{rid}/accept", json={}, headers=nurse)
    assert r.status_code == 409
    assert r.json()["allowed"] == ["complete", "fail", "cancel"]
    api.post(
        f"/referral/referrals/{rid}/complete",
        {"outcome": "Checked the same night."},
        nurse,
        expect=200,
    )
    assert api.get(f"/referral/referrals/{rid}", manager)["status"] == "completed"

    # Police: for the criminal case only.
    crime = {
        "to_agency": ref("dt-police"),
        "service_type": "legal_aid",
        "purpose": "criminal_proceedings",
        "categories": ["identity"],
    }
    assert api.post(f"/referral/cases/{lan}/referrals", crime, manager)["status"] == "requested"
    support = {**crime, "purpose": "service_provision"}
    blocked = api.post(f"/referral/cases/{lan}/referrals", support, manager)
    assert blocked["status"] == "draft"
    assert blocked["blocked_by"] == ["identity"]
    detail = api.get(f"/referral/referrals/{blocked['referral_id']}", manager)
    assert detail["blocked_by"][0]["verdict"] == "refused"
    assert detail["disclosure"] is None
    police_queue = api.get("/referral/referrals", investigator)
    assert len(police_queue) == 1  # the blocked one is never shown to the police
    assert police_queue[0]["purpose"] == "criminal_proceedings"


def test_withdrawal_in_the_middle_of_a_referral(api: Api) -> None:
    manager = api.as_("dt-swc", Role.CASE_MANAGER)
    nurse = api.as_("dt-hospital", Role.AGENCY_STAFF)
    case = api.receive("dt-police", "dong-thap", 30)
    grant_id = api.grant(case, manager)
    body = {
        "to_agency": ref("dt-hospital"),
        "service_type": "medical_care",
        "categories": ["identity", "needs"],
    }
    rid = api.post(f"/referral/cases/{case}/referrals", body, manager)["referral_id"]
    api.post(f"/referral/referrals/{rid}/acknowledge", {}, nurse, expect=200)
    api.post(f"/referral/referrals/{rid}/accept", {}, nurse, expect=200)

    # She tells the nurse she withdraws; the hospital records it and the referral holds.
    api.post(
        f"/consent/cases/{case}/grants/{grant_id}/withdrawal", {"reason": "changed mind"}, nurse
    )
    held = api.get(f"/referral/referrals/{rid}", nurse)
    assert held["status"] == "on-hold"
    assert held["disclosure"]["data"] is None  # the recipient no longer sees her data
    assert {w["verdict"] for w in held["blocked_by"]} == {"withdrawn"}
    r = api.client.post(f"/referral/referrals/{rid}/start", json={}, headers=nurse)
    assert r.status_code == 409
    assert r.json()["allowed"] == ["cancel"]

    # She consents again: the referral resumes where it was, under the new grant.
    new_grant = api.grant(case, manager)
    resumed = api.get(f"/referral/referrals/{rid}", nurse)
    assert resumed["status"] == "accepted"
    assert {f["grant_id"] for f in resumed["disclosure"]["released"]} == {new_grant}
    assert resumed["disclosure"]["data"]["identity"]["full_name"] == "Person Name"
    steps = [s["what"] for s in resumed["timeline"]]
    assert steps == ["created", "dispatched", "acknowledged", "accepted", "put on hold", "resumed"]


def test_lao_cai_border_handover_of_a_minor(api: Api) -> None:
    manager = api.as_("lc-swc", Role.CASE_MANAGER)
    case = api.receive(
        "lc-border-guard", "lao-cai", 16, route="border_handover", handed_over_by=ref("cn-border")
    )
    parties = [
        {"agency": ref("cn-border"), "role": "from", "capacity": "liaison officer"},
        {"agency": ref("lc-border-guard"), "role": "to", "capacity": "border guard"},
        {"agency": ref("lc-police"), "role": "witness", "capacity": "police officer"},
        {"agency": ref("lc-swc"), "role": "witness", "capacity": "psychological officer"},
    ]
    hid = api.post(
        f"/referral/cases/{case}/handovers",
        {"parties": parties},
        api.as_("lc-border-guard", Role.INTAKE_OFFICER),
    )["handover_id"]
    for agency in ("cn-border", "lc-border-guard", "lc-police", "lc-swc"):
        api.post(f"/referral/handovers/{hid}/confirmations", {}, api.as_(agency, Role.AGENCY_STAFF))
    assert api.get(f"/referral/handovers/{hid}", manager)["status"] == "completed"

    # Guardian consent with his own views; a psychologist within 24 hours.
    guardian = {"kind": "guardian", "relationship": "mother"}
    api.grant(
        case,
        manager,
        recipients=[{"kind": "hospital"}, {"kind": "school"}],
        given_by=guardian,
        child_views="He wants to go back to school.",
    )
    psych = {
        "to_agency": ref("lc-hospital"),
        "service_type": "psychological_first_aid",
        "urgency": "emergency",
        "categories": ["identity", "needs"],
    }
    sent = api.post(f"/referral/cases/{case}/referrals", psych, manager)
    assert sent["status"] == "requested"
    detail = api.get(f"/referral/referrals/{sent['referral_id']}", manager)
    dispatched = datetime.fromisoformat(detail["timeline"][1]["at"])
    assert datetime.fromisoformat(detail["first_service_by"]) - dispatched == timedelta(hours=24)
    assert detail["disclosure"]["data"] is None  # the sender sees what went, not the data again
    identity_fields = {
        f["field"] for f in detail["disclosure"]["released"] if f["category"] == "identity"
    }
    assert {"full_name", "minor", "estimated_age"} <= identity_fields
    school = {
        "to_agency": ref("lc-school"),
        "service_type": "education",
        "categories": ["identity"],
    }
    assert api.post(f"/referral/cases/{case}/referrals", school, manager)["status"] == "requested"


def test_emergency_override_through_http(api: Api) -> None:
    manager = api.as_("dt-swc", Role.CASE_MANAGER)
    coordinator = api.as_("dt-dolisa", Role.COORDINATOR)
    nurse = api.as_("dt-hospital", Role.AGENCY_STAFF)
    case = api.receive("dt-police", "dong-thap", 30)
    body = {
        "to_agency": ref("dt-hospital"),
        "service_type": "medical_care",
        "urgency": "emergency",
        "categories": ["identity"],
    }
    rid = api.post(f"/referral/cases/{case}/referrals", body, manager)["referral_id"]
    oid = api.post(
        f"/referral/referrals/{rid}/overrides",
        {"reason": "Unconscious after an injury; needs surgery tonight."},
        manager,
    )["override_id"]
    r = api.client.post(
        f"/referral/referrals/{rid}/overrides/{oid}/approval", json={}, headers=manager
    )
    assert r.status_code == 403
    approved = api.post(
        f"/referral/referrals/{rid}/overrides/{oid}/approval", {}, coordinator, expect=200
    )
    assert approved["status"] == "requested"
    seen = api.get(f"/referral/referrals/{rid}", nurse)
    assert seen["disclosure"]["basis"] == "vital_interest"
    assert seen["disclosure"]["flagged_for_review"] is True

    # The override on the referral: who asked, who approved, why, until when; then its review.
    [asked] = api.get(f"/referral/referrals/{rid}", coordinator)["overrides"]
    assert asked["reason"] == "Unconscious after an injury; needs surgery tonight."
    assert (asked["requested_by_agency"], asked["requested_by_role"]) == ("dt-swc", "case_manager")
    assert asked["approved_by_role"] == "coordinator"
    assert asked["in_force"] is True
    assert asked["needed_for_hours"] == 24
    approved_at = datetime.fromisoformat(asked["approved_at"])
    assert datetime.fromisoformat(asked["ends_at"]) - approved_at == timedelta(hours=24)
    auditor = api.as_("dt-dolisa", Role.AUDITOR)
    found = "The injury was life-threatening; consent could not be had."
    review = {"conclusion": "justified", "note": found}
    api.post(f"/referral/referrals/{rid}/overrides/{oid}/review", review, auditor, expect=200)
    [reviewed] = api.get(f"/referral/referrals/{rid}", manager)["overrides"]
    assert reviewed["in_force"] is False
    assert (reviewed["conclusion"], reviewed["review_note"]) == ("justified", found)
    assert reviewed["reviewed_by_role"] == "auditor"


def test_the_outcome_and_why_not_in_full_go_to_those_in_the_loop(api: Api) -> None:
    manager = api.as_("dt-swc", Role.CASE_MANAGER)
    hospital = api.as_("dt-hospital", Role.AGENCY_STAFF)
    case = api.receive("dt-police", "dong-thap", 30)
    api.grant(case, manager)
    body = {"to_agency": "dt-hospital", "service_type": "medical_care", "categories": ["identity"]}
    rid = api.post(f"/referral/cases/{case}/referrals", body, manager)["referral_id"]
    at = f"/referral/referrals/{rid}"
    for step in ("acknowledge", "accept", "start"):
        api.post(f"{at}/{step}", {}, hospital, expect=200)
    why = "She went home to her family after four weeks."
    partial = {"outcome": "Four of six weeks of care", "delivery": "partially_delivered"}
    api.post(f"{at}/complete", {**partial, "why": why}, hospital, expect=200)
    seen = api.get(at, manager)
    assert (seen["outcome"], seen["delivery_why"]) == ("Four of six weeks of care", why)
    r = api.client.get(at, headers=api.as_("dt-dolisa", Role.COORDINATOR))
    assert r.json()["outcome"] is None
    assert why not in r.text


def test_agency_access_is_limited_to_its_own_referrals(api: Api) -> None:
    manager = api.as_("dt-swc", Role.CASE_MANAGER)
    case = api.receive("dt-police", "dong-thap", 30)
    api.grant(case, manager)
    body = {
        "to_agency": ref("dt-hospital"),
        "service_type": "medical_care",
        "categories": ["identity"],
    }
    rid = api.post(f"/referral/cases/{case}/referrals", body, manager)["referral_id"]
    other = api.as_("lc-hospital", Role.AGENCY_STAFF)
    assert api.client.get(f"/referral/referrals/{rid}", headers=other).status_code == 404
    r = api.client.post(f"/referral/referrals/{rid}/acknowledge", json={}, headers=other)
    assert r.status_code == 404
    r = api.client.post(
        f"/referral/referrals/{rid}/acknowledge",
        json={},
        headers=api.as_("dt-hospital", Role.CASE_MANAGER),
    )
    assert r.status_code == 403  # answering is for the recipient's staff
    elsewhere = api.as_("lc-swc", Role.CASE_MANAGER)
    r = api.client.post(f"/referral/cases/{case}/referrals", json=body, headers=elsewhere)
    assert r.status_code == 404
    assert api.client.get("/referral/referrals").status_code == 401


def test_a_referral_to_the_police_cannot_claim_to_be_to_a_hospital(api: Api) -> None:
    """The attack the directory closes: with a grant to hospitals and a refusal of the police,
    a referral to the police that calls them a hospital must release nothing to them."""
    manager = api.as_("dt-swc", Role.CASE_MANAGER)
    investigator = api.as_("dt-police", Role.AGENCY_STAFF)
    # Received by the border guard: the police have no part in her case.
    case = api.receive("dt-border-guard", "dong-thap", 19)
    api.grant(case, manager)  # identity and needs, to any hospital
    api.post(f"/consent/cases/{case}/refusals", {"recipients": [{"kind": "police"}]}, manager)
    police_events = api.platform.referral.recorder.max_notification_id()

    # The kind cannot be sent at all any more...
    claim = {
        "to_agency": {"agency_id": "dt-police", "kind": "hospital"},
        "service_type": "health_check",
        "categories": ["identity", "needs"],
    }
    r = api.client.post(f"/referral/cases/{case}/referrals", json=claim, headers=manager)
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "to_agency"
    assert api.platform.referral.recorder.max_notification_id() == police_events

    # ...nor asserted by a police officer's token...
    token = api.tokens.issue(
        user_id="dt-police-1",
        agency_id="dt-police",
        province="dong-thap",
        roles=[Role.AGENCY_STAFF],
        agency_kind=AgencyKind.HOSPITAL,
    )
    r = api.client.get("/referral/referrals", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401
    assert "police" in r.json()["detail"]

    # ...and named by id, the police are the police: the refusal holds, nothing is released.
    by_id = {**claim, "to_agency": "dt-police"}
    sent = api.post(f"/referral/cases/{case}/referrals", by_id, manager)
    assert sent["status"] == "draft"
    assert sent["blocked_by"] == ["identity", "needs"]
    detail = api.get(f"/referral/referrals/{sent['referral_id']}", manager)
    assert detail["to_agency"] == {"agency_id": "dt-police", "kind": "police"}
    assert {w["verdict"] for w in detail["blocked_by"]} == {"refused"}
    assert detail["disclosure"] is None
    assert api.get("/referral/referrals", investigator) == []
    api.get(f"/referral/referrals/{sent['referral_id']}", investigator, expect=404)


def test_referrals_and_handovers_name_only_agencies_in_the_directory(api: Api) -> None:
    manager = api.as_("dt-swc", Role.CASE_MANAGER)
    case = api.receive("dt-police", "dong-thap", 30)
    before = api.platform.referral.recorder.max_notification_id()
    body = {"to_agency": "dt-nowhere", "service_type": "medical_care", "categories": ["identity"]}
    r = api.client.post(f"/referral/cases/{case}/referrals", json=body, headers=manager)
    assert r.status_code == 422
    assert r.json()["errors"] == [
        {"field": "to_agency", "message": r.json()["detail"]},
    ]
    assert "dt-nowhere" in r.json()["detail"]
    parties = [
        {"agency": "dt-police", "role": "from", "capacity": "police officer"},
        {"agency": "dt-nowhere", "role": "to", "capacity": "social worker"},
    ]
    r = api.client.post(
        f"/referral/cases/{case}/handovers", json={"parties": parties}, headers=manager
    )
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "parties.1.agency"
    assert api.platform.referral.recorder.max_notification_id() == before

    # A deactivated agency can no longer be named.
    admin = api.tokens.issue(
        user_id="admin-1", agency_id="national-inspectorate", province="*", roles=[Role.ADMIN]
    )
    r = api.client.post(
        "/directory/agencies/dt-hospital/deactivation",
        json={"reason": "closed"},
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert r.status_code == 201, r.text
    body = {**body, "to_agency": "dt-hospital"}
    r = api.client.post(f"/referral/cases/{case}/referrals", json=body, headers=manager)
    assert r.status_code == 422
    assert "inactive" in r.json()["detail"]
    parties[1]["agency"] = "dt-swc"
    started = api.post(f"/referral/cases/{case}/handovers", {"parties": parties}, manager)
    handover = api.get(f"/referral/handovers/{started['handover_id']}", manager)
    assert [p["agency"] for p in handover["parties"]] == [
        {"agency_id": "dt-police", "kind": "police"},
        {"agency_id": "dt-swc", "kind": "social_work_centre"},
    ]
