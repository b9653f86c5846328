"""Event store wiring: contract events in, stored events out, on SQLite or PostgreSQL.

Services store exactly the pydantic models of ``contracts``. The stored topic is the event's
stable name and version (``org.ketnoi.intake.reception_recorded.v1``), never a Python path, so
a downstream service decodes an upstream log knowing only ``contracts``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, ClassVar, cast
from uuid import UUID

import orjson
import psycopg
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import (
    AggregateRecorder,
    Mapper,
    Notification,
    StoredEvent,
    Transcoder,
)
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresProcessRecorder,
)
from psycopg import sql

from contracts.envelope import Event, resolve
from services.runtime.field_cipher import SEALED, FieldCipher, personal_in_clear
from services.runtime.files import private_file
from services.runtime.person_keys import key_store_env, person_keys, person_keys_from_env
from services.runtime.settings import SERVICES, Settings


class OrjsonTranscoder(Transcoder):
    """JSON with orjson; pydantic has already turned values into JSON types."""

    def encode(self, obj: Any) -> bytes:
        return orjson.dumps(obj)

    def decode(self, data: bytes) -> Any:
        return orjson.loads(data)


class PersonalFieldsSealedError(RuntimeError):
    """A stored event's personal fields are encrypted and this reader has no key store."""


class PydanticMapper(Mapper[UUID]):
    """Maps ``contracts`` events to stored events and back, upcasting old versions.

    With ``fields`` (a FieldCipher) the personal fields of every event that names a person
    are encrypted under that person's key, and decrypted (or read as erased) on the way out.
    """

    _ENVELOPE_KEYS: ClassVar[set[str]] = {"originator_id", "originator_version"}
    fields: FieldCipher | None = None

    def to_stored_event(self, domain_event: DomainEventProtocol[UUID]) -> StoredEvent:
        event = cast(Event, domain_event)
        state = event.model_dump(mode="json", exclude=self._ENVELOPE_KEYS)
        topic = type(event).topic()
        if self.fields is not None:
            self.fields.seal(topic, event.originator_id, event.originator_version, state)
        data = self.transcoder.encode(state)
        if self.compressor:
            data = self.compressor.compress(data)
        if self.cipher:
            data = self.cipher.encrypt(data)
        return StoredEvent(
            originator_id=event.originator_id,
            originator_version=event.originator_version,
            topic=topic,
            state=data,
        )

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[UUID]:
        return decode_stored(self, stored_event)


def decode_stored(mapper: Mapper[UUID], stored_event: StoredEvent) -> Event:
    """Decode one stored event (or notification) into its current contract class."""
    state = stored_state(mapper, stored_event)
    if SEALED in state:
        open_personal(mapper, stored_event, state)
    return _validated(stored_event, state)


def decode_all(mapper: Mapper[UUID], stored_events: Sequence[StoredEvent]) -> list[Event]:
    """Decode a batch of stored events, as ``decode_stored`` each, with the keys of the
    persons they name read in one query (``open_all``)."""
    states = [stored_state(mapper, stored) for stored in stored_events]
    open_all(mapper, stored_events, states)
    return [_validated(stored, state) for stored, state in zip(stored_events, states, strict=True)]


def _validated(stored_event: StoredEvent, state: dict[str, Any]) -> Event:
    cls, state = resolve(stored_event.topic, state)
    state["originator_id"] = stored_event.originator_id
    state["originator_version"] = stored_event.originator_version
    return cls.model_validate(state)


def stored_state(mapper: Mapper[UUID], stored_event: StoredEvent) -> dict[str, Any]:
    """A stored event's state as stored: its personal fields still sealed, if they are."""
    data = stored_event.state
    if mapper.cipher:
        data = mapper.cipher.decrypt(data)
    if mapper.compressor:
        data = mapper.compressor.decompress(data)
    state: dict[str, Any] = mapper.transcoder.decode(data)
    return state


def stored_in_clear(mapper: Mapper[UUID], stored_event: StoredEvent) -> bool:
    """Whether a stored event holds personal values in clear (see
    ``field_cipher.personal_in_clear``), read as its current version."""
    state = stored_state(mapper, stored_event)
    if SEALED in state:
        return False
    cls, state = resolve(stored_event.topic, state)
    return personal_in_clear(cls.topic(), state)


def open_personal(mapper: Mapper[UUID], stored_event: StoredEvent, state: dict[str, Any]) -> None:
    """Put an event's encrypted personal fields back into its decoded ``state``: decrypted,
    or erased values once the person's key is destroyed. Raises PersonalFieldsSealedError
    for a reader opened without the key store."""
    fields = getattr(mapper, "fields", None)
    if fields is None:
        msg = (
            f"event {stored_event.originator_id}/{stored_event.originator_version} holds "
            "encrypted personal fields; read the log with the installation's key store"
        )
        raise PersonalFieldsSealedError(msg)
    fields.open(
        stored_event.topic, stored_event.originator_id, stored_event.originator_version, state
    )


def open_all(
    mapper: Mapper[UUID], stored_events: Sequence[StoredEvent], states: Sequence[dict[str, Any]]
) -> None:
    """``open_personal`` for a batch of decoded states (in place), the keys of every person
    they name read ahead in one query rather than one per person: a log read from its
    start (a rebuild, a replay, the relay) meets each person long after the key cache
    forgot them."""
    sealed = [i for i, state in enumerate(states) if SEALED in state]
    if not sealed:
        return
    fields = getattr(mapper, "fields", None)
    if fields is not None:
        fields.keys.prefetch({str(states[i]["person_id"]) for i in sealed})
    for i in sealed:
        open_personal(mapper, stored_events[i], states[i])


def select_events_of(
    recorder: AggregateRecorder, originator_ids: Collection[UUID]
) -> dict[UUID, list[StoredEvent]]:
    """The stored events of several aggregates, each in version order (an aggregate with
    none maps to an empty list): one query on PostgreSQL, by the primary key, where
    ``select_events`` would take a round trip per aggregate; elsewhere (the embedded store,
    where a read is a call in process) one ``select_events`` each."""
    found: dict[UUID, list[StoredEvent]] = {i: [] for i in originator_ids}
    if not found:
        return found
    if not isinstance(recorder, PostgresAggregateRecorder):
        for originator_id in found:
            found[originator_id] = list(recorder.select_events(originator_id))
        return found
    statement = sql.SQL(
        "SELECT originator_id, originator_version, topic, state FROM {}.{} "
        "WHERE originator_id = ANY(%s) ORDER BY originator_id, originator_version"
    ).format(sql.Identifier(recorder.datastore.schema), sql.Identifier(recorder.events_table_name))
    with recorder.datastore.get_connection() as conn, conn.cursor() as cur:
        cur.execute(statement, [list(found)])
        for row in cur:
            originator_id = row["originator_id"]
            found[originator_id].append(
                StoredEvent(
                    originator_id=originator_id,
                    originator_version=row["originator_version"],
                    topic=row["topic"],
                    state=bytes(row["state"]),
                )
            )
    return found


class WindowedApplicationRecorder(PostgresApplicationRecorder):
    """Reads of a log filtered by topic, in bounded windows of positions.

    ``SELECT ... WHERE notification_id >= start AND topic = ANY(...) ORDER BY notification_id
    LIMIT n`` is fast when PostgreSQL knows how the topics are spread. Until the table is
    analysed (a new database, a bulk import, the minute before autovacuum runs) the planner
    may instead sort every row from ``start`` to the end of the log for each batch: measured
    at 42 ms a batch of 500 on a 57,000-event log instead of 0.5 ms, and a catch-up that grows
    with the square of the backlog. Reading windows of ``window`` positions at a time bounds
    every query whatever the plan, and returns the same notifications.
    """

    window: ClassVar[int] = 5000

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        if not topics or start is None:
            return cast(
                Sequence[Notification],
                super().select_notifications(
                    start, limit, stop, topics, inclusive_of_start=inclusive_of_start
                ),
            )
        if not inclusive_of_start:
            start += 1
        found: list[Notification] = []
        last: int | None = None
        while True:
            end = start + max(limit, self.window) - 1
            if stop is not None:
                end = min(end, stop)
            found += super().select_notifications(start, limit - len(found), end, topics)
            if len(found) >= limit or (stop is not None and end >= stop):
                return found
            if last is None:
                last = self.max_notification_id() or 0
            if end >= last:
                return found
            start = end + 1


class WindowedProcessRecorder(WindowedApplicationRecorder, PostgresProcessRecorder):
    """A follower's recorder (events and tracking) with the same windowed reads."""


def new_mapper(settings: Settings | None = None) -> PydanticMapper:
    """A mapper; with ``settings``, one that encrypts and opens personal fields with the
    installation's key store."""
    mapper = PydanticMapper(transcoder=OrjsonTranscoder())
    if settings is not None:
        mapper.fields = FieldCipher(person_keys(settings))
    return mapper


def mapper_for_env(env: Mapping[str, str]) -> PydanticMapper:
    """A mapper for an application's environment (its key store, when it names one)."""
    mapper = PydanticMapper(transcoder=OrjsonTranscoder())
    keys = person_keys_from_env(env)
    if keys is not None:
        mapper.fields = FieldCipher(keys)
    return mapper


def application_env(
    settings: Settings, service: str, *, create_tables: bool | None = None
) -> dict[str, str]:
    """The eventsourcing environment for one service's own log.

    On PostgreSQL tables are created by ``ketnoi migrate`` and services run with
    ``CREATE_TABLE=no`` (concurrent first-time creation crashes); on SQLite each service owns
    its own file and creates its tables on start.
    """
    if service not in SERVICES:
        msg = f"unknown service {service!r}; expected one of {', '.join(SERVICES)}"
        raise ValueError(msg)
    target = settings.postgres
    if target is None:
        return {
            **key_store_env(settings),
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(private_file(settings.data_dir / f"{service}.sqlite")),
            "SQLITE_LOCK_TIMEOUT": "10",
            "CREATE_TABLE": "yes" if create_tables in (None, True) else "no",
            "APPLICATION_RECORDER_TOPIC": f"{_SEALED}:SealedSQLiteApplicationRecorder",
            "PROCESS_RECORDER_TOPIC": f"{_SEALED}:SealedSQLiteProcessRecorder",
            **_seal_env(settings, service),
        }
    return {
        **key_store_env(settings),
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": target.dbname,
        "POSTGRES_HOST": target.host,
        "POSTGRES_PORT": str(target.port),
        "POSTGRES_USER": target.user,
        "POSTGRES_PASSWORD": target.password,
        "POSTGRES_SCHEMA": settings.schema_for(service),
        "POSTGRES_POOL_SIZE": str(settings.pg_pool_size),
        "POSTGRES_MAX_OVERFLOW": str(settings.pg_max_overflow),
        "POSTGRES_CONNECT_TIMEOUT": str(settings.pg_connect_timeout),
        # Kept off: the database functions break notification ordering.
        "POSTGRES_ENABLE_DB_FUNCTIONS": "no",
        # Every log is sealed in the transaction that stores its events (see seal/).
        "APPLICATION_RECORDER_TOPIC": f"{_SEALED}:SealedPostgresApplicationRecorder",
        "PROCESS_RECORDER_TOPIC": f"{_SEALED}:SealedPostgresProcessRecorder",
        "CREATE_TABLE": "yes" if create_tables else "no",
        **_seal_env(settings, service),
    }


_SEALED = "services.runtime.seal.recorders"


def _seal_env(settings: Settings, log: str) -> dict[str, str]:
    # Imported here: the seal's recorders build on the recorders of this module.
    from services.runtime.seal.keys import seal_env

    return seal_env(settings, log)


def create_schemas(settings: Settings, services: tuple[str, ...] = SERVICES) -> None:
    """Create each service's PostgreSQL schema (the tables come with the applications)."""
    target = settings.postgres
    if target is None:
        return
    with psycopg.connect(target.conninfo(), autocommit=True) as conn:
        for service in services:
            conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                    sql.Identifier(settings.schema_for(service))
                )
            )
