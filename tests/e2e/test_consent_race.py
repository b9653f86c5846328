"""A withdrawal is in force for the very next read, with every service its own process.

The consent and referral services run as separate processes on PostgreSQL. Each round, a
hospital's desk sees the person's data under a grant, the person withdraws that grant
(recorded through the consent process), and the desk reads the referral again at once, from
the referral process: its data must be gone on that read, every time, although the referral
service learns of the withdrawal only through the consent log.

Half the rounds hold the referral log's write lock while the withdrawal is recorded and the
read begins, so that the referral service's background follower cannot have applied the
withdrawal before the read: only the read bringing its copy of the consent log to the head
keeps the data from leaking then (the read waits for the lock, or answers 503).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from contracts.vocabulary import AgencyKind, Role
from services.runtime.auth import TokenService
from services.runtime.settings import Settings
from tests.support.agencies import register_agencies
from tests.support.processes import (
    free_port,
    ketnoi_server,
    rescue_reception,
    run_ketnoi,
    settings_env,
)

pytestmark = pytest.mark.postgres

ROUNDS = 30
NOW = datetime.now(UTC).replace(microsecond=0)
WRITTEN = {
    "method": "written_form",
    "form_reference": "F-1",
    "language": "vi",
    "withdrawal_explained": True,
}
GRANT = {
    "categories": ["identity", "needs"],
    "recipients": [{"kind": "hospital"}],
    "purposes": ["service_provision"],
    "valid_from": (NOW - timedelta(days=1)).isoformat(),
    "valid_until": (NOW + timedelta(days=365)).isoformat(),
    "collection": WRITTEN,
    "given_by": {"kind": "person"},
}


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def services(pg_settings: Settings, tmp_path: Path) -> Iterator[dict[str, str]]:
    # Three processes, each with pools per log it reads: small pools keep the test within the
    # server's connection limit.
    env = settings_env(pg_settings, pool=(2, 2))
    run_ketnoi("migrate", env=env)
    register_agencies(pg_settings)
    with (
        ketnoi_server(
            "serve", "intake", port=free_port(), env=env, log=tmp_path / "intake.log"
        ) as (_i, intake),
        ketnoi_server(
            "serve", "consent", port=free_port(), env=env, log=tmp_path / "consent.log"
        ) as (_c, consent),
        ketnoi_server(
            "serve", "referral", port=free_port(), env=env, log=tmp_path / "referral.log"
        ) as (_r, referral),
    ):
        yield {"intake": intake, "consent": consent, "referral": referral}


def test_a_withdrawal_is_in_force_for_the_next_read_in_another_process(
    services: dict[str, str], pg_settings: Settings
) -> None:
    tokens = TokenService(pg_settings)

    def as_(agency: str, kind: AgencyKind, role: Role) -> dict[str, str]:
        token = tokens.issue(
            user_id=f"{agency}-{role.value}",
            agency_id=agency,
            province="dong-thap",
            roles=[role],
            agency_kind=kind,
        )
        return {"Authorization": f"Bearer {token}"}

    officer = as_("dt-police", AgencyKind.POLICE, Role.INTAKE_OFFICER)
    coordinator = as_("dt-dolisa", AgencyKind.LOCAL_AUTHORITY, Role.COORDINATOR)
    manager = as_("dt-swc", AgencyKind.SOCIAL_WORK_CENTRE, Role.CASE_MANAGER)
    desk = as_("dt-hospital", AgencyKind.HOSPITAL, Role.AGENCY_STAFF)
    intake, consent, referral = services["intake"], services["consent"], services["referral"]

    with httpx.Client(timeout=10) as http:
        case = http.post(
            f"{intake}/intake/cases",
            json=rescue_reception(),
            headers=officer,
        ).json()["case_id"]
        person = {"full_name": "Trần Thị Hoa", "sex": "female", "estimated_age": 24}
        assert http.post(
            f"{intake}/intake/cases/{case}/person", json=person, headers=officer
        ).is_success
        assert http.post(
            f"{intake}/intake/cases/{case}/needs-assessments",
            json={"needs": ["medical_check"]},
            headers=officer,
        ).is_success
        assert http.put(
            f"{intake}/intake/cases/{case}/case-manager",
            json={
                "case_manager_id": "dt-swc-1",
                "agency": "dt-swc",
            },
            headers=coordinator,
        ).is_success

        def grant() -> str:
            r = wait_for(
                "the consent service to hold the case",
                lambda: (
                    r
                    if (
                        r := http.post(
                            f"{consent}/consent/cases/{case}/grants", json=GRANT, headers=manager
                        )
                    ).status_code
                    == 201
                    else None
                ),
            )
            return str(r.json()["grant_id"])

        grant_id = grant()
        body = {
            "to_agency": "dt-hospital",
            "service_type": "medical_care",
            "categories": ["identity", "needs"],
        }
        created = wait_for(
            "the referral service to hold the case",
            lambda: (
                r
                if (
                    r := http.post(
                        f"{referral}/referral/cases/{case}/referrals", json=body, headers=manager
                    )
                ).status_code
                == 201
                else None
            ),
        )
        url = f"{referral}/referral/referrals/{created.json()['referral_id']}"

        def data_seen() -> dict[str, Any] | None:
            r = http.get(url, headers=desk)
            if r.status_code != 200 or r.json()["disclosure"] is None:
                return None
            data: dict[str, Any] | None = r.json()["disclosure"]["data"]
            return data

        table = sql.Identifier(pg_settings.schema_for("referral"), "referral_events")
        leaks, waited = [], 0
        for round_ in range(ROUNDS):
            seen = wait_for("the hospital to see the data under the grant", data_seen)
            assert seen["identity"]["full_name"] == "Trần Thị Hoa"
            held = round_ % 2 == 1
            with psycopg.connect(pg_settings.database_url or "", autocommit=True) as lock:
                if held:
                    lock.execute("BEGIN")
                    lock.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(table))
                withdrawal = http.post(
                    f"{consent}/consent/cases/{case}/grants/{grant_id}/withdrawal",
                    json={"reason": "changed her mind"},
                    headers=desk,
                )
                assert withdrawal.status_code == 201, withdrawal.text
                answers: list[httpx.Response] = []

                def read(answers: list[httpx.Response] = answers) -> None:
                    answers.append(http.get(url, headers=desk))

                reader = threading.Thread(target=read)
                reader.start()
                if held:
                    reader.join(0.3)
                    waited += reader.is_alive()
                    lock.execute("COMMIT")
                reader.join()
            (after,) = answers
            if after.status_code == 503:
                continue  # it could not read the consent log in time: it refused, no data
            assert after.status_code == 200, after.text
            disclosure = after.json()["disclosure"]
            if disclosure is not None and disclosure["data"] is not None:
                leaks.append(round_)
            if round_ not in leaks:
                assert "Trần Thị Hoa" not in after.text
            grant_id = grant()
    print(
        f"\n{ROUNDS} withdrawals, each read at once from another process: {len(leaks)} leaks; "
        f"{waited} reads waited for the consent log"
    )
    assert leaks == []
    # The held rounds did hold the follower back: their reads had to wait for it.
    assert waited >= ROUNDS // 4, waited
