"""The agency id rule in one place, and the body limit middleware at the ASGI level."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError
from starlette.types import Message, Receive, Scope, Send

from contracts.consent import Recipient
from contracts.envelope import Actor, AgencyRef
from contracts.referral import HandoverConfirmed
from contracts.vocabulary import AgencyKind, Role
from services.runtime.http import RequestBodyLimitMiddleware
from services.runtime.kafka import InvalidTopicNameError, KafkaSettings, topic_for_agency

GOOD = ["dong-thap-police", "a", "7", "lc-swc-2", "a" * 63, "x-1-y"]
BAD = ["Dong-Thap-Police", "dong_thap", "dong.thap", "-a", "a-", "a" * 64, "", "a b", "ả"]


@pytest.mark.parametrize("agency_id", GOOD)
def test_a_slug_is_an_agency_id_everywhere(agency_id: str) -> None:
    assert AgencyRef(agency_id=agency_id, kind=AgencyKind.NGO).agency_id == agency_id
    assert Actor(user_id="u", agency_id=agency_id, role=Role.AUDITOR).agency_id == agency_id
    assert Recipient(agency_id=agency_id).agency_id == agency_id
    topic = topic_for_agency(KafkaSettings(bootstrap_servers="127.0.0.1:9"), agency_id)
    assert topic.endswith(agency_id)


@pytest.mark.parametrize("agency_id", BAD)
def test_anything_else_is_refused_everywhere(agency_id: str) -> None:
    with pytest.raises(ValidationError):
        AgencyRef(agency_id=agency_id, kind=AgencyKind.NGO)
    with pytest.raises(ValidationError):
        Actor(user_id="u", agency_id=agency_id, role=Role.AUDITOR)
    with pytest.raises(ValidationError):
        Recipient(agency_id=agency_id)
    with pytest.raises(ValidationError):
        HandoverConfirmed.model_validate(
            {
                "originator_id": "6c0f4a8e-2a53-5b8e-9d0e-4b1f8d6c2e71",
                "originator_version": 2,
                "timestamp": "2026-01-01T00:00:00Z",
                "actor": {"user_id": "u", "agency_id": "dt-police", "role": "agency_staff"},
                "agency_id": agency_id,
                "waited_seconds": 1.0,
            }
        )
    with pytest.raises(InvalidTopicNameError):
        topic_for_agency(KafkaSettings(bootstrap_servers="127.0.0.1:9"), agency_id)


def run_middleware(
    chunks: list[bytes], headers: list[tuple[bytes, bytes]], max_bytes: int
) -> tuple[list[Message], int, list[bytes]]:
    """Send ``chunks`` through the middleware; returns what it sent, how many messages it
    read, and the body the app behind it saw."""
    read = 0
    seen: list[bytes] = []

    async def receive() -> Message:
        nonlocal read
        read += 1
        last = read >= len(chunks)
        return {"type": "http.request", "body": chunks[read - 1], "more_body": not last}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        seen.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
    asyncio.run(RequestBodyLimitMiddleware(app, max_bytes)(scope, receive, send))
    return sent, read, seen


def test_a_chunked_body_is_refused_at_the_first_chunk_over_the_limit() -> None:
    sent, read, seen = run_middleware([b"a" * 1000] * 100, [], max_bytes=4096)
    assert sent[0]["status"] == 413
    assert read == 5  # 5000 bytes: the rest was never read
    assert seen == []  # the app never ran


def test_a_chunked_body_within_the_limit_reaches_the_app_whole() -> None:
    sent, read, seen = run_middleware([b"a" * 1000] * 4, [], max_bytes=4096)
    assert sent[0]["status"] == 200
    assert seen == [b"a" * 4000]
    assert read == 4


def test_a_declared_length_over_the_limit_is_refused_unread() -> None:
    sent, read, seen = run_middleware([b"a" * 5000], [(b"content-length", b"5000")], 4096)
    assert sent[0]["status"] == 413
    assert (read, seen) == (0, [])


def test_a_declared_length_within_the_limit_passes_through() -> None:
    sent, _read, seen = run_middleware([b"a" * 4096], [(b"content-length", b"4096")], 4096)
    assert sent[0]["status"] == 200
    assert seen == [b"a" * 4096]
