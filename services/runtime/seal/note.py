"""Checkpoints as C2SP signed notes (``tlog-checkpoint`` over ``signed-note``), Ed25519.

A checkpoint's body is three lines: the log's origin, the tree size in decimal, and the root
hash in standard base64, each ending in a newline. A signature line is an em dash, a space,
the key's name, a space, and base64 of the 4-byte key hash followed by the 64-byte Ed25519
signature of the body. The key hash is the first four bytes of
``SHA-256(name || 0x0A || 0x01 || public key)``. A verifier key is written
``name+<key hash in hex>+<base64 of 0x01 || public key>``.

A witness co-signs by adding its own signature line over the same body.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from hashlib import sha256

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ED25519 = b"\x01"
_SIGNATURE_PREFIX = "\u2014 "
_NAME = re.compile(r"^[^\s+]+$")


class NoteError(ValueError):
    """A note or key that cannot be read, or a signature that does not verify."""


def key_hash(name: str, public: bytes) -> bytes:
    return sha256(name.encode() + b"\n" + ED25519 + public).digest()[:4]


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True)
class Verifier:
    """A named Ed25519 public key that checks signature lines."""

    name: str
    public: bytes

    @property
    def key_hash(self) -> bytes:
        return key_hash(self.name, self.public)

    def vkey(self) -> str:
        encoded = base64.b64encode(ED25519 + self.public).decode()
        return f"{self.name}+{self.key_hash.hex()}+{encoded}"

    @classmethod
    def parse(cls, vkey: str) -> Verifier:
        """Read ``name+hash+key``; raises NoteError when it is malformed."""
        parts = vkey.strip().split("+", 2)
        if len(parts) != 3 or not _NAME.match(parts[0]):
            raise NoteError(f"not a verifier key: {vkey.strip()[:80]!r}")
        name, hash_hex, encoded = parts
        try:
            raw = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise NoteError(f"the verifier key of {name} is not base64") from None
        if len(raw) != 33 or raw[:1] != ED25519:
            raise NoteError(f"the verifier key of {name} is not an Ed25519 key")
        verifier = cls(name, raw[1:])
        if verifier.key_hash.hex() != hash_hex.lower():
            raise NoteError(f"the verifier key of {name} has the wrong key hash")
        return verifier

    def verify(self, body: str, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public).verify(signature, body.encode())
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class Signer:
    """A named Ed25519 private key that writes signature lines."""

    name: str
    key: Ed25519PrivateKey

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise NoteError(f"a key name has no spaces or '+': {self.name!r}")

    @property
    def verifier(self) -> Verifier:
        return Verifier(self.name, _raw_public(self.key.public_key()))

    def signature_line(self, body: str) -> str:
        signature = self.key.sign(body.encode())
        blob = base64.b64encode(self.verifier.key_hash + signature).decode()
        return f"{_SIGNATURE_PREFIX}{self.name} {blob}\n"


@dataclass(frozen=True)
class Checkpoint:
    """A log's origin, tree size and root hash."""

    origin: str
    size: int
    root: bytes

    def body(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"

    def sign(self, signer: Signer) -> str:
        """The signed note: the body, a blank line, one signature line."""
        return f"{self.body()}\n{signer.signature_line(self.body())}"


@dataclass(frozen=True)
class SignedNote:
    """A note read back: its checkpoint, its body, and its signature lines by key name."""

    checkpoint: Checkpoint
    body: str
    signatures: tuple[tuple[str, bytes, bytes], ...]  # (name, key hash, signature)

    def signed_by(self, verifier: Verifier) -> bool:
        """Whether a signature line of this verifier's name and key hash verifies."""
        return any(
            name == verifier.name
            and hash_ == verifier.key_hash
            and verifier.verify(self.body, signature)
            for name, hash_, signature in self.signatures
        )

    def with_line(self, line: str) -> str:
        """The note with one more signature line (a witness's)."""
        lines = "".join(
            f"{_SIGNATURE_PREFIX}{name} {base64.b64encode(h + s).decode()}\n"
            for name, h, s in self.signatures
        )
        return f"{self.body}\n{lines}{line}"


def parse_note(text: str) -> SignedNote:
    """Read a signed checkpoint; raises NoteError when it is not one."""
    body, sep, rest = text.partition("\n\n")
    if not sep:
        raise NoteError("a signed note has a blank line between its text and its signatures")
    body += "\n"
    lines = body.split("\n")
    if len(lines) < 4:
        raise NoteError("a checkpoint has an origin, a size and a root hash")
    origin, size_text, root_text = lines[0], lines[1], lines[2]
    if not origin or not size_text.isdigit() or (size_text != "0" and size_text[0] == "0"):
        raise NoteError("a checkpoint's second line is its tree size in decimal")
    try:
        root = base64.b64decode(root_text, validate=True)
    except binascii.Error:
        raise NoteError("a checkpoint's third line is its root hash in base64") from None
    if len(root) != 32:
        raise NoteError("a checkpoint's root hash has 32 bytes")
    signatures: list[tuple[str, bytes, bytes]] = []
    for line in rest.split("\n"):
        if not line:
            continue
        if not line.startswith(_SIGNATURE_PREFIX):
            raise NoteError("a signature line starts with an em dash and a space")
        name, _, blob = line[len(_SIGNATURE_PREFIX) :].partition(" ")
        try:
            raw = base64.b64decode(blob, validate=True)
        except binascii.Error:
            raise NoteError(f"the signature of {name} is not base64") from None
        if len(raw) != 4 + 64:
            raise NoteError(f"the signature of {name} is not an Ed25519 signature")
        signatures.append((name, raw[:4], raw[4:]))
    return SignedNote(Checkpoint(origin, int(size_text), root), body, tuple(signatures))
