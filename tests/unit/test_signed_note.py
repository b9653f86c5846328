"""Checkpoints as C2SP signed notes: the text, the key hash, signatures and co-signatures."""

from __future__ import annotations

import base64
from hashlib import sha256

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.runtime.seal.merkle import EMPTY_ROOT
from services.runtime.seal.note import Checkpoint, NoteError, Signer, Verifier, parse_note

ROOT = sha256(b"root").digest()


def _signer(name: str = "ketnoi.example") -> Signer:
    return Signer(name, Ed25519PrivateKey.generate())


def test_a_checkpoint_is_origin_size_and_base64_root_then_a_signature_line() -> None:
    signer = _signer()
    text = Checkpoint("ketnoi.example/intake", 42, ROOT).sign(signer)
    body, blank, signature = text.partition("\n\n")
    assert body.split("\n") == ["ketnoi.example/intake", "42", base64.b64encode(ROOT).decode()]
    assert blank == "\n\n"
    assert signature.startswith("\u2014 ketnoi.example ")
    assert signature.endswith("\n")
    blob = base64.b64decode(signature.split(" ")[2])
    assert blob[:4] == signer.verifier.key_hash
    assert len(blob) == 4 + 64


def test_the_key_hash_is_the_c2sp_one() -> None:
    signer = _signer("example.com/log")
    public = signer.verifier.public
    expected = sha256(b"example.com/log\n\x01" + public).digest()[:4]
    assert signer.verifier.key_hash == expected
    vkey = signer.verifier.vkey()
    assert vkey.startswith(f"example.com/log+{expected.hex()}+")
    assert Verifier.parse(vkey) == signer.verifier


def test_a_signed_checkpoint_reads_back_and_verifies() -> None:
    signer = _signer()
    note = parse_note(Checkpoint("ketnoi.example/consent", 7, ROOT).sign(signer))
    assert note.checkpoint == Checkpoint("ketnoi.example/consent", 7, ROOT)
    assert note.signed_by(signer.verifier)
    assert not note.signed_by(_signer().verifier)
    assert not note.signed_by(_signer("another.example").verifier)


def test_an_altered_checkpoint_no_longer_verifies() -> None:
    signer = _signer()
    text = Checkpoint("ketnoi.example/referral", 7, ROOT).sign(signer)
    assert not parse_note(text.replace("\n7\n", "\n8\n", 1)).signed_by(signer.verifier)
    other_root = base64.b64encode(EMPTY_ROOT).decode()
    altered = text.replace(base64.b64encode(ROOT).decode(), other_root)
    assert not parse_note(altered).signed_by(signer.verifier)


def test_a_witness_adds_its_own_line() -> None:
    log, witness = _signer(), _signer("witness.example")
    note = parse_note(Checkpoint("ketnoi.example/audit", 3, ROOT).sign(log))
    both = parse_note(note.with_line(witness.signature_line(note.body)))
    assert both.signed_by(log.verifier)
    assert both.signed_by(witness.verifier)
    assert [name for name, _, _ in both.signatures] == ["ketnoi.example", "witness.example"]


@pytest.mark.parametrize(
    "text",
    [
        "ketnoi.example/intake\n7\n",
        "ketnoi.example/intake\nseven\nAAAA\n\n",
        "ketnoi.example/intake\n07\n" + base64.b64encode(ROOT).decode() + "\n\n",
        "ketnoi.example/intake\n7\nnot base64!\n\n",
        "ketnoi.example/intake\n7\n" + base64.b64encode(ROOT).decode() + "\n\n- x AAAA\n",
    ],
)
def test_what_is_not_a_checkpoint_is_refused(text: str) -> None:
    with pytest.raises(NoteError):
        parse_note(text)


def test_a_key_name_has_no_space_or_plus() -> None:
    with pytest.raises(NoteError):
        _signer("two words")
    with pytest.raises(NoteError):
        Verifier.parse("name+00000000+AAAA")
