"""A page's reads of personal data are recorded together: every read the page made is in the
read audit, stored in one write before the page is sent, and a page whose reads cannot be
stored is not sent (503, nothing of the person on it). The person's copy lists its own read
last and ends with every log's latest checkpoint. Embedded (SQLite), with the demo's data,
as ``ketnoi demo`` runs."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from fastapi.testclient import TestClient

from services.cli.demo import demo_users, seed
from services.cli.wiring import Platform, http_app, start
from services.runtime.auth import TokenService
from services.runtime.group_commit import Group
from services.runtime.read_audit import ReadAudit
from services.runtime.seal.operations import latest_checkpoints
from services.runtime.settings import Settings

MANAGER = "dt-swc-caseworker-1"  # the Dong Thap night case's case manager
# What the case file reads of the person's data, for its case manager: the case, its
# timeline and its plan (the consent record's read holds no category of theirs).
CASE_FILE_READS = ["intake.case", "intake.plan", "projections.timeline"]


@dataclass
class Demo:
    platform: Platform
    audit: ReadAudit
    app: Any
    settings: Settings
    case_id: UUID

    def signed_in(self, user: str) -> TestClient:
        client = TestClient(self.app, base_url="http://127.0.0.1")
        page = client.get("/signin").text
        token = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        r = client.post(
            "/signin", data={"user_id": user, "csrf_token": token}, follow_redirects=False
        )
        assert r.status_code == 303, r.text
        return client

    def person_name(self) -> str:
        person = self.platform.intake.get_case(self.case_id).person
        assert person is not None
        return person.full_name


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    data_dir = Path(tmp_path_factory.mktemp("web-read-audit"))
    settings = Settings(database_url=None, data_dir=data_dir, environment="development")
    platform = start(settings, poll_interval=0.2)
    try:
        seeded = seed(platform, data_dir)
        platform.catch_up()
        assert platform.read_audit is not None
        app = http_app(platform, TokenService(settings), demo_users=demo_users())
        night = next(c for c in seeded if c.key == "dong-thap-1").case_id
        yield Demo(platform, platform.read_audit, app, settings, night)
    finally:
        platform.close()


@pytest.fixture
def writes(demo: Demo, monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """Each write of the read audit, as the number of reads in each save it held."""
    recorder = demo.audit.log.recorder
    real = recorder.insert_groups
    seen: list[list[int]] = []

    def counting(groups: Sequence[Group]) -> Any:
        seen.append([len(g.events) for g in groups])
        return real(groups)

    monkeypatch.setattr(recorder, "insert_groups", counting)
    return seen


def test_the_case_files_reads_are_all_recorded_in_one_write_before_it_is_sent(
    demo: Demo, writes: list[list[int]]
) -> None:
    client = demo.signed_in(MANAGER)
    before = len(demo.audit.reads_of_case(demo.case_id))
    page = client.get(f"/cases/{demo.case_id}")
    assert page.status_code == 200
    assert demo.person_name() in page.text
    reads = demo.audit.reads_of_case(demo.case_id)[before:]
    assert sorted(r.what for r in reads) == CASE_FILE_READS
    assert {r.actor.user_id for r in reads} == {MANAGER}
    # One save of them all: one transaction of the audit log, not one per read.
    assert writes == [[len(CASE_FILE_READS)]]


def test_a_page_whose_reads_cannot_be_recorded_is_not_sent(
    demo: Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = demo.signed_in(MANAGER)
    before = len(demo.audit.reads_of_case(demo.case_id))

    def failing(_groups: Sequence[Group]) -> Any:
        raise OSError("the audit log's disk is full")

    monkeypatch.setattr(demo.audit.log.recorder, "insert_groups", failing)
    for path in (f"/cases/{demo.case_id}", f"/cases/{demo.case_id}/plan"):
        page = client.get(path)
        assert page.status_code == 503, path
        assert page.headers["retry-after"] == "5"
        assert "text/html" in page.headers["content-type"]
        assert demo.person_name() not in page.text
    monkeypatch.undo()
    assert len(demo.audit.reads_of_case(demo.case_id)) == before
    # Once the log takes writes again, so does the page.
    assert client.get(f"/cases/{demo.case_id}").status_code == 200
    assert len(demo.audit.reads_of_case(demo.case_id)) == before + len(CASE_FILE_READS)


def test_the_persons_copy_lists_its_own_read_last_and_ends_with_each_logs_checkpoint(
    demo: Demo, writes: list[list[int]]
) -> None:
    client = demo.signed_in(MANAGER)
    for _ in range(2):  # the second copy lists the first, and signs the audit log again
        page = client.get(f"/cases/{demo.case_id}/copy")
        assert page.status_code == 200
        reads = demo.audit.reads_of_case(demo.case_id)
        assert reads[-1].what == "projections.person_copy"
        assert page.text.count("<tr") >= len(reads)
        latest = latest_checkpoints(demo.settings)
        by_log = {log: (size, text) for log, size, text in latest}
        assert {"intake", "consent", "referral", "audit"} <= set(by_log)
        audit_size, audit_note = by_log["audit"]
        # The audit log's checkpoint covers the copy's own read: it was signed after it.
        assert audit_size == sum(1 for _ in demo.audit.all_reads())
        for log, (size, text) in by_log.items():
            assert text is not None, log
            assert f"<td>{log}</td><td>{size}</td>" in page.text
        assert audit_note is not None
        assert audit_note.splitlines()[0] in page.text
    assert writes == [[1], [1]]  # the copy's read, stored before the reads are listed
