"""Contracts stay stable: committed schemas match the code, and every released stored form
of every event keeps decoding."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from eventsourcing.persistence import StoredEvent
from pydantic import Field

import contracts
from contracts import envelope
from contracts.envelope import (
    Event,
    UnknownEventTypeError,
    event_types,
    resolve,
    upcaster,
)
from contracts.schemagen import SCHEMA_DIR, render_all
from services.runtime.persistence import new_mapper
from tests.contract.samples import GOLDEN, samples

GOLDEN_FILES = sorted(GOLDEN.glob("*.json"))


def test_committed_schemas_match_the_contracts() -> None:
    rendered = render_all()
    committed = {p.name: p.read_text(encoding="utf-8") for p in SCHEMA_DIR.glob("*.json")}
    assert sorted(committed) == sorted(rendered), "run `make schemas` and commit the result"
    for name, text in rendered.items():
        assert committed[name] == text, f"{name} is stale: run `make schemas` and commit it"


def test_every_event_type_has_a_golden_fixture() -> None:
    have = {p.name.removesuffix(".json") for p in GOLDEN_FILES}
    assert {cls.topic() for cls in event_types().values()} <= have


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda p: p.name)
def test_golden_fixture_decodes(path: Path) -> None:
    golden = json.loads(path.read_text(encoding="utf-8"))
    stored = StoredEvent(
        originator_id=golden["originator_id"],
        originator_version=golden["originator_version"],
        topic=golden["topic"],
        state=orjson.dumps(golden["state"]),
    )
    event = new_mapper().to_domain_event(stored)
    assert isinstance(event, Event)
    assert str(event.originator_id) == golden["originator_id"]
    assert event.actor.user_id == golden["state"]["actor"]["user_id"]


@pytest.mark.parametrize("event", samples(), ids=lambda e: type(e).__name__)
def test_round_trip_through_the_mapper(event: Event) -> None:
    mapper = new_mapper()
    assert mapper.to_domain_event(mapper.to_stored_event(event)) == event


def test_stored_topic_names_no_python_module() -> None:
    stored = new_mapper().to_stored_event(samples()[0])
    assert stored.topic == "org.ketnoi.intake.reception_recorded.v1"
    assert ":" not in stored.topic


def test_upcasters_bring_old_versions_to_the_current_one(monkeypatch: pytest.MonkeyPatch) -> None:
    # A registry of this test's own, so the sample type never leaks into the schemas.
    monkeypatch.setattr(envelope, "_CURRENT", dict(envelope._CURRENT))
    monkeypatch.setattr(envelope, "_UPCASTERS", dict(envelope._UPCASTERS))

    class Sample(Event):
        event_type = "org.ketnoi.test.sample_upcast"
        event_version = 3
        title: str
        count: int = Field(ge=0)

    @upcaster("org.ketnoi.test.sample_upcast", 1)
    def _v1_v2(state: dict[str, Any]) -> dict[str, Any]:
        title = state.pop("name")
        return {**state, "title": title}

    @upcaster("org.ketnoi.test.sample_upcast", 2)
    def _v2_v3(state: dict[str, Any]) -> dict[str, Any]:
        return {**state, "count": 0}

    cls, state = resolve("org.ketnoi.test.sample_upcast.v1", {"name": "x"})
    assert cls is Sample
    assert state == {"title": "x", "count": 0}
    with pytest.raises(UnknownEventTypeError, match="newer"):
        resolve("org.ketnoi.test.sample_upcast.v4", {})


def test_unknown_topics_are_refused_clearly() -> None:
    with pytest.raises(UnknownEventTypeError, match="unknown event type"):
        resolve("org.ketnoi.nothing.here.v1", {})
    with pytest.raises(UnknownEventTypeError, match="not a Ketnoi event topic"):
        resolve("services.intake:Something", {})


def test_contracts_package_exports_the_intake_events() -> None:
    assert contracts.intake.ReceptionRecorded.event_type in event_types()
