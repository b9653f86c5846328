"""Proofs and their checks, pure, for anyone holding the published checkpoints and the log's
public key: an event's inclusion in a log (and, given its stored bytes, that the leaf is that
event), and the consistency of two checkpoints (the older log is a prefix of the newer: no
row before the older checkpoint was altered, removed or reordered since)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from services.runtime.seal.leaves import leaf_hashes
from services.runtime.seal.merkle import ProofError, root_from_inclusion, verify_consistency
from services.runtime.seal.note import NoteError, SignedNote, Verifier, parse_note


@dataclass(frozen=True)
class InclusionProof:
    """An event's place in its log and the audit path to a signed checkpoint."""

    log: str
    event_id: UUID
    index: int
    position: int
    sealed_at: int
    originator_id: UUID
    originator_version: int
    topic: str
    leaf_hash: bytes
    path: list[bytes]
    checkpoint: str

    def as_json(self) -> dict[str, Any]:
        return {
            "log": self.log,
            "event_id": str(self.event_id),
            "leaf_index": self.index,
            "position": self.position,
            "sealed_at": self.sealed_at,
            "originator_id": str(self.originator_id),
            "originator_version": self.originator_version,
            "topic": self.topic,
            "leaf_hash": base64.b64encode(self.leaf_hash).decode(),
            "audit_path": [base64.b64encode(h).decode() for h in self.path],
            "checkpoint": self.checkpoint,
        }


def check_proof(
    proof: Mapping[str, Any], keys: Sequence[Verifier], state: bytes | None = None
) -> None:
    """Check a proof (as ``InclusionProof.as_json`` writes it): its checkpoint is signed by
    one of ``keys``, its audit path leads from its leaf to the checkpoint's root, and, given
    the event's stored bytes, the leaf is that event's. Raises ProofError saying what fails."""
    try:
        note = parse_note(proof["checkpoint"])
        leaf = base64.b64decode(proof["leaf_hash"], validate=True)
        path = [base64.b64decode(h, validate=True) for h in proof["audit_path"]]
        index, size = int(proof["leaf_index"]), note.checkpoint.size
    except (KeyError, TypeError, ValueError, NoteError, binascii.Error) as exc:
        raise ProofError(f"not an inclusion proof: {exc}") from None
    if not _signed(note, keys):
        raise ProofError("the checkpoint is not signed by a trusted key")
    if state is not None:
        (computed,) = leaf_hashes(
            [
                (
                    int(proof["position"]),
                    int(proof["sealed_at"]),
                    UUID(proof["originator_id"]).bytes,
                    int(proof["originator_version"]),
                    str(proof["topic"]),
                    state,
                )
            ]
        )
        if computed != leaf:
            raise ProofError("the event's stored bytes do not hash to the proven leaf")
    if root_from_inclusion(index, size, leaf, path) != note.checkpoint.root:
        raise ProofError("the audit path does not lead to the checkpoint's root")


@dataclass(frozen=True)
class ConsistencyProof:
    """Two signed checkpoints of one log and the RFC 9162 path that shows the first is a
    prefix of the second."""

    log: str
    old_checkpoint: str
    new_checkpoint: str
    path: list[bytes]

    def as_json(self) -> dict[str, Any]:
        return {
            "log": self.log,
            "old_checkpoint": self.old_checkpoint,
            "new_checkpoint": self.new_checkpoint,
            "consistency_path": [base64.b64encode(h).decode() for h in self.path],
        }


def check_consistency(proof: Mapping[str, Any], keys: Sequence[Verifier]) -> tuple[int, int]:
    """Check a proof (as ``ConsistencyProof.as_json`` writes it): both checkpoints are signed
    by one of ``keys`` and name the same log, and the path shows the older tree is a prefix
    of the newer. Returns the two sizes; raises ProofError saying what fails."""
    try:
        old = parse_note(proof["old_checkpoint"])
        new = parse_note(proof["new_checkpoint"])
        path = [base64.b64decode(h, validate=True) for h in proof["consistency_path"]]
    except (KeyError, TypeError, ValueError, NoteError, binascii.Error) as exc:
        raise ProofError(f"not a consistency proof: {exc}") from None
    for which, note in (("older", old), ("newer", new)):
        if not _signed(note, keys):
            raise ProofError(f"the {which} checkpoint is not signed by a trusted key")
    if old.checkpoint.origin != new.checkpoint.origin:
        raise ProofError("the two checkpoints are of different logs")
    if old.checkpoint.size > new.checkpoint.size:
        raise ProofError("the older checkpoint is larger than the newer one")
    verify_consistency(
        old.checkpoint.size, new.checkpoint.size, old.checkpoint.root, new.checkpoint.root, path
    )
    return old.checkpoint.size, new.checkpoint.size


def _signed(note: SignedNote, keys: Sequence[Verifier]) -> bool:
    return any(note.signed_by(key) for key in keys)
