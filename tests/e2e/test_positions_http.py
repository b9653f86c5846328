"""Ketnoi-Position over HTTP on PostgreSQL, in one process with its followers stopped.

With no background follower, only a request's own wait can bring a service up to the
position it names: what a request sees here is what the header alone does.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from contracts.vocabulary import AgencyKind, Role
from services.cli.wiring import Platform, http_app, migrate, start
from services.runtime.auth import TokenService
from services.runtime.positions import HEADER, parse
from services.runtime.settings import Settings
from tests.support.agencies import register_agencies
from tests.support.processes import rescue_reception

pytestmark = pytest.mark.postgres

NOW = datetime.now(UTC).replace(microsecond=0)
RECEPTION = rescue_reception()
GRANT = {
    "categories": ["identity"],
    "recipients": [{"kind": "hospital"}],
    "purposes": ["service_provision"],
    "valid_from": (NOW - timedelta(days=1)).isoformat(),
    "valid_until": (NOW + timedelta(days=365)).isoformat(),
    "collection": {
        "method": "written_form",
        "form_reference": "F-1",
        "language": "vi",
        "withdrawal_explained": True,
    },
    "given_by": {"kind": "person"},
}


class Api:
    def __init__(self, client: TestClient, tokens: TokenService, platform: Platform) -> None:
        self.client, self.tokens, self.platform = client, tokens, platform

    def as_(self, agency: str, kind: AgencyKind, role: Role) -> dict[str, str]:
        token = self.tokens.issue(
            user_id=f"{agency}-{role.value}",
            agency_id=agency,
            province="dong-thap",
            roles=[role],
            agency_kind=kind,
        )
        return {"Authorization": f"Bearer {token}"}

    @property
    def officer(self) -> dict[str, str]:
        return self.as_("dt-police", AgencyKind.POLICE, Role.INTAKE_OFFICER)

    @property
    def coordinator(self) -> dict[str, str]:
        return self.as_("dt-dolisa", AgencyKind.LOCAL_AUTHORITY, Role.COORDINATOR)

    @property
    def manager(self) -> dict[str, str]:
        return self.as_("dt-swc", AgencyKind.SOCIAL_WORK_CENTRE, Role.CASE_MANAGER)

    def case(self) -> tuple[str, str]:
        """A case with its person and case manager; its id, and the last Ketnoi-Position."""
        c = self.client
        created = c.post("/intake/cases", json=RECEPTION, headers=self.officer)
        assert created.status_code == 201, created.text
        case = str(created.json()["case_id"])
        person = {"full_name": "Trần Thị Hoa", "sex": "female", "estimated_age": 24}
        r = c.post(f"/intake/cases/{case}/person", json=person, headers=self.officer)
        assert r.status_code == 201, r.text
        r = c.put(
            f"/intake/cases/{case}/case-manager",
            json={"case_manager_id": "dt-swc-1", "agency": "dt-swc"},
            headers=self.coordinator,
        )
        assert r.status_code == 200, r.text
        return case, r.headers[HEADER]


@pytest.fixture
def api(pg_settings: Settings) -> Iterator[Api]:
    migrate(pg_settings)
    platform = start(pg_settings, run_followers=False)
    register_agencies(platform)
    tokens = TokenService(pg_settings)
    try:
        with TestClient(http_app(platform, tokens)) as client:
            yield Api(client, tokens, platform)
    finally:
        platform.close()


def test_a_command_names_the_position_its_events_reached(api: Api) -> None:
    c, intake = api.client, api.platform.intake
    created = c.post("/intake/cases", json=RECEPTION, headers=api.officer)
    assert created.status_code == 201
    first = parse([created.headers[HEADER]])
    assert first == {"intake": intake.recorder.max_notification_id()}
    # The positions the request named come back with the command's own.
    r = c.post(
        f"/intake/cases/{created.json()['case_id']}/needs-assessments",
        json={"needs": ["medical_check"]},
        headers={**api.officer, HEADER: "consent=3,some_other_log=9,intake=1"},
    )
    assert r.status_code == 201, r.text
    assert r.headers[HEADER] == (
        f"consent=3,intake={intake.recorder.max_notification_id()},some_other_log=9"
    )
    assert parse([r.headers[HEADER]])["intake"] > first["intake"]
    # A read writes nothing: it names no position.
    read = c.get(f"/intake/cases/{created.json()['case_id']}", headers=api.officer)
    assert read.status_code == 200
    assert HEADER not in read.headers


def test_a_retried_command_names_a_position_at_or_after_its_events(api: Api) -> None:
    c, intake = api.client, api.platform.intake
    key = {"Idempotency-Key": "position-retry-1"}
    first = c.post("/intake/cases", json=RECEPTION, headers={**api.officer, **key})
    assert first.status_code == 201
    c.post("/intake/cases", json=RECEPTION, headers=api.officer)  # the log moves on
    again = c.post("/intake/cases", json=RECEPTION, headers={**api.officer, **key})
    assert again.json() == first.json()
    assert parse([again.headers[HEADER]]) == {"intake": intake.recorder.max_notification_id()}


@pytest.mark.parametrize(
    "value", ["intake", "intake=-1", "intake=1;consent=2", "Intake=1", f"intake={2**63}", ""]
)
def test_a_malformed_position_is_422_naming_the_header(api: Api, value: str) -> None:
    for method, url in (
        ("GET", "/consent/cases/00000000-0000-0000-0000-000000000000"),
        ("POST", "/intake/cases"),
        ("GET", "/projections/board"),
    ):
        headers = {**api.coordinator, **api.officer, HEADER: value}
        r = api.client.request(method, url, json=RECEPTION, headers=headers)
        assert r.status_code == 422, (url, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        problem: dict[str, Any] = r.json()
        assert problem["errors"][0]["field"] == HEADER
        assert HEADER in problem["detail"]
    assert api.platform.intake.recorder.max_notification_id() is None  # nothing was written


def test_consent_and_referral_wait_for_the_logs_named(api: Api) -> None:
    c = api.client
    case, position = api.case()
    grants = f"/consent/cases/{case}/grants"
    # Without the position, the consent service has not read the case: nothing follows.
    assert c.post(grants, json=GRANT, headers=api.manager).status_code == 404
    # With it, the request itself reads the intake log that far; logs not followed are ignored.
    named = {**api.manager, HEADER: f"{position},directory=1,nosuch=12"}
    granted = c.post(grants, json=GRANT, headers=named)
    assert granted.status_code == 201, granted.text
    passed_on = parse([granted.headers[HEADER]])
    assert set(passed_on) == {"intake", "consent", "directory", "nosuch"}
    # The referral service reads both intake and consent as far as named: not blocked.
    referral = c.post(
        f"/referral/cases/{case}/referrals",
        json={
            "to_agency": "dt-hospital",
            "service_type": "medical_care",
            "categories": ["identity"],
        },
        headers={**api.manager, HEADER: granted.headers[HEADER]},
    )
    assert referral.status_code == 201, referral.text
    assert referral.json()["blocked_by"] == []
    # The coordinator's board, read with the last position, shows the open referral.
    board = c.get(
        "/projections/board",
        headers={**api.coordinator, HEADER: referral.headers[HEADER]},
    )
    assert board.status_code == 200, board.text
    (row,) = [row for row in board.json()["rows"] if row["case_id"] == case]
    assert len(row["open_referrals"]) == 1


def test_a_position_not_reached_within_the_bound_is_503_naming_the_log(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    case, position = api.case()
    monkeypatch.setattr(api.platform.settings, "position_wait_timeout", 0.2)
    follower = api.platform.followers["consent"]
    # The background loop is busy elsewhere: the request cannot take its turn.
    with follower._processing:  # type: ignore[attr-defined]
        r = api.client.get(f"/consent/cases/{case}", headers={**api.manager, HEADER: position})
    assert r.status_code == 503, r.text
    assert r.headers["Retry-After"] == "1"
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["waiting_for"] == "intake"
    assert problem["position"] == parse([position])["intake"]
    assert "intake log" in problem["detail"]
    again = api.client.get(f"/consent/cases/{case}", headers={**api.manager, HEADER: position})
    assert again.status_code == 200, again.text


def test_openapi_names_the_header_of_requests_and_of_commands_responses(api: Api) -> None:
    paths = api.client.get("/openapi.json").json()["paths"]
    grant = paths["/consent/cases/{case_id}/grants"]["post"]
    assert HEADER in {p["name"] for p in grant["parameters"] if p["in"] == "header"}
    assert HEADER in grant["responses"]["201"]["headers"]
    board = paths["/projections/board"]["get"]
    assert HEADER in {p["name"] for p in board["parameters"] if p["in"] == "header"}
    assert "headers" not in board["responses"]["200"]
