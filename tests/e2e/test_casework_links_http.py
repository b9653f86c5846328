"""Case work that crosses the logs, through HTTP on PostgreSQL: a completed case transfer
moves the case to the case manager it names (intake follows the referral log, consent and
referral learn it from intake); a plan task's referral; a referral's service the person
dropped, ended as their choice; a family member referred on the person's case, on their own
consent."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any
from uuid import UUID

from contracts.audit import ReadBasis
from contracts.vocabulary import DataCategory, Role
from tests.e2e.test_casework_http import NOW, Api, api

__all__ = ["api"]  # the fixture


def transfer(api: Api, case_id: str, to_agency: str, to_manager: str) -> str:
    """Start a case transfer from dt-swc to ``to_agency``, witnessed by the commune."""
    body = {
        "kind": "case_transfer",
        "parties": [
            {"agency": "dt-swc", "role": "from", "capacity": "case manager"},
            {"agency": to_agency, "role": "to", "capacity": "case manager"},
            {"agency": "dt-commune", "role": "witness", "capacity": "commune officer"},
        ],
        "to_case_manager_id": to_manager,
    }
    started = api.post(
        f"/referral/cases/{case_id}/handovers", body, api.as_("dt-swc", Role.CASE_MANAGER)
    )
    return str(started["handover_id"])


def confirm(api: Api, handover_id: str, *agencies: str) -> None:
    for agency in agencies:
        api.post(
            f"/referral/handovers/{handover_id}/confirmations",
            {},
            api.as_(agency, Role.CASE_MANAGER),
        )


def test_a_completed_case_transfer_makes_the_named_person_the_case_manager(api: Api) -> None:
    case_id = api.case()
    at = f"/intake/cases/{case_id}"
    old = api.as_("dt-swc", Role.CASE_MANAGER)
    new = api.as_("dt-swc-1", Role.CASE_MANAGER)
    handover_id = transfer(api, case_id, "dt-swc-1", "dt-swc-1-case_manager")

    # Started is not done: the case stays with its manager until every party confirms.
    confirm(api, handover_id, "dt-swc", "dt-swc-1")
    assert api.get(at, old)["case_manager_id"] == "dt-swc-case_manager"
    api.get(at, new, expect=404)
    confirm(api, handover_id, "dt-commune")
    assert api.get(f"/referral/handovers/{handover_id}", new)["status"] == "completed"

    case = api.get(at, new)
    assert case["case_manager_id"] == "dt-swc-1-case_manager"
    assert case["case_manager_agency"] == {"agency_id": "dt-swc-1", "kind": "social_work_centre"}
    # The agency that handed over no longer holds the case.
    api.get(at, old, expect=404)
    # The new manager works the case in every service: intake, consent and referral.
    api.post(
        f"{at}/contacts",
        {"mode": "phone", "occurred_at": (NOW - timedelta(minutes=5)).isoformat()},
        new,
    )
    grant = {
        "categories": ["identity"],
        "recipients": [{"kind": "hospital"}],
        "purposes": ["service_provision"],
        "valid_from": (NOW - timedelta(days=1)).isoformat(),
        "valid_until": (NOW + timedelta(days=365)).isoformat(),
        "collection": {
            "method": "written_form",
            "form_reference": "F-2",
            "language": "vi",
            "withdrawal_explained": True,
        },
        "given_by": {"kind": "person"},
    }
    api.post(f"/consent/cases/{case_id}/grants", grant, old, expect=404)
    api.post(f"/consent/cases/{case_id}/grants", grant, new)
    referral = {
        "to_agency": "dt-hospital",
        "service_type": "medical_care",
        "categories": ["identity"],
    }
    api.post(f"/referral/cases/{case_id}/referrals", referral, old, expect=404)
    assert api.post(f"/referral/cases/{case_id}/referrals", referral, new)["status"] == (
        "requested"
    )
    # The story says who took over, and by which handover.
    story = api.get(f"/projections/cases/{case_id}/timeline", new)
    said = [e["what"] for e in story]
    assert "Case manager dt-swc-1-case_manager (dt-swc-1), by a case transfer" in said

    # The intake log names the handover that moved the case.
    [moved] = [
        e
        for e in api.platform.intake.history(UUID(case_id))
        if type(e).__name__ == "CaseManagerAssigned" and e.handover_id is not None
    ]
    assert str(moved.handover_id) == handover_id


def held(api: Api, agency: str, role: Role = Role.CASE_MANAGER) -> list[str]:
    listed = api.get(f"/projections/agencies/{agency}/cases", api.as_(agency, role))
    return [c["case_id"] for c in listed]


def test_an_agency_lists_the_cases_it_holds_and_a_transfer_moves_one(api: Api) -> None:
    """The agencies holding a case, as the access policy counts them: the police who received
    the person and the case manager's centre; a completed case transfer moves it to the
    agency it names. The list tells nothing of the person, and records no read."""
    case_id, other = api.case(), api.case()
    assert set(held(api, "dt-swc")) == {case_id, other}
    assert set(held(api, "dt-police", Role.INTAKE_OFFICER)) == {case_id, other}
    [listed] = [
        c
        for c in api.get("/projections/agencies/dt-swc/cases", api.as_("dt-swc", Role.SUPERVISOR))
        if c["case_id"] == case_id
    ]
    assert listed["receiving_agency"] == "dt-police"
    assert listed["case_manager_agency"] == "dt-swc"
    assert listed["stage"] == "reception"
    assert "Tran Thi Mai" not in str(listed)
    assert api.audit.reads_of_case(UUID(case_id)) == []
    # A recipient of a referral does not hold the case; nor does an agency with no part.
    assert held(api, "dt-hospital", Role.AGENCY_STAFF) == []
    assert held(api, "dt-swc-1") == []
    # Only one's own agency's list, and only in a role that follows cases.
    api.get("/projections/agencies/dt-swc/cases", api.as_("dt-swc-1", Role.CASE_MANAGER), 403)
    api.get("/projections/agencies/dt-swc/cases", api.as_("dt-swc", Role.ADMIN), 403)

    handover_id = transfer(api, case_id, "dt-swc-1", "dt-swc-1-case_manager")
    confirm(api, handover_id, "dt-swc", "dt-swc-1")
    assert held(api, "dt-swc-1") == []  # not before every party has confirmed
    confirm(api, handover_id, "dt-commune")
    assert held(api, "dt-swc-1") == [case_id]
    assert held(api, "dt-swc") == [other]
    assert set(held(api, "dt-police", Role.INTAKE_OFFICER)) == {case_id, other}


def test_a_reception_handover_moves_no_case_manager(api: Api) -> None:
    case_id = api.case()
    at = f"/intake/cases/{case_id}"
    manager = api.as_("dt-swc", Role.CASE_MANAGER)
    reception = {
        "kind": "reception",
        "parties": [
            {"agency": "dt-swc", "role": "from", "capacity": "case manager"},
            {"agency": "dt-swc-2", "role": "to", "capacity": "shelter"},
        ],
    }
    started = api.post(f"/referral/cases/{case_id}/handovers", reception, manager)
    confirm(api, str(started["handover_id"]), "dt-swc", "dt-swc-2")
    assert api.get(at, manager)["case_manager_id"] == "dt-swc-case_manager"


def plan_with_tasks(api: Api, case_id: str) -> dict[str, Any]:
    """A plan agreed with the person: a hospital review (medical care) and a course whose
    service is not named."""
    manager = api.as_("dt-swc", Role.CASE_MANAGER)
    due = (NOW + timedelta(days=30)).date().isoformat()
    body = {
        "goals": [{"domain": "health", "goal": "Healed"}, {"domain": "income", "goal": "A job"}],
        "tasks": [
            {
                "goal": 0,
                "action": "Review at the hospital",
                "responsible": {"team_role": "health_worker", "agency": "dt-hospital"},
                "due_on": due,
                "service_type": "medical_care",
            },
            {
                "goal": 1,
                "action": "A garment course",
                "responsible": {"team_role": "trainer", "agency": "dt-shelter"},
                "due_on": due,
            },
        ],
    }
    api.put(f"/intake/cases/{case_id}/plan", body, manager)
    api.post(f"/intake/cases/{case_id}/plan/agreement", {"method": "signed"}, manager)
    return dict(api.get(f"/intake/cases/{case_id}/plan", manager))


def test_a_plan_task_refers_the_person_to_its_agency_through_the_consent_gate(api: Api) -> None:
    case_id = api.case()
    manager = api.as_("dt-swc", Role.CASE_MANAGER)
    hospital = api.as_("dt-hospital", Role.AGENCY_STAFF)
    plan = plan_with_tasks(api, case_id)
    review, course = plan["tasks"]
    assert review["service_type"] == "medical_care"
    url = f"/referral/cases/{case_id}/referrals"
    asked = {
        "to_agency": "dt-hospital",
        "service_type": "medical_care",
        "categories": ["identity"],
        "plan_task_id": review["task_id"],
    }
    # The task says to whom and for what; a task of no plan is refused.
    wrong = api.post(url, {**asked, "to_agency": "dt-hospital-1"}, manager, expect=422)
    assert wrong["errors"][0]["field"] == "to_agency"
    assert "dt-hospital" in wrong["errors"][0]["message"]
    wrong = api.post(url, {**asked, "service_type": "health_check"}, manager, expect=422)
    assert wrong["errors"][0]["field"] == "service_type"
    unknown = {**asked, "plan_task_id": str(UUID(int=7))}
    assert api.post(url, unknown, manager, expect=422)["errors"][0]["field"] == "plan_task_id"

    # Through the consent gate like any referral: without consent it waits.
    waiting = api.post(url, asked, manager)
    assert waiting["status"] == "draft"
    assert waiting["blocked_by"] == ["identity"]
    api.grant(case_id, ["identity"])
    seen = api.get(f"/referral/referrals/{waiting['referral_id']}", hospital)
    assert seen["status"] == "requested"
    assert seen["plan_task_id"] == review["task_id"]
    assert list(seen["disclosure"]["data"]) == ["identity"]
    # A task with no service named takes a referral to its agency for any service.
    course_referral = {
        "to_agency": "dt-shelter",
        "service_type": "vocational_training",
        "categories": ["identity"],
        "plan_task_id": course["task_id"],
    }
    assert api.post(url, course_referral, manager)["status"] == "draft"  # not for an NGO

    # A task done takes no new referral.
    api.post(
        f"/intake/cases/{case_id}/plan/tasks/{review['task_id']}/progress",
        {"to_status": "done"},
        manager,
    )
    done = api.post(url, asked, manager, expect=409)
    assert "done" in done["detail"]
    story = [e["what"] for e in api.get(f"/projections/cases/{case_id}/timeline", manager)]
    assert "Referral to dt-hospital for medical_care (a task of the plan)" in story


def test_a_referral_the_person_dropped_ends_as_their_choice(api: Api) -> None:
    case_id = api.case()
    other_case = api.case()
    manager = api.as_("dt-swc", Role.CASE_MANAGER)
    hospital = api.as_("dt-hospital", Role.AGENCY_STAFF)
    for case in (case_id, other_case):
        api.grant(case, ["identity"])
    body = {"to_agency": "dt-hospital", "service_type": "medical_care", "categories": ["identity"]}
    sent = api.post(f"/referral/cases/{case_id}/referrals", body, manager)
    other = api.post(f"/referral/cases/{other_case}/referrals", body, manager)
    for referral in (sent, other):
        for step in ("acknowledge", "accept", "start"):
            api.post(f"/referral/referrals/{referral['referral_id']}/{step}", {}, hospital, 200)
    dropped = {
        "service_type": "medical_care",
        "choice": "dropped",
        "referral_id": sent["referral_id"],
        "how_to_come_back": "The hospital sees her again whenever she asks; call us.",
    }
    api.post(f"/intake/cases/{case_id}/declined-services", dropped, manager)
    # A referral of another case named by mistake is left as it is.
    api.post(
        f"/intake/cases/{case_id}/declined-services",
        {**dropped, "referral_id": other["referral_id"]},
        manager,
    )

    ended = api.get(f"/referral/referrals/{sent['referral_id']}", hospital)
    assert ended["status"] == "cancelled"
    assert ended["declined_by_person"] == "dropped"
    assert ended["next_steps"] == []
    assert api.get(f"/referral/referrals/{other['referral_id']}", hospital)["status"] == (
        "in-progress"
    )
    # Their choice is recorded in intake, with what they were told about coming back.
    [declined, _other] = api.get(f"/intake/cases/{case_id}", manager)["declined_services"]
    assert declined["referral_id"] == sent["referral_id"]
    assert declined["how_to_come_back"].startswith("The hospital sees her again")
    story = [e["what"] for e in api.get(f"/projections/cases/{case_id}/timeline", manager)]
    assert "Referral ended: the person dropped the service (their choice)" in story
    queue = api.get("/projections/agencies/dt-hospital/queue", hospital)
    assert sent["referral_id"] not in [q["referral_id"] for q in queue]


def family_member(**overrides: Any) -> dict[str, Any]:
    return {
        "full_name": f"Tran Van An {secrets.token_hex(3)}",
        "relationship": "child",
        "age": 7,
        "consent": {
            "given_by": "guardian",
            "collection": {
                "method": "written_form",
                "form_reference": "F-7",
                "language": "vi",
                "withdrawal_explained": True,
            },
            "given_on": NOW.date().isoformat(),
        },
        **overrides,
    }


def test_a_family_member_is_referred_on_the_persons_case_with_their_own_consent(
    api: Api,
) -> None:
    case_id = api.case()
    manager = api.as_("dt-swc", Role.CASE_MANAGER)
    school = api.as_("dt-shelter", Role.AGENCY_STAFF)
    coordinator = api.as_("dt-dolisa", Role.COORDINATOR)
    url = f"/referral/cases/{case_id}/referrals"
    child = family_member()
    body = {
        "to_agency": "dt-shelter",
        "service_type": "education",
        "categories": [],
        "family_member": child,
    }
    # A referral of the person needs their data; a family member's may need none.
    refused = api.post(url, {**body, "family_member": None}, manager, expect=422)
    assert refused["errors"][0]["field"] == "categories"
    # A child's consent is their guardian's; an adult's their own; withdrawal explained.
    own = {**child, "consent": {**child["consent"], "given_by": "family_member"}}
    bad = api.post(url, {**body, "family_member": own}, manager, expect=422)
    assert bad["errors"][0]["field"] == "family_member.consent.given_by"
    adult = family_member(age=45, relationship="parent")
    bad = api.post(url, {**body, "family_member": adult}, manager, expect=422)
    assert bad["errors"][0]["field"] == "family_member.consent.given_by"

    sent = api.post(url, body, manager)
    assert sent["status"] == "requested"  # none of the person's data: nothing to wait for
    # Asking for the person's own data too waits for the person's consent, as any referral.
    waiting = api.post(url, {**body, "categories": ["identity"]}, manager)
    assert (waiting["status"], waiting["blocked_by"]) == ("draft", ["identity"])

    seen = api.get(f"/referral/referrals/{sent['referral_id']}", school)
    assert seen["family_member"]["full_name"] == child["full_name"]
    assert seen["disclosure"]["released"] == []
    reads = api.audit.reads_of_case(UUID(case_id))
    [by_school] = [r for r in reads if r.actor.agency_id == "dt-shelter"]
    assert by_school.basis is ReadBasis.FAMILY_MEMBER_CONSENT
    assert list(by_school.categories) == [DataCategory.FAMILY]
    assert api.get(f"/referral/referrals/{sent['referral_id']}", manager)["family_member"]
    # Need-to-know: the coordinator sees a family referral's progress, not who.
    r = api.client.get(f"/referral/referrals/{sent['referral_id']}", headers=coordinator)
    assert r.status_code == 200
    assert r.json()["family_referral"] is True
    assert r.json()["family_member"] is None
    assert child["full_name"] not in r.text
    # Nor does the story tell the name, to anyone.
    story = api.client.get(f"/projections/cases/{case_id}/timeline", headers=manager)
    assert "Referral of a family member to dt-shelter for education" in story.text
    assert child["full_name"] not in story.text
    # The draft waiting for the person's consent is shown to nobody but its sender.
    r = api.client.get(f"/referral/referrals/{waiting['referral_id']}", headers=school)
    assert r.status_code == 404


def test_the_case_file_reads_in_the_order_a_newcomer_needs(api: Api) -> None:
    case_id = api.case()
    at = f"/intake/cases/{case_id}"
    manager = api.as_("dt-swc", Role.CASE_MANAGER)
    coordinator = api.as_("dt-dolisa", Role.COORDINATOR)
    hospital = api.as_("dt-hospital", Role.AGENCY_STAFF)
    risk_plan = f"Keep away from the broker {secrets.token_hex(4)}"
    api.put(
        f"{at}/contact-preference", {"preferred": ["phone"], "refused": ["home_visit"]}, manager
    )
    api.post(
        f"{at}/risk-assessments",
        {"level": "high", "at_risk": ["person"], "management_plan": risk_plan},
        manager,
    )
    api.post(
        f"{at}/contacts",
        {
            "mode": "home_visit",
            "occurred_at": (NOW - timedelta(minutes=30)).isoformat(),
            "reason": "No phone signal after the flood",
        },
        manager,
    )
    kept = api.grant(case_id, ["identity"])
    gone = api.grant(case_id, ["contact"])
    api.post(f"/consent/cases/{case_id}/grants/{gone}/withdrawal", {}, manager)
    plan = plan_with_tasks(api, case_id)
    review, course = plan["tasks"]
    asked = {
        "to_agency": "dt-hospital",
        "service_type": "medical_care",
        "categories": ["identity"],
        "plan_task_id": review["task_id"],
    }
    sent = api.post(f"/referral/cases/{case_id}/referrals", asked, manager)
    api.post(f"/referral/referrals/{sent['referral_id']}/acknowledge", {}, hospital, 200)
    reads_before = len(api.audit.reads_of_case(UUID(case_id)))

    url = f"/projections/cases/{case_id}/case-file"
    file = api.get(url, manager)
    assert file["sections"] == ["person", "consent", "plan", "referrals", "risks", "history"]
    # Who the person is and how to reach them, and who manages the case.
    person = [e["type"].rsplit(".", 1)[1] for e in file["person"]]
    assert person == [
        "reception_recorded",
        "person_registered",
        "case_manager_assigned",
        "contact_preference_recorded",
    ]
    assert "Contact: phone; refused: home_visit" in [e["what"] for e in file["person"]]
    # The consent in force: the withdrawn grant is not.
    assert [e.get("grant_id") for e in file["consent"]] == [kept]
    # The current plan, agreed, and its open tasks soonest first, each with its referrals.
    plan_file = file["plan"]
    assert plan_file["agreed"] is True
    # (Both are due the same day: then by id.)
    assert [t["task_id"] for t in plan_file["open_tasks"]] == sorted(
        [review["task_id"], course["task_id"]]
    )
    [task] = [t for t in plan_file["open_tasks"] if t["task_id"] == review["task_id"]]
    assert task["action"] == "Review at the hospital"
    assert task["referrals"] == [
        {
            "referral_id": sent["referral_id"],
            "to_agency": "dt-hospital",
            "service_type": "medical_care",
            "plan_task_id": review["task_id"],
            "family": False,
            "status": "received",
        }
    ]
    assert [r["referral_id"] for r in file["referrals"]] == [sent["referral_id"]]
    # The risks: the assessment, and the contact against the person's wish.
    risks = [e["what"] for e in file["risks"]]
    assert "Risk assessed: high" in risks
    assert any("against the person's wish" in what for what in risks)
    # Then everything, newest first.
    history = [e["at"] for e in file["history"]]
    assert history == sorted(history, reverse=True)
    assert len(file["history"]) == len(api.get(f"/projections/cases/{case_id}/timeline", manager))
    # Read like every read of the person's data: recorded.
    reads = api.audit.reads_of_case(UUID(case_id))
    # (The timeline read just above comes after it.)
    read = reads[reads_before]
    assert read.what == "projections.case_file"
    assert {DataCategory.RISK, DataCategory.CONTACT, DataCategory.NEEDS} <= set(read.categories)

    # The coordinator reads the progress, nothing of the person: no read recorded.
    reads_before = len(api.audit.reads_of_case(UUID(case_id)))
    r = api.client.get(url, headers=coordinator)
    assert r.status_code == 200
    assert risk_plan not in r.text
    assert "Review at the hospital" not in r.text
    progress = r.json()
    assert [t["action"] for t in progress["plan"]["open_tasks"]] == [None, None]
    assert "Contact: phone" not in r.text
    assert len(api.audit.reads_of_case(UUID(case_id))) == reads_before
    # An agency with no part in the case does not learn that it exists.
    api.get(url, api.as_("dt-hospital-1", Role.CASE_MANAGER), expect=404)
