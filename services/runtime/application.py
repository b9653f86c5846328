"""The base of every service's Application: contract events, one log, idempotent commands.

A command loads aggregates, checks its rules and saves the events in one transaction. When
another writer saved one of those aggregates between the load and the save (most often the
service's own follower reacting to an upstream event) the save fails with the library's
IntegrityError and nothing is written; the command is then run again on fresh state, which
re-checks every rule. Only when the attempts run out does the client see 409. A real
conflict between two people appears on the re-run as the rule refusing the second one.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from typing import Any, ClassVar, TypeVar
from uuid import UUID, uuid5

import orjson
from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.persistence import IntegrityError, Mapper, Notification, Recording
from eventsourcing.utils import EnvType

from contracts.envelope import KETNOI_NAMESPACE, CommandRecorded, Event
from services.runtime.aggregate import Aggregate, CommandContext
from services.runtime.errors import (
    ConcurrentChangeError,
    DomainError,
    IdempotencyKeyReusedError,
)
from services.runtime.field_cipher import FieldCipher
from services.runtime.group_commit import Group, GroupCommit, GroupRecorder
from services.runtime.logging import get_logger
from services.runtime.persistence import OrjsonTranscoder, PydanticMapper
from services.runtime.person_keys import PersonKeys, person_keys_from_env
from services.runtime.positions import note_written
from services.runtime.seal.keys import policy_from_env
from services.runtime.seal.recorders import PostgresSeal, SQLiteSeal
from services.runtime.settings import CommandRetry, GroupCommitSettings

log = get_logger("ketnoi.command")

A = TypeVar("A", bound=Aggregate)

Result = dict[str, Any]
Execution = tuple[list[Aggregate], Result]

CONFLICT = "The record was changed by someone else meanwhile; read it again and retry."

# Set while a command runs again after losing a race: its loads skip any aggregate cache.
_rerun: ContextVar[bool] = ContextVar("ketnoi_command_rerun", default=False)


class ServiceApplication(Application[UUID]):
    """An eventsourcing Application that stores ``contracts`` events."""

    # Saves are written by their callers (see group_commit.py), or by a thread of the log's
    # own, which lets a caller stop waiting after ``save_timeout``.
    group_commit_writer_thread: ClassVar[bool] = False
    # A save names the position it reached to the request that saved (Ketnoi-Position).
    names_positions: ClassVar[bool] = True

    def __init__(self, env: EnvType | None = None) -> None:
        super().__init__(env=env)
        self.command_retry = CommandRetry.from_env(self.env)
        self._digest_key: bytes | None = None  # see _digest
        policy = policy_from_env(self.env)
        if policy is not None and isinstance(self.recorder, PostgresSeal | SQLiteSeal):
            self.recorder.checkpoints = policy
        # Concurrent saves share transactions (see group_commit.py). A save waits for its
        # batch without a limit unless save_timeout (seconds) is set.
        self.save_timeout: float | None = None
        self.group_commit: GroupCommit | None = None
        if isinstance(self.recorder, GroupRecorder):
            batching = GroupCommitSettings.from_env(self.env)
            self.group_commit = GroupCommit(
                self.recorder,
                window_ms=batching.window_ms,
                max_batch=batching.max_batch,
                log_name=self.name,
                writer_thread=self.group_commit_writer_thread,
            )

    @property
    def person_keys(self) -> PersonKeys | None:
        """The installation's store of persons' keys (None where none is configured)."""
        return person_keys_from_env(self.env)

    def construct_mapper(self) -> Mapper[UUID]:
        mapper = self.factory.mapper(transcoder=OrjsonTranscoder(), mapper_class=PydanticMapper)
        keys = person_keys_from_env(self.env)
        if keys is not None and isinstance(mapper, PydanticMapper):
            mapper.fields = FieldCipher(keys)
        return mapper

    def load(self, aggregate_type: type[A], aggregate_id: UUID) -> A:
        """Rebuild an aggregate; raises AggregateNotFoundError when it has no events."""
        cache = self.repository.cache
        if cache is not None and _rerun.get():
            # An aggregate cache (AGGREGATE_CACHE_MAXSIZE) may hold the state that just lost
            # the race, or the lost attempt's own unsaved changes: rebuild from the log.
            with suppress(KeyError):
                cache.get(aggregate_id, evict=True)
        aggregate = self.repository.get(aggregate_id, projector_func=aggregate_type.project)
        if not isinstance(aggregate, aggregate_type):
            raise AggregateNotFoundError(aggregate_id)
        return aggregate

    def save(self, *objs: Any, **kwargs: Any) -> list[Recording[UUID]]:
        """Save, and name the position reached in this log to the request that saved."""
        recordings = super().save(*objs, **kwargs)
        if recordings and self.names_positions:
            note_written(self.name, max(r.notification.id for r in recordings))
        return recordings

    def close(self) -> None:
        """Write the saves pending, stop this log's writer and close the store."""
        committer = getattr(self, "group_commit", None)
        if committer is not None:
            committer.close()
        super().close()

    def _record(self, processing_event: ProcessingEvent[UUID]) -> list[Recording[UUID]]:
        """Store the events (and tracking position) of one save, batched with concurrent
        saves to this log; returns once they are durable. Raises IntegrityError when another
        writer stored one of these aggregate versions (or this position) first."""
        committer = self.group_commit
        if committer is None or processing_event.saved_kwargs:
            return super()._record(processing_event)
        events = processing_event.events
        if not events and processing_event.tracking is None:
            return []
        stored = [self.mapper.to_stored_event(event) for event in events]
        ids = committer.commit(Group(stored, processing_event.tracking), self.save_timeout)
        recordings = [
            Recording(
                event,
                Notification(
                    id=notification_id,
                    originator_id=s.originator_id,
                    originator_version=s.originator_version,
                    topic=s.topic,
                    state=s.state,
                ),
            )
            for event, s, notification_id in zip(events, stored, ids, strict=True)
        ]
        cache = self.repository.cache
        if cache is not None and not self.repository.fastforward:
            for aggregate_id, aggregate in processing_event.aggregates.items():
                cache.put(aggregate_id, aggregate)
        return recordings

    def history(self, aggregate_id: UUID) -> list[Event]:
        """Every stored event of one aggregate, oldest first."""
        return [e for e in self.events.get(aggregate_id) if isinstance(e, Event)]

    def execute(
        self,
        ctx: CommandContext,
        command: str,
        request: Mapping[str, Any],
        run: Callable[[], Execution],
    ) -> Result:
        """Run a command and save what it changed in one transaction.

        ``run`` loads the aggregates, checks the rules and returns what to save with the
        result; it is called again, on fresh state, when another writer saved one of those
        aggregates meanwhile (up to ``command_retry.attempts`` times in all). With an
        Idempotency-Key in ``ctx`` the first result is recorded beside the command's events;
        a retry with the same key returns that result and appends nothing. Raises
        IdempotencyKeyReusedError when the key was used for a different request, and
        ConcurrentChangeError when every attempt lost its race.
        """
        if ctx.idempotency_key is None:
            result, _ = self._run_until_saved(command, run, lambda _result: [])
            _log(command, result, replayed=False)
            return result

        record_id = self._idempotency_record_id(ctx)
        digest = self._digest(command, request)
        earlier = self._recorded(record_id)
        if earlier is not None:
            result = _replay(earlier, command, digest, request)
            _log(command, result, replayed=True)
            self._note_head()
            return result

        def record(result: Result) -> list[Any]:
            return [
                CommandRecorded(
                    originator_id=record_id,
                    originator_version=1,
                    timestamp=ctx.at,
                    actor=ctx.actor,
                    correlation_id=ctx.correlation_id,
                    command=command,
                    request_digest=digest,
                    result=result,
                )
            ]

        def recorded_meanwhile() -> Result | None:
            # A concurrent request with the same key won: its result is the answer.
            earlier = self._recorded(record_id)
            return None if earlier is None else _replay(earlier, command, digest, request)

        result, replayed = self._run_until_saved(command, run, record, recorded_meanwhile)
        _log(command, result, replayed=replayed)
        if replayed:
            self._note_head()
        return result

    def _note_head(self) -> None:
        # A replayed command's events are somewhere before the log's head: name the head.
        note_written(self.name, self.recorder.max_notification_id() or 0)

    def _run_until_saved(
        self,
        command: str,
        run: Callable[[], Execution],
        extra: Callable[[Result], list[Any]],
        recorded_meanwhile: Callable[[], Result | None] | None = None,
    ) -> tuple[Result, bool]:
        """Run and save until a save succeeds; the flag says the result is a replay."""
        attempts = self.command_retry.attempts
        for attempt in range(1, attempts + 1):
            with _fresh_reads(attempt > 1):
                try:
                    aggregates, result = run()
                except DomainError:
                    # The request with the same key (a double tap) may have saved after this
                    # one looked for its record: its events now trip this one's rules, but
                    # its result is the answer.
                    earlier = recorded_meanwhile() if recorded_meanwhile is not None else None
                    if earlier is None:
                        raise
                    return earlier, True
            try:
                self.save(*aggregates, *extra(result))
            except IntegrityError:
                if recorded_meanwhile is not None:
                    earlier = recorded_meanwhile()
                    if earlier is not None:
                        return earlier, True
                if attempt == attempts:
                    log.warning(command, conflict=True, attempts=attempts)
                    raise ConcurrentChangeError(CONFLICT) from None
                log.info(command, rerun=attempt + 1)
                self._pause(attempt)
            else:
                return result, False
        raise AssertionError("unreachable")  # pragma: no cover

    def _pause(self, attempt: int) -> None:
        # Jittered, growing a little with each attempt, so two racers do not meet again.
        base = self.command_retry.pause_ms / 1000
        if base:
            time.sleep(base * attempt * random.uniform(0.5, 1.5))

    def _digest(self, command: str, request: Mapping[str, Any]) -> str:
        """What a command's record keeps of its request: an HMAC under a key of the
        installation's (wrapped by the master key beside the persons' keys), so the
        personal text in a request cannot be guessed back from it by trying candidates; a
        plain SHA-256 where no key store is configured."""
        key = self._digest_key
        if key is None:
            keys = self.person_keys
            if keys is None:
                return _plain_digest(command, request)
            key = self._digest_key = keys.derive(_DIGEST_KEY_OWNER, _DIGEST_INFO, create=True)
            assert key is not None  # the installation's key is never erased
        return KEYED_DIGEST + hmac.new(key, _request_body(command, request), "sha256").hexdigest()

    @staticmethod
    def _idempotency_record_id(ctx: CommandContext) -> UUID:
        # Keys are the client's; scope them to the user so two clients cannot collide.
        scope = f"idempotency/{ctx.actor.agency_id}/{ctx.actor.user_id}/{ctx.idempotency_key}"
        return uuid5(KETNOI_NAMESPACE, scope)

    def _recorded(self, record_id: UUID) -> CommandRecorded | None:
        for event in self.events.get(record_id, lte=1):
            if isinstance(event, CommandRecorded):
                return event
        return None


@contextmanager
def _fresh_reads(fresh: bool) -> Iterator[None]:
    token = _rerun.set(fresh)
    try:
        yield
    finally:
        _rerun.reset(token)


# The key of the digests of idempotent requests: one for the installation, kept as a
# person's key would be, under an id no person has.
_DIGEST_KEY_OWNER = uuid5(KETNOI_NAMESPACE, "installation/idempotency-digest")
_DIGEST_INFO = b"ketnoi-idempotency-digest/v1"
KEYED_DIGEST = "hmac-sha256:"


def _request_body(command: str, request: Mapping[str, Any]) -> bytes:
    return orjson.dumps({"command": command, "request": request}, option=orjson.OPT_SORT_KEYS)


def _plain_digest(command: str, request: Mapping[str, Any]) -> str:
    return hashlib.sha256(_request_body(command, request)).hexdigest()


def _replay(
    earlier: CommandRecorded, command: str, digest: str, request: Mapping[str, Any]
) -> Result:
    # A record made before digests were keyed (or without a key store) holds a plain one.
    if not earlier.request_digest.startswith(KEYED_DIGEST):
        digest = _plain_digest(command, request)
    if earlier.command != command or not hmac.compare_digest(earlier.request_digest, digest):
        raise IdempotencyKeyReusedError(
            "This Idempotency-Key was already used for a different request; "
            "use a new key for a new request."
        )
    return dict(earlier.result)


def _log(command: str, result: Result, *, replayed: bool) -> None:
    # Results hold ids, versions and states only, never personal data.
    log.info(command, replayed=replayed, **{k: v for k, v in result.items() if k != "person_id"})
