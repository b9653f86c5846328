"""The committed AsyncAPI document matches the contracts, and holds together."""

from __future__ import annotations

import json
from typing import Any

from contracts.asyncapi import ASYNCAPI_PATH, document, render
from contracts.erasure import CaseFileErased
from contracts.referral import HANDOVER_EVENTS, REFERRAL_EVENTS


def test_committed_asyncapi_matches_the_contracts() -> None:
    committed = ASYNCAPI_PATH.read_text(encoding="utf-8")
    assert committed == render(), "contracts/asyncapi.json is stale: run `make schemas`"


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def test_every_reference_resolves_and_every_event_has_a_message() -> None:
    doc = json.loads(render())
    assert doc["asyncapi"] == "3.0.0"
    for ref in _refs(doc):
        _resolve(doc, ref)
    names = {m["name"] for m in doc["components"]["messages"].values()}
    feed_events = (*REFERRAL_EVENTS, *HANDOVER_EVENTS, CaseFileErased)
    assert names == {cls.topic() for cls in feed_events}
    channel = doc["channels"]["agencyFeed"]
    assert channel["address"] == "ketnoi.agency.{agencyId}"
    assert set(channel["parameters"]) == {"agencyId"}
    operation = doc["operations"]["publishAgencyFeed"]
    assert len(operation["messages"]) == len(names)


def test_headers_name_the_cloud_events_attributes_and_nothing_personal() -> None:
    headers = document()["components"]["schemas"]["CloudEventHeaders"]
    assert set(headers["required"]) == {
        "ce_specversion",
        "ce_id",
        "ce_source",
        "ce_type",
        "ce_time",
        "ce_subject",
        "content-type",
    }
    dispatched = document()["components"]["messages"]["dispatched.v1"]
    assert dispatched["headers"]["allOf"][1]["properties"]["ce_type"] == {
        "const": "org.ketnoi.referral.dispatched.v1"
    }
    assert dispatched["payload"] == {"$ref": "#/components/schemas/ReferralUpdate"}
