"""The commands a person runs: `ketnoi demo`, and `ketnoi migrate` + `serve intake` on
PostgreSQL, as real processes over real HTTP."""

from __future__ import annotations

import re
import sqlite3
import time
from functools import partial
from pathlib import Path

import httpx
import pytest

from services.runtime.settings import Settings
from tests.support.processes import (
    border_reception,
    cli_token,
    free_port,
    ketnoi_server,
    migrate_with_lao_cai,
    settings_env,
)

# A loaded machine can take longer than httpx's default 5 s to answer the first request of a
# route (the OpenAPI document is built on first use): the servers' answers are checked, not
# their speed.
get = partial(httpx.get, timeout=60.0)
post = partial(httpx.post, timeout=60.0)


def _tokens(log: Path) -> list[str]:
    return re.findall(r"^(eyJ[\w-]+\.[\w-]+\.[\w-]+)$", log.read_text(), flags=re.MULTILINE)


def _case_urls(log: Path) -> list[str]:
    """The API address of each case whose page the demo prints."""
    ids = re.findall(r"/cases/([0-9a-f-]{36})", log.read_text())
    return [f"/intake/cases/{case_id}" for case_id in ids]


def test_demo_serves_seeded_scenarios_and_seeds_only_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    log = tmp_path / "demo.log"
    env = {"KETNOI_DATABASE_URL": ""}  # the demo is always the embedded default
    with ketnoi_server("demo", "--data-dir", str(data_dir), port=free_port(), env=env, log=log) as (
        _proc,
        base,
    ):
        docs = get(f"{base}/openapi.json").json()["paths"]
        assert "/intake/cases" in docs
        assert "/intake/cases/{case_id}" in docs
        assert get(f"{base}/docs").status_code == 200
        # The first address printed is the web app's sign-in page.
        first = re.search(r"https?://[^\s)]+", log.read_text())
        assert first is not None
        assert first.group(0) == f"{base}/signin"
        # Nothing comes before it: the seeding's log lines are left out of the terminal.
        assert log.read_text().lstrip().startswith(f"Ketnoi demo: sign in at {base}/signin")
        assert get(first.group(0)).status_code == 200
        urls, all_tokens = _case_urls(log), _tokens(log)
        assert len(urls) == 4
        assert len(all_tokens) == 3  # Dong Thap, Lao Cai, Nghe An, in that order
        # Nghe An's coordinator follows the livelihood story alone.
        nghe_an = [
            r.json()
            for url in urls
            if (
                r := get(base + url, headers={"Authorization": f"Bearer {all_tokens[2]}"})
            ).status_code
            == 200
        ]
        assert [c["province"] for c in nghe_an] == ["nghe-an"]
        # The night reception and the border handover, as their coordinators see them.
        tokens = all_tokens[:2]
        seen = {}
        for token in tokens:
            for url in urls:
                r = get(base + url, headers={"Authorization": f"Bearer {token}"})
                if r.status_code == 200:
                    seen[url] = r.json()
        assert len(seen) == 3  # each case visible to its own province's coordinator
        lao_cai = [c for c in seen.values() if c["province"] == "lao-cai"]
        assert len(lao_cai) == 1
        assert lao_cai[0]["route"] == "border_handover"
        assert lao_cai[0]["handed_over_by"]["kind"] == "foreign_authority"
        dong_thap = [c for c in seen.values() if c["province"] == "dong-thap"]
        assert {c["stage"] for c in dong_thap} == {"crisis"}
        # A coordinator follows progress: none of the person's details.
        for case in seen.values():
            assert case["shown"] == []
            assert case["person"] is case["minor"] is case["contact_refused"] is None

        consents = {}
        for token in tokens:
            for case in seen.values():
                r = get(
                    f"{base}/consent/cases/{case['case_id']}",
                    headers={"Authorization": f"Bearer {token}"},
                )
                if r.status_code == 200:
                    consents[case["case_id"]] = r.json()
        assert len(consents) == 3
        lc = consents[lao_cai[0]["case_id"]]
        assert lc["subject"]["minor"] is True
        assert [g["given_by"]["kind"] for g in lc["grants"]] == ["guardian"]
        dt = [consents[c["case_id"]] for c in dong_thap]
        for record in dt:
            care = record["grants"][0]
            assert set(care["categories"]) == {"identity", "health"}
            assert {"kind": "hospital"} in [
                {k: v for k, v in r.items() if v} for r in care["recipients"]
            ]
        police_refusals = [
            r for record in dt for r in record["refusals"] if r["recipients"][0]["kind"] == "police"
        ]
        assert len(police_refusals) == 1  # one of the two women refuses the police
        assert police_refusals[0]["except_purposes"] == ["criminal_proceedings"]

        statuses: dict[str, list[str]] = {}
        handovers: dict[str, list[str]] = {}
        for token in tokens:
            headers = {"Authorization": f"Bearer {token}"}
            for r in get(f"{base}/referral/referrals", headers=headers).json():
                statuses.setdefault(r["to_agency"]["kind"], []).append(r["status"])
            for h in get(f"{base}/referral/handovers", headers=headers).json():
                handovers.setdefault(h["status"], []).append(",".join(h["waiting_for"]))
        assert sorted(statuses["hospital"]) == ["accepted", "completed", "in-progress"]
        assert statuses["police"] == ["received"]  # the criminal case only
        assert statuses["school"] == ["requested"]
        assert len(handovers["completed"]) == 3
        assert handovers["open"] == ["lao-cai-commune-office"]  # the local officer is awaited

        # The coordinator's board, timelines and statistics come from the read models.
        boards = {}
        for token in tokens:
            headers = {"Authorization": f"Bearer {token}"}
            deadline = time.monotonic() + 15
            while True:  # the projector catches up in the background
                board = get(f"{base}/projections/board", headers=headers).json()["rows"]
                referrals = sum(len(row["open_referrals"]) for row in board)
                if len(board) in (1, 2) and referrals in (2, 3):  # Lao Cai 2; Dong Thap 3
                    break
                assert time.monotonic() < deadline, board
                time.sleep(0.2)
            boards[board[0]["case_id"]] = board
            stats = get(f"{base}/projections/statistics.csv", headers=headers)
            assert stats.status_code == 200
        lao_cai_board = boards[lao_cai[0]["case_id"]]
        assert lao_cai_board[0]["open_handovers"][0]["waiting_for"] == ["lao-cai-commune-office"]

    def count_events() -> int:
        total = 0
        for service in ("intake", "consent"):
            with sqlite3.connect(data_dir / f"{service}.sqlite") as db:
                total += int(db.execute("SELECT count(*) FROM stored_events").fetchone()[0])
        return total

    first_count = count_events()
    assert first_count > 3 * 7 * 2  # 7 intake commands a case with their idempotency records
    log2 = tmp_path / "demo2.log"
    with ketnoi_server("demo", "--data-dir", str(data_dir), port=free_port(), env=env, log=log2):
        assert sorted(_case_urls(log2)) == sorted(_case_urls(log))
    assert count_events() == first_count


@pytest.mark.postgres
def test_migrate_then_serve_intake_and_consent_on_postgres(
    pg_settings: Settings, tmp_path: Path
) -> None:
    assert pg_settings.database_url is not None
    env = settings_env(pg_settings, data_dir=tmp_path / "keys")
    migrated, imported = migrate_with_lao_cai(env)
    assert "Migrated directory, intake, consent, referral, projections" in migrated
    # The agencies it names come from the directory, imported from an HSDS file.
    assert "Imported 3 agencies: 3 registered." in imported
    headers = cli_token(env, "officer-9", "lao-cai-border-guard", "intake_officer")
    log = tmp_path / "serve.log"
    with ketnoi_server("serve", "intake", port=free_port(), env=env, log=log) as (_p, base):
        created = post(f"{base}/intake/cases", json=border_reception(), headers=headers)
        assert created.status_code == 201, created.text
        case_id = created.json()["case_id"]
        person = {"full_name": "Secret Name", "sex": "male", "estimated_age": 16}
        r_person = post(f"{base}/intake/cases/{case_id}/person", json=person, headers=headers)
        assert r_person.status_code == 201
        case = get(f"{base}/intake/cases/{case_id}", headers=headers)
        assert case.status_code == 200
        assert case.json()["minor"] is True
        assert case.json()["handed_over_by"]["kind"] == "foreign_authority"
        assert get(f"{base}/intake/cases/{case_id}").status_code == 401
        # One service serves its API alone; `serve all` adds the web app (below).
        assert get(f"{base}/signin").status_code == 404

        # The consent service, its own process, learns of the case from the intake log.
        consent_log = tmp_path / "consent.log"
        with ketnoi_server("serve", "consent", port=free_port(), env=env, log=consent_log) as (
            _c,
            consent_base,
        ):
            # Passing on the position the last command reached, the first read finds it.
            position = {"Ketnoi-Position": r_person.headers["Ketnoi-Position"]}
            r = get(f"{consent_base}/consent/cases/{case_id}", headers={**headers, **position})
            assert r.status_code == 200, r.text
            assert r.json()["subject"]["minor"] is True
            assert r.json()["province"] == "lao-cai"
        # The directory is a service of its own too.
        directory_log = tmp_path / "directory.log"
        with ketnoi_server("serve", "directory", port=free_port(), env=env, log=directory_log) as (
            _d,
            directory_base,
        ):
            r = get(f"{directory_base}/directory/agencies?country=VN", headers=headers)
            assert r.status_code == 200, r.text
            assert [a["agency_id"] for a in r.json()] == [
                "lao-cai-border-guard",
                "lao-cai-social-work-centre",
            ]
    logged = log.read_text() + consent_log.read_text()
    assert case_id in logged  # ids are logged...
    assert "Secret Name" not in logged  # ...personal data never is
    # Every service and the web app in one process.
    all_log = tmp_path / "all.log"
    with ketnoi_server("serve", "all", port=free_port(), env=env, log=all_log) as (_a, all_base):
        assert get(f"{all_base}/").headers["location"] == "/signin"
        signin = get(f"{all_base}/signin", headers={"Accept-Language": "vi"})
        assert signin.status_code == 200
        assert "Đăng nhập" in signin.text
        assert get(f"{all_base}/docs").status_code == 200
