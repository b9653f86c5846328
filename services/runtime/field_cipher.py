"""Encrypting an event's personal fields under its person's key, and reading them back.

Before an event with a ``person_id`` is stored, the values of its personal fields
(``contracts.personal``) leave its JSON state for one AES-256-GCM ciphertext under that
person's data key, with the event's identity (originator id, version, stored topic) as
associated data, so a ciphertext moved to another event does not open:

    {..., "person_id": "...",
     "_personal": {"v": 1, "p": [["details", "full_name"], ...], "c": "<nonce, ciphertext>"}}

``p`` names where the values go back (field names and item positions: nothing personal).
Reading puts them back; once the person's key is destroyed every one of them reads as the
field's erased value instead, which still validates, so every reader of the log goes on.
Events stored before this existed have no ``_personal`` and read as they are.
"""

from __future__ import annotations

import binascii
import os
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import orjson

from contracts.envelope import current_class
from contracts.personal import Path, personal_paths
from services.runtime.person_keys import NONCE_BYTES, PersonKeys

SEALED = "_personal"
_VERSION = 1
_MISSING = object()
Concrete = list[str | int]  # a path with item positions


class FieldCipher:
    """Seals and opens the personal fields of stored event states."""

    def __init__(self, keys: PersonKeys) -> None:
        self.keys = keys

    def seal(self, topic: str, originator_id: UUID, version: int, state: dict[str, Any]) -> None:
        """Encrypt the personal fields of ``state`` in place (nothing when it names no
        person or has none). For an erased person they are stored erased, in clear."""
        person = state.get("person_id")
        if person is None:
            return
        found = list(_present(state, _patterns(topic, state)))
        if not found:
            return
        aead = self.keys.cipher_for_writing(person)
        if aead is None:
            erased = _patterns(topic, state)
            for path, _value in found:
                _put(state, path, erased.get(_pattern(path)))
            return
        for path, _value in found:
            _pop(state, path)
        nonce = os.urandom(NONCE_BYTES)
        plain = orjson.dumps([value for _path, value in found])
        sealed = aead.encrypt(nonce, plain, _aad(topic, originator_id, version))
        state[SEALED] = {
            "v": _VERSION,
            "p": [path for path, _value in found],
            "c": binascii.b2a_base64(nonce + sealed, newline=False).decode(),
        }

    def open(self, topic: str, originator_id: Any, version: int, state: dict[str, Any]) -> None:
        """Put the personal fields back into ``state`` in place: decrypted, or erased values
        when the person's key is gone."""
        sealed = state.pop(SEALED, None)
        if sealed is None:
            return
        paths: list[Concrete] = sealed["p"]
        aead = self.keys.cipher(state["person_id"])
        if aead is None:
            erased = _patterns(topic, state)
            for path in paths:
                _put(state, path, erased.get(_pattern(path)))
            return
        blob = binascii.a2b_base64(sealed["c"])
        plain = aead.decrypt(
            blob[:NONCE_BYTES], blob[NONCE_BYTES:], _aad(topic, originator_id, version)
        )
        for path, value in zip(paths, orjson.loads(plain), strict=True):
            _put(state, path, value)


def _aad(topic: str, originator_id: Any, version: int) -> bytes:
    """The event's identity: its originator's id (16 bytes), version and stored topic."""
    ident = originator_id if isinstance(originator_id, UUID) else UUID(str(originator_id))
    return ident.bytes + version.to_bytes(8, "big") + topic.encode()


def _patterns(topic: str, state: dict[str, Any]) -> dict[Path, Any]:
    """The personal paths of the event stored under ``topic`` (and of an event it copies),
    with their erased values. An older version's are its upcaster's to know: none here."""
    cls = current_class(topic)
    if cls is None:
        return {}
    found = personal_paths(cls)
    for field, topic_field in getattr(cls, "nested_events", {}).items():
        inner = state.get(field)
        inner_topic = state.get(topic_field)
        if isinstance(inner, dict) and isinstance(inner_topic, str):
            for path, value in _patterns(inner_topic, inner).items():
                found[(field, *path)] = value
    return found


def personal_in_clear(topic: str, state: dict[str, Any]) -> bool:
    """Whether a stored state keeps any personal value outside the sealed part: an event
    stored before per-person encryption existed (or naming no person). Destroying a key
    cannot make such values unreadable; values stored already erased do not count."""
    if SEALED in state:
        return False  # sealing takes every personal value present
    erased = _patterns(topic, state)
    return any(value != erased.get(_pattern(path)) for path, value in _present(state, erased))


def _erased_values(topic: str, state: dict[str, Any]) -> dict[Path, Any]:
    return _patterns(topic, state)


def _pattern(path: Concrete) -> Path:
    return tuple("*" if isinstance(step, int) else step for step in path)


def _present(state: Any, patterns: dict[Path, Any]) -> Iterator[tuple[Concrete, Any]]:
    """Each personal value present in ``state``, with its concrete path."""
    for pattern in patterns:
        yield from _expand(state, pattern, [])


def _expand(node: Any, pattern: Path, done: Concrete) -> Iterator[tuple[Concrete, Any]]:
    if not pattern:
        if node is not None:  # an absent value (None) says nothing of the person: not sealed
            yield done, node
        return
    step, rest = pattern[0], pattern[1:]
    if step == "*":
        if isinstance(node, list):
            for index, item in enumerate(node):
                yield from _expand(item, rest, [*done, index])
        return
    if isinstance(node, dict):
        value = node.get(step, _MISSING)
        if value is not _MISSING:
            yield from _expand(value, rest, [*done, step])


def _pop(state: Any, path: Concrete) -> None:
    node = state
    for step in path[:-1]:
        node = node[step]
    del node[path[-1]]


def _put(state: Any, path: Concrete, value: Any) -> None:
    node = state
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
