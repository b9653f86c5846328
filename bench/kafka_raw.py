"""The raw limits of the agency feed's broker: kafka-python alone, no Ketnoi code in the path.

Run ``python -m bench.kafka_raw``. It uses the broker at ``KETNOI_BENCH_KAFKA_BOOTSTRAP``, or
starts a throwaway Tansu broker (memory storage) on a free loopback port and stops it again.

Two figures, each the median over rounds, for messages shaped like the feed's (a 36-byte key,
a few hundred bytes of value, five ``ce_*`` headers):

* produce-to-consume latency: one message at a time, from ``send()`` until a consumer
  assigned to the partition (no group) has it; p50 and p99. On Tansu a fetch parked for
  want of data may answer only after about half its ``fetch_max_wait_ms``, even when data
  arrives meanwhile, so the tail follows that setting (measured here: p99 about 60 ms at
  100 ms, p50 and p99 about 250 ms at 500 ms); the raw limit uses 10 ms;
* producer throughput: messages per second sent with ``acks="all"`` and flushed, with the
  producer the feed uses (``services.runtime.kafka.producer``, idempotent by default).

A later benchmark of the feed reports its figures against these. Nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from importlib.metadata import version

from kafka import KafkaConsumer, TopicPartition
from kafka.record import util as record_util
from rich.console import Console
from rich.table import Table

from services.runtime.kafka import KafkaSettings, ensure_topics, producer

ENV_BOOTSTRAP = "KETNOI_BENCH_KAFKA_BOOTSTRAP"

console = Console(stderr=True)


@dataclass(frozen=True)
class RawKafkaLimits:
    """Median figures over the rounds, and what they were measured with."""

    latency_p50_ms: float
    latency_p99_ms: float
    throughput_msgs_per_s: float
    latency_messages: int
    throughput_messages: int
    value_bytes: int
    fetch_max_wait_ms: int
    idempotent: bool
    crc32c: bool
    rounds: int


def feed_message(size: int) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """A key, value and headers shaped like one agency feed message."""
    event_id = str(uuid.uuid4()).encode()
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", event_id),
        ("ce_source", b"/ketnoi/referral"),
        ("ce_type", b"org.ketnoi.referral.dispatched.v1"),
        ("ce_time", b"2026-01-15T09:30:00Z"),
    ]
    return str(uuid.uuid4()).encode(), b"x" * size, headers


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def latency_samples(
    settings: KafkaSettings, topic: str, count: int, size: int, fetch_max_wait_ms: int
) -> list[float]:
    """Seconds from send() to receipt, one message in flight at a time."""
    writer = producer(settings.model_copy(update={"linger_ms": 0}))
    reader = KafkaConsumer(
        bootstrap_servers=settings.bootstrap_list(),
        enable_auto_commit=False,
        fetch_max_wait_ms=fetch_max_wait_ms,
    )
    partition = TopicPartition(topic, 0)
    try:
        writer.send(topic, value=b"warm-up", partition=0).get(timeout=20)
        reader.assign([partition])
        reader.seek_to_end(partition)
        reader.poll(timeout_ms=100)
        samples: list[float] = []
        for _ in range(count):
            key, value, headers = feed_message(size)
            started = time.perf_counter()
            writer.send(topic, key=key, value=value, headers=headers, partition=0)
            while not _received(reader, key):
                pass
            samples.append(time.perf_counter() - started)
        return samples
    finally:
        reader.close()
        writer.close()


def _received(reader: KafkaConsumer, key: bytes) -> bool:
    return any(
        record.key == key
        for records in reader.poll(timeout_ms=1_000).values()
        for record in records
    )


def producer_throughput(settings: KafkaSettings, topic: str, count: int, size: int) -> float:
    """Messages per second, sent without waiting for each and flushed at the end."""
    writer = producer(settings)
    messages = [feed_message(size) for _ in range(count)]
    try:
        writer.send(topic, value=b"warm-up").get(timeout=20)
        started = time.perf_counter()
        for key, value, headers in messages:
            writer.send(topic, key=key, value=value, headers=headers)
        writer.flush()
        return count / (time.perf_counter() - started)
    finally:
        writer.close()


def measure_raw_limits(
    bootstrap: str,
    *,
    rounds: int = 3,
    latency_messages: int = 300,
    throughput_messages: int = 20_000,
    size: int = 300,
    fetch_max_wait_ms: int = 10,
    settings: KafkaSettings | None = None,
) -> RawKafkaLimits:
    """Measure latency and throughput on the broker at ``bootstrap``, on a topic of its own."""
    settings = (settings or KafkaSettings()).model_copy(update={"bootstrap_servers": bootstrap})
    topic = f"bench.raw-{uuid.uuid4().hex[:8]}"
    ensure_topics(settings, [topic])
    p50s, p99s, rates = [], [], []
    for _ in range(rounds):
        samples = latency_samples(settings, topic, latency_messages, size, fetch_max_wait_ms)
        p50s.append(percentile(samples, 0.50) * 1000)
        p99s.append(percentile(samples, 0.99) * 1000)
        rates.append(producer_throughput(settings, topic, throughput_messages, size))
    return RawKafkaLimits(
        latency_p50_ms=statistics.median(p50s),
        latency_p99_ms=statistics.median(p99s),
        throughput_msgs_per_s=statistics.median(rates),
        latency_messages=latency_messages,
        throughput_messages=throughput_messages,
        value_bytes=size,
        fetch_max_wait_ms=fetch_max_wait_ms,
        idempotent=settings.enable_idempotence,
        crc32c=record_util.crc32c_c is not None,
        rounds=rounds,
    )


@contextlib.contextmanager
def bench_broker() -> Iterator[tuple[str, str]]:
    """Yield (bootstrap, what it is): the configured broker, or a throwaway Tansu."""
    bootstrap = os.environ.get(ENV_BOOTSTRAP)
    if bootstrap:
        yield bootstrap, f"${ENV_BOOTSTRAP}"
        return
    # Only here: a bench run without a broker of its own borrows the tests' Tansu starter.
    from tests.support.kafka import TansuBroker

    with TansuBroker() as broker:
        yield broker.bootstrap, f"Tansu (memory storage), {broker.binary}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-messages", type=int, default=300)
    parser.add_argument("--throughput-messages", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=300, help="value bytes")
    parser.add_argument(
        "--fetch-max-wait-ms",
        type=int,
        action="append",
        help="consumer fetch.max.wait.ms; repeat to compare (default: 10 and 100)",
    )
    args = parser.parse_args()
    waits = args.fetch_max_wait_ms or [10, 100]

    with bench_broker() as (bootstrap, what):
        console.print(f"broker: {what} at {bootstrap}")
        results = [
            measure_raw_limits(
                bootstrap,
                rounds=args.rounds,
                latency_messages=args.latency_messages,
                throughput_messages=args.throughput_messages,
                size=args.size,
                fetch_max_wait_ms=wait,
            )
            for wait in waits
        ]

    table = Table(title="Kafka raw limits (medians over rounds)")
    for column in ("fetch_max_wait_ms", "p50 ms", "p99 ms", "producer msgs/s"):
        table.add_column(column, justify="right")
    for result in results:
        table.add_row(
            str(result.fetch_max_wait_ms),
            f"{result.latency_p50_ms:.2f}",
            f"{result.latency_p99_ms:.2f}",
            f"{result.throughput_msgs_per_s:,.0f}",
        )
    console.print(table)
    console.print(
        f"kafka-python {version('kafka-python')}, crc32c={results[0].crc32c}, "
        f"acks=all, idempotent={results[0].idempotent}, value {args.size} B, "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs"
    )
    for result in results:
        print(asdict(result))


if __name__ == "__main__":
    main()
