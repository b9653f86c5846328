"""What a leaf of a log's tree is, and the names of the seal's tables beside a log.

A leaf is one stored event exactly as stored: its position in the log, the instant it was
sealed (microseconds since the epoch, UTC), its aggregate id (16 bytes) and version, its topic
(the event type and version) and its stored bytes (the ciphertext where fields are
encrypted)::

    position u64 | sealed_at u64 | originator_id 16 bytes | originator_version u64
    | topic length u16 | topic UTF-8 | state

all integers big-endian. The leaf hash is ``SHA-256(0x00 || leaf)`` (RFC 9162). On
PostgreSQL the server computes it from the row it inserts (``recorders.py``); the verifier
and the proofs compute it here, from the stored row.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from hashlib import sha256

# The leaf hash's prefix byte and the leaf's fixed-size fields, packed in one call.
_FIXED = struct.Struct(">BQQ16sQ")


class _Topics(dict[str, bytes]):
    """Each topic's encoding (length, then UTF-8), computed once per topic."""

    def __missing__(self, topic: str) -> bytes:
        raw = topic.encode()
        encoded = self[topic] = len(raw).to_bytes(2, "big") + raw
        return encoded


_topics = _Topics()


def sealed_at_now() -> int:
    return time.time_ns() // 1000


def leaf(
    position: int, sealed_at: int, originator_id: bytes, version: int, topic: str, state: bytes
) -> bytes:
    """The leaf of one stored event (see the module's docstring)."""
    return _FIXED.pack(0, position, sealed_at, originator_id, version)[1:] + _topics[topic] + state


def leaf_sql(row: str, position: str, sealed_at: str, *, wrap_length: bool = False) -> str:
    """The same leaf laid out by PostgreSQL from an events row (``row`` is its alias and a
    dot, or empty), prefixed with the leaf hash's 0x00: what the hash is taken of. The topic's
    length field refuses a topic too long for it, or with ``wrap_length`` keeps its low two
    bytes (a read that must not fail on an edited row; the hash then differs)."""
    topic = f"convert_to({row}topic, 'UTF8')"
    length = (
        f"substring(int4send(octet_length({topic})) FROM 3 FOR 2)"
        if wrap_length
        else f"int2send(octet_length({topic})::int2)"
    )
    return (
        f"'\\x00'::bytea || int8send({position}) || int8send({sealed_at}) "
        f"|| uuid_send({row}originator_id) || int8send({row}originator_version) "
        f"|| {length} || {topic} || {row}state"
    )


Row = tuple[int, int, bytes, int, str, bytes]  # position, sealed_at, id, version, topic, state


def leaf_hashes(rows: Iterable[Row]) -> list[bytes]:
    """The leaf hashes of many events at once."""
    fixed, topics = _FIXED.pack, _topics
    return [
        sha256(fixed(0, p, t, oid, v) + topics[tp] + state).digest()
        for p, t, oid, v, tp, state in rows
    ]


def chunk_hashes(
    leaves: Sequence[tuple[int, int, int, bytes]],
    events: Sequence[tuple[int, bytes, int, str, bytes]],
) -> list[bytes]:
    """The leaf hashes of rows read beside their leaf rows (same positions, same order): the
    verifier's hot loop, with no tuple built per row."""
    fixed, topics = _FIXED.pack, _topics
    return [
        sha256(fixed(0, p, leaf[2], oid, v) + topics[tp] + state).digest()
        for leaf, (p, oid, v, tp, state) in zip(leaves, events, strict=True)
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
