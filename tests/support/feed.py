"""Helpers of the agency feed tests: settings of a test's own, a raw reader, the relay."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from kafka import KafkaConsumer, TopicPartition
from psycopg import sql

from services.referral.feed import FeedRelay, FeedSettings, open_feed_upstream
from services.referral.feed_tracking import FEED, tracking_recorder
from services.runtime.kafka import KafkaSettings, ensure_topics, topic_for_agency
from services.runtime.settings import Settings

# Fast group joins and fetches on Tansu (see tests/integration/test_kafka_runtime.py).
FAST = {
    "session_timeout_ms": 2_000,
    "heartbeat_interval_ms": 500,
    "fetch_max_wait_ms": 100,
    "request_timeout_ms": 5_000,
}


def feed_kafka_settings(bootstrap: str, **changes: Any) -> KafkaSettings:
    """Settings with a topic prefix of this test's own, so tests share a broker safely."""
    prefix = f"t{uuid.uuid4().hex[:10]}.agency."
    return KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=prefix, **FAST, **changes)


def kafka_env(kafka: KafkaSettings) -> dict[str, str]:
    """The same settings as environment variables, for ``ketnoi`` subprocesses."""
    return {
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers or "",
        "KETNOI_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "KETNOI_KAFKA_SESSION_TIMEOUT_MS": str(kafka.session_timeout_ms),
        "KETNOI_KAFKA_HEARTBEAT_INTERVAL_MS": str(kafka.heartbeat_interval_ms),
        "KETNOI_KAFKA_FETCH_MAX_WAIT_MS": str(kafka.fetch_max_wait_ms),
        "KETNOI_KAFKA_REQUEST_TIMEOUT_MS": str(kafka.request_timeout_ms),
    }


def drop_feed_schema(settings: Settings) -> None:
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                sql.Identifier(settings.schema_for(FEED))
            )
        )


@dataclass(frozen=True)
class Received:
    topic: str
    partition: int
    offset: int
    key: bytes
    headers: dict[str, str]
    data: dict[str, Any]

    @property
    def ce_id(self) -> str:
        return self.headers["ce_id"]

    @property
    def ce_type(self) -> str:
        return self.headers["ce_type"]

    @property
    def raw(self) -> str:
        return json.dumps([self.key.decode(), self.headers, self.data], ensure_ascii=False)


class FeedReader:
    """Reads agencies' topics from the beginning, without a group, and keeps every record."""

    def __init__(self, kafka: KafkaSettings, agencies: Iterable[str]) -> None:
        self.kafka = kafka
        self.topics = {topic_for_agency(kafka, a): a for a in agencies}
        ensure_topics(kafka, list(self.topics))
        self.consumer = KafkaConsumer(
            bootstrap_servers=kafka.bootstrap_list(),
            enable_auto_commit=False,
            fetch_max_wait_ms=kafka.fetch_max_wait_ms,
            request_timeout_ms=kafka.request_timeout_ms,
            reconnect_backoff_max_ms=500,
        )
        partitions = [
            TopicPartition(topic, p) for topic in self.topics for p in range(kafka.partitions)
        ]
        self.consumer.assign(partitions)
        self.consumer.seek_to_beginning(*partitions)
        self.records: list[Received] = []

    def poll(self, timeout_ms: int = 200) -> int:
        got = 0
        for records in self.consumer.poll(timeout_ms=timeout_ms).values():
            for r in records:
                headers = {k: v.decode() for k, v in r.headers}
                self.records.append(
                    Received(r.topic, r.partition, r.offset, r.key, headers, json.loads(r.value))
                )
                got += 1
        return got

    def read_until(self, count: int, timeout: float = 30.0, settle: float = 0.0) -> None:
        """Poll until ``count`` records arrived, then ``settle`` seconds more for extras."""
        deadline = time.monotonic() + timeout
        while len(self.records) < count and time.monotonic() < deadline:
            self.poll()
        settle_until = time.monotonic() + settle
        while time.monotonic() < settle_until:
            self.poll()

    def of(self, agency: str) -> list[Received]:
        return [r for r in self.records if self.topics[r.topic] == agency]

    def close(self) -> None:
        self.consumer.close()


@contextmanager
def relay_for(settings: Settings, kafka: KafkaSettings, **feed: Any) -> Iterator[FeedRelay]:
    """A relay in this process on PostgreSQL, with its own upstream reader."""
    upstream = open_feed_upstream(settings)
    relay = FeedRelay(
        upstream,
        tracking_recorder(settings),
        kafka,
        settings=settings,
        feed=FeedSettings(**feed),
    )
    try:
        yield relay
    finally:
        relay.close()
        upstream.recorder.datastore.close()  # type: ignore[attr-defined]
