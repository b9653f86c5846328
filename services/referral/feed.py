"""The agency feed relay: the referral log, re-published on Kafka, one topic per agency.

It reads the referral log from its tracked position, turns each event into the messages of
the agencies it concerns (``feed_messages``), sends a batch, flushes it (``acks=all``) and
only then records the position of the batch's last event; the next batch is read and built
while the broker acknowledges, but sent only after. A relay killed mid-batch starts again
from that position and publishes part of a batch twice: delivery is at least once, and
subscribers de-duplicate by ``ce_id``. Kafka is never the system of record: a relay with an
empty tracking table (``ketnoi feed --reset``) re-publishes the whole log.

Where the position is kept: ``feed_tracking``. The relay wakes on PostgreSQL NOTIFY, or on an
in-process prompt, and polls as a safety net.

Personal data in a message passes the access policy when the message is built, against the
consent log read at its head (``ConsentAtHead``), not against the referral service's copy of
it, and is sealed under a key derived from the person's data key (``feed_keys``); each message
that carries data is recorded in the read audit before its batch is sent, and a batch whose
reads cannot be recorded is not sent (it is retried like any failed batch).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import (
    IntegrityError,
    PersistenceError,
    Tracking,
    TrackingRecorder,
)
from kafka import KafkaProducer  # type: ignore[import-untyped]
from kafka.partitioner.default import murmur2  # type: ignore[import-untyped]
from psycopg import sql
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.access_policy import Sight
from contracts.audit import PersonalDataRead
from contracts.consent import consent_record_id
from contracts.envelope import Event
from services.referral.application import ReferralService
from services.referral.domain import Referral
from services.referral.feed_keys import FeedKeys
from services.referral.feed_messages import FEED_EVENTS, FeedMessage, FeedView, recipient_sight
from services.referral.feed_tracking import UPSTREAM, close_recorder, forget_position
from services.runtime.application import ServiceApplication
from services.runtime.follower import Lag, Upstream, open_upstream, upstream_lag
from services.runtime.kafka import (
    KafkaError,
    KafkaSettings,
    ensure_topics,
    producer,
    topic_for_agency,
)
from services.runtime.logging import get_logger
from services.runtime.persistence import decode_all, select_events_of
from services.runtime.person_keys import person_keys
from services.runtime.read_audit import ReadAuditLog, audit_env
from services.runtime.settings import Settings

log = get_logger("ketnoi.feed")


class FeedSettings(BaseSettings):
    """How the relay reads and retries (prefix ``KETNOI_FEED_``)."""

    model_config = SettingsConfigDict(env_prefix="KETNOI_FEED_", extra="ignore")

    batch_size: int = Field(default=500, ge=1)
    poll_interval: float = Field(default=1.0, gt=0)
    # How long a batch may take to be acknowledged before the relay gives it up and retries.
    flush_timeout: float = Field(default=10.0, gt=0)
    # The relay's producer (it flushes each batch itself; see FeedRelay._send).
    linger_ms: int = Field(default=1_000, ge=0)
    batch_bytes: int = Field(default=131_072, ge=1)
    retry_backoff: float = Field(default=0.2, gt=0)
    retry_backoff_max: float = Field(default=5.0, gt=0)
    cache_size: int = Field(default=10_000, ge=1)


def open_feed_upstream(settings: Settings, app: ServiceApplication | None = None) -> Upstream:
    """The referral log, as the relay reads it (a small pool of its own without ``app``)."""
    small = settings.model_copy(update={"pg_pool_size": 2, "pg_max_overflow": 2})
    return open_upstream(small, UPSTREAM, FEED_EVENTS, app=app)


def open_consent_upstream(settings: Settings, app: ServiceApplication | None = None) -> Upstream:
    """The consent log, as the relay reads it to decide what a recipient may read now."""
    small = settings.model_copy(update={"pg_pool_size": 1, "pg_max_overflow": 2})
    return open_upstream(small, "consent", ReferralService.follows["consent"], app=app)


class ConsentAtHead:
    """A case's consent record, read from the consent log at its head.

    The records read are kept until ``forget`` (the relay forgets them before each batch), so
    a batch with many messages of one case reads its record once.
    """

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self._topics = frozenset(upstream.topics)
        self._records: dict[UUID, list[Event]] = {}

    def events_of(self, case_id: UUID) -> list[Event]:
        events = self._records.get(case_id)
        if events is None:
            stored = self.upstream.recorder.select_events(consent_record_id(case_id))
            mapper = self.upstream.mapper
            events = decode_all(mapper, [s for s in stored if s.topic in self._topics])
            self._records[case_id] = events
        return events

    def prefetch(self, case_ids: Iterable[UUID]) -> None:
        """Read the records of these cases not held yet, in one query (``events_of`` then
        finds them)."""
        missing = {consent_record_id(c): c for c in case_ids if c not in self._records}
        if not missing:
            return
        found = select_events_of(self.upstream.recorder, list(missing))
        wanted = {r: [s for s in stored if s.topic in self._topics] for r, stored in found.items()}
        decoded = iter(
            decode_all(self.upstream.mapper, [s for stored in wanted.values() for s in stored])
        )
        for record_id, stored in wanted.items():
            self._records[missing[record_id]] = [next(decoded) for _ in stored]

    def release(self, referral: Referral, at: datetime) -> Sight:
        """What the referral's recipient may read of its data at ``at``."""
        return recipient_sight(referral, self.events_of(referral.spec.case_id), at)

    def forget(self) -> None:
        self._records.clear()


ProducerFactory = Callable[[KafkaSettings], KafkaProducer]


@dataclass(frozen=True)
class Batch:
    """A stretch of the referral log, the messages it makes and the reads they carry."""

    last: int  # the notification id of its last event: the position to track
    events: int
    messages: list[FeedMessage]
    reads: list[PersonalDataRead] = field(default_factory=list)


class FeedRelay:
    """Publishes the referral log's events to the agencies they concern, at least once."""

    def __init__(
        self,
        upstream: Upstream,
        tracking: TrackingRecorder,
        kafka: KafkaSettings,
        *,
        settings: Settings,
        feed: FeedSettings | None = None,
        producer_factory: ProducerFactory = producer,
        consent: Upstream | None = None,
        audit: ReadAuditLog | None = None,
    ) -> None:
        """``consent`` and ``audit`` default to readers and writers of the relay's own (an
        in-process relay passes the platform's, which it does not close)."""
        self.upstream = upstream
        self.tracking = tracking
        self.kafka = kafka
        self.settings = settings
        self.feed = feed or FeedSettings()
        self.producer_factory = producer_factory
        self._owns = (consent is None, audit is None)
        self.consent = ConsentAtHead(consent or open_consent_upstream(settings))
        self.audit = audit or ReadAuditLog(env=audit_env(settings))
        self.view = FeedView(
            upstream.recorder,
            upstream.mapper,
            self.feed.cache_size,
            release=self.consent.release,
            keys=FeedKeys(person_keys(settings)),
        )
        self.prompt = threading.Event()
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self.published = 0  # messages acknowledged by the broker, duplicates included
        self._producer: KafkaProducer | None = None
        self._topics: set[str] = set()
        # Each topic's partitions, learnt from the producer once: asking it again for every
        # batch waited on its metadata lock, a fifth of the relay's time. Forgotten with the
        # producer after a failure (``_reset``), so a changed topic is learnt again.
        self._partitions: dict[str, list[int]] = {}
        self._topic_names: dict[str, str] = {}  # agency id -> its topic
        self._position: int | None = None
        self._thread: threading.Thread | None = None
        self._running = False
        # Waits for the broker's acknowledgements while the next batch is read.
        self._flusher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feed-flush")

    def start_over(self) -> int | None:
        """Forget the tracked position: the relay publishes the whole log again, from its
        start (subscribers de-duplicate by ``ce_id``). Returns the position forgotten."""
        forgotten = forget_position(self.tracking, self.upstream.name)
        self._position = None
        log.info("feed_reset", forgotten=forgotten)
        return forgotten

    # -- one batch -----------------------------------------------------------------------

    @property
    def acknowledged(self) -> int | None:
        """The position this relay last knew acknowledged (None before it read one)."""
        return self._position

    def position(self) -> int:
        """The last notification id whose messages the broker acknowledged."""
        if self._position is None:
            self._position = self.tracked()
        return self._position

    def tracked(self) -> int:
        """The position in the tracking table, wherever the relay that last ran left it."""
        return self.tracking.max_tracking_id(self.upstream.name) or 0

    def run_once(self) -> int:
        """Publish the next batch of the log; returns how many events it held.

        Sends the batch, flushes it (acks=all) and only then tracks its last position.
        Raises whatever the broker or the database raised; nothing is tracked then, and the
        next call starts again from the last tracked position.
        """
        batch = self._read(self.position())
        if batch is None:
            return 0
        self._record(batch.reads)
        futures = self._send(batch.messages)
        self._flush()
        self._acknowledged(batch, futures)
        return batch.events

    def catch_up(self, until: int | None = None) -> int:
        """Publish until nothing is pending, or up to the batch that reaches position
        ``until``; returns how many events were published.

        As ``run_once`` batch after batch, except that the next batch is read and built
        while the broker acknowledges the one before. It is sent only once that one is
        acknowledged and tracked, so a failed batch is never overtaken by a later one.
        """
        total = 0
        batch = self._read(self.position())
        while batch is not None and not self.stopping.is_set():
            self._record(batch.reads)
            futures = self._send(batch.messages)
            flushed = self._flusher.submit(self._flush)
            more = not self.stopping.is_set() and (until is None or batch.last < until)
            try:
                upcoming = self._read(batch.last) if more else None
            finally:
                flushed.result()
            self._acknowledged(batch, futures)
            total += batch.events
            batch = upcoming
        return total

    def _read(self, after: int) -> Batch | None:
        """The events after position ``after`` (up to a batch) and their messages."""
        notifications = self.upstream.recorder.select_notifications(
            start=after + 1, limit=self.feed.batch_size, topics=self.upstream.topics
        )
        if not notifications:
            return None
        mapper, messages_for = self.upstream.mapper, self.view.messages_for
        self.consent.forget()  # each batch decides on the consent log as it is now
        self.view.take_reads()  # what a batch given up before left behind
        events = decode_all(mapper, notifications)
        # The referrals to rebuild and the consent records the batch needs, read ahead: a
        # query each per batch instead of one per referral and one per case.
        self.consent.prefetch(self.view.prepare(events))
        messages: list[FeedMessage] = []
        for event in events:
            messages += messages_for(event)
        return Batch(
            last=notifications[-1].id,
            events=len(notifications),
            messages=messages,
            reads=self.view.take_reads(),
        )

    def _record(self, reads: list[PersonalDataRead]) -> None:
        """Record the reads a batch carries, durably, before any of it is sent."""
        if reads:
            self.audit.save(*reads)

    def _flush(self) -> None:
        if self._producer is not None:
            self._producer.flush(timeout=self.feed.flush_timeout)

    def _acknowledged(self, batch: Batch, futures: list[Any]) -> None:
        """After the flush: check every message was acknowledged, then track the batch."""
        refused = next((f for f in futures if not f.succeeded()), None)
        if refused is not None:
            refused.get(timeout=0)  # raises the broker's error, or a timeout if it never came
        self.published += len(futures)
        self._track(batch.last)
        self._position = batch.last
        log.debug("feed_published", events=batch.events, messages=len(futures), to=batch.last)

    def _send(self, messages: Sequence[FeedMessage]) -> list[Any]:
        if not messages:
            return []
        topics = [self._topic_for(m.agency_id) for m in messages]
        new = set(topics) - self._topics
        if new:
            ensure_topics(self.kafka, sorted(new))
            self._topics |= new
        if self._producer is None:
            # The relay flushes every batch itself, so a long linger costs no latency: it
            # only stops the producer sending half-empty batches while a batch is handed
            # over (each new batch wakes its sender thread, which then contends for the GIL).
            tuned = {"linger_ms": self.feed.linger_ms, "batch_size": self.feed.batch_bytes}
            self._producer = self.producer_factory(self.kafka.model_copy(update=tuned))
        # Learns a new topic's partitions and leaders before sending to it.
        partitions = self._partitions
        for topic in set(topics) - partitions.keys():
            partitions[topic] = sorted(self._producer.partitions_for(topic))
        # The partition the producer's default partitioner would choose (murmur2 of the
        # key), hashed once per referral in the batch rather than once per message.
        hashes: dict[bytes, int] = {}
        send = self._producer.send
        futures = []
        for topic, m in zip(topics, messages, strict=True):
            hashed = hashes.get(m.key)
            if hashed is None:
                hashed = hashes[m.key] = murmur2(m.key) & 0x7FFFFFFF
            choices = partitions[topic]
            partition = choices[hashed % len(choices)]
            futures.append(
                send(topic, key=m.key, value=m.value, headers=m.headers, partition=partition)
            )
        return futures

    def _topic_for(self, agency_id: str) -> str:
        topic = self._topic_names.get(agency_id)
        if topic is None:
            topic = self._topic_names[agency_id] = topic_for_agency(self.kafka, agency_id)
        return topic

    def _track(self, position: int) -> None:
        try:
            self.tracking.insert_tracking(Tracking(self.upstream.name, position))
        except IntegrityError:
            # The table keeps the furthest position: another relay (a deployment overlap)
            # or an earlier run got further. Re-publishing what it published is harmless.
            if not self.tracking.has_tracking_id(self.upstream.name, position):
                raise

    def _reset(self) -> None:
        """After a failure: forget the producer (an idempotent one may be broken for good
        on Tansu, see services.runtime.kafka), the topics and the position."""
        stale, self._producer = self._producer, None
        if stale is not None:
            try:
                stale.close(timeout=0)
            except Exception:
                log.warning("feed_producer_close_failed", exc_info=True)
        self._topics.clear()
        self._partitions.clear()
        self._position = None

    # -- running -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the loop runs and its last round ended without an error."""
        return self._running and self.error is None

    def lag(self) -> list[Lag]:
        """How far the acknowledged position is behind the referral log (reads the log).

        A relay that does not run (a standby) reads the tracked position: the one another
        relay, the leader, keeps moving."""
        position = self._position if self._running else None
        if position is None:
            position = self.tracked()
        return [upstream_lag(self.upstream, position, self.upstream.topics)]

    def start(self) -> None:
        """Run the loop in a thread, from the tracked position; again after ``stop`` too
        (a relay that lost its lock and takes it again continues where the other left)."""
        previous = self._thread
        if previous is not None and previous.is_alive():
            self.stop_soon()
            previous.join()  # it ends after the batch in hand
        self.stopping.clear()
        self.error = None
        self._position = None  # read again: another relay may have got further since
        self._thread = threading.Thread(target=self.run, name="feed-relay", daemon=True)
        self._thread.start()

    def stop_soon(self) -> None:
        """Ask the loop to stop after the batch in hand (safe from a signal handler)."""
        self.stopping.set()
        self.prompt.set()

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_soon()
        if self._thread is not None:
            self._thread.join(timeout)

    def prompt_soon(self) -> None:
        """Wake the loop (an in-process referral service calls this after it saves)."""
        self.prompt.set()

    def run(self) -> None:
        """Publish, then wait for a NOTIFY, a prompt or the poll interval; until stopped."""
        listener: psycopg.Connection[Any] | None = None
        backoff = self.feed.retry_backoff
        self._running = True
        try:
            while not self.stopping.is_set():
                try:
                    if listener is None:
                        listener = self._listen()
                    self.catch_up()
                except Exception as exc:
                    # Stall loudly rather than skip: nothing is tracked past this batch.
                    self.error = exc
                    log.warning(
                        "feed_batch_failed",
                        position=self._position,
                        error=type(exc).__name__,
                        detail=_describe(exc),
                        retry_in=backoff,
                    )
                    self._reset()
                    self.stopping.wait(backoff)
                    backoff = min(backoff * 2, self.feed.retry_backoff_max)
                    continue
                if self.error is not None:
                    log.info("feed_recovered", position=self._position)
                self.error = None
                backoff = self.feed.retry_backoff
                try:
                    self._wait(listener)
                except psycopg.Error:
                    log.warning("feed_listener_lost")
                    _close_connection(listener)
                    listener = None
                    self.stopping.wait(self.feed.poll_interval)
        finally:
            self._running = False
            _close_connection(listener)

    def _listen(self) -> psycopg.Connection[Any] | None:
        target = self.settings.postgres
        if target is None or not self.upstream.channel:
            return None
        conn = psycopg.connect(target.conninfo(), autocommit=True)
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.upstream.channel)))
        return conn

    def _wait(self, listener: psycopg.Connection[Any] | None) -> None:
        if listener is None:
            self.prompt.wait(self.feed.poll_interval)
            self.prompt.clear()
            return
        # A NOTIFY wakes us at once; otherwise the poll interval runs out (the safety net).
        for _ in listener.notifies(timeout=self.feed.poll_interval, stop_after=1):
            pass
        self.prompt.clear()

    def close(self) -> None:
        """Stop, close the producer (delivering what it holds) and the relay's connections."""
        self.stop()
        self._flusher.shutdown()
        if self._producer is not None:
            self._producer.close(timeout=5)
            self._producer = None
        close_recorder(self.tracking)
        owns_consent, owns_audit = self._owns
        if owns_consent:
            close_recorder(self.consent.upstream.recorder)
        if owns_audit:
            self.audit.close()


def prompt_on_save(app: ServiceApplication, relay: FeedRelay) -> None:
    """In one process (the embedded default), wake the relay when the referral log saves."""
    previous: Callable[[Any], None] = app._notify

    def notify(recordings: Any) -> None:
        previous(recordings)
        relay.prompt_soon()

    app._notify = notify  # type: ignore[method-assign]


def _describe(exc: BaseException) -> str | None:
    # Broker and database errors name topics and tables; others (a validation error, say)
    # may quote the data, so only their type is logged.
    if isinstance(exc, KafkaError | psycopg.Error | PersistenceError | OSError):
        return str(exc)[:300]
    return None


def _close_connection(conn: psycopg.Connection[Any] | None) -> None:
    if conn is not None:
        conn.close()
