"""Case work that crosses the logs, through HTTP on PostgreSQL: a completed case transfer
moves the case to the case manager it names (intake follows the referral log, consent and
referral learn it from intake)."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from contracts.vocabulary import Role
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
