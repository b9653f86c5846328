"""``ketnoi audit disclosures`` as a real process. On PostgreSQL: the demo's Dong Thap and Lao
Cai scenarios and the reads made of them through the services' own APIs are all lawful; a
disclosure and a read under a withdrawn grant, forged afterwards, are named. On the embedded
SQLite files: the demo is lawful, and each disclosure says which grant covered it."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from fastapi.testclient import TestClient

from contracts.audit import ReadBasis
from contracts.envelope import Actor
from contracts.referral import DisclosureBasis, DisclosureRecorded, ReleasedField
from contracts.vocabulary import DataCategory, Role
from services.cli.demo import DT_HOSPITAL, DT_SWC, SeededCase, seed
from services.cli.wiring import Platform, http_app, migrate, start
from services.runtime.aggregate import CommandContext
from services.runtime.auth import TokenService
from services.runtime.settings import Settings
from tests.support.processes import KETNOI, settings_env

HOSPITAL_STAFF = Actor(
    user_id="dt-hospital-staff-1", agency_id=DT_HOSPITAL.agency_id, role=Role.AGENCY_STAFF
)
MANAGER = Actor(user_id="dt-swc-cw-1", agency_id=DT_SWC.agency_id, role=Role.CASE_MANAGER)
REASON = "Unconscious at the shelter; the social work centre cannot be reached."


@pytest.fixture
def platform(pg_settings: Settings) -> Iterator[Platform]:
    # A few connections are plenty for one test's commands (pools open all of theirs at once).
    settings = pg_settings.model_copy(update={"pg_pool_size": 2, "pg_max_overflow": 2})
    migrate(settings)
    running = start(settings, ("directory", "intake", "consent", "referral"), run_followers=False)
    try:
        yield running
    finally:
        running.close()


def audit_disclosures(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KETNOI, "audit", "disclosures", *args],
        env={**os.environ, **settings_env(settings)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def headers(tokens: TokenService, actor: Actor, province: str = "dong-thap") -> dict[str, str]:
    token = tokens.issue(
        user_id=actor.user_id, agency_id=actor.agency_id, province=province, roles=[actor.role]
    )
    return {"Authorization": f"Bearer {token}"}


def hospital_referral(platform: Platform, case: SeededCase) -> UUID:
    case_file = platform.referral.get_case_file(case.case_id)
    return next(
        r
        for r in case_file.referral_ids
        if platform.referral.get_referral(r).spec.to_agency == DT_HOSPITAL
    )


def read_through_the_apis(
    platform: Platform, pg_settings: Settings, cases: list[SeededCase]
) -> None:
    """The reads the services record: the hospital reads its referrals (on grants), the
    social work centre its cases (its own), a coordinator breaks the glass once."""
    tokens = TokenService(pg_settings)
    coordinator = Actor(
        user_id="dong-thap-coordinator", agency_id="dong-thap-dolisa", role=Role.COORDINATOR
    )
    with TestClient(http_app(platform, tokens)) as client:
        for case in cases:
            referral_id = hospital_referral(platform, case)
            got = client.get(
                f"/referral/referrals/{referral_id}", headers=headers(tokens, HOSPITAL_STAFF)
            )
            assert got.status_code == 200, got.text
            got = client.get(f"/intake/cases/{case.case_id}", headers=headers(tokens, MANAGER))
            assert got.status_code == 200, got.text
        glass = client.post(
            f"/intake/cases/{cases[0].case_id}/break-glass",
            json={"reason": REASON},
            headers=headers(tokens, coordinator),
        )
        assert glass.status_code == 200, glass.text


@pytest.mark.postgres
def test_the_demo_is_lawful_and_a_forged_disclosure_and_read_are_named(
    platform: Platform, pg_settings: Settings, tmp_path: Path
) -> None:
    seeded = seed(platform, tmp_path)
    platform.catch_up()
    dong_thap = [c for c in seeded if c.province == "dong-thap"]
    read_through_the_apis(platform, pg_settings, dong_thap)
    assert platform.read_audit is not None
    reads = list(platform.read_audit.all_reads())
    bases = sorted(r.basis.value for r in reads)
    assert bases == ["break_glass", "grant", "grant", "own_case", "own_case"]

    done = audit_disclosures(pg_settings)
    assert done.returncode == 0, done.stdout + done.stderr
    # Three hospital referrals, the school and the police: five disclosures.
    assert "5 disclosures, 5 reads checked: 0 unlawful, 1 flagged for review" in done.stdout
    assert "flagged" in done.stdout  # the table lists it
    flagged = json.loads(audit_disclosures(pg_settings, "--json").stdout)["findings"]
    # The emergency read is listed for review, with its reason; nothing lawful is listed.
    assert [f["verdict"] for f in flagged] == ["flagged"]
    assert REASON in flagged[0]["why"]
    assert "Checking the referral log" in done.stderr  # the progress bar

    # Lan withdraws her consent to the hospitals; her referral there is put on hold.
    lan = next(c for c in dong_thap if c.key == "dong-thap-2")
    referral_id = hospital_referral(platform, lan)
    referral = platform.referral.get_referral(referral_id)
    assert referral.disclosure is not None
    care = referral.disclosure.released[0].grant_id
    assert care is not None
    platform.consent.withdraw(CommandContext(actor=MANAGER), lan.case_id, care, heard_by=DT_SWC)
    platform.catch_up()
    referral = platform.referral.get_referral(referral_id)
    assert referral.status.value == "on-hold"

    # Forged: a disclosure that cites the withdrawn grant, and a read under it.
    forged = referral.trigger(
        CommandContext(actor=HOSPITAL_STAFF),
        DisclosureRecorded,
        disclosure_id=uuid4(),
        person_id=referral.spec.person_id,
        recipient=DT_HOSPITAL,
        purpose=referral.spec.purpose,
        basis=DisclosureBasis.CONSENT,
        released=(ReleasedField(category=DataCategory.IDENTITY, field="full_name", grant_id=care),),
        data={"identity": {"full_name": "forged"}},
    )
    platform.referral.save(referral)
    platform.read_audit.record(
        actor=HOSPITAL_STAFF,
        case_id=lan.case_id,
        categories=(DataCategory.IDENTITY,),
        basis=ReadBasis.GRANT,
        grant_ids=(care,),
        what="referral.referral",
    )
    earlier = {r.originator_id for r in reads}
    forged_read = next(r for r in platform.read_audit.all_reads() if r.originator_id not in earlier)

    done = audit_disclosures(pg_settings)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "6 disclosures, 6 reads checked: 2 unlawful, 1 flagged for review" in done.stdout
    assert str(forged.disclosure_id) in done.stdout
    assert str(forged_read.originator_id) in done.stdout
    assert "withdrawn" in done.stdout

    as_json = audit_disclosures(pg_settings, "--json")
    assert as_json.returncode == 1
    report = json.loads(as_json.stdout)
    unlawful = {f["id"]: f for f in report["findings"] if f["verdict"] == "unlawful"}
    assert set(unlawful) == {str(forged.disclosure_id), str(forged_read.originator_id)}
    assert {f["case_id"] for f in unlawful.values()} == {str(lan.case_id)}
    assert str(care) in unlawful[str(forged.disclosure_id)]["why"]
    assert "forged" not in as_json.stdout  # the released values never reach a finding

    # Only what happened since the withdrawal: the two forgeries, judged on all history.
    since = audit_disclosures(pg_settings, "--since", forged.timestamp.isoformat(), "--json")
    assert since.returncode == 1
    report = json.loads(since.stdout)
    assert (report["disclosures"], report["reads"], report["unlawful"]) == (1, 1, 2)


def test_the_demo_on_the_embedded_sqlite_files_is_lawful(
    sqlite_settings: Settings, tmp_path: Path
) -> None:
    platform = start(sqlite_settings, run_followers=False)
    try:
        seeded = seed(platform, tmp_path)
        platform.catch_up()
        granted = {}  # each disclosure's id, and the grants it names
        for case in seeded:
            for referral_id in platform.referral.get_case_file(case.case_id).referral_ids:
                for d in platform.referral.get_referral(referral_id).disclosures:
                    granted[str(d.disclosure_id)] = {str(f.grant_id) for f in d.released}
    finally:
        platform.close()
    done = audit_disclosures(sqlite_settings, "--all", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["disclosures"], report["reads"], report["unlawful"]) == (5, 0, 0)
    findings = {f["id"]: f for f in report["findings"]}
    assert set(findings) == set(granted)
    for disclosure_id, grants in granted.items():
        assert findings[disclosure_id]["verdict"] == "lawful"
        assert all(f"by grant {g}" in findings[disclosure_id]["why"] for g in grants)
