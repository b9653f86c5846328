"""What a leaf of a log's tree is, and the names of the seal's tables beside a log.

A leaf is one stored event exactly as stored: its position in the log, the instant it was
sealed (microseconds since the epoch, UTC), its aggregate id (16 bytes) and version, its topic
(the event type and version) and its stored bytes (the ciphertext where fields are
encrypted)::

    position u64 | sealed_at u64 | originator_id 16 bytes | originator_version u64
    | topic length u16 | topic UTF-8 | state

all integers big-endian. The leaf hash is ``SHA-256(0x00 || leaf)`` (RFC 9162).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass
from hashlib import sha256

_HEAD = struct.Struct(">QQ")
_topics: dict[str, bytes] = {}


def sealed_at_now() -> int:
    return time.time_ns() // 1000


def _topic(topic: str) -> bytes:
    encoded = _topics.get(topic)
    if encoded is None:
        raw = topic.encode()
        encoded = _topics[topic] = len(raw).to_bytes(2, "big") + raw
    return encoded


def leaf(
    position: int, sealed_at: int, originator_id: bytes, version: int, topic: str, state: bytes
) -> bytes:
    """The leaf of one stored event (see the module's docstring)."""
    return b"".join(
        (
            _HEAD.pack(position, sealed_at),
            originator_id,
            version.to_bytes(8, "big"),
            _topic(topic),
            state,
        )
    )


Row = tuple[int, int, bytes, int, str, bytes]  # position, sealed_at, id, version, topic, state


def leaf_hashes(rows: Iterable[Row]) -> list[bytes]:
    """The leaf hashes of many events at once (the verifier's and the writer's hot loop)."""
    pack, topic = _HEAD.pack, _topic
    return [
        sha256(b"\x00" + pack(p, t) + oid + v.to_bytes(8, "big") + topic(tp) + state).digest()
        for p, t, oid, v, tp, state in rows
    ]


@dataclass(frozen=True)
class SealTables:
    """The tables of one log's seal, named after its events table."""

    events: str

    @property
    def leaves(self) -> str:
        return f"{self.events}_leaves"

    @property
    def head(self) -> str:
        return f"{self.events}_seal"

    @property
    def checkpoints(self) -> str:
        return f"{self.events}_checkpoints"

    @property
    def cosignatures(self) -> str:
        return f"{self.events}_cosignatures"
