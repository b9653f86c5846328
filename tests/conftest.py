"""Fixtures shared by every test: settings for each backend, a real PostgreSQL, tokens."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from services.runtime.person_keys import forget_stores
from services.runtime.read_audit import AUDIT
from services.runtime.settings import SERVICES, Settings
from services.runtime.web_sessions import WEB
from tests.support.postgres import postgres_server, wait_until_ready

REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"

# The suite sends requests as fast as it can from one address and a few tokens: the rate
# limits and the sign-in lockout are off unless a test sets its own (tests/e2e/test_hardening.py).
# Set here, so the processes the tests start inherit it too.
for _limit in ("RATE_LIMIT_PER_PRINCIPAL", "RATE_LIMIT_PER_ADDRESS", "AUTH_FAILURE_LIMIT"):
    os.environ.setdefault(f"KETNOI_{_limit}", "0")


def missing_service(reason: str) -> None:
    """Skip a test that needs a service, or fail the run when CI requires every service."""
    if REQUIRE_SERVICES:
        pytest.fail(f"REQUIRE_SERVICES=1 and {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    with postgres_server() as (url, how):
        if url is None:
            missing_service(how)
        assert url is not None
        wait_until_ready(url)
        yield url


def drop_schemas(url: str, prefix: str) -> None:
    forget_stores()  # the key store's connections to these schemas
    with psycopg.connect(url, autocommit=True) as conn:
        for log in (*SERVICES, AUDIT, WEB, "keys"):
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(f"{prefix}{log}"))
            )


@pytest.fixture
def pg_settings(pg_url: str, tmp_path: Path) -> Iterator[Settings]:
    """Settings on PostgreSQL with schemas of this test's own, dropped afterwards."""
    prefix = f"t{uuid.uuid4().hex[:10]}_"
    settings = Settings(database_url=pg_url, schema_prefix=prefix, data_dir=tmp_path / "data")
    yield settings
    drop_schemas(pg_url, prefix)


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    return Settings(database_url=None, data_dir=tmp_path / "data")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A Kafka-protocol broker's bootstrap address (see tests/support/kafka.py)."""
    # Imported here so that kafka-python loads only for the tests that need a broker.
    from tests.support.kafka import kafka_server, wait_until_ready

    with kafka_server() as (bootstrap, how):
        if bootstrap is None:
            missing_service(how)
        assert bootstrap is not None
        wait_until_ready(bootstrap)
        yield bootstrap
