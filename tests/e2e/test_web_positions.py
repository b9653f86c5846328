"""The web app passes positions on: a page's commands are remembered in the session, and the
next page waits for the services it calls to read that far. On PostgreSQL, in one process
with its followers stopped: only the pages' own waits bring a service up to date, so what a
page sees here is what passing positions on alone does."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from fastapi.testclient import TestClient

from contracts.referral import ReferralStatus
from contracts.vocabulary import AgencyKind, Role
from services.cli.wiring import Platform, http_app, migrate, start
from services.runtime.auth import TokenService
from services.runtime.settings import Settings
from services.runtime.web_sessions import PostgresSessions
from services.web.session import SESSION_COOKIE, DemoUser
from tests.support.agencies import register_agencies

pytestmark = pytest.mark.postgres

NOW = datetime.now(UTC).replace(microsecond=0)
MANAGER = "dt-swc-1"


class Web:
    def __init__(self, client: TestClient, tokens: TokenService, platform: Platform) -> None:
        self.client, self.tokens, self.platform = client, tokens, platform

    def bearer(self, agency: str, kind: AgencyKind, role: Role) -> dict[str, str]:
        token = self.tokens.issue(
            user_id=f"{agency}-{role.value}",
            agency_id=agency,
            province="dong-thap",
            roles=[role],
            agency_kind=kind,
        )
        return {"Authorization": f"Bearer {token}"}

    def case(self) -> str:
        """A case received by the police, its person, and the social work centre's case
        manager; every service has read it (the followers caught up once)."""
        officer = self.bearer("dt-police", AgencyKind.POLICE, Role.INTAKE_OFFICER)
        coordinator = self.bearer("dt-dolisa", AgencyKind.LOCAL_AUTHORITY, Role.COORDINATOR)
        reception = {
            "route": "rescued",
            "received_at": (NOW - timedelta(hours=2)).isoformat(),
            "place": {"province": "dong-thap"},
            "receiving_agency": "dt-police",
        }
        created = self.client.post("/intake/cases", json=reception, headers=officer)
        assert created.status_code == 201, created.text
        case = str(created.json()["case_id"])
        person = {"full_name": "Trần Thị Hoa", "sex": "female", "estimated_age": 24}
        r = self.client.post(f"/intake/cases/{case}/person", json=person, headers=officer)
        assert r.status_code == 201, r.text
        r = self.client.put(
            f"/intake/cases/{case}/case-manager",
            json={"case_manager_id": MANAGER, "agency": "dt-swc"},
            headers=coordinator,
        )
        assert r.status_code == 200, r.text
        self.platform.catch_up()
        return case

    def sign_in(self) -> str:
        """Signs in as the case manager; returns the session's CSRF token."""
        page = self.client.get("/signin")
        token = _csrf(page.text)
        r = self.client.post(
            "/signin", data={"user_id": MANAGER, "csrf_token": token}, follow_redirects=False
        )
        assert r.status_code == 303, r.text
        return _csrf(self.client.get("/cases").text)

    def grant(self, case: str, csrf: str) -> None:
        r = self.client.post(
            f"/cases/{case}/consent/grant",
            data={
                "categories": ["identity"],
                "purposes": ["service_provision"],
                "recipient_kind": "hospital",
                "form_reference": "F-7",
                "months": "12",
                "given_by": "person",
                "signed_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "csrf_token": csrf,
            },
            follow_redirects=False,
        )
        assert r.status_code == 303, r.text

    def refer(self, case: str, csrf: str, **headers: str) -> Any:
        return self.client.post(
            f"/cases/{case}/referrals",
            data={
                "to_agency": "dt-hospital",
                "service_type": "medical_care",
                "purpose": "service_provision",
                "categories": ["identity"],
                "csrf_token": csrf,
            },
            headers=headers,
            follow_redirects=False,
        )


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found is not None
    return found.group(1)


@pytest.fixture
def web(pg_settings: Settings) -> Iterator[Web]:
    settings = pg_settings.model_copy(update={"pg_pool_size": 2})
    migrate(settings)
    platform = start(settings, run_followers=False)
    register_agencies(platform)
    tokens = TokenService(settings)
    users = [DemoUser(MANAGER, "dt-swc", "dong-thap", Role.CASE_MANAGER)]
    try:
        with TestClient(http_app(platform, tokens, demo_users=users)) as client:
            yield Web(client, tokens, platform)
    finally:
        platform.close()


def test_a_referral_sent_after_a_consent_on_the_pages_finds_the_consent(web: Web) -> None:
    case = web.case()
    csrf = web.sign_in()
    web.grant(case, csrf)
    # The referral service's follower has not run: only the session's consent position,
    # passed on by the referral page, makes it read the grant before it decides.
    sent = web.refer(case, csrf)
    assert sent.status_code == 303, sent.text
    referral_id = sent.headers["location"].rsplit("/", 1)[1]
    referral = web.platform.referral.get_referral(UUID(referral_id))
    assert referral.status is ReferralStatus.REQUESTED  # sent, not a draft blocked by consent
    # The positions are the session's, kept in the database beside it.
    sessions = web.client.app.state.web_sessions  # type: ignore[attr-defined]
    assert isinstance(sessions, PostgresSessions)
    session = sessions.get(web.client.cookies[SESSION_COOKIE])
    assert session is not None
    assert session.positions["consent"] == web.platform.consent.recorder.max_notification_id()
    assert session.positions["referral"] == web.platform.referral.recorder.max_notification_id()


def test_past_the_bound_the_page_says_ketnoi_is_still_catching_up(
    web: Web, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = web.case()
    csrf = web.sign_in()
    web.grant(case, csrf)
    monkeypatch.setattr(web.platform.settings, "position_wait_timeout", 0.2)
    follower = web.platform.followers["referral"]
    before = web.platform.referral.recorder.max_notification_id()
    # The referral follower is busy elsewhere: the page cannot take its turn in time.
    with follower._processing:  # type: ignore[attr-defined]
        english = web.refer(case, csrf, **{"Accept-Language": "en"})
        vietnamese = web.refer(case, csrf, **{"Accept-Language": "vi"})
    assert english.status_code == 503
    assert english.headers["Retry-After"] == "1"
    assert english.headers["content-type"].startswith("text/html")
    assert "still catching up" in english.text
    assert "<h1>Still catching up</h1>" in english.text
    assert vietnamese.status_code == 503
    assert "đang cập nhật" in vietnamese.text
    assert web.platform.referral.recorder.max_notification_id() == before  # nothing sent
    # A moment later (the follower free again), the same form goes through.
    again = web.refer(case, csrf)
    assert again.status_code == 303, again.text
