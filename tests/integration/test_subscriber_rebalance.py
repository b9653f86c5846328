"""The reference subscriber in a consumer group that rebalances, on a real broker: a second
subscriber joins while the first holds a handled batch, so the first commits in the middle
of the rebalance; then the second leaves. Nothing is lost and neither crashes.

Tansu accepts a commit from a member of a group that is rebalancing, and a group whose member
overran its poll interval stays stuck in its rebalance there, so the commit Apache Kafka
refuses (RebalanceInProgressError, CommitFailedError) is not provoked on Tansu: that refusal
is tested with a consumer that raises it (tests/unit/test_feed_subscriber.py)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from services.cli.feed import SeenIds, consume
from services.runtime.kafka import consumer, ensure_topics, producer, topic_for_agency
from tests.support.feed import feed_kafka_settings

pytestmark = pytest.mark.kafka


def _wait(what: str, condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Subscriber:
    """``consume()`` in a thread of its own, as ``ketnoi subscribe`` runs it."""

    def __init__(self, kafka: Any, group: str, topic: str, name: str) -> None:
        self.consumer = consumer(kafka, group, [topic])
        self.handled: list[str] = []
        self.stopping = threading.Event()
        self.hold: Callable[[], None] = lambda: None  # runs before each event is handled
        self.crash: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _emit(self, event: dict[str, Any]) -> None:
        self.hold()
        self.handled.append(str(event["id"]))

    def _run(self) -> None:
        try:
            consume(self.consumer, SeenIds(), self._emit, stopping=self.stopping.is_set)
        except BaseException as exc:
            self.crash = exc

    def start(self) -> Subscriber:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(30)
        self.consumer.close()


def test_a_subscriber_rides_through_a_rebalance_without_losing_events(kafka_bootstrap: str) -> None:
    kafka = feed_kafka_settings(kafka_bootstrap)
    topic = topic_for_agency(kafka, "rebalance-agency")
    ensure_topics(kafka, [topic])
    group = f"g{uuid.uuid4().hex[:8]}"
    send = producer(kafka)
    sent: list[str] = []

    def publish(count: int) -> None:
        for _ in range(count):
            event_id = uuid.uuid4().hex
            headers = [("ce_id", event_id.encode()), ("ce_type", b"org.ketnoi.test.v1")]
            send.send(topic, key=event_id.encode(), value=b"{}", headers=headers)
            sent.append(event_id)
        send.flush(30)

    first = Subscriber(kafka, group, topic, "first").start()
    second: Subscriber | None = None
    try:
        publish(30)
        _wait("the first subscriber to handle the first events", lambda: len(first.handled) >= 30)

        # The first subscriber holds its next batch until the second one's joining has put
        # the group into a rebalance; it then commits in the middle of it (a commit Apache
        # Kafka refuses; Tansu accepts it, see the module's docstring).
        coordinator = first.consumer._coordinator
        held = threading.Event()

        def until_rebalancing() -> None:
            if not held.is_set():
                held.set()
                _wait("the group to rebalance", lambda: coordinator.rejoin_needed, 30)

        first.hold = until_rebalancing
        publish(30)
        _wait("the first subscriber to hold a batch", held.is_set)
        second = Subscriber(kafka, group, topic, "second").start()
        publish(30)
        joined = second

        def handled() -> set[str]:
            return set(first.handled) | set(joined.handled)

        _wait("every event handled", lambda: handled() >= set(sent))

        # The second one leaves: another rebalance, and the first takes everything again.
        second.stop()
        publish(30)
        _wait(
            "every event handled after it left",
            lambda: set(first.handled) | set(second.handled) >= set(sent),
        )
    finally:
        first.stop()
        if second is not None:
            second.stop()
        send.close()
    assert first.crash is None, first.crash
    assert second is not None
    assert second.crash is None, second.crash
    # Within one subscriber, each event once (its SeenIds); across the group, at least once.
    assert len(first.handled) == len(set(first.handled))
    assert set(first.handled) | set(second.handled) == set(sent)
