"""The agency feed on a real broker: each agency reads exactly what concerns it, and only
what was disclosed to it (DOMAIN.md scenarios, seeded as the demo seeds them)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest
from cryptography.exceptions import InvalidTag

from contracts.consent import Recipient
from contracts.envelope import Actor, event_id_of
from contracts.feed import CloudEventHeaders, HandoverUpdate, ReferralUpdate
from contracts.referral import Urgency
from contracts.vocabulary import DataCategory, Purpose, Role, ServiceType
from services.cli.demo import (
    DT_BORDER_GUARD,
    DT_HOSPITAL,
    DT_POLICE,
    DT_SWC,
    seed,
)
from services.cli.wiring import Platform, migrate, start
from services.runtime.aggregate import CommandContext
from services.runtime.kafka import KafkaSettings
from services.runtime.settings import Settings
from tests.support.feed import (
    FeedKeyClient,
    FeedReader,
    Received,
    agency_keys,
    drop_feed_schema,
    feed_kafka_settings,
    kafka_env,
    open_sealed,
    relay_for,
)
from tests.support.processes import KETNOI

pytestmark = [pytest.mark.postgres, pytest.mark.kafka]

NAMES = ("Lê Thị Mai", "Phạm Thị Lan")
CE_HEADERS = {
    "ce_specversion",
    "ce_id",
    "ce_source",
    "ce_type",
    "ce_time",
    "ce_subject",
    "content-type",
}
MANAGER = Actor(user_id="dt-swc-caseworker-1", agency_id=DT_SWC.agency_id, role=Role.CASE_MANAGER)


@pytest.fixture
def platform(pg_settings: Settings) -> Iterator[Platform]:
    migrate(pg_settings)
    running = start(
        pg_settings, ("directory", "intake", "consent", "referral"), run_followers=False
    )
    try:
        yield running
    finally:
        running.close()
        drop_feed_schema(pg_settings)


@pytest.fixture
def kafka(kafka_bootstrap: str) -> KafkaSettings:
    return feed_kafka_settings(kafka_bootstrap)


@pytest.fixture
def keys(platform: Platform) -> Iterator[FeedKeyClient]:
    """Each agency opens its sealed disclosures with keys it fetches from the API."""
    with agency_keys(platform) as found:
        yield found


def types_of(records: list[Received]) -> list[str]:
    return [r.ce_type.removeprefix("org.ketnoi.referral.").removesuffix(".v1") for r in records]


def check_envelope(record: Received) -> None:
    assert set(record.headers) == CE_HEADERS
    assert record.headers["ce_specversion"] == "1.0"
    assert record.headers["ce_source"] == "/ketnoi/referral"
    assert record.headers["content-type"] == "application/json"
    assert record.key.decode() == record.headers["ce_subject"]
    subject = UUID(record.headers["ce_subject"])
    assert record.ce_id == str(event_id_of(subject, record.data["version"]))
    datetime.fromisoformat(record.headers["ce_time"])
    CloudEventHeaders.model_validate(record.headers)
    # The value is exactly its contract model's JSON: nothing missing, nothing extra.
    model = HandoverUpdate if ".handover_" in record.ce_type else ReferralUpdate
    assert model.model_validate(record.wire).model_dump(mode="json") == record.wire
    # Nothing personal in keys, headers or values in clear, ever.
    for name in NAMES:
        assert name not in record.key.decode()
        assert all(name not in v for v in record.headers.values())
        assert name.encode() not in record.value


def test_dong_thap_each_agency_reads_only_what_was_disclosed_to_it(
    platform: Platform,
    pg_settings: Settings,
    kafka: KafkaSettings,
    keys: FeedKeyClient,
    tmp_path: Path,
) -> None:
    seeded = seed(platform, tmp_path)
    lan = next(c for c in seeded if c.key == "dong-thap-2")
    # Lan refused the police everything beyond the criminal case: a referral for support
    # waits, blocked, and the police must never hear of it.
    blocked = platform.referral.create_referral(
        CommandContext(actor=MANAGER),
        lan.case_id,
        from_agency=DT_SWC,
        to_agency_id=DT_POLICE.agency_id,
        service_type=ServiceType.SAFE_ACCOMMODATION,
        urgency=Urgency.URGENT,
        purpose=Purpose.SERVICE_PROVISION,
        categories=(DataCategory.IDENTITY,),
    )
    assert blocked["status"] == "draft"

    with relay_for(pg_settings, kafka) as relay:
        assert relay.catch_up() > 0
        assert relay.catch_up() == 0
    agencies = [a.agency_id for a in (DT_POLICE, DT_BORDER_GUARD, DT_SWC, DT_HOSPITAL)]
    reader = FeedReader(kafka, agencies, keys)
    try:
        reader.read_until(12 + 10 + 29 + 9, settle=1.0)
    finally:
        reader.close()
    police, guard = reader.of(DT_POLICE.agency_id), reader.of(DT_BORDER_GUARD.agency_id)
    swc, hospital = reader.of(DT_SWC.agency_id), reader.of(DT_HOSPITAL.agency_id)
    for record in reader.records:
        check_envelope(record)
    handover = [
        "handover_started",
        "handover_confirmed",
        "handover_confirmed",
        "handover_confirmed",
        "handover_completed",
    ]

    # The border guard witnessed the two night handovers: that is all it reads, and no
    # personal data comes with it.
    assert sorted(types_of(guard)) == sorted(handover * 2)
    assert all(r.data["audience"] == "party" for r in guard)

    # The police: the two handovers, and the criminal-case referral once dispatched, with
    # what the criminal case requires. Of the blocked referral, nothing at all.
    referrals_to_police = [r for r in police if not r.ce_type.startswith("org.ketnoi.referral.h")]
    assert sorted(types_of(police)) == sorted(handover * 2 + ["dispatched", "acknowledged"])
    assert all(r.key.decode() != blocked["referral_id"] for r in police)
    assert types_of(referrals_to_police) == ["dispatched", "acknowledged"]
    dispatched = referrals_to_police[0].data
    assert dispatched["audience"] == "recipient"
    assert dispatched["purpose"] == "criminal_proceedings"
    assert set(dispatched["disclosure"]["data"]) == {"identity", "legal_case"}
    assert dispatched["disclosure"]["data"]["identity"]["full_name"] == "Phạm Thị Lan"
    assert referrals_to_police[1].data["disclosure"] is None

    # The hospital: the two health-check referrals, from dispatch on; the identity the
    # women consented to share, in the dispatch only.
    hospital_types = Counter(types_of(hospital))
    assert hospital_types == {
        "dispatched": 2,
        "acknowledged": 2,
        "accepted": 2,
        "started": 2,
        "completed": 1,
    }
    with_data = [r for r in hospital if r.data["disclosure"] and r.data["disclosure"]["data"]]
    assert [types_of([r]) for r in with_data] == [["dispatched"], ["dispatched"]]
    assert {r.data["disclosure"]["data"]["identity"]["full_name"] for r in with_data} == set(NAMES)
    assert all(set(r.data["disclosure"]["data"]) == {"identity"} for r in with_data)
    assert all(r.data["audience"] == "recipient" for r in hospital)
    # Each agency gets its own key: the sender's (it holds the case) opens its own reasons,
    # never the recipient's data; an agency with no tie to the referral does not learn it
    # exists.
    key_id = with_data[0].wire["disclosure"]["sealed"]["key_id"]
    senders_key = keys.key(DT_SWC.agency_id, key_id)
    assert senders_key is not None
    assert senders_key != keys.key(DT_HOSPITAL.agency_id, key_id)
    with pytest.raises(InvalidTag):
        open_sealed(senders_key, with_data[0].wire)
    assert keys.key("lao-cai-police", key_id) is None
    assert keys.answers[-1] == ("lao-cai-police", key_id, 404)

    # The outcome of the completed referral: sealed for the sender and for the recipient,
    # each opening it with its own key; on the wire, ciphertext only.
    outcome = "Health check done the same night; no urgent treatment."
    completed = [r for r in reader.records if r.ce_type.endswith(".completed.v1")]
    assert sorted(reader.topics[r.topic] for r in completed) == [
        DT_HOSPITAL.agency_id,
        DT_SWC.agency_id,
    ]
    for record in completed:
        assert "reason" not in record.wire
        assert record.wire["sealed_reason"]["key_id"] == record.key.decode()
        assert outcome.encode() not in record.value
        assert record.data["reason"] == outcome
    hospital_copy, swc_copy = sorted(completed, key=lambda r: reader.topics[r.topic])
    assert hospital_copy.wire["sealed_reason"] != swc_copy.wire["sealed_reason"]
    # Steps with no free text carry no sealed reason.
    assert all(r.wire["sealed_reason"] is None for r in hospital if r not in completed)

    # A handover's key goes to its parties that hold the case; a witness that does not hold
    # it reads nothing of the person (403), a stranger does not learn the handover exists.
    handover_id = guard[0].key.decode()
    assert keys.key(DT_SWC.agency_id, handover_id) is not None
    assert keys.key(DT_BORDER_GUARD.agency_id, handover_id) is None
    assert keys.key("lao-cai-police", handover_id) is None
    assert keys.answers[-2:] == [
        (DT_BORDER_GUARD.agency_id, handover_id, 403),
        ("lao-cai-police", handover_id, 404),
    ]

    # The social work centre sent every referral: it reads each step, never the data.
    assert Counter(types_of(swc)) == {
        "handover_started": 2,
        "handover_confirmed": 6,
        "handover_completed": 2,
        "created": 4,
        "disclosure_recorded": 3,
        "dispatched": 3,
        "acknowledged": 3,
        "accepted": 2,
        "started": 2,
        "completed": 1,
        "blocked": 1,
    }
    for record in swc:
        if record.data.get("disclosure"):
            assert record.data["disclosure"]["data"] is None
            assert record.data["disclosure"]["person_id"] is None
    blocked_msgs = [r for r in swc if r.key.decode() == blocked["referral_id"]]
    assert types_of(blocked_msgs) == ["created", "blocked"]
    assert blocked_msgs[1].data["withheld"][0]["verdict"] == "refused"

    # Only a recipient's disclosure carries personal data; free-text notes never travel.
    for record in reader.records:
        text = record.raw
        personal = any(name in text for name in NAMES)
        disclosed = bool((record.data.get("disclosure") or {}).get("data"))
        assert personal == disclosed, record.raw
        assert "No home visits" not in text  # the contact note stayed in the log

    # One referral's messages keep their order on its agency's topic.
    for records in (police, guard, swc, hospital):
        by_key: dict[bytes, list[int]] = {}
        for r in sorted(records, key=lambda r: (r.partition, r.offset)):
            by_key.setdefault(r.key, []).append(r.data["version"])
        assert all(v == sorted(v) for v in by_key.values())


def test_a_withdrawal_holds_the_recipients_data_until_a_new_disclosure(
    platform: Platform,
    pg_settings: Settings,
    kafka: KafkaSettings,
    keys: FeedKeyClient,
    tmp_path: Path,
) -> None:
    seeded = seed(platform, tmp_path)
    mai = next(c for c in seeded if c.key == "dong-thap-1")
    now = datetime.now(UTC)
    created = platform.referral.create_referral(
        CommandContext(actor=MANAGER),
        mai.case_id,
        from_agency=DT_SWC,
        to_agency_id=DT_HOSPITAL.agency_id,
        service_type=ServiceType.MEDICAL_CARE,
        urgency=Urgency.URGENT,
        purpose=Purpose.SERVICE_PROVISION,
        categories=(DataCategory.IDENTITY,),
    )
    rid = UUID(created["referral_id"])
    nurse = Actor(user_id="nurse-1", agency_id=DT_HOSPITAL.agency_id, role=Role.AGENCY_STAFF)
    platform.referral.answer(CommandContext(actor=nurse), rid, "acknowledge")
    record = platform.consent.get_record(mai.case_id)
    grant_id = next(iter(record.grants))
    platform.consent.withdraw(
        CommandContext(actor=MANAGER), mai.case_id, grant_id, heard_by=DT_SWC, reason="asked"
    )
    platform.catch_up()
    assert platform.referral.get_referral(rid).status.value == "on-hold"
    platform.consent.grant(
        CommandContext(actor=MANAGER),
        mai.case_id,
        categories=(DataCategory.IDENTITY,),
        recipients=(Recipient(agency_id=DT_HOSPITAL.agency_id),),
        purposes=(Purpose.SERVICE_PROVISION,),
        valid_from=now - timedelta(days=1),
        valid_until=now + timedelta(days=30),
        collection=record.grants[grant_id].collection,
        given_by=record.grants[grant_id].given_by,
    )
    platform.catch_up()
    assert platform.referral.get_referral(rid).status.value == "received"

    with relay_for(pg_settings, kafka) as relay:
        relay.catch_up()
    reader = FeedReader(kafka, [DT_HOSPITAL.agency_id], keys)
    try:
        reader.read_until(1_000, timeout=3)
    finally:
        reader.close()
    mine = [r for r in reader.records if r.key.decode() == str(rid)]
    assert types_of(mine) == [
        "dispatched",
        "acknowledged",
        "put_on_hold",
        "disclosure_recorded",
        "resumed",
    ]
    data = [bool(r.data["disclosure"] and r.data["disclosure"]["data"]) for r in mine]
    assert data == [True, False, False, True, False]
    assert mine[2].data["status"] == "on-hold"
    assert {w["verdict"] for w in mine[2].data["withheld"]} == {"withdrawn"}
    assert mine[3].data["disclosure"]["data"]["identity"]["full_name"] == NAMES[0]


def test_a_feed_published_again_after_a_withdrawal_carries_no_data_and_reads_are_recorded(
    platform: Platform,
    pg_settings: Settings,
    kafka: KafkaSettings,
    keys: FeedKeyClient,
    tmp_path: Path,
) -> None:
    """The relay decides what the recipient reads when it publishes, on the consent log at its
    head: published again after a withdrawal (``ketnoi feed --reset``), the dispatch no longer
    carries the person's name; each message that did carry it is a recorded read."""
    seeded = seed(platform, tmp_path)
    mai = next(c for c in seeded if c.key == "dong-thap-1")
    created = platform.referral.create_referral(
        CommandContext(actor=MANAGER),
        mai.case_id,
        from_agency=DT_SWC,
        to_agency_id=DT_HOSPITAL.agency_id,
        service_type=ServiceType.MEDICAL_CARE,
        urgency=Urgency.URGENT,
        purpose=Purpose.SERVICE_PROVISION,
        categories=(DataCategory.IDENTITY,),
    )
    rid = UUID(created["referral_id"])
    assert platform.read_audit is not None
    before = [r for r in platform.read_audit.all_reads() if r.what == "referral.feed"]

    reader = FeedReader(kafka, [DT_HOSPITAL.agency_id], keys)
    try:

        def dispatches() -> list[Received]:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                mine = [r for r in reader.records if r.key.decode() == str(rid)]
                if published == sum(r.ce_type.endswith(".dispatched.v1") for r in mine):
                    return [r for r in mine if r.ce_type.endswith(".dispatched.v1")]
                reader.poll()
            raise AssertionError("the dispatch did not reach the hospital's topic")

        with relay_for(pg_settings, kafka) as relay:
            relay.catch_up()
            published = 1
            (first,) = dispatches()
            assert first.data["disclosure"]["data"]["identity"]["full_name"] == NAMES[0]

            record = platform.consent.get_record(mai.case_id)
            withdrawn_at = datetime.now(UTC)
            for grant_id in record.grants:
                platform.consent.withdraw(
                    CommandContext(actor=MANAGER),
                    mai.case_id,
                    grant_id,
                    heard_by=DT_SWC,
                    reason="asked",
                )
            # The referral service has not read the withdrawal yet: the relay reads the
            # consent log itself, so its copy lagging behind changes nothing.
            relay.start_over()
            relay.catch_up()
            published = 2
            _, again = sorted(dispatches(), key=lambda r: r.offset)
        reader.read_until(10_000, timeout=3)  # the rest of what both runs published
    finally:
        reader.close()
    assert again.ce_id == first.ce_id  # the same event, published again
    assert again.data["disclosure"]["data"] is None
    assert again.data["disclosure"]["person_id"] is None
    assert again.data["disclosure"]["released"] == first.data["disclosure"]["released"]
    assert NAMES[0] not in json.dumps(again.data, ensure_ascii=False)

    seen_before = {b.originator_id for b in before}
    reads = [
        r
        for r in platform.read_audit.all_reads()
        if r.what == "referral.feed"
        and r.originator_id not in seen_before
        and r.actor.agency_id == DT_HOSPITAL.agency_id
    ]
    # Every message to the hospital that carried data or a reason, and only those, is a
    # recorded read.
    carried = [
        r
        for r in reader.records
        if (r.wire.get("disclosure") and r.wire["disclosure"]["sealed"] is not None)
        or r.wire["sealed_reason"] is not None
    ]
    assert len(reads) == len(carried) >= 1
    assert all(r.basis.value == "grant" and r.grant_ids for r in reads)
    assert all(r.actor.user_id == "ketnoi-feed" for r in reads)
    # Mai's data went out in the first run only, on grants in force then.
    assert any(r.case_id == mai.case_id for r in reads)
    assert all(r.timestamp < withdrawn_at for r in reads if r.case_id == mai.case_id)
    # Fetching the key that opened it is a recorded read too; after the withdrawal the
    # hospital no longer gets it.
    key_reads = [
        r
        for r in platform.read_audit.all_reads()
        if r.what == "referral.feed_key" and r.case_id == mai.case_id
    ]
    assert key_reads
    assert all(r.actor.agency_id == DT_HOSPITAL.agency_id for r in key_reads)
    assert all(r.timestamp < withdrawn_at for r in key_reads)
    keys.forget()
    assert keys.key(DT_HOSPITAL.agency_id, str(rid)) is None
    assert keys.answers[-1] == (DT_HOSPITAL.agency_id, str(rid), 403)


def test_the_reference_subscriber_prints_each_event_once_and_commits(
    platform: Platform, pg_settings: Settings, kafka: KafkaSettings, tmp_path: Path
) -> None:
    seed(platform, tmp_path)
    with relay_for(pg_settings, kafka) as relay:
        relay.catch_up()
        relay._reset()  # publish everything a second time, as after a crash
        relay._position = 0
        relay.catch_up()
    env = {**os.environ, **kafka_env(kafka), "KETNOI_LOG_FORMAT": "json"}
    args = ["subscribe", "--agency", DT_HOSPITAL.agency_id, "--dedup-file", "seen.txt"]

    def subscribe(*extra: str) -> list[dict[str, object]]:
        done = subprocess.run(
            [*KETNOI, *args, *extra],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return [json.loads(line) for line in done.stdout.splitlines()]

    first = subscribe("--idle-timeout", "4")
    assert Counter(str(e["type"]).split(".")[-2] for e in first) == {
        "dispatched": 2,
        "acknowledged": 2,
        "accepted": 2,
        "started": 2,
        "completed": 1,
    }
    assert len({e["id"] for e in first}) == len(first) == 9  # each once, though sent twice
    assert all(set(e) == {"type", "id", "subject", "time", "data"} for e in first)
    assert len((tmp_path / "seen.txt").read_text().split()) == 9
    # Offsets were committed: the same group reads nothing again.
    assert subscribe("--idle-timeout", "3") == []
