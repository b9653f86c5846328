"""The agency feed on PostgreSQL and Kafka, each figure beside the broker's raw limit.

Run ``python -m bench.feed_latency`` (or ``make bench``). It creates a throwaway database on
the server named by ``KETNOI_BENCH_DATABASE_URL`` (a maintenance connection, by default
``postgresql://postgres@127.0.0.1:5432/postgres``) and uses the broker at
``KETNOI_BENCH_KAFKA_BOOTSTRAP``, or starts a throwaway Tansu broker (memory storage). Both
are removed again at the end.

Two figures of the feed, each the median over rounds, beside the raw limits that
``bench.kafka_raw`` measures on the same broker in the same run:

* commit-to-subscriber latency, p50 and p99: referrals are created and acknowledged through
  the referral service at a steady rate while ``ketnoi feed`` runs as its own process; a
  consumer assigned to the agencies' topics (no group, as in the raw measurement, with the
  same ``fetch_max_wait_ms``) notes when each message arrives. The clock starts when the
  command that wrote the event returns, that is after its commit;
* relay throughput: a backlog written straight into the referral log is published by the
  relay (in this process, from a tracked position just before it) until it is acknowledged
  and tracked. Its messages per second (messages the broker acknowledged, one per agency
  an event concerns) are set beside the raw producer's messages per second for values of
  the same size; events per second are reported too, without a ratio. Like the raw
  producer, whose clock starts after a first message has been acknowledged, the relay
  first publishes a few referrals (connecting its producer, creating the agencies' topics)
  before the clock starts.

It asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform as host
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Tracking
from kafka import KafkaConsumer, TopicPartition
from rich.console import Console
from rich.table import Table

from bench.agencies import register_agencies
from bench.intake_throughput import (
    DEFAULT_MAINTENANCE_URL,
    create_database,
    drop_database,
    server_version,
    with_dbname,
)
from bench.kafka_raw import measure_raw_limits, percentile, producer_throughput
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
from services.cli.wiring import Platform, migrate, start
from services.referral.domain import Referral
from services.referral.feed import FeedRelay, FeedSettings, open_feed_upstream
from services.referral.feed_tracking import in_memory_tracking
from services.runtime.aggregate import CommandContext
from services.runtime.kafka import KafkaSettings, ensure_topics, topic_for_agency
from services.runtime.logging import configure_logging
from services.runtime.settings import Settings
from services.runtime.tansu import TansuBroker

ENV_BOOTSTRAP = "KETNOI_BENCH_KAFKA_BOOTSTRAP"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
OFFICER = Actor(user_id="bench-officer", agency_id="bench-police", role=Role.INTAKE_OFFICER)
SENDERS = [
    AgencyRef(agency_id=f"bench-swc-{n}", kind=AgencyKind.SOCIAL_WORK_CENTRE) for n in (1, 2)
]
RECIPIENTS = [
    AgencyRef(agency_id=f"bench-hospital-{n}", kind=AgencyKind.HOSPITAL) for n in (1, 2, 3)
]
AGENCIES = [a.agency_id for a in (*SENDERS, *RECIPIENTS)]
ANSWERS = ("acknowledge", "accept", "start", "complete")

console = Console(stderr=True)


@dataclass(frozen=True)
class FeedFigures:
    latency_p50_ms: float
    latency_p99_ms: float
    latency_samples: int
    relay_events_per_s: float
    relay_messages_per_s: float
    backlog_events: int
    message_bytes: int


# --- the log ---------------------------------------------------------------------------------


def open_cases(platform: Platform, count: int) -> list[UUID]:
    """Cases whose person consented to identity going to any hospital."""
    now = datetime.now(UTC)
    ctx = CommandContext(actor=OFFICER)
    cases = []
    for n in range(count):
        case_id = UUID(
            platform.intake.record_reception(
                ctx,
                route=ArrivalRoute.RESCUED,
                received_at=now - timedelta(hours=1),
                place=Place(province="dong-thap"),
                receiving_agency=AgencyRef(agency_id="bench-police", kind=AgencyKind.POLICE),
            )["case_id"]
        )
        platform.intake.register_person(
            ctx, case_id, PersonDetails(full_name=f"Person {n}", sex=Sex.FEMALE, estimated_age=25)
        )
        cases.append(case_id)
    platform.catch_up()
    for case_id in cases:
        platform.consent.grant(
            ctx,
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


def write_backlog(platform: Platform, cases: list[UUID], referrals: int) -> int:
    """Referrals with every answer, saved a hundred at a time; returns the events written."""
    service = platform.referral
    written = 0
    for chunk in range(0, referrals, 100):
        case_file = service.get_case_file(cases[(chunk // 100) % len(cases)])
        batch = []
        for n in range(chunk, min(chunk + 100, referrals)):
            sender = SENDERS[n % len(SENDERS)]
            recipient = RECIPIENTS[n % len(RECIPIENTS)]
            ctx = CommandContext(
                actor=Actor(user_id="cw", agency_id=sender.agency_id, role=Role.CASE_MANAGER)
            )
            referral = Referral.create(
                ctx,
                case_file,
                from_agency=sender,
                to_agency=recipient,
                service_type=ServiceType.MEDICAL_CARE,
                urgency=Urgency.URGENT,
                purpose=Purpose.SERVICE_PROVISION,
                categories=(DataCategory.IDENTITY,),
                note=None,
                deadlines=service.referral_settings.deadlines_for(ServiceType.MEDICAL_CARE),
            )
            staff = CommandContext(
                actor=Actor(user_id="staff", agency_id=recipient.agency_id, role=Role.AGENCY_STAFF)
            )
            for action in ANSWERS:
                referral.answer(staff, action, "Done." if action == "complete" else None)
            batch.append(referral)
            written += referral.version
        service.save(case_file, *batch)
    return written


# --- latency ---------------------------------------------------------------------------------


class Arrivals:
    """A consumer of every agency's topic (no group) noting when each ce_id arrives."""

    def __init__(self, kafka: KafkaSettings, fetch_max_wait_ms: int) -> None:
        topics = [topic_for_agency(kafka, a) for a in AGENCIES]
        ensure_topics(kafka, topics)
        self.consumer = KafkaConsumer(
            bootstrap_servers=kafka.bootstrap_list(),
            enable_auto_commit=False,
            fetch_max_wait_ms=fetch_max_wait_ms,
        )
        partitions = [TopicPartition(t, p) for t in topics for p in range(kafka.partitions)]
        self.consumer.assign(partitions)
        self.consumer.seek_to_end(*partitions)
        self.consumer.poll(timeout_ms=100)
        self.at: dict[tuple[str, str], float] = {}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stopping.is_set():
            for records in self.consumer.poll(timeout_ms=100).values():
                now = time.perf_counter()
                for r in records:
                    ce_id = next(v for k, v in r.headers if k == "ce_id").decode()
                    self.at.setdefault((r.topic, ce_id), now)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.consumer.close()


Committed = list[tuple[UUID, range, float]]


def steady_load(
    platform: Platform, cases: list[UUID], seconds: float, commands_per_s: float
) -> Committed:
    """Create and acknowledge referrals at a steady rate; returns, per command, the referral,
    the versions of the events it wrote, and when it returned (after its commit)."""
    committed: Committed = []
    interval = 1 / commands_per_s
    started = time.perf_counter()
    n = 0
    while time.perf_counter() - started < seconds:
        sender, recipient = SENDERS[n % len(SENDERS)], RECIPIENTS[n % len(RECIPIENTS)]
        ctx = CommandContext(
            actor=Actor(user_id="cw", agency_id=sender.agency_id, role=Role.CASE_MANAGER)
        )
        created = platform.referral.create_referral(
            ctx,
            cases[n % len(cases)],
            from_agency=sender,
            to_agency_id=recipient.agency_id,
            service_type=ServiceType.MEDICAL_CARE,
            urgency=Urgency.URGENT,
            purpose=Purpose.SERVICE_PROVISION,
            categories=(DataCategory.IDENTITY,),
        )
        referral_id, dispatched = UUID(created["referral_id"]), int(created["version"])
        committed.append((referral_id, range(1, dispatched + 1), time.perf_counter()))
        time.sleep(max(0.0, started + (2 * n + 1) * interval - time.perf_counter()))
        staff = CommandContext(
            actor=Actor(user_id="staff", agency_id=recipient.agency_id, role=Role.AGENCY_STAFF)
        )
        acked = int(platform.referral.answer(staff, referral_id, "acknowledge")["version"])
        committed.append((referral_id, range(dispatched + 1, acked + 1), time.perf_counter()))
        n += 1
        time.sleep(max(0.0, started + 2 * n * interval - time.perf_counter()))
    return committed


def latency_round(
    platform: Platform, cases: list[UUID], kafka: KafkaSettings, args: argparse.Namespace
) -> list[float]:
    """Seconds from commit to arrival for every message of one round of steady load."""
    arrivals = Arrivals(kafka, args.fetch_max_wait_ms)
    arrivals.thread.start()
    try:
        committed = steady_load(platform, cases, args.seconds, args.rate)
        time.sleep(2)  # the stragglers
    finally:
        arrivals.close()
    when = {
        str(event_id_of(referral_id, v)): returned
        for referral_id, versions, returned in committed
        for v in versions
    }
    latencies = [at - when[ce_id] for (_, ce_id), at in arrivals.at.items() if ce_id in when]
    # Sender: every event; recipient: from the dispatch on (versions 3 and 4 here).
    expected = sum(len(versions) + 1 for _, versions, _ in committed)
    if len(latencies) != expected:
        msg = f"{expected - len(latencies)} of {expected} messages did not arrive in time"
        raise RuntimeError(msg)
    return latencies


@contextlib.contextmanager
def relay_process(settings: Settings, kafka: KafkaSettings, log: Path) -> Iterator[None]:
    env = {
        **os.environ,
        "KETNOI_DATABASE_URL": settings.database_url or "",
        "KETNOI_SCHEMA_PREFIX": settings.schema_prefix,
        "KETNOI_DATA_DIR": str(settings.data_dir),
        "KETNOI_LOG_FORMAT": "json",
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers or "",
        "KETNOI_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
    }
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from services.launch import main; main()", "feed"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=PROJECT_ROOT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while '"feed_started"' not in log.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                msg = f"ketnoi feed did not start: {log.read_text()[-2000:]}"
                raise RuntimeError(msg)
            time.sleep(0.1)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- throughput ------------------------------------------------------------------------------


def throughput_round(
    platform: Platform, cases: list[UUID], settings: Settings, bootstrap: str, referrals: int
) -> tuple[float, float, int, int]:
    """(events/s, messages/s, events, mean message bytes) of one relay catching up."""
    before = platform.referral.recorder.max_notification_id() or 0
    kafka = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=f"b{uuid.uuid4().hex[:8]}.")
    tracking = in_memory_tracking()
    tracking.insert_tracking(Tracking("referral", before))
    upstream = open_feed_upstream(settings)
    relay = FeedRelay(upstream, tracking, kafka, settings=settings, feed=FeedSettings())
    sizes: list[int] = []
    send = relay._send

    def measured(messages: Any) -> list[Any]:
        sizes.extend(len(m.value) for m in messages[:50])
        return send(messages)

    relay._send = measured  # type: ignore[method-assign]
    try:
        # The warm-up, as the raw producer's first message: a referral from every sender to
        # every recipient connects the producer and creates all the agencies' topics.
        write_backlog(platform, cases, len(SENDERS) * len(RECIPIENTS))
        relay.catch_up()
        warm_up = relay.published
        events = write_backlog(platform, cases, referrals)
        started = time.perf_counter()
        done = relay.catch_up()
        elapsed = time.perf_counter() - started
    finally:
        relay.close()
        upstream.recorder.datastore.close()  # type: ignore[attr-defined]
    assert done == events, (done, events)
    messages = relay.published - warm_up  # acknowledged by the broker, as the raw ones
    return events / elapsed, messages / elapsed, events, int(statistics.mean(sizes))


# --- the run ---------------------------------------------------------------------------------


@contextlib.contextmanager
def broker() -> Iterator[tuple[str, str]]:
    bootstrap = os.environ.get(ENV_BOOTSTRAP)
    if bootstrap:
        yield bootstrap, f"${ENV_BOOTSTRAP}"
        return
    with TansuBroker() as tansu:
        yield tansu.bootstrap, "Tansu (memory storage)"


@dataclass(frozen=True)
class RawFigures:
    """The broker's raw limits, medians over rounds measured between the relay's."""

    latency_p50_ms: float
    latency_p99_ms: float
    producer_msgs_per_s: float  # the project's producer settings (linger 5 ms, 16 KiB)
    tuned_producer_msgs_per_s: float  # the relay's producer settings
    crc32c: bool
    idempotent: bool

    @property
    def best_producer_msgs_per_s(self) -> float:
        return max(self.producer_msgs_per_s, self.tuned_producer_msgs_per_s)


def measure(args: argparse.Namespace, url: str, bootstrap: str) -> tuple[FeedFigures, RawFigures]:
    workdir = Path(tempfile.mkdtemp(prefix="ketnoi-bench-feed-"))
    settings = Settings(database_url=url, schema_prefix="bench_", data_dir=workdir)
    migrate(settings)
    register_agencies(settings, (*SENDERS, *RECIPIENTS), "dong-thap")
    platform = start(settings, ("intake", "consent", "referral"), run_followers=False)
    try:
        cases = open_cases(platform, 20)
        kafka = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=f"b{uuid.uuid4().hex[:8]}.")
        p50s, p99s, counts = [], [], []
        with relay_process(settings, kafka, workdir / "feed.log"):
            steady_load(platform, cases, 1.0, args.rate)  # warm-up
            time.sleep(1)
            for r in range(args.rounds):
                samples = latency_round(platform, cases, kafka, args)
                p50s.append(percentile(samples, 0.50) * 1000)
                p99s.append(percentile(samples, 0.99) * 1000)
                counts.append(len(samples))
                console.print(
                    f"latency round {r + 1}: {len(samples)} messages, "
                    f"p50 {p50s[-1]:.1f} ms, p99 {p99s[-1]:.1f} ms"
                )
        rates, message_rates, sizes, raws, tuned = [], [], [], [], []
        events = 0
        relay_producer = FeedSettings()
        tuned_settings = KafkaSettings(
            linger_ms=relay_producer.linger_ms, batch_size=relay_producer.batch_bytes
        )
        for r in range(args.rounds):
            # Interleaved, so that a noisy neighbour slows both alike.
            per_s, msgs_per_s, events, size = throughput_round(
                platform, cases, settings, bootstrap, args.backlog // 7
            )
            rates.append(per_s)
            message_rates.append(msgs_per_s)
            sizes.append(size)
            raw = measure_raw_limits(
                bootstrap, rounds=1, size=size, fetch_max_wait_ms=args.fetch_max_wait_ms
            )
            raws.append(raw)
            raw_topic = f"bench.raw-{uuid.uuid4().hex[:8]}"
            tuned_kafka = tuned_settings.model_copy(update={"bootstrap_servers": bootstrap})
            ensure_topics(tuned_kafka, [raw_topic])
            tuned.append(producer_throughput(tuned_kafka, raw_topic, 20_000, size))
            console.print(
                f"throughput round {r + 1}: relay {events} events, {per_s:,.0f} events/s, "
                f"{msgs_per_s:,.0f} messages/s; raw producer {raw.throughput_msgs_per_s:,.0f} "
                f"messages/s, with the relay's settings {tuned[-1]:,.0f}"
            )
    finally:
        platform.close()
        shutil.rmtree(workdir, ignore_errors=True)
    figures = FeedFigures(
        latency_p50_ms=statistics.median(p50s),
        latency_p99_ms=statistics.median(p99s),
        latency_samples=int(statistics.median(counts)),
        relay_events_per_s=statistics.median(rates),
        relay_messages_per_s=statistics.median(message_rates),
        backlog_events=events,
        message_bytes=int(statistics.median(sizes)),
    )
    limits = RawFigures(
        latency_p50_ms=statistics.median(r.latency_p50_ms for r in raws),
        latency_p99_ms=statistics.median(r.latency_p99_ms for r in raws),
        producer_msgs_per_s=statistics.median(r.throughput_msgs_per_s for r in raws),
        tuned_producer_msgs_per_s=statistics.median(tuned),
        crc32c=raws[0].crc32c,
        idempotent=raws[0].idempotent,
    )
    return figures, limits


def report(feed: FeedFigures, raw: RawFigures, args: argparse.Namespace) -> None:
    table = Table(title="Agency feed beside the broker's raw limits (medians over rounds)")
    for column in ("measurement", "feed", "raw Kafka", "ratio", "goal"):
        table.add_column(column, justify="right")
    table.add_row(
        "latency p50 (ms)",
        f"{feed.latency_p50_ms:.1f}",
        f"{raw.latency_p50_ms:.1f}",
        f"{feed.latency_p50_ms / raw.latency_p50_ms:.2f}",
        "",
    )
    table.add_row(
        "latency p99 (ms)",
        f"{feed.latency_p99_ms:.1f}",
        f"{raw.latency_p99_ms:.1f}",
        f"{feed.latency_p99_ms / raw.latency_p99_ms:.2f}",
        "feed <= 250 ms: " + ("met" if feed.latency_p99_ms <= 250 else "MISSED"),
    )
    best = raw.best_producer_msgs_per_s
    ratio = feed.relay_messages_per_s / best
    table.add_row(
        "messages/s",
        f"{feed.relay_messages_per_s:,.0f}",
        f"{best:,.0f}",
        f"{ratio:.2f}",
        ">= 0.5: " + ("met" if ratio >= 0.5 else "MISSED"),
    )
    table.add_row("events/s", f"{feed.relay_events_per_s:,.0f}", "", "", "")
    console.print(table)
    console.print(
        "messages/s: the relay's messages acknowledged by the broker (one per agency an event "
        "concerns) beside the raw producer's, both counted from after a warm-up; the ratio is "
        "messages/s over messages/s. "
        f"raw producer: {raw.producer_msgs_per_s:,.0f} messages/s with the project's settings, "
        f"{raw.tuned_producer_msgs_per_s:,.0f} with the relay's (the better one is the limit); "
        f"steady load {args.rate:g} commands/s for {args.seconds:g} s a round; backlog "
        f"{feed.backlog_events} events a round; messages about {feed.message_bytes} B; "
        f"fetch_max_wait_ms={args.fetch_max_wait_ms}; kafka-python {version('kafka-python')}, "
        f"crc32c={raw.crc32c}, idempotent={raw.idempotent}; Python "
        f"{host.python_version()}, {os.cpu_count()} CPUs"
    )
    print({"feed": asdict(feed), "raw": asdict(raw)})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=20, help="commands per second")
    parser.add_argument("--seconds", type=float, default=8, help="of steady load a round")
    parser.add_argument("--backlog", type=int, default=10_000, help="events a round")
    parser.add_argument("--fetch-max-wait-ms", type=int, default=100)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("json", "warning")
    maintenance_url = os.environ.get("KETNOI_BENCH_DATABASE_URL", DEFAULT_MAINTENANCE_URL)
    dbname = f"ketnoi_bench_{secrets.token_hex(4)}"
    create_database(maintenance_url, dbname)
    try:
        with broker() as (bootstrap, what):
            console.print(
                f"broker: {what} at {bootstrap}; PostgreSQL "
                f"{server_version(with_dbname(maintenance_url, dbname))}"
            )
            feed, raw = measure(args, with_dbname(maintenance_url, dbname), bootstrap)
    finally:
        drop_database(maintenance_url, dbname)
    report(feed, raw, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
