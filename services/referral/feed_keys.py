"""The keys the agency feed seals personal data under, so erasure reaches Kafka.

What the feed carries of a person (the data released to a referral's recipient, the free
text of a closing step: a rejection's, a cancellation's reason, an outcome) is encrypted in
the message (``contracts.feed.SealedData``) with AES-256-GCM under a key derived from the
person's data key (``PersonKeys.derive``, HKDF-SHA256) for the agency whose topic carries the
message and for the referral or handover. The message names the key by an opaque ``key_id``
(the referral's or handover's id: nothing personal); the agency fetches its key from ``GET
/referral/feed/keys/{key_id}``, a read of the person's data that passes the access policy and
is recorded like any other. Erasure destroys the person's data key, and with it every key
derived from it: the API answers 410, and whatever the broker still holds about the person,
published before the erasure too, stays ciphertext.

The nonce is derived too (an HMAC, under a second derived key that never leaves Ketnoi, of
the associated data and the plaintext), so publishing the same event again writes the same
bytes, as the rest of the feed does; two different plaintexts never share a nonce.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
from typing import Any
from uuid import UUID

import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from contracts.feed import SEAL_ALGORITHM, sealed_data_aad, sealed_reason_aad
from services.runtime.person_keys import NONCE_BYTES, PersonKeys

_KEY_INFO = b"ketnoi-feed-key/v1/"
_NONCE_INFO = b"ketnoi-feed-nonce/v1/"


def key_id_of(subject_id: UUID) -> str:
    """The key id the sealed parts of a referral's (or handover's) messages name."""
    return str(subject_id)


def subject_of(key_id: str) -> UUID | None:
    """The referral or handover a key id names; None when it names none."""
    try:
        return UUID(key_id)
    except ValueError:
        return None


def _info(purpose: bytes, agency_id: str, subject_id: UUID) -> bytes:
    return purpose + agency_id.encode() + b"/" + subject_id.bytes


def b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode()


class FeedKeys:
    """Derives the feed's keys from the persons' data keys, and seals with them.

    One key per agency and referral (or handover): it opens everything the agency's topic
    carries sealed about it, disclosures and reasons alike.
    """

    def __init__(self, keys: PersonKeys) -> None:
        self.keys = keys

    def key(self, person_id: UUID, agency_id: str, subject_id: UUID) -> bytes | None:
        """The key that opens what the feed sealed for ``agency_id`` on the referral (or
        handover) ``subject_id``; None once the person is erased (or has no key)."""
        return self.keys.derive(person_id, _info(_KEY_INFO, agency_id, subject_id))

    def seal(
        self,
        *,
        person_id: UUID,
        agency_id: str,
        referral_id: UUID,
        version: int,
        disclosure_id: UUID,
        data: dict[str, Any],
    ) -> dict[str, Any] | None:
        """The values of a ``SealedData`` holding the person's id and ``data``, for the
        message of ``version`` of the referral to ``agency_id``; None once the person is
        erased (the message then carries no data)."""
        plain = orjson.dumps({"person_id": person_id, "data": data})
        aad = sealed_data_aad(referral_id, version, disclosure_id)
        return self._seal(person_id, agency_id, referral_id, aad, plain)

    def seal_reason(
        self, *, person_id: UUID, agency_id: str, subject_id: UUID, version: int, reason: str
    ) -> dict[str, Any] | None:
        """The values of a ``SealedData`` holding ``reason`` (a ``DisclosedReason``), for the
        message of ``version`` of the referral or handover ``subject_id`` to ``agency_id``;
        None once the person is erased (the message then carries no reason)."""
        plain = orjson.dumps({"reason": reason})
        aad = sealed_reason_aad(subject_id, version)
        return self._seal(person_id, agency_id, subject_id, aad, plain)

    def _seal(
        self, person_id: UUID, agency_id: str, subject_id: UUID, aad: bytes, plain: bytes
    ) -> dict[str, Any] | None:
        info = _info(_KEY_INFO, agency_id, subject_id)
        key = self.keys.derive(person_id, info, create=True)
        nonce_key = self.keys.derive(person_id, _info(_NONCE_INFO, agency_id, subject_id))
        if key is None or nonce_key is None:
            return None
        nonce = hmac.new(nonce_key, aad + plain, hashlib.sha256).digest()[:NONCE_BYTES]
        return {
            "key_id": key_id_of(subject_id),
            "alg": SEAL_ALGORITHM,
            "nonce": b64(nonce),
            "ciphertext": b64(AESGCM(key).encrypt(nonce, plain, aad)),
        }
