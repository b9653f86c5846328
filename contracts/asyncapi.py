"""The AsyncAPI 3.0 document of the agency feed, generated from ``contracts``.

Run ``python -m contracts.asyncapi`` (or ``make schemas``); the contract tests fail while the
committed ``contracts/asyncapi.json`` differs from what this produces.

One parameterized channel, ``ketnoi.agency.{agencyId}``, rather than one channel per agency
kind: topics are per agency, agencies are data (any number of each kind, added any day, each
known only by its id), and every agency reads the same kinds of message, filtered by what
was disclosed to it. A channel per kind would name topics that do not exist and repeat one
message list a dozen times. The prefix is the default of ``KETNOI_KAFKA_TOPIC_PREFIX``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic.json_schema import models_json_schema

from contracts.envelope import Event
from contracts.erasure import CaseFileErased
from contracts.feed import (
    CONTENT_TYPE,
    CloudEventHeaders,
    DisclosedData,
    DisclosedReason,
    ErasureNotice,
    FeedKey,
    HandoverUpdate,
    ReferralUpdate,
)
from contracts.referral import (
    HANDOVER_EVENTS,
    REFERRAL_EVENTS,
    DisclosureRecorded,
    ReferralBlocked,
    ReferralCreated,
    ReferralDispatched,
)

ASYNCAPI_PATH = Path(__file__).with_name("asyncapi.json")
CHANNEL = "agencyFeed"
ADDRESS = "ketnoi.agency.{agencyId}"
SCHEMAS = "#/components/schemas/"
KAFKA_BINDING = "0.5.0"

DESCRIPTION = """\
Each agency reads the referral events that concern it on a Kafka topic of its own. Every
message is a CloudEvent in Kafka's binary mode: `ce_*` headers, the referral's (or
handover's) id as the key, so one referral's events stay in order, and a JSON value.

Delivery is at least once: the relay records how far it has published only after the broker
acknowledged (acks=all), so after a crash it sends part of a batch again. `ce_id` is the
event's stable id: de-duplicate by it, and commit offsets only after handling.

What an agency reads is limited to what was disclosed to it. The sending agency and the
parties to a handover read ids, statuses, the service asked for and deadlines. The recipient
of a referral hears of it once it has been dispatched (never of a draft or a blocked
referral) and reads the released personal data only in `disclosure.sealed`: in the
dispatched message and in later disclosures. After a referral is put on hold, nothing more
is released until a new disclosure. Nothing personal travels in clear, and keys and headers
never hold personal data.

The personal parts of a message travel encrypted (`SealedData`: AES-256-GCM, the 12-byte
`nonce` and the `ciphertext` with its tag in base64), under a key derived from the person's
own data key for the agency whose topic carries the message and for the referral (or
handover):

- `disclosure.sealed`, to the recipient only: the JSON of a `DisclosedData` (`person_id` and
  `data`, the released fields by data category), with the associated data
  `<referral_id>/<version>/<disclosure_id>` of the message in UTF-8;
- `sealed_reason`, to each agency the message goes to (a referral's sender, its recipient
  while the consent in force lets it read the person's data, a handover's parties): the JSON
  of a `DisclosedReason` (`reason`: why a referral was rejected, cancelled, failed or declined,
  a completion's outcome, why a handover was cancelled), with the associated data
  `<referral_id or handover_id>/<version>/reason` in UTF-8.

Fetch the key that `key_id` (the referral's or handover's id) names from the referral API,
`GET /referral/feed/keys/{key_id}` with your agency's token (`FeedKey`: `key`, 32 bytes in
base64): each agency gets its own key. It is a read of the person's data, decided by the
access policy and recorded in the read audit: a referral's recipient on the consent in force
or an emergency override; a referral's sender and a handover's parties while their agency
holds the case (403 otherwise).

When a person is erased, their key is destroyed: every key derived from it answers 410 and
every message about them, published before the erasure too, stays ciphertext for good. Every
agency the feed told about their case's referrals receives an `ErasureNotice` (`ce_type`
`org.ketnoi.referral.person_erased.v1`, keyed by the case's id) and is to erase what it holds
of them; re-published afterwards, their messages carry no personal data.

Kafka is never the system of record: everything on it can be re-published from the logs."""

REFERRAL_AUDIENCE = "The sending agency; the recipient once the referral has been dispatched."
AUDIENCES: dict[type[Event], str] = {
    ReferralCreated: "The sending agency only: the recipient never hears of a draft.",
    ReferralBlocked: "The sending agency only: the recipient never hears of a draft.",
    DisclosureRecorded: (
        "The sending agency (what was released, without the data); the recipient, with the "
        "data, when the referral had been dispatched already. The first disclosure reaches "
        "the recipient inside the dispatched message."
    ),
    ReferralDispatched: (
        "The sending agency; the recipient, with the disclosure it was sent with, data included."
    ),
}
HANDOVER_AUDIENCE = "Every party to the handover (from, to and witnesses)."
ERASURE_AUDIENCE = (
    "Every agency the feed told about the case's referrals (each sender, and each recipient "
    "of a referral that was sent): erase what you hold of the person."
)


def message_key(cls: type[Event]) -> str:
    """The component name of an event type's message, e.g. ``dispatched.v1``."""
    return f"{cls.event_type.removeprefix('org.ketnoi.referral.')}.v{cls.event_version}"


def _summary(cls: type[Event]) -> str:
    doc = (cls.__doc__ or "").strip()
    if doc and not doc.startswith("Base of"):
        return " ".join(doc.split("\n\n")[0].split())
    return cls.__name__


def _message(cls: type[Event], payload: str, subject: str, audience: str) -> dict[str, Any]:
    return {
        "name": cls.topic(),
        "title": cls.__name__,
        "summary": _summary(cls),
        "description": f"Delivered to: {audience}",
        "contentType": CONTENT_TYPE,
        "headers": {
            "allOf": [
                {"$ref": f"{SCHEMAS}CloudEventHeaders"},
                {"type": "object", "properties": {"ce_type": {"const": cls.topic()}}},
            ]
        },
        "payload": {"$ref": f"{SCHEMAS}{payload}"},
        "correlationId": {
            "description": f"the {subject}'s id: the key, and ce_subject",
            "location": "$message.header#/ce_subject",
        },
        "bindings": {
            "kafka": {
                "key": {"type": "string", "format": "uuid", "description": f"the {subject}'s id"},
                "bindingVersion": KAFKA_BINDING,
            }
        },
        "x-ketnoi-source-event": f"schemas/{cls.topic()}.json",
    }


def messages() -> dict[str, dict[str, Any]]:
    """Every message on an agency's topic, one per event type of the referral log."""
    found: dict[str, dict[str, Any]] = {}
    for cls in REFERRAL_EVENTS:
        audience = AUDIENCES.get(cls, REFERRAL_AUDIENCE)
        found[message_key(cls)] = _message(cls, "ReferralUpdate", "referral", audience)
    for cls in HANDOVER_EVENTS:
        found[message_key(cls)] = _message(cls, "HandoverUpdate", "handover", HANDOVER_AUDIENCE)
    found[message_key(CaseFileErased)] = _message(
        CaseFileErased, "ErasureNotice", "case", ERASURE_AUDIENCE
    )
    return found


def schemas() -> dict[str, Any]:
    _, top = models_json_schema(
        [
            (ReferralUpdate, "serialization"),
            (HandoverUpdate, "serialization"),
            (ErasureNotice, "serialization"),
            (CloudEventHeaders, "serialization"),
            # Not messages: what a sealed disclosure and a sealed reason hold, and the
            # referral API's answer with the key that opens them.
            (DisclosedData, "serialization"),
            (DisclosedReason, "serialization"),
            (FeedKey, "serialization"),
        ],
        ref_template=SCHEMAS + "{model}",
    )
    defs: dict[str, Any] = top["$defs"]
    return defs


def document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document, as a dict."""
    found = messages()
    channel_messages = {key: {"$ref": f"#/components/messages/{key}"} for key in found}
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Ketnoi agency feed",
            "version": "1.0.0",
            "description": DESCRIPTION,
            "license": {"name": "Apache-2.0"},
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": {
            "kafka": {
                "host": "{bootstrap}",
                "protocol": "kafka",
                "description": (
                    "The installation's Kafka cluster (KAFKA_BOOTSTRAP_SERVERS); SASL and TLS "
                    "as KETNOI_KAFKA_SECURITY_PROTOCOL says."
                ),
                "variables": {"bootstrap": {"default": "localhost:9092"}},
            }
        },
        "channels": {
            CHANNEL: {
                "address": ADDRESS,
                "title": "An agency's referral events",
                "description": (
                    "One topic per agency, created by the relay with KETNOI_KAFKA_PARTITIONS "
                    "partitions (3 by default); a referral's or handover's messages share a "
                    "key, hence a partition, hence their order."
                ),
                "parameters": {
                    "agencyId": {
                        "description": ("The agency's id: a lower-case slug, never personal data."),
                        "examples": ["dong-thap-police", "dong-thap-general-hospital"],
                    }
                },
                "messages": channel_messages,
                "bindings": {
                    "kafka": {"partitions": 3, "replicas": 1, "bindingVersion": KAFKA_BINDING}
                },
            }
        },
        "operations": {
            "publishAgencyFeed": {
                "action": "send",
                "channel": {"$ref": f"#/channels/{CHANNEL}"},
                "title": "The relay publishes each event to the agencies it concerns",
                "messages": [{"$ref": f"#/channels/{CHANNEL}/messages/{key}"} for key in found],
            }
        },
        "components": {"messages": found, "schemas": schemas()},
    }


def render() -> str:
    return json.dumps(document(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write(path: Path = ASYNCAPI_PATH) -> Path:
    path.write_text(render(), encoding="utf-8")
    return path


if __name__ == "__main__":
    written = write()
    sys.stdout.write(f"wrote {written}\n")
