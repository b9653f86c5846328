"""Case work through HTTP on PostgreSQL: the comprehensive assessments recorded by the roles
whose work they are, shown to the agencies holding the case only (and every read audited); a
consented health referral carrying the medical findings and only them; the exploitation and
identification; the contact log, whose breaches of the person's wish reach the board."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from fastapi.testclient import TestClient

from contracts.vocabulary import DataCategory, Role
from services.cli.wiring import Platform, http_app, migrate, start
from services.runtime.auth import TokenService
from services.runtime.read_audit import ReadAudit
from services.runtime.settings import Settings
from tests.support.agencies import TEST_AGENCIES, register_agencies

pytestmark = pytest.mark.postgres

NOW = datetime.now(UTC).replace(microsecond=0)
PROVINCE = "dong-thap"
WRITTEN = {
    "method": "written_form",
    "form_reference": "F-1",
    "language": "vi",
    "withdrawal_explained": True,
}


class Api:
    def __init__(
        self, client: TestClient, tokens: TokenService, platform: Platform, audit: ReadAudit
    ) -> None:
        self.client, self.tokens, self.platform, self.audit = client, tokens, platform, audit

    def as_(self, agency: str, role: Role) -> dict[str, str]:
        token = self.tokens.issue(
            user_id=f"{agency}-{role.value}",
            agency_id=agency,
            province=TEST_AGENCIES[agency][1],
            roles=(role,),
        )
        return {"Authorization": f"Bearer {token}"}

    def send(
        self, method: str, url: str, body: dict[str, Any], who: dict[str, str], expect: int
    ) -> Any:
        r = self.client.request(method, url, json=body, headers=who)
        assert r.status_code == expect, r.text
        self.platform.catch_up()
        return r.json()

    def post(self, url: str, body: dict[str, Any], who: dict[str, str], expect: int = 201) -> Any:
        return self.send("POST", url, body, who, expect)

    def put(self, url: str, body: dict[str, Any], who: dict[str, str], expect: int = 200) -> Any:
        return self.send("PUT", url, body, who, expect)

    def get(self, url: str, who: dict[str, str], expect: int = 200) -> Any:
        r = self.client.get(url, headers=who)
        assert r.status_code == expect, r.text
        return r.json()

    def case(self) -> str:
        """A case received by the police and managed by the social work centre."""
        officer = self.as_("dt-police", Role.INTAKE_OFFICER)
        case_id = self.post(
            "/intake/cases",
            {
                "route": "rescued",
                "received_at": (NOW - timedelta(hours=3)).isoformat(),
                "place": {"province": PROVINCE},
            },
            officer,
        )["case_id"]
        self.post(
            f"/intake/cases/{case_id}/person",
            {"full_name": "Tran Thi Mai", "sex": "female", "estimated_age": 23},
            officer,
        )
        self.put(
            f"/intake/cases/{case_id}/case-manager",
            {"case_manager_id": "dt-swc-case_manager", "agency": "dt-swc"},
            self.as_("dt-dolisa", Role.COORDINATOR),
        )
        return str(case_id)

    def grant(self, case_id: str, categories: list[str]) -> str:
        body = {
            "categories": categories,
            "recipients": [{"kind": "hospital"}],
            "purposes": ["service_provision"],
            "valid_from": (NOW - timedelta(days=1)).isoformat(),
            "valid_until": (NOW + timedelta(days=365)).isoformat(),
            "collection": WRITTEN,
            "given_by": {"kind": "person"},
        }
        manager = self.as_("dt-swc", Role.CASE_MANAGER)
        return str(self.post(f"/consent/cases/{case_id}/grants", body, manager)["grant_id"])


@pytest.fixture
def api(pg_settings: Settings) -> Iterator[Api]:
    migrate(pg_settings)
    platform = start(pg_settings, run_followers=False)
    register_agencies(platform)
    tokens = TokenService(pg_settings)
    assert platform.read_audit is not None
    with TestClient(http_app(platform, tokens)) as client:
        yield Api(client, tokens, platform, platform.read_audit)
    platform.close()


def exam(findings: str) -> dict[str, Any]:
    return {
        "examined_at": (NOW - timedelta(hours=2)).isoformat(),
        "findings": findings,
        "urgent_treatment": "Rehydration and wound dressing",
        "follow_up_needed": True,
        "follow_up": "Review at the provincial hospital in two weeks",
    }


def psychosocial(observations: str) -> dict[str, Any]:
    return {
        "assessed_at": (NOW - timedelta(hours=1)).isoformat(),
        "mental_state": "distressed",
        "psychological_support_needed": True,
        "observations": observations,
    }


def test_each_assessment_is_made_by_its_role_and_read_by_the_holders_only(api: Api) -> None:
    case_id = api.case()
    at = f"/intake/cases/{case_id}"
    doctor = api.as_("dt-swc", Role.HEALTH_WORKER)
    manager = api.as_("dt-swc", Role.CASE_MANAGER)
    coordinator = api.as_("dt-dolisa", Role.COORDINATOR)
    findings = f"Fractured wrist {secrets.token_hex(4)}"
    observations = f"Flashbacks at night {secrets.token_hex(4)}"

    # A health worker examines; a case manager may not, nor a health worker with no tie.
    api.post(f"{at}/medical-examinations", exam(findings), manager, expect=403)
    api.post(
        f"{at}/medical-examinations",
        exam(findings),
        api.as_("dt-hospital", Role.HEALTH_WORKER),
        expect=404,
    )
    api.post(f"{at}/medical-examinations", exam(findings), doctor)
    api.post(f"{at}/psychosocial-assessments", psychosocial(observations), doctor)
    family = {"assessed_at": NOW.isoformat(), "return_safety": "uncertain", "dependants": 1}
    api.post(f"{at}/family-assessments", family, doctor, expect=403)
    api.post(f"{at}/family-assessments", family, manager)
    legal = {"assessed_at": NOW.isoformat(), "needs": ["criminal_case", "compensation"]}
    api.post(f"{at}/legal-needs-assessments", legal, manager)
    livelihood = {
        "assessed_at": NOW.isoformat(),
        "education_level": "lower_secondary",
        "livelihood": "unemployed",
        "skills": ["sewing"],
        "wishes": "A garment course near home",
    }
    api.post(f"{at}/livelihood-assessments", livelihood, manager)
    # The rules answer with the field at fault.
    bad = {**exam(findings), "follow_up": None}
    problem = api.post(f"{at}/medical-examinations", bad, doctor, expect=422)
    assert problem["errors"][0]["field"] == "follow_up"

    whole = api.get(at, manager)
    assert whole["medical_examination"]["findings"] == findings
    assert whole["psychosocial"]["observations"] == observations
    assert whole["family"]["return_safety"] == "uncertain"
    assert whole["legal_needs"]["needs"] == ["criminal_case", "compensation"]
    assert whole["education_livelihood"]["wishes"] == "A garment course near home"
    (read,) = api.audit.reads_of_case(UUID(case_id))
    assert {DataCategory.HEALTH, DataCategory.PSYCHOSOCIAL, DataCategory.FAMILY} <= set(
        read.categories
    )

    # The coordinator sees the case's progress, not one finding; nothing personal is recorded.
    r = api.client.get(at, headers=coordinator)
    assert r.status_code == 200
    assert findings not in r.text
    assert observations not in r.text
    progress = r.json()
    for field in ("medical_examination", "psychosocial", "family", "legal_needs"):
        assert progress[field] is None
    assert len(api.audit.reads_of_case(UUID(case_id))) == 1

    # The timeline tells the holders what was found, and the coordinator only that it was.
    story = api.get(f"/projections/cases/{case_id}/timeline", manager)
    said = [e["what"] for e in story]
    assert "Mental state: distressed; psychological support needed" in said
    assert any(w.startswith("Medical examination: urgent treatment given") for w in said)
    r = api.client.get(f"/projections/cases/{case_id}/timeline", headers=coordinator)
    assert r.status_code == 200
    told = [e["what"] for e in r.json()]
    assert "Medical examination recorded" in told
    assert not any(w.startswith("Mental state") for w in told)
    reads = api.audit.reads_of_case(UUID(case_id))
    assert len(reads) == 2  # the holder's timeline read, not the coordinator's
    assert DataCategory.HEALTH in reads[-1].categories


def test_a_consented_health_referral_carries_the_medical_findings_and_only_them(
    api: Api,
) -> None:
    doctor = api.as_("dt-swc", Role.HEALTH_WORKER)
    manager = api.as_("dt-swc", Role.CASE_MANAGER)
    hospital = api.as_("dt-hospital", Role.AGENCY_STAFF)
    findings = {case: f"Findings {secrets.token_hex(6)}" for case in ("with", "without")}
    observations = f"Observations {secrets.token_hex(6)}"
    cases = {}
    for which in ("with", "without"):
        case_id = cases[which] = api.case()
        api.post(f"/intake/cases/{case_id}/medical-examinations", exam(findings[which]), doctor)
        api.post(
            f"/intake/cases/{case_id}/psychosocial-assessments", psychosocial(observations), doctor
        )
    api.grant(cases["with"], ["identity", "health"])
    api.grant(cases["without"], ["identity"])

    health = {"to_agency": "dt-hospital", "service_type": "medical_care", "categories": ["health"]}
    sent = api.post(f"/referral/cases/{cases['with']}/referrals", health, manager)
    assert sent["status"] == "requested"
    seen = api.get(f"/referral/referrals/{sent['referral_id']}", hospital)
    data = seen["disclosure"]["data"]
    assert list(data) == ["health"]
    assert data["health"]["findings"] == findings["with"]
    assert data["health"]["follow_up_needed"] is True
    assert {f["category"] for f in seen["disclosure"]["released"]} == {"health"}
    r = api.client.get(f"/referral/referrals/{sent['referral_id']}", headers=hospital)
    assert observations not in r.text  # psychosocial facts are not health facts

    # Without consent for health: asking for it waits; asking without it carries none of it.
    waiting = api.post(
        f"/referral/cases/{cases['without']}/referrals",
        {**health, "categories": ["identity", "health"]},
        manager,
    )
    assert waiting["status"] == "draft"
    assert waiting["blocked_by"] == ["health"]
    identity_only = api.post(
        f"/referral/cases/{cases['without']}/referrals",
        {**health, "categories": ["identity"]},
        manager,
    )
    assert identity_only["status"] == "requested"
    # A draft is nobody's but its sender's: the hospital does not learn of it.
    r = api.client.get(f"/referral/referrals/{waiting['referral_id']}", headers=hospital)
    assert r.status_code == 404
    assert api.get(f"/referral/referrals/{waiting['referral_id']}", manager)["disclosure"] is None
    r = api.client.get(f"/referral/referrals/{identity_only['referral_id']}", headers=hospital)
    assert r.status_code == 200
    assert findings["without"] not in r.text
    assert list(r.json()["disclosure"]["data"]) == ["identity"]

    # Other agencies see nothing of it: not another hospital, not the police, not the
    # coordinator (who sees the referral's progress).
    others = (
        api.as_("dt-hospital-1", Role.AGENCY_STAFF),
        api.as_("dt-police", Role.AGENCY_STAFF),
        api.as_("dt-dolisa", Role.COORDINATOR),
    )
    for who in others:
        r = api.client.get(f"/referral/referrals/{sent['referral_id']}", headers=who)
        assert r.status_code in (200, 404)
        assert findings["with"] not in r.text
        listed = api.client.get("/referral/referrals", headers=who)
        assert findings["with"] not in listed.text


def test_exploitation_and_identification(api: Api) -> None:
    case_id = api.case()
    at = f"/intake/cases/{case_id}"
    officer = api.as_("dt-police", Role.INTAKE_OFFICER)
    coordinator = api.as_("dt-dolisa", Role.COORDINATOR)
    exploitation = {
        "types": ["forced_labour", "forced_criminality"],
        "countries": ["KH"],
        "place": "A scam compound near Sihanoukville",
        "started_on": "2025-05-01",
        "ended_on": "2026-01-15",
        "means_of_control": ["debt_bondage", "withholds_documents"],
    }
    api.put(f"{at}/exploitation", exploitation, officer)
    api.put(f"{at}/exploitation", {**exploitation, "types": ["other"]}, officer, expect=422)
    api.put(f"{at}/identification", {"status": "presumed"}, officer)
    decided = {"status": "identified", "authority": "dt-police", "decided_on": "2026-01-20"}
    api.put(f"{at}/identification", {**decided, "authority": "no-such-agency"}, officer, 422)
    api.put(f"{at}/identification", decided, officer)
    api.put(f"{at}/identification", {"status": "presumed"}, officer, expect=409)
    api.put(f"{at}/exploitation", exploitation, api.as_("dt-swc", Role.HEALTH_WORKER), 403)

    whole = api.get(at, api.as_("dt-swc", Role.CASE_MANAGER))
    assert whole["exploitation"]["types"] == ["forced_labour", "forced_criminality"]
    assert whole["exploitation"]["means_of_control"] == ["debt_bondage", "withholds_documents"]
    assert whole["identification"] == {
        "status": "identified",
        "authority": {"agency_id": "dt-police", "kind": "police"},
        "decided_on": "2026-01-20",
    }
    r = api.client.get(at, headers=coordinator)
    assert "Sihanoukville" not in r.text
    assert r.json()["exploitation"] is None
    assert r.json()["identification"] is None


def test_the_contact_log_and_a_home_visit_against_the_persons_wish(api: Api) -> None:
    case_id = api.case()
    at = f"/intake/cases/{case_id}"
    manager = api.as_("dt-swc", Role.CASE_MANAGER)
    coordinator = api.as_("dt-dolisa", Role.COORDINATOR)
    api.put(
        f"{at}/contact-preference",
        {"preferred": ["phone", "meeting_nearby_town"], "refused": ["home_visit"]},
        manager,
    )
    call = {"mode": "phone", "occurred_at": NOW.isoformat(), "note": "Settling in well."}
    called = api.post(f"{at}/contacts", call, manager)
    visit = {
        "mode": "home_visit",
        "occurred_at": NOW.isoformat(),
        "place": "Her parents' house in the village",
    }
    refused = api.post(f"{at}/contacts", visit, manager, expect=409)
    assert refused["allowed"] == ["phone", "meeting_nearby_town"]
    reason = f"Unreachable by phone for three weeks {secrets.token_hex(4)}"
    visited = api.post(f"{at}/contacts", {**visit, "reason": reason}, manager)
    api.post(f"{at}/contacts", call, coordinator, expect=403)
    note = f"She asks for a garment course {secrets.token_hex(4)}"
    api.post(f"{at}/notes", {"about": "needs", "text": note}, manager)

    log = api.get(at, manager)
    assert [c["contact_id"] for c in log["contacts"]] == [
        called["contact_id"],
        visited["contact_id"],
    ]
    assert [c["against_preference"] for c in log["contacts"]] == [False, True]
    assert log["contacts"][1]["reason"] == reason
    assert log["contacts"][1]["by_user"] == "dt-swc-case_manager"
    assert [n["text"] for n in log["notes"]] == [note]

    # The board shows the breach of the person's wish, not where or why.
    r = api.client.get(f"/projections/board?province={PROVINCE}", headers=coordinator)
    assert r.status_code == 200
    (row,) = [row for row in r.json()["rows"] if row["case_id"] == case_id]
    assert row["contacts_against_preference"] == [
        {
            "contact_id": visited["contact_id"],
            "occurred_at": NOW.isoformat().replace("+00:00", "Z"),
            "mode": "home_visit",
            "by_agency": "dt-swc",
        }
    ]
    assert reason not in r.text
    assert "village" not in r.text
    r = api.client.get(at, headers=coordinator)
    assert r.json()["contacts"] is None
    assert r.json()["notes"] == []
    assert note not in r.text
    assert reason not in r.text


def test_the_reintegration_plan_made_with_the_person_and_its_measures(api: Api) -> None:
    case_id = api.case()
    at = f"/intake/cases/{case_id}/plan"
    manager = api.as_("dt-swc", Role.CASE_MANAGER)
    coordinator = api.as_("dt-dolisa", Role.COORDINATOR)
    due = (NOW + timedelta(days=30)).date().isoformat()
    goal = f"A job after a garment course {secrets.token_hex(4)}"
    body = {
        "goals": [{"domain": "income", "goal": goal}, {"domain": "health", "goal": "Healed"}],
        "tasks": [
            {
                "goal": 0,
                "action": "Enrol in the garment course",
                "responsible": {"team_role": "trainer", "agency": "dt-shelter"},
                "due_on": due,
            },
            {
                "goal": 1,
                "action": "Review at the hospital",
                "responsible": {"team_role": "health_worker", "agency": "dt-hospital"},
                "due_on": due,
            },
        ],
    }
    api.put(at, body, api.as_("dt-swc", Role.HEALTH_WORKER), expect=403)
    assert api.put(at, body, manager)["revision"] == 1
    plan = api.get(at, manager)
    course, _review = plan["tasks"]
    assert course["responsible"]["agency"] == {"agency_id": "dt-shelter", "kind": "ngo"}
    assert plan["agreed"] is False
    started = {"to_status": "in_progress"}
    refused = api.post(f"{at}/tasks/{course['task_id']}/progress", started, manager, expect=409)
    assert refused["allowed"] == ["agreement"]
    api.post(f"{at}/agreement", {"method": "signed", "person_views": "I want to sew"}, manager)
    api.post(f"{at}/tasks/{course['task_id']}/progress", started, manager)
    revised = {
        "goals": body["goals"][:1],
        "tasks": [{**body["tasks"][0], "task_id": course["task_id"]}],
        "reason": "The hospital review is no longer needed",
    }
    assert api.put(at, revised, manager)["revision"] == 2
    # Three measures: the baseline in the crisis stage, then two more.
    for days, scores, stage in (
        (60, (0.2, 0.3, 0.25), None),
        (30, (0.45, 0.5, 0.4), "transitional"),
        (1, (0.7, 0.6, 0.65), "external_support"),
    ):
        if stage:
            api.post(f"/intake/cases/{case_id}/stage", {"to_stage": stage}, manager, expect=200)
        measured = {
            "measured_at": (NOW - timedelta(days=days)).isoformat(),
            **dict(zip(("economic", "social", "psychosocial"), scores, strict=True)),
        }
        api.post(f"{at}/measures", measured, manager)

    plan = api.get(at, manager)
    assert plan["revision"] == 2
    assert plan["agreed"] is False  # the person agrees to revision 2 afresh
    assert [r["revision"] for r in plan["revisions"]] == [1, 2]
    assert plan["revisions"][0]["agreement"]["person_views"] == "I want to sew"
    assert [t["status"] for t in plan["tasks"]] == ["in_progress"]
    trend = [m["change_from_baseline"] for m in plan["measures"]]
    assert trend[0] is None
    assert trend[2] == {"economic": 0.5, "social": 0.3, "psychosocial": 0.4}
    assert [m["baseline"] for m in plan["measures"]] == [True, False, False]
    reads = api.audit.reads_of_case(UUID(case_id))
    assert reads[-1].what == "intake.plan"
    assert reads[-1].categories == (DataCategory.NEEDS,)

    # The coordinator sees its progress: revision, agreement, task status and due dates.
    r = api.client.get(at, headers=coordinator)
    assert r.status_code == 200
    assert goal not in r.text
    assert "garment" not in r.text
    progress = r.json()
    assert progress["revisions"] is None
    assert progress["measures"] is None
    assert progress["tasks"] == [
        {
            "task_id": course["task_id"],
            "status": "in_progress",
            "due_on": due,
            "overdue": False,
            "goal_id": None,
            "action": None,
            "responsible": None,
            "service_type": None,
        }
    ]
    assert len(api.audit.reads_of_case(UUID(case_id))) == len(reads)
    story = api.client.get(f"/projections/cases/{case_id}/timeline", headers=coordinator).json()
    assert "Reintegration plan revised" in [e["what"] for e in story]
    story = api.get(f"/projections/cases/{case_id}/timeline", manager)
    told = [e["what"] for e in story]
    assert "Reintegration plan, revision 1: health, income; 2 tasks" in told
    assert "Baseline (reception): economic 0.20, social 0.30, psychosocial 0.25" in told


def test_an_exit_is_planned_and_its_follow_up_listed_for_the_coordinator(api: Api) -> None:
    case_id = api.case()
    at = f"/intake/cases/{case_id}"
    manager = api.as_("dt-swc", Role.CASE_MANAGER)
    coordinator = api.as_("dt-dolisa", Role.COORDINATOR)
    api.put(
        f"{at}/contact-preference", {"preferred": ["phone"], "refused": ["home_visit"]}, manager
    )
    api.post(f"{at}/stage", {"to_stage": "transitional"}, manager, expect=200)
    closing = {"reason": "safe_independence", "feedback": "Thank you"}
    refused = api.post(f"{at}/closure", closing, manager, expect=409)
    assert refused["allowed"] == ["exit_plan"]
    how = f"Call the centre on its hotline {secrets.token_hex(4)}"
    exit_plan = {
        "planned_exit_on": (NOW + timedelta(days=1)).date().isoformat(),
        "follow_up_every_days": 7,
        "follow_up_until": (NOW + timedelta(days=60)).date().isoformat(),
        "follow_up_modes": ["home_visit"],
        "how_to_come_back": how,
    }
    api.post(f"{at}/plan/exit", exit_plan, manager, expect=422)
    api.post(f"{at}/plan/exit", {**exit_plan, "follow_up_modes": ["phone"]}, coordinator, 403)
    api.post(f"{at}/plan/exit", {**exit_plan, "follow_up_modes": ["phone"]}, manager)
    api.post(f"{at}/closure", closing, manager)

    assert api.get(f"{at}/plan", manager)["exit_plan"]["how_to_come_back"] == how
    r = api.client.get(f"{at}/plan", headers=coordinator)
    assert r.json()["exit_planned"] is True
    assert how not in r.text
    follow_ups = api.get(f"/projections/follow-ups?province={PROVINCE}", coordinator)
    (row,) = [f for f in follow_ups if f["case_id"] == case_id]
    closed_at = datetime.fromisoformat(row["closed_at"])
    assert row["made"] == 0
    assert row["missed"] == []
    assert datetime.fromisoformat(row["next_due"]) == closed_at + timedelta(days=7)
    api.get(f"/projections/follow-ups?province={PROVINCE}", manager, expect=403)


def test_a_service_the_person_dropped_is_recorded_as_their_choice(api: Api) -> None:
    case_id = api.case()
    at = f"/intake/cases/{case_id}"
    manager = api.as_("dt-swc", Role.CASE_MANAGER)
    words = f"The course is too far from home {secrets.token_hex(4)}"
    dropped = {
        "service_type": "vocational_training",
        "choice": "dropped",
        "in_their_words": words,
        "how_to_come_back": "The centre keeps her place for the next course; call us.",
    }
    api.post(f"{at}/declined-services", dropped, api.as_("dt-swc", Role.HEALTH_WORKER), 403)
    api.post(f"{at}/declined-services", dropped, manager)
    [declined] = api.get(at, manager)["declined_services"]
    assert declined["choice"] == "dropped"
    assert declined["in_their_words"] == words
    r = api.client.get(at, headers=api.as_("dt-dolisa", Role.COORDINATOR))
    assert r.json()["declined_services"] is None
    assert words not in r.text


def test_a_receiving_agency_reports_progress_and_a_structured_outcome(api: Api) -> None:
    case_id = api.case()
    manager = api.as_("dt-swc", Role.CASE_MANAGER)
    hospital = api.as_("dt-hospital", Role.AGENCY_STAFF)
    api.grant(case_id, ["identity"])
    care = {"to_agency": "dt-hospital", "service_type": "medical_care", "categories": ["identity"]}
    rid = api.post(f"/referral/cases/{case_id}/referrals", care, manager)["referral_id"]
    at = f"/referral/referrals/{rid}"
    api.post(f"{at}/progress", {"note": "Not yet"}, hospital, expect=409)
    for step in ("acknowledge", "accept", "start"):
        api.post(f"{at}/{step}", {}, hospital, expect=200)
    api.post(f"{at}/progress", {"note": "Week 2: wounds healing"}, hospital)
    api.post(f"{at}/progress", {"note": "Week 2"}, manager, expect=403)
    api.post(f"{at}/feedback", {"satisfaction": 4, "comment": "Kind nurses"}, hospital, 403)
    api.post(f"{at}/feedback", {"satisfaction": 4, "comment": "Kind nurses"}, manager)
    partial = {"outcome": "Four of six weeks", "delivery": "partially_delivered"}
    problem = api.post(f"{at}/complete", partial, hospital, expect=422)
    assert problem["errors"][0]["field"] == "why"
    api.post(f"{at}/complete", {**partial, "why": "She went home early"}, hospital, expect=200)

    seen = api.get(at, manager)
    assert seen["status"] == "completed"
    assert seen["delivery"] == "partially_delivered"
    assert [p["note"] for p in seen["progress"]] == ["Week 2: wounds healing"]
    assert seen["progress"][0]["by_agency"] == "dt-hospital"
    assert seen["feedback"] == [
        {"at": seen["feedback"][0]["at"], "satisfaction": 4, "comment": "Kind nurses"}
    ]
    r = api.client.get(at, headers=api.as_("dt-dolisa", Role.COORDINATOR))
    assert r.json()["progress"] is None
    assert "wounds" not in r.text
    assert "Kind nurses" not in r.text


def test_a_supervisor_reviews_the_case_and_the_board_shows_when_the_next_is_due(
    api: Api,
) -> None:
    case_id = api.case()
    at = f"/intake/cases/{case_id}"
    manager = api.as_("dt-swc", Role.CASE_MANAGER)
    supervisor = api.as_("dt-swc", Role.SUPERVISOR)
    coordinator = api.as_("dt-dolisa", Role.COORDINATOR)
    board = api.get(f"/projections/board?province={PROVINCE}", coordinator)
    (row,) = [r for r in board["rows"] if r["case_id"] == case_id]
    received = datetime.fromisoformat(row["received_at"])
    first_due = (received + timedelta(hours=7)).date() + timedelta(days=3)  # Vietnam's date
    assert row["review_due_on"] == first_due.isoformat()
    assert row["review_overdue"] is False

    findings = f"Sleeping better; ready to plan {secrets.token_hex(4)}"
    review = {"findings": findings, "decisions": ["revise_plan", "case_conference"]}
    api.post(f"{at}/reviews", review, manager, expect=403)
    api.post(f"{at}/reviews", review, api.as_("dt-hospital", Role.SUPERVISOR), expect=404)
    api.post(f"{at}/stage", {"to_stage": "crisis"}, manager, expect=200)
    done = api.post(f"{at}/reviews", review, supervisor)
    today = (datetime.now(UTC) + timedelta(hours=7)).date()
    assert done["next_review_on"] == (today + timedelta(days=7)).isoformat()

    [seen] = api.get(at, supervisor)["reviews"]
    assert seen["findings"] == findings
    assert seen["by_user"] == "dt-swc-supervisor"
    r = api.client.get(at, headers=coordinator)
    assert r.json()["reviews"] is None
    assert findings not in r.text
    board = api.get(f"/projections/board?province={PROVINCE}", coordinator)
    (row,) = [r for r in board["rows"] if r["case_id"] == case_id]
    assert row["review_due_on"] == done["next_review_on"]


def test_a_case_conference_adds_its_tasks_to_the_plan(api: Api) -> None:
    case_id = api.case()
    at = f"/intake/cases/{case_id}/plan"
    manager = api.as_("dt-swc", Role.CASE_MANAGER)
    due = (NOW + timedelta(days=20)).date().isoformat()
    goals = {"goals": [{"domain": "legal", "goal": "Compensation from the recruiter"}]}
    api.put(at, goals, manager)
    conference = {
        "held_on": NOW.date().isoformat(),
        "attendees": [
            {"agency": "dt-swc", "capacity": "case manager"},
            {"agency": "dt-police", "capacity": "investigator"},
        ],
        "decisions": ["A free lawyer for her statement"],
        "tasks": [
            {
                "goal": 0,
                "action": "Ask the legal aid centre for a lawyer",
                "responsible": {"team_role": "lawyer", "agency": "dt-shelter"},
                "due_on": due,
            }
        ],
    }
    one_agency = {**conference, "attendees": conference["attendees"][:1]}
    api.post(f"{at}/conferences", one_agency, manager, expect=422)
    api.post(f"{at}/conferences", conference, api.as_("dt-police", Role.INTAKE_OFFICER), 403)
    added = api.post(f"{at}/conferences", conference, manager)["tasks_added"]
    plan = api.get(at, manager)
    assert plan["revision"] == 2
    assert [t["task_id"] for t in plan["tasks"]] == added
    assert plan["conferences"][0]["decisions"] == ["A free lawyer for her statement"]
    r = api.client.get(at, headers=api.as_("dt-dolisa", Role.COORDINATOR))
    assert r.json()["conferences"] is None
    assert "lawyer" not in r.text
