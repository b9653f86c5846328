"""Kafka clients for the agency feed: settings, topic names, and configured clients.

Keys and values are bytes: the feed decides how to encode a CloudEvent, this module only
moves bytes. Kafka is never the system of record (everything on it can be re-published
from the logs), so the clients here aim for at-least-once delivery and order per key.

Known broker differences (DESIGN.md, "The agency feed"): Tansu, the broker used for tests
and the demo, answers a KIP-360 producer epoch bump (``InitProducerId`` with an existing
producer id) with ``UNKNOWN_SERVER_ERROR``. An idempotent producer that hits a recoverable
producer-state error there, as after every broker restart (memory storage forgets producer
ids), turns fatal: every later send raises ``KafkaError``. Close it and build a new one.
Tansu also creates unknown topics on first use, with its own partition count, whatever
``allow_auto_create_topics`` says: call :func:`ensure_topics` before producing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from kafka import (  # type: ignore[import-untyped]  # kafka-python ships no type hints
    KafkaAdminClient,
    KafkaConsumer,
    KafkaProducer,
)
from kafka.errors import (  # type: ignore[import-untyped]
    KafkaError,
    TopicAlreadyExistsError,
    for_code,
)
from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.envelope import AGENCY_ID_PATTERN
from services.runtime.logging import get_logger
from services.runtime.settings import SettingsError

log = get_logger("ketnoi.kafka")

# Agency ids as the contracts define them (contracts.envelope.AgencyId): lower-case slugs.
AGENCY_ID = re.compile(AGENCY_ID_PATTERN)
# Kafka's own rule for topic names.
TOPIC_NAME = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
Compression = Literal["gzip", "snappy", "lz4", "zstd"]


class InvalidTopicNameError(ValueError):
    """An agency id or topic prefix that cannot make a Kafka topic name."""


class KafkaSettings(BaseSettings):
    """Where the Kafka cluster is and how to talk to it (prefix ``KETNOI_KAFKA_``).

    The brokers come from ``KETNOI_KAFKA_BOOTSTRAP_SERVERS`` or, as DESIGN.md names it,
    ``KAFKA_BOOTSTRAP_SERVERS``: a comma-separated ``host:port`` list.
    """

    model_config = SettingsConfigDict(env_prefix="KETNOI_KAFKA_", extra="ignore")

    bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "bootstrap_servers", "KETNOI_KAFKA_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS"
        ),
    )
    client_id: str = "ketnoi"

    topic_prefix: str = Field(default="ketnoi.agency.", pattern=r"^[a-zA-Z0-9._-]{0,100}$")
    partitions: int = Field(default=3, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    # Per-topic configs for new topics, e.g. {"retention.ms": "604800000"}.
    topic_configs: dict[str, str] = Field(default_factory=dict)

    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_password: SecretStr | None = None
    ssl_check_hostname: bool = True

    request_timeout_ms: int = Field(default=30_000, ge=1)
    # kafka-python backs off up to 30 s between reconnects; Java clients stop at 1 s, which
    # brings a feed back within a second of a broker coming back.
    reconnect_backoff_ms: int = Field(default=50, ge=0)
    reconnect_backoff_max_ms: int = Field(default=1_000, ge=0)
    metadata_max_age_ms: int = Field(default=300_000, ge=0)

    # Producer. acks is always "all": a referral event the broker acknowledged must survive
    # the loss of the leader.
    enable_idempotence: bool = True
    retries: int = Field(default=2_147_483_647, ge=0)
    delivery_timeout_ms: int = Field(default=120_000, ge=1)
    # 5 ms, as Java clients since Kafka 4: nothing next to a human-scale referral, and fuller
    # batches when a backlog is re-published.
    linger_ms: int = Field(default=5, ge=0)
    batch_size: int = Field(default=16_384, ge=0)
    max_request_size: int = Field(default=1_048_576, ge=1)
    max_in_flight_requests_per_connection: int = Field(default=5, ge=1)
    max_block_ms: int = Field(default=60_000, ge=0)
    compression_type: Compression | None = None
    allow_auto_create_topics: bool = False

    # Consumer. A group's first message takes about session_timeout_ms / 2 on Tansu;
    # Apache Kafka refuses sessions under group.min.session.timeout.ms (6 s by default).
    session_timeout_ms: int = Field(default=10_000, ge=1)
    heartbeat_interval_ms: int = Field(default=3_000, ge=1)
    max_poll_records: int = Field(default=500, ge=1)
    max_poll_interval_ms: int = Field(default=300_000, ge=1)
    fetch_max_wait_ms: int = Field(default=500, ge=0)

    @model_validator(mode="after")
    def _check_consistent(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL_"):
            if self.sasl_mechanism is None:
                msg = f"KETNOI_KAFKA_SASL_MECHANISM is required with {self.security_protocol}"
                raise SettingsError(msg)
            if not self.sasl_plain_username or self.sasl_plain_password is None:
                msg = (
                    "KETNOI_KAFKA_SASL_PLAIN_USERNAME and KETNOI_KAFKA_SASL_PLAIN_PASSWORD "
                    f"are required with {self.security_protocol}"
                )
                raise SettingsError(msg)
        elif self.sasl_mechanism is not None:
            msg = (
                "KETNOI_KAFKA_SASL_MECHANISM is set but KETNOI_KAFKA_SECURITY_PROTOCOL is "
                f"{self.security_protocol}; use SASL_SSL (or SASL_PLAINTEXT)"
            )
            raise SettingsError(msg)
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            msg = (
                "KETNOI_KAFKA_HEARTBEAT_INTERVAL_MS must be below KETNOI_KAFKA_SESSION_TIMEOUT_MS "
                "(a third of it is usual)"
            )
            raise SettingsError(msg)
        if self.enable_idempotence and (
            self.retries == 0 or self.max_in_flight_requests_per_connection > 5
        ):
            msg = (
                "an idempotent producer needs KETNOI_KAFKA_RETRIES > 0 and "
                "KETNOI_KAFKA_MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION <= 5, "
                "or set KETNOI_KAFKA_ENABLE_IDEMPOTENCE=false"
            )
            raise SettingsError(msg)
        return self

    def bootstrap_list(self) -> list[str]:
        """The brokers as a list; raises SettingsError when none are configured."""
        servers = [s.strip() for s in (self.bootstrap_servers or "").split(",") if s.strip()]
        if not servers:
            msg = "KAFKA_BOOTSTRAP_SERVERS is not set: name the Kafka brokers, e.g. kafka:9092"
            raise SettingsError(msg)
        return servers


def _connection(settings: KafkaSettings) -> dict[str, Any]:
    """What every client (producer, consumer, admin) needs to reach the cluster."""
    config: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_list(),
        "client_id": settings.client_id,
        "security_protocol": settings.security_protocol,
        "request_timeout_ms": settings.request_timeout_ms,
        "reconnect_backoff_ms": settings.reconnect_backoff_ms,
        "reconnect_backoff_max_ms": settings.reconnect_backoff_max_ms,
        "metadata_max_age_ms": settings.metadata_max_age_ms,
    }
    if settings.security_protocol.startswith("SASL_"):
        assert settings.sasl_plain_password is not None  # checked by the settings
        config |= {
            "sasl_mechanism": settings.sasl_mechanism,
            "sasl_plain_username": settings.sasl_plain_username,
            "sasl_plain_password": settings.sasl_plain_password.get_secret_value(),
        }
    if settings.security_protocol.endswith("SSL"):
        config |= {
            "ssl_cafile": _path(settings.ssl_cafile),
            "ssl_certfile": _path(settings.ssl_certfile),
            "ssl_keyfile": _path(settings.ssl_keyfile),
            "ssl_password": (
                settings.ssl_password.get_secret_value() if settings.ssl_password else None
            ),
            "ssl_check_hostname": settings.ssl_check_hostname,
        }
    return config


def _path(path: Path | None) -> str | None:
    return str(path) if path is not None else None


def producer(settings: KafkaSettings) -> KafkaProducer:
    """A producer that waits for all in-sync replicas; send bytes keys and values.

    With ``enable_idempotence`` (the default) retries never duplicate or reorder a key's
    messages. On Tansu it turns fatal after a broker restart (see the module docstring).
    """
    return KafkaProducer(
        **_connection(settings),
        acks="all",
        enable_idempotence=settings.enable_idempotence,
        retries=settings.retries,
        delivery_timeout_ms=settings.delivery_timeout_ms,
        linger_ms=settings.linger_ms,
        batch_size=settings.batch_size,
        max_request_size=settings.max_request_size,
        max_in_flight_requests_per_connection=settings.max_in_flight_requests_per_connection,
        max_block_ms=settings.max_block_ms,
        compression_type=settings.compression_type,
        allow_auto_create_topics=settings.allow_auto_create_topics,
    )


def consumer(settings: KafkaSettings, group_id: str, topics: Iterable[str]) -> KafkaConsumer:
    """A group consumer that starts from the earliest offset and commits only when told.

    Offsets are committed by the caller (``consumer.commit()``) after the messages are
    handled, so a crash re-delivers rather than loses them.
    """
    return KafkaConsumer(
        *topics,
        **_connection(settings),
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=settings.heartbeat_interval_ms,
        max_poll_records=settings.max_poll_records,
        max_poll_interval_ms=settings.max_poll_interval_ms,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        allow_auto_create_topics=settings.allow_auto_create_topics,
    )


def admin(settings: KafkaSettings) -> KafkaAdminClient:
    """An admin client; close it when done."""
    return KafkaAdminClient(**_connection(settings))


def ensure_topics(settings: KafkaSettings, names: Iterable[str]) -> list[str]:
    """Create the topics that do not exist yet; return the names it created.

    Topics that exist are left as they are, even with another partition count (changing it
    would move keys to other partitions). Raises ``KafkaError`` for any other refusal.
    """
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return []
    client = admin(settings)
    try:
        response = client.create_topics(
            {
                name: {
                    "num_partitions": settings.partitions,
                    "replication_factor": settings.replication_factor,
                    "configs": settings.topic_configs,
                }
                for name in wanted
            },
            raise_errors=False,
        )
        created: list[str] = []
        for topic in response["topics"]:
            error = for_code(topic["error_code"])
            if error is TopicAlreadyExistsError:
                continue
            if topic["error_code"] != 0:
                raise error(f"cannot create topic {topic['name']}: {topic['error_message']}")
            created.append(topic["name"])
        if created:
            client.wait_for_topics(created)
        existing = [name for name in wanted if name not in created]
        if existing:
            _warn_on_other_partition_counts(settings, client, existing)
    finally:
        client.close()
    log.info("kafka_topics_ensured", created=created, existing=len(wanted) - len(created))
    return created


def _warn_on_other_partition_counts(
    settings: KafkaSettings, client: KafkaAdminClient, names: list[str]
) -> None:
    # A topic someone else created (or a broker auto-created) may have another partition
    # count; it still works, but operators should know.
    for topic in client.describe_topics(names):
        count = len(topic["partitions"])
        if count != settings.partitions:
            log.warning(
                "kafka_topic_partitions_differ",
                topic=topic["name"],
                partitions=count,
                configured=settings.partitions,
            )


def topic_for_agency(settings: KafkaSettings, agency_id: str) -> str:
    """The topic of one agency's feed: the prefix and the agency id.

    Agency ids are slugs (``dong-thap-police``), never personal data, and have no ``.`` or
    ``_`` (Kafka treats them alike in metric names, so two agencies whose ids differed only
    there would collide). Raises InvalidTopicNameError for anything that is not a slug or
    would not make a valid topic name.
    """
    if not AGENCY_ID.fullmatch(agency_id):
        msg = (
            f"agency id {agency_id!r} is not a slug: use lower-case letters, digits and "
            "inner '-', at most 63 characters"
        )
        raise InvalidTopicNameError(msg)
    topic = f"{settings.topic_prefix}{agency_id}"
    if not TOPIC_NAME.fullmatch(topic):
        msg = f"topic {topic!r} is not a valid Kafka topic name (at most 249 of [a-zA-Z0-9._-])"
        raise InvalidTopicNameError(msg)
    return topic


__all__ = [
    "InvalidTopicNameError",
    "KafkaError",
    "KafkaSettings",
    "admin",
    "consumer",
    "ensure_topics",
    "producer",
    "topic_for_agency",
]
