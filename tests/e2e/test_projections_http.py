"""The projections API over HTTP on PostgreSQL: scoped by role and province."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from contracts.envelope import Actor
from contracts.vocabulary import AgencyKind, DataCategory, Role, UrgentNeed
from services.cli.wiring import Platform, http_app, migrate, start
from services.runtime.aggregate import CommandContext
from services.runtime.auth import TokenService
from services.runtime.settings import Settings
from tests.integration.test_projections import T0, dong_thap_night, received
from tests.support.agencies import TEST_AGENCIES, register_agencies

pytestmark = pytest.mark.postgres


class Api:
    def __init__(self, client: TestClient, tokens: TokenService, platform: Platform) -> None:
        self.client, self.tokens, self.platform = client, tokens, platform

    def as_(
        self,
        *roles: Role,
        agency: str = "dt-dolisa",
        province: str = "dong-thap",
        kind: AgencyKind = AgencyKind.LOCAL_AUTHORITY,
    ) -> dict[str, str]:
        token = self.tokens.issue(
            user_id=f"{roles[0].value}-1",
            agency_id=agency,
            province=province,
            roles=roles,
            agency_kind=TEST_AGENCIES[agency][0] if agency in TEST_AGENCIES else kind,
        )
        return {"Authorization": f"Bearer {token}"}

    def get(self, url: str, headers: dict[str, str], expect: int = 200) -> Any:
        r = self.client.get(url, headers=headers)
        assert r.status_code == expect, r.text
        return r.json() if r.headers["content-type"].startswith("application/") else r.text


@pytest.fixture
def api(pg_settings: Settings) -> Iterator[Api]:
    migrate(pg_settings)
    platform = start(pg_settings, run_followers=False)
    register_agencies(platform)
    tokens = TokenService(pg_settings)
    with TestClient(http_app(platform, tokens)) as client:
        yield Api(client, tokens, platform)
    platform.close()


def test_roles_and_provinces(api: Api) -> None:
    case_id = dong_thap_night(api.platform)
    coordinator = api.as_(Role.COORDINATOR)
    board = api.get("/projections/board", coordinator)
    assert [row["case_id"] for row in board["rows"]] == [str(case_id)]
    assert (board["open"], board["next"]) == (1, None)
    assert api.get("/projections/board?province=lao-cai", coordinator, expect=403)
    assert api.get("/projections/board", api.as_(Role.AGENCY_STAFF), expect=403)
    national = api.as_(Role.AUDITOR, province="*")
    assert len(api.get("/projections/board?province=dong-thap", national)["rows"]) == 1
    assert api.get("/projections/board", national, expect=422)  # which province?

    officer = Actor(user_id="dt-police-1", agency_id="dt-police", role=Role.INTAKE_OFFICER)
    api.platform.intake.assess_needs(
        CommandContext(actor=officer), case_id, (UrgentNeed.SHELTER_TONIGHT,), None
    )
    api.platform.catch_up()
    # The police received her: they read the whole story, and that read is recorded.
    police = api.as_(Role.INTAKE_OFFICER, agency="dt-police", kind=AgencyKind.POLICE)
    timeline = api.get(f"/projections/cases/{case_id}/timeline", police)
    assert timeline[0]["type"] == "org.ketnoi.intake.reception_recorded"
    needs = [e for e in timeline if e["type"] == "org.ketnoi.intake.rapid_needs_assessed"]
    assert needs
    assert needs[0]["what"].startswith("Urgent needs: ")
    reads = api.platform.read_audit.reads_of_case(case_id)  # type: ignore[union-attr]
    assert [(r.what, r.basis.value) for r in reads] == [("projections.timeline", "own_case")]
    # The coordinator follows the steps, without the person's needs.
    told = api.get(f"/projections/cases/{case_id}/timeline", coordinator)
    assert [e["type"] for e in told] == [e["type"] for e in timeline]
    told_needs = [e for e in told if e["type"] == "org.ketnoi.intake.rapid_needs_assessed"]
    assert told_needs[0]["what"] == "Rapid needs assessed"
    assert len(api.platform.read_audit.reads_of_case(case_id)) == 1  # type: ignore[union-attr]
    # Another agency, or another province, does not learn the case exists.
    api.get(
        f"/projections/cases/{case_id}/timeline",
        api.as_(Role.CASE_MANAGER, agency="lc-swc", province="lao-cai"),
        expect=404,
    )
    api.get(f"/projections/cases/{case_id}/timeline", api.as_(Role.CASE_MANAGER), expect=404)

    nurse = api.as_(Role.AGENCY_STAFF, agency="dt-hospital", kind=AgencyKind.HOSPITAL)
    queue = api.get("/projections/agencies/dt-hospital/queue", nurse)
    assert len(queue) == 2
    api.get("/projections/agencies/dt-shelter/queue", nurse, expect=403)

    stats = api.get("/projections/statistics", coordinator)
    assert {cell["count"] for cell in stats} == {None}  # one case: every cell suppressed
    csv_text = api.get("/projections/statistics.csv", coordinator)
    assert csv_text.startswith("table,province,period,dimension,value,count")
    api.get("/projections/statistics", nurse, expect=403)


def test_rebuild_and_replay_are_for_auditors(api: Api) -> None:
    case_id = dong_thap_night(api.platform)
    auditor = api.as_(Role.AUDITOR)
    coordinator = api.as_(Role.COORDINATOR)
    r = api.client.post("/projections/rebuild?view=timeline", headers=coordinator)
    assert r.status_code == 403
    r = api.client.post("/projections/rebuild?view=timeline", headers=auditor)
    assert r.status_code == 200
    assert list(r.json()) == ["timeline"]
    timeline = api.get(f"/projections/cases/{case_id}/timeline", coordinator)
    assert len(timeline) > 10  # readable straight after the swap
    r = api.client.post("/projections/rebuild?view=nonsense", headers=auditor)
    assert r.status_code == 422
    at = (T0 + timedelta(minutes=45)).isoformat().replace("+00:00", "Z")
    url = f"/projections/replay/cases/{case_id}?as_of={at}"
    api.get(url, coordinator, expect=403)
    replay = api.get(url, auditor)
    assert replay["handovers"][0]["waiting_for"] == ["dt-swc"]
    api.get(url, api.as_(Role.AUDITOR, province="lao-cai"), expect=404)


def test_the_persons_copy_holds_the_record_consent_disclosures_and_every_read(api: Api) -> None:
    """Seed 002: the person may see everything held about them. The police, who received her,
    print her copy: her record, her consent, every disclosure (to whom, on which grant) and
    every read of her data, the copy itself last. Nobody else may print it."""
    case_id = dong_thap_night(api.platform)
    api.platform.catch_up()
    nurse = api.as_(Role.AGENCY_STAFF, agency="dt-hospital", kind=AgencyKind.HOSPITAL)
    referrals = api.get(f"/referral/referrals?case_id={case_id}", nurse)
    assert referrals  # the hospital read its referrals: reads of her identity, recorded
    police = api.as_(Role.INTAKE_OFFICER, agency="dt-police", kind=AgencyKind.POLICE)
    copy = api.get(f"/projections/cases/{case_id}/copy", police)

    assert copy["case_id"] == str(case_id)
    record = {e["what"]: e for e in copy["record"]}
    assert record["org.ketnoi.intake.person_registered"]["facts"]["details"]["full_name"] == "N"
    assert record["org.ketnoi.intake.reception_recorded"]["by_agency"] == "dt-police"
    (granted,) = [e for e in copy["consent"] if e["what"] == "org.ketnoi.consent.granted"]
    grant_id = granted["facts"]["grant_id"]
    assert granted["facts"]["categories"] == ["identity"]
    # Two referrals to the hospital, one to the shelter: each sent with its disclosure.
    assert sorted(d["to_agency"] for d in copy["disclosures"]) == [
        "dt-hospital",
        "dt-hospital",
        "dt-shelter",
    ]
    assert all(d["grant_ids"] == [grant_id] for d in copy["disclosures"])
    assert all(d["basis"] == "consent" for d in copy["disclosures"])
    assert len(copy["referrals"]) == 3
    assert len(copy["handovers"]) == 1
    reads = copy["reads"]
    assert [(r["by_agency"], r["what"]) for r in reads][-1] == (
        "dt-police",
        "projections.person_copy",
    )
    assert ("dt-hospital", "referral.referral") in {(r["by_agency"], r["what"]) for r in reads}
    # Who did what is told by agency and role, not by the staff's user ids.
    assert "officer-1" not in str(copy)
    assert all("actor" not in e["facts"] for e in copy["record"] + copy["consent"])

    # It ends with a signed checkpoint of every log, covering everything it was read from.
    sealed = {s["log"]: s for s in copy["seal"]}
    assert {"intake", "consent", "referral", "audit"} <= set(sealed)
    for log in ("intake", "consent", "referral", "audit"):
        assert sealed[log]["checkpoint"].startswith(f"ketnoi.localhost/{log}\n")
        assert sealed[log]["size"] >= 1
    assert sealed["audit"]["size"] >= len(reads)

    # The copy is a recorded read of everything.
    recorded = api.platform.read_audit.reads_of_case(case_id)  # type: ignore[union-attr]
    assert recorded[-1].what == "projections.person_copy"
    assert recorded[-1].basis.value == "own_case"
    assert len(recorded[-1].categories) == len(DataCategory)

    # The recipient, the coordinator and the auditor may not print it; a stranger learns
    # nothing of the case.
    api.get(f"/projections/cases/{case_id}/copy", nurse, expect=403)
    api.get(f"/projections/cases/{case_id}/copy", api.as_(Role.COORDINATOR), expect=403)
    api.get(f"/projections/cases/{case_id}/copy", api.as_(Role.AUDITOR), expect=403)
    stranger = api.as_(Role.CASE_MANAGER, agency="lc-swc", province="lao-cai")
    api.get(f"/projections/cases/{case_id}/copy", stranger, expect=404)


def test_the_board_over_http_a_page_at_a_time(api: Api) -> None:
    """Five open cases read two at a time: each once, breached deadlines first, the cursor
    of the next page until the last, the province's totals on every page; a page out of
    bounds or a cursor not given by the board is refused (422)."""
    breached = [str(dong_thap_night(api.platform)) for _ in range(2)]
    quiet = [str(received(api.platform, T0 + timedelta(hours=hours))) for hours in (3, 2, 4)]
    coordinator = api.as_(Role.COORDINATOR)
    pages = [api.get("/projections/board?limit=2", coordinator)]
    while pages[-1]["next"] is not None:
        after = pages[-1]["next"]
        pages.append(api.get(f"/projections/board?limit=2&after={after}", coordinator))
    assert [len(page["rows"]) for page in pages] == [2, 2, 1]
    shown = [row["case_id"] for page in pages for row in page["rows"]]
    assert sorted(shown[:2]) == sorted(breached)
    assert shown[2:] == [quiet[1], quiet[0], quiet[2]]  # oldest reception first
    for page in pages:
        assert page["open"] == 5
        assert page["attention"]["deadlines_breached"] == 2
    assert api.get("/projections/board", coordinator)["next"] is None  # 100 by default
    assert len(api.get("/projections/board?limit=500", coordinator)["rows"]) == 5

    forged = base64.urlsafe_b64encode(b'[7,"",""]').decode()
    for query in ("limit=0", "limit=501", "limit=many", "after=nonsense", f"after={forged}"):
        answer = api.client.get(f"/projections/board?{query}", headers=coordinator)
        assert answer.status_code == 422, (query, answer.text)
    assert api.get(f"/projections/board?after={'x' * 201}", coordinator, expect=422)
