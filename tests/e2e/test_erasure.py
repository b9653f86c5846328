"""Forgetting a person, end to end, on PostgreSQL and on SQLite: a person with data in intake,
consent, a referral with its disclosure and case work, cancelled with a reason that names her,
is erased through the API (asked for by one person, approved by another); then every log still
verifies, no table, file or export holds any of their distinctive values, a rebuild of the
read models does not bring them back, the case reads as erased, and the feed publishes an
erasure notice to every agency it told and nothing personal any more. What the feed
published before holds nothing of them in clear either: their data and the reason were
sealed under keys derived from theirs, gone with it."""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql
from typer.testing import CliRunner

from contracts.casework import MedicalExamination
from contracts.consent import ConsentGiver, GiverKind, Recipient, RecipientGroup
from contracts.envelope import Actor
from contracts.erasure import ErasureReason
from contracts.intake import PersonDetails, Place
from contracts.personal import ERASED_TEXT
from contracts.referral import Urgency
from contracts.vocabulary import (
    AgencyKind,
    ArrivalRoute,
    ContactMode,
    DataCategory,
    Purpose,
    RiskLevel,
    RiskSubject,
    Role,
    ServiceType,
    Sex,
    UrgentNeed,
)
from services.cli import app as cli
from services.cli.erase import events_in_clear
from services.cli.wiring import Platform, http_app, migrate, start
from services.referral.feed import ConsentAtHead, open_consent_upstream, open_feed_upstream
from services.referral.feed_keys import FeedKeys
from services.referral.feed_messages import FeedMessage, FeedView
from services.runtime.aggregate import CommandContext
from services.runtime.auth import TokenService
from services.runtime.persistence import decode_stored
from services.runtime.person_keys import person_keys
from services.runtime.seal.keys import seal_signer
from services.runtime.settings import Settings
from tests.integration.test_projections import HOSPITAL, MANAGER, OFFICER, POLICE, SWC, WRITTEN
from tests.integration.test_projections import staff as staff_of
from tests.support.agencies import TEST_AGENCIES, register_agencies
from tests.support.feed import (
    FeedReader,
    agency_keys,
    drop_feed_schema,
    feed_kafka_settings,
    open_sealed,
    open_sealed_reason,
    relay_for,
    written_agencies,
)
from tests.support.processes import KETNOI, settings_env

NOW = datetime.now(UTC).replace(microsecond=0)


class Person:
    """Everything distinctive about one person, random so no other test can hold it."""

    def __init__(self) -> None:
        tag = secrets.token_hex(5).upper()
        self.name = f"Tran Thi Erasable {tag}"
        self.phone = "09" + secrets.token_hex(4)
        self.location = f"hamlet-{secrets.token_hex(5)}"
        self.needs_note = f"needs-note-{secrets.token_hex(5)}"
        self.risk_plan = f"risk-plan-{secrets.token_hex(5)}"
        self.findings = f"findings-{secrets.token_hex(5)}"
        self.contact_note = f"contact-note-{secrets.token_hex(5)}"
        self.case_note = f"case-note-{secrets.token_hex(5)}"
        self.referral_note = f"referral-note-{secrets.token_hex(5)}"
        self.accepted_note = f"accepted-note-{secrets.token_hex(5)}"
        self.child_views = f"views-{secrets.token_hex(5)}"
        self.cancel_reason = f"cancel-reason-{secrets.token_hex(5)}"

    @property
    def cancellation(self) -> str:
        """Why her referral was cancelled: it names her, as free text often does."""
        return f"{self.name} moved away ({self.cancel_reason})."

    @property
    def values(self) -> dict[str, bytes]:
        return {k: v.encode() for k, v in vars(self).items()}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def settings(request: pytest.FixtureRequest) -> Settings:
    name = "pg_settings" if request.param == "postgres" else "sqlite_settings"
    found: Settings = request.getfixturevalue(name)
    return found


@pytest.fixture
def platform(settings: Settings) -> Iterator[Platform]:
    migrate(settings)
    running = start(settings, run_followers=False)
    register_agencies(running)
    yield running
    running.close()


def ctx(actor: Actor, minutes: float = 0) -> CommandContext:
    return CommandContext(actor=actor, at=NOW - timedelta(hours=2) + timedelta(minutes=minutes))


def record_everything(p: Platform, who: Person) -> tuple[UUID, UUID]:
    """A person's data in intake, consent, a referral with its disclosure (cancelled by its
    sender once accepted, with a reason that names her), and case work; returns the case's and
    the referral's ids."""
    case_id = UUID(
        str(
            p.intake.record_reception(
                ctx(OFFICER),
                route=ArrivalRoute.RESCUED,
                received_at=NOW - timedelta(hours=3),
                place=Place(province="dong-thap", location=who.location),
                receiving_agency=POLICE,
            )["case_id"]
        )
    )
    intake = p.intake
    intake.register_person(
        ctx(OFFICER, 1),
        case_id,
        PersonDetails(full_name=who.name, sex=Sex.FEMALE, estimated_age=16),
    )
    intake.assign_case_manager(ctx(OFFICER, 2), case_id, MANAGER.user_id, SWC)
    intake.assess_needs(ctx(MANAGER, 3), case_id, (UrgentNeed.SHELTER_TONIGHT,), who.needs_note)
    intake.assess_risk(
        ctx(MANAGER, 4), case_id, RiskLevel.HIGH, (RiskSubject.PERSON,), who.risk_plan
    )
    intake.record_contact_preference(
        ctx(MANAGER, 5), case_id, (ContactMode.PHONE,), note=f"call {who.phone}"
    )
    intake.record_medical_examination(
        ctx(MANAGER, 6),
        case_id,
        MedicalExamination(
            examined_at=NOW - timedelta(hours=2), findings=who.findings, follow_up_needed=False
        ),
    )
    intake.log_contact(
        ctx(MANAGER, 7),
        case_id,
        mode=ContactMode.PHONE,
        occurred_at=NOW - timedelta(hours=2, minutes=30),
        note=who.contact_note,
    )
    intake.write_note(ctx(MANAGER, 8), case_id, DataCategory.NEEDS, who.case_note)
    p.catch_up()
    p.consent.grant(
        ctx(MANAGER, 10),
        case_id,
        categories=(DataCategory.IDENTITY, DataCategory.CONTACT, DataCategory.HEALTH),
        recipients=(Recipient(group=RecipientGroup.ANY),),
        purposes=(Purpose.SERVICE_PROVISION,),
        valid_from=NOW - timedelta(hours=3),
        valid_until=NOW + timedelta(days=365),
        collection=WRITTEN,
        given_by=ConsentGiver(kind=GiverKind.GUARDIAN, relationship="aunt"),
        child_views=who.child_views,
    )
    p.catch_up()
    referral_id = UUID(
        str(
            p.referral.create_referral(
                ctx(MANAGER, 20),
                case_id,
                from_agency=SWC,
                to_agency_id=HOSPITAL.agency_id,
                service_type=ServiceType.HEALTH_CHECK,
                urgency=Urgency.URGENT,
                purpose=Purpose.SERVICE_PROVISION,
                categories=(DataCategory.IDENTITY, DataCategory.CONTACT),
                note=who.referral_note,
            )["referral_id"]
        )
    )
    hospital = staff_of(HOSPITAL)
    p.referral.answer(ctx(hospital, 30), referral_id, "acknowledge")
    p.referral.answer(ctx(hospital, 31), referral_id, "accept", who.accepted_note)
    p.referral.answer(ctx(MANAGER, 32), referral_id, "cancel", who.cancellation)
    p.catch_up()
    p.checkpoint()
    return case_id, referral_id


def feed_messages(p: Platform) -> list[FeedMessage]:
    """Every message the relay publishes for the whole referral log, built now (as after
    ``ketnoi feed --reset``) by the relay's own view of it."""
    upstream = open_feed_upstream(p.settings, app=p.referral)
    consent = ConsentAtHead(open_consent_upstream(p.settings, app=p.consent))
    keys = FeedKeys(person_keys(p.settings))
    view = FeedView(upstream.recorder, upstream.mapper, 100, release=consent.release, keys=keys)
    found: list[FeedMessage] = []
    for n in upstream.recorder.select_notifications(start=1, limit=100_000, topics=upstream.topics):
        found += view.messages_for(decode_stored(upstream.mapper, n))
    return found


def stored_bytes(settings: Settings, export: Path) -> dict[str, bytes]:
    """Every table of every Ketnoi schema (PostgreSQL, every row, every column, as bytes), or
    every file of the data directory (SQLite), and every exported file."""
    found: dict[str, bytes] = {}
    for path in export.rglob("*"):
        if path.is_file():
            found[str(path)] = path.read_bytes()
    if settings.postgres is None:
        for path in settings.data_dir.rglob("*"):
            if path.is_file():
                found[str(path)] = path.read_bytes()
        return found
    with psycopg.connect(settings.postgres.conninfo()) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema LIKE %s",
            (settings.schema_prefix.replace("_", "\\_") + "%",),
        ).fetchall()
        assert len(tables) >= 10  # every log, the read models, the seal, the audit, the keys
        for schema, table in tables:
            rows = conn.execute(
                sql.SQL("SELECT * FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
            ).fetchall()
            found[f"{schema}.{table}"] = b"\n".join(
                b"|".join(_as_bytes(value) for value in row) for row in rows
            )
    return found


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes | memoryview):
        return bytes(value)
    return str(value).encode()


def holding(stored: dict[str, bytes], needles: dict[str, bytes]) -> list[tuple[str, str]]:
    return [
        (where, what)
        for where, data in stored.items()
        for what, needle in needles.items()
        if needle in data
    ]


def test_an_erased_person_leaves_no_readable_trace(
    platform: Platform, settings: Settings, tmp_path: Path
) -> None:
    who = Person()
    case_id, referral_id = record_everything(platform, who)
    tokens = TokenService(settings)

    def as_(role: Role, agency: str, user: str) -> dict[str, str]:
        kind = TEST_AGENCIES[agency][0]
        token = tokens.issue(
            user_id=user, agency_id=agency, province="dong-thap", roles=[role], agency_kind=kind
        )
        return {"Authorization": f"Bearer {token}"}

    manager = as_(Role.CASE_MANAGER, "dt-swc", MANAGER.user_id)
    supervisor = as_(Role.SUPERVISOR, "dt-swc", "supervisor-1")
    runner = CliRunner()
    env = settings_env(settings, log_format=None)

    # Before: the holder reads the person; the hospital's feed carries her name, sealed: no
    # message holds any of her values in clear, and the hospital opens its disclosure with
    # the key it fetches from the API. The events hold her values encrypted only (the events
    # of other people are stored the same way).
    before = feed_messages(platform)
    assert not [m for m in before if any(v in m.value for v in who.values.values())]
    sealed = [
        value
        for value in (json.loads(m.value) for m in before if m.agency_id == "dt-hospital")
        if (value.get("disclosure") or {}).get("sealed")
    ]
    assert sealed
    key_id = sealed[0]["disclosure"]["sealed"]["key_id"]
    recipient = as_(Role.AGENCY_STAFF, "dt-hospital", "dt-hospital-1")
    # The cancellation's reason goes sealed to the sender and to the recipient, each under a
    # key of its own.
    reasons = {
        m.agency_id: json.loads(m.value)
        for m in before
        if json.loads(m.value).get("sealed_reason") is not None
    }
    assert set(reasons) == {"dt-swc", "dt-hospital"}
    with TestClient(http_app(platform, tokens)) as client:
        read = client.get(f"/intake/cases/{case_id}", headers=manager)
        assert read.status_code == 200, read.text
        assert read.json()["person"]["full_name"] == who.name
        assert who.findings in read.text
        fetched = client.get(f"/referral/feed/keys/{key_id}", headers=recipient)
        assert fetched.status_code == 200, fetched.text
        key = base64.b64decode(fetched.json()["key"])
        assert all(open_sealed(key, v)["data"]["identity"]["full_name"] == who.name for v in sealed)
        assert open_sealed_reason(key, reasons["dt-hospital"]) == who.cancellation
        senders = client.get(f"/referral/feed/keys/{referral_id}", headers=manager)
        assert senders.status_code == 200, senders.text
        senders_key = base64.b64decode(senders.json()["key"])
        assert open_sealed_reason(senders_key, reasons["dt-swc"]) == who.cancellation

        # One person asks; the same person cannot approve; another does.
        asked = client.post(
            f"/intake/cases/{case_id}/erasure", json={"reason": "person_request"}, headers=manager
        )
        assert asked.status_code == 201, asked.text
        same = client.post(f"/intake/cases/{case_id}/erasure/approval", headers=manager)
        assert same.status_code == 403  # a case manager may not approve at all
        self_approval = client.post(
            f"/intake/cases/{case_id}/erasure/approval",
            headers=as_(Role.SUPERVISOR, "dt-swc", MANAGER.user_id),
        )
        assert self_approval.status_code == 409, self_approval.text
        approved = client.post(f"/intake/cases/{case_id}/erasure/approval", headers=supervisor)
        assert approved.status_code == 200, approved.text
        assert approved.json()["erased"] is True
        platform.catch_up()
        platform.checkpoint()

        # The case reads as erased to those who may see it, and stays unknown to strangers.
        gone = client.get(f"/intake/cases/{case_id}", headers=manager)
        assert gone.status_code == 410, gone.text
        assert who.name not in gone.text
        stranger = {
            "Authorization": "Bearer "
            + tokens.issue(
                user_id="lc-1",
                agency_id="lc-swc",
                province="lao-cai",
                roles=[Role.CASE_MANAGER],
                agency_kind=AgencyKind.SOCIAL_WORK_CENTRE,
            )
        }
        assert client.get(f"/intake/cases/{case_id}", headers=stranger).status_code == 404
        # Nothing more can be recorded about her.
        again = client.post(
            f"/intake/cases/{case_id}/erasure", json={"reason": "person_request"}, headers=manager
        )
        assert again.status_code == 410
        timeline = client.get(f"/projections/cases/{case_id}/timeline", headers=manager)
        assert timeline.status_code == 404  # the read models dropped her case
        copy = client.get(f"/projections/cases/{case_id}/copy", headers=manager)
        assert not holding({"copy": copy.content}, who.values)
        referral = client.get(f"/referral/referrals/{referral_id}", headers=recipient)
        assert not holding({"referral": referral.content}, who.values)
        # The key of what the feed sealed for her is gone with hers: nothing published about
        # her, before the erasure either, opens any more.
        for asker in (recipient, manager):
            gone_key = client.get(f"/referral/feed/keys/{key_id}", headers=asker)
            assert gone_key.status_code == 410, gone_key.text
            assert "key" not in gone_key.json()
    person_id = platform.intake.get_case(case_id).person_id
    for agency in ("dt-hospital", "dt-swc"):
        assert FeedKeys(person_keys(settings)).key(person_id, agency, referral_id) is None

    # Every event of every log still decodes (a follower, a replay or a rebuild goes on),
    # her fields reading as erased.
    case = platform.intake.get_case(case_id)
    assert case.person is not None
    assert case.person.full_name == ERASED_TEXT
    assert case.erased is not None
    for app in platform.apps.values():
        for n in app.recorder.select_notifications(start=1, limit=100_000):
            decode_stored(app.mapper, n)

    # The seal: every log and checkpoint verifies.
    key = seal_signer(settings).verifier.vkey()
    verified = runner.invoke(cli, ["verify", "--key", key], env=env)
    assert verified.exit_code == 0, verified.output
    for log in ("intake", "consent", "referral", "audit"):
        assert f"{log}: ok" in verified.output

    # The feed, published again from the start: an erasure notice to the sender and the
    # recipient, and nothing of hers in any message.
    after = feed_messages(platform)
    notices = [
        m
        for m in after
        if dict(m.headers)["ce_type"].startswith(b"org.ketnoi.referral.person_erased")
    ]
    assert sorted(m.agency_id for m in notices) == ["dt-hospital", "dt-swc"]
    assert all(m.key == str(case_id).encode() for m in notices)
    assert not [m for m in after if any(v in m.value for v in who.values.values())]
    assert all(json.loads(m.value).get("sealed_reason") is None for m in after)

    # A rebuild of every read model does not bring her back.
    assert platform.projections is not None
    platform.projections.rebuild()
    assert platform.projections.case_overview(case_id) is None

    # No table, file or export holds any of her values.
    export = tmp_path / "export"
    exported = runner.invoke(cli, ["seal", "export", str(export)], env=env)
    assert exported.exit_code == 0, exported.output
    stored = stored_bytes(settings, export)
    assert holding(stored, {"case id": str(case_id).encode()})  # the search does read them
    assert holding(stored, who.values) == []


@pytest.mark.postgres
@pytest.mark.kafka
def test_nothing_the_feed_ever_published_about_the_person_reads_after_erasure(
    pg_settings: Settings, kafka_bootstrap: str
) -> None:
    """On a real broker. What the relay published before the erasure stays in the topics
    (Kafka is not Ketnoi's to rewrite), but her data in it is sealed under a key derived from
    hers: the recipient opens it while she is known, and once she is erased the key is gone
    (410), every agency is told, and a byte search of every message on every topic the relay
    wrote, before the erasure and after, finds none of her values; none of what was sealed
    opens any more."""
    migrate(pg_settings)
    platform = start(pg_settings, run_followers=False)
    register_agencies(platform)
    kafka = feed_kafka_settings(kafka_bootstrap)
    readers: list[FeedReader] = []
    try:
        who = Person()
        case_id, referral_id = record_everything(platform, who)
        with relay_for(pg_settings, kafka) as relay, agency_keys(platform) as keys:
            reader = FeedReader(kafka, ["dt-hospital", "dt-swc"], keys)
            readers.append(reader)
            assert relay.catch_up() > 0
            before = relay.published  # acknowledged by the broker
            reader.read_until(before, timeout=30)
            assert len(reader.records) == before
            # The hospital reads her name once it opened its disclosure; on the wire it is
            # ciphertext, under the key of her referral.
            assert any(who.name in r.raw for r in reader.of("dt-hospital"))
            assert not [r for r in reader.records if who.name.encode() in r.on_the_wire]
            key_ids = {
                r.wire["disclosure"]["sealed"]["key_id"]
                for r in reader.records
                if (r.wire.get("disclosure") or {}).get("sealed")
            }
            assert key_ids == {str(referral_id)}
            # The cancellation's reason names her: each of the sender and the recipient opens
            # it with its own key; on the wire it is ciphertext.
            cancelled = [r for r in reader.records if r.wire.get("sealed_reason")]
            assert sorted(reader.topics[r.topic] for r in cancelled) == ["dt-hospital", "dt-swc"]
            assert all(r.data["reason"] == who.cancellation for r in cancelled)
            assert not [r for r in reader.records if who.cancel_reason.encode() in r.on_the_wire]

            supervisor = Actor(user_id="supervisor-1", agency_id="dt-swc", role=Role.SUPERVISOR)
            platform.intake.request_erasure(ctx(MANAGER, 60), case_id, ErasureReason.PERSON_REQUEST)
            platform.intake.approve_erasure(CommandContext(actor=supervisor), case_id)
            platform.catch_up()

            assert relay.catch_up() == 1  # the referral log's record of the erasure
            assert relay.published == before + 2
            reader.read_until(before + 2, timeout=30)
            notices = reader.records[before:]
            assert sorted(reader.topics[r.topic] for r in notices) == ["dt-hospital", "dt-swc"]
            assert {r.ce_type for r in notices} == {"org.ketnoi.referral.person_erased.v1"}
            assert {r.data["case_id"] for r in notices} == {str(case_id)}
            assert all(r.key == str(case_id).encode() for r in notices)

            relay.start_over()  # a whole re-publication, as after `ketnoi feed --reset`
            assert relay.catch_up() > 0
            assert relay.published == 2 * (before + 2)

            # The hospital and the social work centre ask for their keys again: gone.
            keys.forget()
            asked = len(keys.answers)
            for agency in ("dt-hospital", "dt-swc"):
                assert keys.key(agency, str(referral_id)) is None
                assert keys.answers[-1] == (agency, str(referral_id), 410)

            # Every message on every topic the relay wrote, from the first: before the
            # erasure, the notices, the re-publication.
            agencies = written_agencies(kafka)
            assert {"dt-hospital", "dt-swc"} <= set(agencies)
            everything = FeedReader(kafka, agencies, keys)
            readers.append(everything)
            everything.read_until(2 * (before + 2), timeout=30, settle=1.0)
            assert len(everything.records) == 2 * (before + 2)
            needles = list(who.values.values())
            assert any(str(case_id).encode() in r.on_the_wire for r in everything.records)
            leaked = [
                r.on_the_wire
                for r in everything.records
                if any(v in r.on_the_wire for v in needles)
            ]
            assert leaked == []
            # What was sealed before the erasure is still there, and opens for no one.
            sealed_before = [
                r for r in everything.records if (r.wire.get("disclosure") or {}).get("sealed")
            ]
            assert sealed_before
            assert all(r.data["disclosure"]["data"] is None for r in sealed_before)
            reasons_before = [r for r in everything.records if r.wire.get("sealed_reason")]
            assert sorted(everything.topics[r.topic] for r in reasons_before) == [
                "dt-hospital",
                "dt-swc",
            ]
            assert all(r.data["reason"] is None for r in reasons_before)
            # Each of them made its agency ask for its key again: gone every time.
            answers = keys.answers[asked:]
            assert len(answers) == 2 + len(sealed_before) + len(reasons_before)
            assert {status for _, _, status in answers} == {410}
    finally:
        for reader in readers:
            reader.close()
        platform.close()
        drop_feed_schema(pg_settings)


def test_ketnoi_erase_needs_two_people_and_forgets_the_person(
    sqlite_settings: Settings,
) -> None:
    migrate(sqlite_settings)
    platform = start(sqlite_settings, run_followers=False)
    register_agencies(platform)
    try:
        who = Person()
        case_id, _referral_id = record_everything(platform, who)
        person_id = platform.intake.get_case(case_id).person_id
        # Everything about her is stored encrypted ...
        counted = events_in_clear(platform, case_id, person_id)
        assert set(counted) >= {"intake", "consent", "referral", "audit"}
        assert sum(counted.values()) == 0
        # ... but for a note written as an installation did before per-person encryption.
        cipher = platform.intake.mapper.fields  # type: ignore[attr-defined]
        cipher.seal = lambda *_args: None  # writes as before, still reads what is sealed
        try:
            platform.intake.write_note(ctx(MANAGER, 40), case_id, DataCategory.NEEDS, "old")
        finally:
            del cipher.seal
        assert events_in_clear(platform, case_id, person_id) == {**counted, "intake": 1}
    finally:
        platform.close()
    env = {**os.environ, "KETNOI_DATA_DIR": str(sqlite_settings.data_dir)}
    env.pop("KETNOI_DATABASE_URL", None)

    def ketnoi(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*KETNOI, *args], env=env, capture_output=True, text=True, timeout=300
        )

    erase = ["erase", str(person_id), "--reason", "person_request", "--requested-by", "u1"]
    alone = ketnoi(*erase, "--approved-by", "u1")
    assert alone.returncode == 1
    assert "another person" in " ".join(alone.stderr.split())
    done = ketnoi(*erase, "--approved-by", "u2")
    assert done.returncode == 0, done.stderr
    assert f"Erased the person of case {case_id}" in done.stdout
    # The operator learns what destroying the key could not reach.
    assert "1 of their events was stored in clear" in done.stdout
    assert "(intake: 1)" in done.stdout

    platform = start(sqlite_settings, run_followers=False)
    try:
        case = platform.intake.get_case(case_id)
        assert case.erased is not None
        assert case.erased.requested_by.user_id == "u1"
        assert case.erased.actor.user_id == "u2"
        assert case.person is not None
        assert case.person.full_name == ERASED_TEXT
        assert platform.projections is not None
        assert platform.projections.case_overview(case_id) is None
    finally:
        platform.close()


def test_a_person_erased_before_the_consent_service_read_them_stalls_no_follower(
    platform: Platform,
) -> None:
    """Erased between their registration and the consent service's reading of it: the
    registration reads as erased (no age), and every follower still catches up."""
    case_id = UUID(
        platform.intake.record_reception(
            ctx(OFFICER),
            route=ArrivalRoute.RESCUED,
            received_at=NOW - timedelta(hours=2),
            place=Place(province="dong-thap"),
            receiving_agency=POLICE,
        )["case_id"]
    )
    platform.intake.register_person(
        ctx(OFFICER, 1), case_id, PersonDetails(full_name="N", sex=Sex.FEMALE, estimated_age=30)
    )
    platform.intake.assign_case_manager(ctx(OFFICER, 2), case_id, "cw-1", SWC)
    platform.intake.request_erasure(ctx(MANAGER, 3), case_id, ErasureReason.PERSON_REQUEST)
    supervisor = Actor(user_id="supervisor-1", agency_id="dt-swc", role=Role.SUPERVISOR)
    platform.intake.approve_erasure(CommandContext(actor=supervisor), case_id)
    platform.catch_up()  # raised AssertionError from the consent service's follower
    assert all(f.error is None for f in platform.followers.values())
