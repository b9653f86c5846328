"""Per-person encryption of personal fields, and the key store (its SQLite form, in a temporary
directory): every event round-trips, nothing personal is stored in clear, a ciphertext opens
only in its own event, erasure leaves every event decoding to erased values, old plaintext
events still decode, and the master key guards every data key."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import orjson
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.persistence import StoredEvent

from contracts.consent import ConsentGranted
from contracts.envelope import Event
from contracts.intake import PersonRegistered
from contracts.personal import ERASED_TEXT, personal_paths
from contracts.referral import ConsentNoted
from services.runtime.field_cipher import SEALED
from services.runtime.persistence import (
    PersonalFieldsSealedError,
    PydanticMapper,
    decode_all,
    decode_stored,
    new_mapper,
)
from services.runtime.person_keys import (
    KeyUnwrapError,
    LocalMasterKey,
    PersonKeys,
    SQLiteKeys,
)
from services.runtime.settings import Environment, Settings, SettingsError
from tests.contract.samples import samples


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(database_url=None, data_dir=tmp_path / "data")


@pytest.fixture
def mapper(settings: Settings) -> PydanticMapper:
    return new_mapper(settings)


def _keys(mapper: PydanticMapper) -> PersonKeys:
    assert mapper.fields is not None
    return mapper.fields.keys


def personal_values(event: Event) -> list[Any]:
    """The values of the event's personal fields (those that are set and not empty)."""
    state = event.model_dump(mode="json")
    found = []
    for path in personal_paths(type(event)):
        found += [v for v in _at(state, path) if v not in (None, [], {}, 0, False)]
    return found


def _at(node: Any, path: tuple[str, ...]) -> list[Any]:
    if not path:
        return [node]
    step, rest = path[0], path[1:]
    if step == "*":
        return [v for item in node or [] for v in _at(item, rest)]
    if isinstance(node, dict) and step in node:
        return _at(node[step], rest)
    return []


def _texts(value: Any) -> list[bytes]:
    """The distinctive pieces of a value as they would appear in stored JSON."""
    if isinstance(value, dict):
        return [t for v in value.values() for t in _texts(v)]
    if isinstance(value, list):
        return [t for v in value for t in _texts(v)]
    return [orjson.dumps(value)]


PERSONAL_SAMPLES = [e for e in samples() if getattr(e, "person_id", None) and personal_values(e)]


def test_the_samples_cover_personal_fields_of_every_kind() -> None:
    assert len(PERSONAL_SAMPLES) >= 25


@pytest.mark.parametrize("event", samples(), ids=lambda e: type(e).__name__)
def test_every_event_round_trips_and_stores_no_personal_value_in_clear(
    event: Event, mapper: PydanticMapper
) -> None:
    stored = mapper.to_stored_event(event)
    assert mapper.to_domain_event(stored) == event
    if event in PERSONAL_SAMPLES:
        state = orjson.loads(stored.state)
        assert SEALED in state
        clear = orjson.dumps({k: v for k, v in state.items() if k != SEALED})
        for value in personal_values(event):
            for text in _texts(value):
                if len(text) > 4:  # e.g. "n", a date or a number could be anywhere
                    assert text not in clear, (type(event).__name__, text)


@pytest.mark.parametrize("event", PERSONAL_SAMPLES, ids=lambda e: type(e).__name__)
def test_after_erasure_every_event_decodes_with_erased_values(
    event: Event, mapper: PydanticMapper
) -> None:
    stored = mapper.to_stored_event(event)
    _keys(mapper).erase(event.person_id)  # type: ignore[attr-defined]
    erased = mapper.to_domain_event(stored)
    assert isinstance(erased, type(event))
    assert erased.event_id == event.event_id
    state = erased.model_dump(mode="json")
    for path, value in personal_paths(type(event)).items():
        assert all(found == value for found in _at(state, path)), path
    before = event.model_dump(mode="json")
    for key in ("person_id", "timestamp", "actor"):
        assert state[key] == before[key]  # what is not personal stays as it was
    # Another process (a store of its own, nothing cached) reads the same.
    assert mapper.fields is not None
    other = PydanticMapper(transcoder=mapper.transcoder)
    other.fields = type(mapper.fields)(_fresh_store_like(_keys(mapper)))
    assert other.to_domain_event(stored) == erased


def _fresh_store_like(keys: PersonKeys) -> PersonKeys:
    backend = keys._backend
    assert isinstance(backend, SQLiteKeys)
    return PersonKeys(SQLiteKeys(backend.path), keys._wrapper, cache_seconds=0)


def test_a_name_reads_as_erased_and_the_details_still_validate(mapper: PydanticMapper) -> None:
    registered = next(e for e in samples() if isinstance(e, PersonRegistered))
    stored = mapper.to_stored_event(registered)
    _keys(mapper).erase(registered.person_id)
    erased = mapper.to_domain_event(stored)
    assert isinstance(erased, PersonRegistered)
    assert erased.details.full_name == ERASED_TEXT
    assert erased.details.date_of_birth is None
    assert erased.minor == registered.minor  # not personal: routing and consent need it


def test_a_ciphertext_opens_only_in_its_own_event(mapper: PydanticMapper) -> None:
    registered = next(e for e in samples() if isinstance(e, PersonRegistered))
    stored = mapper.to_stored_event(registered)
    moved = StoredEvent(
        originator_id=stored.originator_id,
        originator_version=stored.originator_version + 1,
        topic=stored.topic,
        state=stored.state,
    )
    with pytest.raises(InvalidTag):
        mapper.to_domain_event(moved)


def test_events_stored_before_encryption_still_decode(mapper: PydanticMapper) -> None:
    for event in samples():
        old = new_mapper().to_stored_event(event)  # as stored before this existed
        assert SEALED.encode() not in old.state
        assert decode_stored(mapper, old) == event


def test_a_reader_without_the_key_store_is_told_so(mapper: PydanticMapper) -> None:
    registered = next(e for e in samples() if isinstance(e, PersonRegistered))
    stored = mapper.to_stored_event(registered)
    with pytest.raises(PersonalFieldsSealedError, match="key store"):
        new_mapper().to_domain_event(stored)


def test_nothing_new_about_an_erased_person_is_readable_or_gets_a_new_key(
    mapper: PydanticMapper,
) -> None:
    registered = next(e for e in samples() if isinstance(e, PersonRegistered))
    keys = _keys(mapper)
    keys.erase(registered.person_id)
    assert keys.cipher_for_writing(registered.person_id) is None
    stored = mapper.to_stored_event(registered)  # a follower writing late, say
    assert registered.details.full_name.encode() not in stored.state
    assert SEALED.encode() not in stored.state
    assert mapper.to_domain_event(stored).details.full_name == ERASED_TEXT  # type: ignore[attr-defined]


def test_each_person_has_a_key_of_their_own_wrapped_by_the_master_key(
    mapper: PydanticMapper, settings: Settings
) -> None:
    keys = _keys(mapper)
    first, second = uuid4(), uuid4()
    a, b = keys.cipher_for_writing(first), keys.cipher_for_writing(second)
    assert a is not None
    assert b is not None
    nonce = b"\x00" * 12
    assert a.encrypt(nonce, b"x", None) != b.encrypt(nonce, b"x", None)
    again = keys.cipher_for_writing(first)  # made once
    assert again is not None
    assert again.encrypt(nonce, b"x", None) == a.encrypt(nonce, b"x", None)
    backend = keys._backend
    assert isinstance(backend, SQLiteKeys)
    wrapped, erased = backend.select(first)
    assert wrapped is not None
    assert not erased
    data_key = keys._wrapper.unwrap(str(first), wrapped)
    assert data_key not in wrapped
    assert AESGCM(data_key).encrypt(nonce, b"x", None) == a.encrypt(nonce, b"x", None)
    assert data_key not in backend.path.read_bytes()
    master = settings.master_key_path()
    assert stat.S_IMODE(master.stat().st_mode) == 0o600
    assert master.read_bytes() not in backend.path.read_bytes()
    # Another master key opens nothing, and a wrapped key moved to another person neither.
    with pytest.raises(KeyUnwrapError):
        LocalMasterKey(b"\x01" * 32).unwrap(str(first), wrapped)
    with pytest.raises(KeyUnwrapError):
        keys._wrapper.unwrap(str(second), wrapped)
    # Erased: the wrapped key is gone from the file, not only from the row.
    assert keys.erase(first) is True
    assert keys.erase(first) is False
    assert backend.select(first) == (None, True)
    for file in backend.path.parent.glob(backend.path.name + "*"):  # the file, its WAL
        assert wrapped not in file.read_bytes()


def test_an_erasure_is_in_force_at_once_in_the_process_that_erases(
    mapper: PydanticMapper,
) -> None:
    keys = _keys(mapper)
    keys.cache_seconds = 3600  # a cached key would outlive the erasure if the cache won
    person = uuid4()
    assert keys.cipher(person) is None
    assert keys.cipher_for_writing(person) is not None
    assert keys.cipher(person) is not None  # cached now
    keys.erase(person)
    assert keys.cipher(person) is None


def test_production_refuses_to_start_without_a_master_key(tmp_path: Path) -> None:
    public = tmp_path / "idp.pem"
    public.write_text("unused")
    seal = tmp_path / "seal.pem"
    seal.write_text("unused")
    base: dict[str, Any] = {
        "environment": Environment.PRODUCTION,
        "database_url": "postgresql://ketnoi@127.0.0.1/ketnoi",
        "auth_public_key_file": public,
        "seal_signing_key_file": seal,
    }
    with pytest.raises(ValueError, match="KETNOI_MASTER_KEY_FILE"):
        Settings(**base)
    with pytest.raises(ValueError, match="does not exist"):
        Settings(**base, master_key_file=tmp_path / "absent")
    # And a named key is never created: a malformed one stops the store from opening.
    bad = tmp_path / "master-key"
    bad.write_text("not hex")
    with pytest.raises(SettingsError, match="cannot read the master key"):
        LocalMasterKey.from_file(bad, create=False)


def test_erased_values_are_declared_for_every_personal_field() -> None:
    from contracts.envelope import event_types

    for cls in event_types().values():
        paths = personal_paths(cls)  # raises for a marked field with no erased value
        if paths:
            assert "person_id" in cls.model_fields, cls.event_type


def test_person_ids_are_stored_in_clear(mapper: PydanticMapper) -> None:
    registered = next(e for e in samples() if isinstance(e, PersonRegistered))
    state = orjson.loads(mapper.to_stored_event(registered).state)
    assert UUID(state["person_id"]) == registered.person_id


def test_a_copied_consent_event_keeps_its_personal_fields_encrypted(
    mapper: PydanticMapper,
) -> None:
    granted = next(e for e in samples() if isinstance(e, ConsentGranted))
    granted = granted.model_copy(update={"child_views": "I want to live with my aunt"})
    copied = ConsentNoted(
        originator_id=uuid4(),
        originator_version=3,
        timestamp=granted.timestamp,
        actor=granted.actor,
        person_id=granted.person_id,
        upstream_topic=ConsentGranted.topic(),
        upstream_state=granted.model_dump(
            mode="json", exclude={"originator_id", "originator_version"}
        ),
    )
    stored = mapper.to_stored_event(copied)
    assert b"live with my aunt" not in stored.state
    assert mapper.to_domain_event(stored) == copied
    _keys(mapper).erase(granted.person_id)
    erased = mapper.to_domain_event(stored)
    assert isinstance(erased, ConsentNoted)
    assert erased.upstream_state["child_views"] is None
    # The copy still reads as the consent event it is (the referral service's case file).
    state = {**erased.upstream_state, "originator_id": uuid4(), "originator_version": 1}
    assert ConsentGranted.model_validate(state).categories == granted.categories


def test_a_batch_decodes_as_each_event_alone_with_one_read_of_the_key_store(
    mapper: PydanticMapper,
) -> None:
    # Events of several persons, one of them erased, read as a batch by a reader whose
    # cache is cold (another process): each decodes as it does alone, and the keys of the
    # batch's persons are read in one query.
    events = PERSONAL_SAMPLES * 2
    stored = [mapper.to_stored_event(event) for event in events]
    erased = next(e for e in events if isinstance(e, PersonRegistered)).person_id
    _keys(mapper).erase(erased)
    reader = PydanticMapper(transcoder=mapper.transcoder)
    assert mapper.fields is not None
    keys = _fresh_store_like(_keys(mapper))
    keys.cache_seconds = 3600
    reader.fields = type(mapper.fields)(keys)
    backend = keys._backend
    reads: list[str] = []
    select, select_many = backend.select, backend.select_many

    def counted_select(person_id: UUID) -> Any:
        reads.append("one")
        return select(person_id)

    def counted_many(person_ids: list[UUID]) -> Any:
        reads.append("many")
        return select_many(person_ids)

    backend.select, backend.select_many = counted_select, counted_many  # type: ignore[method-assign]
    decoded = decode_all(reader, stored)
    assert reads == ["many"]
    alone = [decode_stored(mapper, s) for s in stored]
    assert decoded == alone
    assert any(getattr(e, "person_id", None) == erased for e in decoded)
    assert decoded != events  # the erased person's events read as erased
    assert [e for e in decoded if getattr(e, "person_id", None) != erased] == [
        e for e in events if getattr(e, "person_id", None) != erased
    ]
