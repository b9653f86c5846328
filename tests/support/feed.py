"""Helpers of the agency feed tests: settings of a test's own, a raw reader that opens the
sealed disclosures and reasons as an agency would (its key fetched from the referral API),
the relay."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from fastapi.testclient import TestClient
from kafka import KafkaConsumer, TopicPartition
from psycopg import sql

from contracts.vocabulary import Role
from services.cli.wiring import Platform, http_app
from services.referral.feed import FeedRelay, FeedSettings, open_feed_upstream
from services.referral.feed_tracking import FEED, tracking_recorder
from services.runtime.auth import TokenService
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


class HttpClient(Protocol):
    def get(self, url: str, *, headers: dict[str, str]) -> Any: ...


class FeedKeyClient:
    """Fetches the keys of sealed parts as each agency does: ``GET
    /referral/feed/keys/{key_id}`` with a token of one of its staff (``headers_for``).

    Keeps the keys it got (``forget`` drops them) and every answer's status in ``answers``.
    """

    def __init__(self, client: HttpClient, headers_for: Callable[[str], dict[str, str]]):
        self.client = client
        self.headers_for = headers_for
        self.keys: dict[tuple[str, str], bytes] = {}
        self.answers: list[tuple[str, str, int]] = []  # agency, key id, status

    def key(self, agency_id: str, key_id: str) -> bytes | None:
        found = self.keys.get((agency_id, key_id))
        if found is not None:
            return found
        answer = self.client.get(
            f"/referral/feed/keys/{key_id}", headers=self.headers_for(agency_id)
        )
        self.answers.append((agency_id, key_id, answer.status_code))
        if answer.status_code != 200:
            return None
        body = answer.json()
        assert body["key_id"] == key_id
        assert body["alg"] == "A256GCM"
        assert answer.headers["cache-control"] == "no-store"
        self.keys[agency_id, key_id] = key = base64.b64decode(body["key"])
        return key

    def forget(self) -> None:
        self.keys.clear()


@contextmanager
def agency_keys(platform: Platform) -> Iterator[FeedKeyClient]:
    """Keys fetched from the platform's API as each agency's staff would, with a token of
    its own (the agency, its kind and province from the platform's directory)."""
    tokens = TokenService(platform.settings)

    def headers_for(agency_id: str) -> dict[str, str]:
        known = platform.agencies.lookup(agency_id)
        assert known is not None, agency_id
        token = tokens.issue(
            user_id=f"{agency_id}-staff",
            agency_id=agency_id,
            province=known.province,
            roles=[Role.AGENCY_STAFF],
            agency_kind=known.kind,
        )
        return {"Authorization": f"Bearer {token}"}

    with TestClient(http_app(platform, tokens)) as client:
        yield FeedKeyClient(client, headers_for)


def open_sealed(key: bytes, value: dict[str, Any]) -> dict[str, Any]:
    """The ``DisclosedData`` a referral update's sealed disclosure holds, opened as the
    contract describes it (AES-256-GCM, the associated data ``<referral_id>/<version>/
    <disclosure_id>``). Raises InvalidTag when the key or the message is not its own."""
    disclosure = value["disclosure"]
    sealed = disclosure["sealed"]
    aad = f"{value['referral_id']}/{value['version']}/{disclosure['disclosure_id']}".encode()
    plain = AESGCM(key).decrypt(
        base64.b64decode(sealed["nonce"]), base64.b64decode(sealed["ciphertext"]), aad
    )
    opened: dict[str, Any] = json.loads(plain)
    return opened


def open_sealed_reason(key: bytes, value: dict[str, Any]) -> str:
    """The reason a referral's or handover's update holds sealed, opened as the contract
    describes it (AES-256-GCM of a ``DisclosedReason``, the associated data ``<id>/<version>/
    reason``). Raises InvalidTag when the key or the message is not its own."""
    sealed = value["sealed_reason"]
    subject = value["referral_id"] if "referral_id" in value else value["handover_id"]
    aad = f"{subject}/{value['version']}/reason".encode()
    plain = AESGCM(key).decrypt(
        base64.b64decode(sealed["nonce"]), base64.b64decode(sealed["ciphertext"]), aad
    )
    reason: str = json.loads(plain)["reason"]
    return reason


def opened(agency_id: str, value: dict[str, Any], keys: FeedKeyClient | None) -> dict[str, Any]:
    """A message's value as its agency reads it: a disclosure with ``person_id`` and
    ``data`` (None when it carries none, or its key could not be had) instead of ``sealed``,
    and ``reason`` (None likewise) instead of ``sealed_reason``."""
    if "sealed_reason" in value:
        reason = None
        sealed_reason = value["sealed_reason"]
        if sealed_reason is not None and keys is not None:
            key = keys.key(agency_id, sealed_reason["key_id"])
            if key is not None:
                reason = open_sealed_reason(key, value)
        value = {k: v for k, v in value.items() if k != "sealed_reason"} | {"reason": reason}
    disclosure = value.get("disclosure")
    if not disclosure:
        return value
    found: dict[str, Any] = {"person_id": None, "data": None}
    sealed = disclosure["sealed"]
    if sealed is not None and keys is not None:
        key = keys.key(agency_id, sealed["key_id"])
        if key is not None:
            found = open_sealed(key, value)
    rest = {k: v for k, v in disclosure.items() if k != "sealed"}
    return {**value, "disclosure": {**rest, **found}}


@dataclass(frozen=True)
class Received:
    """One record: ``value`` as published, ``wire`` its JSON, ``data`` as its agency reads it
    (the disclosure and the reason opened when the reader has keys)."""

    topic: str
    partition: int
    offset: int
    key: bytes
    headers: dict[str, str]
    value: bytes
    wire: dict[str, Any]
    data: dict[str, Any]

    @property
    def ce_id(self) -> str:
        return self.headers["ce_id"]

    @property
    def ce_type(self) -> str:
        return self.headers["ce_type"]

    @property
    def on_the_wire(self) -> bytes:
        """The key, the headers and the value, as bytes: what a byte search reads."""
        headers = b"".join(f"{k}={v}\n".encode() for k, v in self.headers.items())
        return self.key + b"\n" + headers + self.value

    @property
    def raw(self) -> str:
        return json.dumps([self.key.decode(), self.headers, self.data], ensure_ascii=False)


def written_agencies(kafka: KafkaSettings) -> list[str]:
    """The agencies with a topic under ``kafka``'s prefix on the broker: every topic the
    relay wrote to (tests give each run a prefix of its own)."""
    consumer = KafkaConsumer(
        bootstrap_servers=kafka.bootstrap_list(), request_timeout_ms=kafka.request_timeout_ms
    )
    try:
        topics = consumer.topics()
    finally:
        consumer.close()
    return sorted(
        t.removeprefix(kafka.topic_prefix) for t in topics if t.startswith(kafka.topic_prefix)
    )


class FeedReader:
    """Reads agencies' topics from the beginning, without a group, and keeps every record;
    with ``keys``, opens each sealed disclosure and reason as the record's agency would."""

    def __init__(
        self,
        kafka: KafkaSettings,
        agencies: Iterable[str],
        keys: FeedKeyClient | None = None,
    ) -> None:
        self.kafka = kafka
        self.keys = keys
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
                wire = json.loads(r.value)
                data = opened(self.topics[r.topic], wire, self.keys)
                self.records.append(
                    Received(r.topic, r.partition, r.offset, r.key, headers, r.value, wire, data)
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
