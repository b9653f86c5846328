"""The base of every service's Application: contract events, one log, idempotent commands."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from uuid import UUID, uuid5

import orjson
from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError, Mapper

from contracts.envelope import KETNOI_NAMESPACE, CommandRecorded, Event
from services.runtime.aggregate import Aggregate, CommandContext
from services.runtime.errors import ConcurrentChangeError, IdempotencyKeyReusedError
from services.runtime.logging import get_logger
from services.runtime.persistence import OrjsonTranscoder, PydanticMapper

log = get_logger("ketnoi.command")

A = TypeVar("A", bound=Aggregate)

Result = dict[str, Any]
Execution = tuple[list[Aggregate], Result]


class ServiceApplication(Application[UUID]):
    """An eventsourcing Application that stores ``contracts`` events."""

    def construct_mapper(self) -> Mapper[UUID]:
        return self.factory.mapper(transcoder=OrjsonTranscoder(), mapper_class=PydanticMapper)

    def load(self, aggregate_type: type[A], aggregate_id: UUID) -> A:
        """Rebuild an aggregate; raises AggregateNotFoundError when it has no events."""
        aggregate = self.repository.get(aggregate_id, projector_func=aggregate_type.project)
        if not isinstance(aggregate, aggregate_type):
            raise AggregateNotFoundError(aggregate_id)
        return aggregate

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

        With an Idempotency-Key in ``ctx`` the first result is recorded beside the command's
        events; a retry with the same key returns that result and appends nothing. Raises
        IdempotencyKeyReusedError when the key was used for a different request, and
        ConcurrentChangeError when another writer changed the aggregate meanwhile.
        """
        if ctx.idempotency_key is None:
            aggregates, result = run()
            self._save_or_conflict(*aggregates)
            _log(command, result, replayed=False)
            return result

        record_id = self._idempotency_record_id(ctx)
        digest = _digest(command, request)
        earlier = self._recorded(record_id)
        if earlier is not None:
            result = _replay(earlier, command, digest)
            _log(command, result, replayed=True)
            return result

        aggregates, result = run()
        record = CommandRecorded(
            originator_id=record_id,
            originator_version=1,
            timestamp=ctx.at,
            actor=ctx.actor,
            correlation_id=ctx.correlation_id,
            command=command,
            request_digest=digest,
            result=result,
        )
        try:
            self.save(*aggregates, record)
        except IntegrityError:
            earlier = self._recorded(record_id)
            if earlier is None:
                raise ConcurrentChangeError(
                    "The record was changed by someone else meanwhile; read it again and retry."
                ) from None
            result = _replay(earlier, command, digest)
            _log(command, result, replayed=True)
            return result
        _log(command, result, replayed=False)
        return result

    def _save_or_conflict(self, *aggregates: Aggregate) -> None:
        try:
            self.save(*aggregates)
        except IntegrityError:
            raise ConcurrentChangeError(
                "The record was changed by someone else meanwhile; read it again and retry."
            ) from None

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


def _digest(command: str, request: Mapping[str, Any]) -> str:
    body = orjson.dumps({"command": command, "request": request}, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(body).hexdigest()


def _replay(earlier: CommandRecorded, command: str, digest: str) -> Result:
    if earlier.command != command or earlier.request_digest != digest:
        raise IdempotencyKeyReusedError(
            "This Idempotency-Key was already used for a different request; "
            "use a new key for a new request."
        )
    return dict(earlier.result)


def _log(command: str, result: Result, *, replayed: bool) -> None:
    # Results hold ids, versions and states only, never personal data.
    log.info(command, replayed=replayed, **{k: v for k, v in result.items() if k != "person_id"})
