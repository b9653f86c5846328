"""Property: whatever the order of grants, refusals, withdrawals, grants not in force, referrals
and reads, no read ever shows a category the consent decision did not permit at the instant
of the read, and every read that shows one is in the read audit.

Each example is a fresh case on one platform on PostgreSQL, driven over HTTP. The followers
do not run in the background, and the services catch up after every step but a withdrawal:
the only way the referral service learns of a withdrawal before a read is the read itself
bringing its copy of the consent log up to the head.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from contracts.consent import consent_record_id
from contracts.consent_decision import decide
from contracts.envelope import AgencyRef
from contracts.vocabulary import AgencyKind, DataCategory, Purpose, Role
from services.cli.wiring import Platform, http_app, migrate, start
from services.runtime.auth import TokenService
from services.runtime.settings import Settings
from tests.support.agencies import register_agencies

pytestmark = pytest.mark.postgres

HOSPITAL = AgencyRef(agency_id="dt-hospital", kind=AgencyKind.HOSPITAL)
CATEGORIES = (DataCategory.IDENTITY, DataCategory.NEEDS, DataCategory.CONTACT)
WRITTEN = {
    "method": "written_form",
    "form_reference": "F-1",
    "language": "vi",
    "withdrawal_explained": True,
}

categories = st.lists(st.sampled_from(CATEGORIES), min_size=1, max_size=3, unique=True)
recipients = st.sampled_from(
    [{"kind": "hospital"}, {"agency_id": "dt-hospital"}, {"group": "any"}, {"kind": "police"}]
)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("grant"), categories, recipients, st.booleans()),  # later: not yet
        st.tuples(st.just("refuse"), categories, recipients),
        st.tuples(st.just("withdraw"), st.integers(0, 5)),
        st.tuples(st.just("lift"), st.integers(0, 5)),
        st.tuples(st.just("refer"), categories),
        st.tuples(st.just("read"), st.integers(0, 5)),
    ),
    min_size=3,
    max_size=14,
).map(lambda plan: [("grant", ["identity"], {"kind": "hospital"}, False), *plan])


class World:
    def __init__(self, client: TestClient, tokens: TokenService, platform: Platform) -> None:
        self.client, self.tokens, self.platform = client, tokens, platform

    def as_(self, agency: str, kind: AgencyKind, role: Role) -> dict[str, str]:
        token = self.tokens.issue(
            user_id=f"{agency}-1",
            agency_id=agency,
            province="dong-thap",
            roles=[role],
            agency_kind=kind,
        )
        return {"Authorization": f"Bearer {token}"}

    def post(self, url: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
        r = self.client.post(url, json=body, headers=headers)
        assert r.status_code in (200, 201), r.text
        return r.json()


@pytest.fixture(scope="module")
def world(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    from tests.conftest import drop_schemas

    prefix = "tinterleave_"
    settings = Settings(
        database_url=pg_url, schema_prefix=prefix, data_dir=tmp_path_factory.mktemp("data")
    )
    migrate(settings)
    platform = start(settings, ("intake", "consent", "referral"), run_followers=False)
    register_agencies(settings)
    try:
        with TestClient(http_app(platform, TokenService(settings))) as client:
            yield World(client, TokenService(settings), platform)
    finally:
        platform.close()
        drop_schemas(pg_url, prefix)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=steps)
@example(  # the plain withdrawal: seen, withdrawn, read again at once
    plan=[
        ("grant", ["identity", "needs"], {"kind": "hospital"}, False),
        ("refer", ["identity", "needs"]),
        ("read", 0),
        ("withdraw", 0),
        ("read", 0),
    ]
)
def test_no_read_shows_what_consent_did_not_permit_then(world: World, plan: list[Any]) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    officer = world.as_("dt-police", AgencyKind.POLICE, Role.INTAKE_OFFICER)
    coordinator = world.as_("dt-dolisa", AgencyKind.LOCAL_AUTHORITY, Role.COORDINATOR)
    manager = world.as_("dt-swc", AgencyKind.SOCIAL_WORK_CENTRE, Role.CASE_MANAGER)
    desk = world.as_("dt-hospital", AgencyKind.HOSPITAL, Role.AGENCY_STAFF)
    case = world.post(
        "/intake/cases",
        {
            "route": "rescued",
            "received_at": (now - timedelta(hours=2)).isoformat(),
            "place": {"province": "dong-thap"},
            "receiving_agency": "dt-police",
        },
        officer,
    )["case_id"]
    world.post(
        f"/intake/cases/{case}/person",
        {"full_name": "Đỗ Thị Lan", "sex": "female", "estimated_age": 27},
        officer,
    )
    world.post(f"/intake/cases/{case}/needs-assessments", {"needs": ["food"]}, officer)
    world.client.put(
        f"/intake/cases/{case}/contact-preference",
        json={"preferred": ["phone"]},
        headers=officer,
    ).raise_for_status()
    world.client.put(
        f"/intake/cases/{case}/case-manager",
        json={
            "case_manager_id": "dt-swc-1",
            "agency": "dt-swc",
        },
        headers=coordinator,
    ).raise_for_status()
    world.platform.catch_up()  # the consent and referral services know the case

    grants: list[str] = []
    refusals: list[str] = []
    referrals: list[tuple[str, tuple[DataCategory, ...]]] = []
    reads = 0
    for step in plan:
        kind = step[0]
        if kind == "grant":
            _, cats, recipient, later = step
            # A grant for a later period does not count yet (as an expired one would not).
            start_at = now + timedelta(days=30) if later else now - timedelta(days=30)
            until = start_at + timedelta(days=60)
            body = {
                "categories": cats,
                "recipients": [recipient],
                "purposes": ["service_provision"],
                "valid_from": start_at.isoformat(),
                "valid_until": until.isoformat(),
                "collection": WRITTEN,
                "given_by": {"kind": "person"},
            }
            grants.append(world.post(f"/consent/cases/{case}/grants", body, manager)["grant_id"])
            world.platform.catch_up()
        elif kind == "refuse":
            _, cats, recipient = step
            body = {"recipients": [recipient], "categories": cats}
            refusals.append(
                world.post(f"/consent/cases/{case}/refusals", body, manager)["refusal_id"]
            )
            world.platform.catch_up()
        elif kind == "withdraw" and grants:
            grant = grants[step[1] % len(grants)]
            r = world.client.post(
                f"/consent/cases/{case}/grants/{grant}/withdrawal", json={}, headers=desk
            )
            assert r.status_code in (201, 409), r.text  # 409: withdrawn already
        elif kind == "lift" and refusals:
            refusal = refusals[step[1] % len(refusals)]
            r = world.client.post(
                f"/consent/cases/{case}/refusals/{refusal}/lifting",
                json={"collection": WRITTEN},
                headers=manager,
            )
            assert r.status_code in (201, 409), r.text  # 409: lifted already
            world.platform.catch_up()
        elif kind == "refer":
            body = {
                "to_agency": HOSPITAL.agency_id,
                "service_type": "medical_care",
                "categories": step[1],
            }
            created = world.post(f"/referral/cases/{case}/referrals", body, manager)
            referrals.append((created["referral_id"], tuple(step[1])))
        elif kind == "read" and referrals:
            referral_id, asked = referrals[step[1] % len(referrals)]
            r = world.client.get(f"/referral/referrals/{referral_id}", headers=desk)
            assert r.status_code in (200, 404), r.text
            if r.status_code == 404:
                continue  # not sent to the hospital yet: it does not exist for it
            at = datetime.now(UTC)
            disclosure = r.json()["disclosure"]
            shown = set((disclosure or {}).get("data") or {})
            # The consent decision on the consent service's own log, at the read's instant.
            record = world.platform.consent.history(consent_record_id(UUID(case)))
            decision = decide(
                record,
                recipient=HOSPITAL,
                purpose=Purpose.SERVICE_PROVISION,
                categories=asked,
                at=at,
            )
            permitted = {c.value for c in decision.permitted}
            assert shown <= permitted, (shown, decision.withheld)
            if shown:
                reads += 1
                audited = world.platform.read_audit.reads_of_case(UUID(case))  # type: ignore[union-attr]
                assert len(audited) == reads
                last = audited[-1]
                assert {c.value for c in last.categories} == shown
                assert last.actor.agency_id == "dt-hospital"
                assert last.basis.value == "grant"
