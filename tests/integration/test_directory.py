"""The directory's log read by other processes, HSDS in and out, and the demo's agencies."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from contracts.directory import AgencyContact, AgencyDetails
from contracts.envelope import Actor
from contracts.vocabulary import AgencyKind, Role, ServiceType
from services.cli.demo_directory import DEMO_AGENCIES, seed_directory
from services.cli.wiring import migrate, start
from services.directory.application import DirectoryService
from services.directory.hsds import (
    HsdsError,
    export_organizations,
    import_agencies,
    parse_organizations,
)
from services.runtime.agencies import AgencyRegister
from services.runtime.aggregate import CommandContext
from services.runtime.settings import Settings
from tests.support.processes import KETNOI, run_ketnoi

SAMPLE = Path(__file__).parents[1] / "support" / "hsds" / "lao-cai.json"
ADMIN = CommandContext(actor=Actor(user_id="admin-1", agency_id="ministry", role=Role.ADMIN))


def snapshot(directory: DirectoryService) -> list[tuple[str, AgencyDetails, bool]]:
    return [(a.agency_id, a.current, a.active) for a in directory.list_agencies()]


@pytest.mark.postgres
def test_another_process_knows_an_agency_as_soon_as_it_is_registered(
    pg_settings: Settings,
) -> None:
    migrate(pg_settings)
    writer = start(pg_settings, ("directory",), run_followers=False)
    reader = start(pg_settings, ("intake",), run_followers=False)  # no directory of its own
    eager = AgencyRegister.of(pg_settings, max_age=0)  # looks at the log on every lookup
    try:
        assert reader.agencies.lookup("dong-thap-police") is None
        writer.directory.register_agency(
            ADMIN, "dong-thap-police", DEMO_AGENCIES["dong-thap-police"]
        )
        known = reader.agencies.lookup("dong-thap-police")
        assert known is not None
        assert known.kind is AgencyKind.POLICE
        assert known.name_en == "Dong Thap Provincial Police"
        assert eager.lookup("dong-thap-police") is not None

        writer.directory.deactivate(ADMIN, "dong-thap-police", "merged")
        found = eager.lookup("dong-thap-police")
        assert found is not None
        assert found.active is False
        # A register that looked a moment ago catches up when asked (or after max_age).
        assert reader.agencies.refresh() == 1
        assert reader.agencies.refresh() == 0  # nothing new: one look at the last position
        after = reader.agencies.lookup("dong-thap-police")
        assert after is not None
        assert after.active is False
    finally:
        eager.close()
        writer.close()
        reader.close()


def _directory(settings: Settings) -> DirectoryService:
    platform = start(settings, ("directory",), run_followers=False)
    return platform.directory


def test_hsds_export_then_import_into_an_empty_directory_gives_the_same_agencies(
    tmp_path: Path,
) -> None:
    source = _directory(Settings(database_url=None, data_dir=tmp_path / "source"))
    target = _directory(Settings(database_url=None, data_dir=tmp_path / "target"))
    try:
        seed_directory(source)
        source.register_agency(
            ADMIN,
            "dt-shelter",
            AgencyDetails(
                kind=AgencyKind.NGO,
                name_vi="Nhà tạm lánh Hy Vọng",
                name_en="Hope Shelter",
                country="VN",
                province="dong-thap",
                district="Sa Đéc",
                services=(ServiceType.SAFE_ACCOMMODATION, ServiceType.LIFE_SKILLS),
                contact=AgencyContact(
                    phone="+84 277 386 1111",
                    email="lienhe@hyvong.org.vn",
                    address="12 Nguyễn Huệ, Sa Đéc",
                    website="https://hyvong.org.vn",
                ),
            ),
        )
        source.deactivate(ADMIN, "dt-shelter", "closed for repairs")
        document = json.loads(json.dumps(export_organizations(source.list_agencies())))
        outcomes = import_agencies(target, ADMIN, parse_organizations(document))
        assert set(outcomes.values()) == {"registered"}
        assert snapshot(target) == snapshot(source)
        assert len(snapshot(target)) == len(DEMO_AGENCIES) + 1
        again = import_agencies(target, ADMIN, parse_organizations(document))
        assert set(again.values()) == {"unchanged"}
    finally:
        source.close()
        target.close()


def test_a_hand_written_hsds_file_imports(sqlite_settings: Settings) -> None:
    directory = _directory(sqlite_settings)
    try:
        parsed = parse_organizations(json.loads(SAMPLE.read_text(encoding="utf-8")))
        guard = next(a for a in parsed if a.agency_id == "lao-cai-border-guard")
        assert guard.skipped_services == ("Border patrol",)
        outcomes = import_agencies(directory, ADMIN, parsed)
        assert outcomes == {
            "lao-cai-border-guard": "registered",
            "cn-border-authority": "registered",
            "lao-cai-social-work-centre": "registered",
        }
        border = directory.get_agency("lao-cai-border-guard")
        assert border.active
        assert border.current == AgencyDetails(
            kind=AgencyKind.BORDER_GUARD,
            name_vi="Bộ đội Biên phòng tỉnh Lào Cai",
            name_en="Lao Cai Border Guard",
            country="VN",
            province="lao-cai",  # "Lào Cai" in the file
            district="Lào Cai",
            services=(ServiceType.INTERPRETATION,),
            contact=AgencyContact(
                phone="+84 214 3830 100",
                email="bienphong@laocai.gov.vn",
                address="Đường Hoàng Liên",
            ),
        )
        china = directory.get_agency("cn-border-authority").current
        assert (china.kind, china.country, china.province) == (
            AgencyKind.FOREIGN_AUTHORITY,
            "CN",
            "yunnan",
        )
        swc = directory.get_agency("lao-cai-social-work-centre")
        assert swc.current.services == (
            ServiceType.SAFE_ACCOMMODATION,
            ServiceType.PSYCHOLOGICAL_FIRST_AID,
        )
        assert swc.active  # one of its services is open
    finally:
        directory.close()


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"contents": [{"name": "X"}]}, "organization 0 (X): no organization_identifiers"),
        (
            [
                {
                    "name": "X",
                    "organization_identifiers": [
                        {"identifier_scheme": "ketnoi", "identifier": "Bad Id"}
                    ],
                }
            ],
            "lower-case slug",
        ),
        (
            {
                "name": "X",
                "organization_identifiers": [{"identifier_type": "agency_id", "identifier": "x"}],
            },
            "ketnoi-agency-kind",
        ),
        (
            {
                "name": "X",
                "organization_identifiers": [{"identifier_type": "agency_id", "identifier": "x"}],
                "attributes": [{"link_type": "ketnoi-agency-kind", "value": "police"}],
            },
            "check country",
        ),
        ("not an organization", "expected an HSDS organization"),
    ],
)
def test_an_unreadable_hsds_document_is_refused_saying_where(
    document: object, message: str
) -> None:
    with pytest.raises(HsdsError, match=re.escape(message)):
        parse_organizations(document)


def test_the_demo_directory_is_seeded_once(sqlite_settings: Settings) -> None:
    directory = _directory(sqlite_settings)
    try:
        first = seed_directory(directory)
        assert set(first.values()) == {"registered"}
        events = directory.recorder.max_notification_id()
        assert set(seed_directory(directory).values()) == {"unchanged"}
        assert directory.recorder.max_notification_id() == events
        national = directory.get_agency("molisa-inspectorate").current
        assert national.province == "*"
        assert directory.get_agency("cn-border-authority").current.country == "CN"
    finally:
        directory.close()


def test_the_command_line_imports_and_exports(tmp_path: Path) -> None:
    env = {"KETNOI_DATA_DIR": str(tmp_path / "data"), "KETNOI_DATABASE_URL": ""}
    imported = run_ketnoi("directory", "import", str(SAMPLE), env=env)
    assert "Imported 3 agencies: 3 registered." in imported
    assert "Imported 3 agencies: 3 unchanged." in run_ketnoi(
        "directory", "import", str(SAMPLE), env=env
    )
    out = tmp_path / "directory.json"
    run_ketnoi("directory", "export", str(out), env=env)
    exported = parse_organizations(json.loads(out.read_text(encoding="utf-8")))
    assert sorted(a.agency_id for a in exported) == [
        "cn-border-authority",
        "lao-cai-border-guard",
        "lao-cai-social-work-centre",
    ]
    assert json.loads(run_ketnoi("directory", "export", env=env)) == json.loads(out.read_text())
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "no id"}', encoding="utf-8")
    refused = subprocess.run(
        [*KETNOI, "directory", "import", str(bad)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2
    # Rich wraps long lines at the terminal's width: compare words, not line breaks.
    assert "no organization_identifiers entry" in " ".join(refused.stderr.split())


@pytest.mark.postgres
def test_a_platform_closes_the_connections_its_register_opened(pg_settings: Settings) -> None:
    migrate(pg_settings)
    assert pg_settings.database_url is not None

    def connections() -> int:
        with psycopg.connect(pg_settings.database_url or "", autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()
        assert row is not None
        return int(row[0])

    def settled(expected: int) -> int:
        # A closed connection's server process leaves pg_stat_activity a moment later. Other
        # connections of the test run (an earlier test's, closing) may leave meanwhile too, so
        # this waits for no more than there were, not for exactly as many.
        deadline = time.monotonic() + 10
        while (now := connections()) > expected and time.monotonic() < deadline:
            time.sleep(0.05)
        return now

    before = connections()
    platform = start(pg_settings, ("intake",), run_followers=False)
    assert platform.agencies.lookup("dong-thap-police") is None  # opens the directory log
    log = platform.agencies._log
    assert log is not None
    pool = log.recorder.datastore.pool  # type: ignore[attr-defined]
    assert pool.max_size <= 2  # a small pool of its own, not a service's ten
    platform.close()
    assert pool.closed
    assert settled(before) <= before
    # Beside other services the directory keeps a small pool too; on its own, the full one.
    beside = start(pg_settings, ("directory", "intake"), run_followers=False)
    alone = start(pg_settings, ("directory",), run_followers=False)
    try:
        assert beside.directory.recorder.datastore.pool.max_size <= 4  # type: ignore[attr-defined]
        full = pg_settings.pg_pool_size + pg_settings.pg_max_overflow
        assert alone.directory.recorder.datastore.pool.max_size == full  # type: ignore[attr-defined]
    finally:
        beside.close()
        alone.close()
