"""A small base for aggregates whose events are ``contracts`` models.

The library's declarative aggregates nest their event classes; Ketnoi's events live in
``contracts`` so that other services can read them. An aggregate here names, with
``@applies(EventType)``, the method that applies each event type to its state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Self, TypeVar
from uuid import UUID

from contracts.envelope import Actor, Event

E = TypeVar("E", bound=Event)
Applier = Callable[[Any, Any], None]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class CommandContext:
    """Who is acting, when, and on which request; passed to every command."""

    actor: Actor
    at: datetime = field(default_factory=utcnow)
    correlation_id: UUID | None = None
    idempotency_key: str | None = None
    caused_by: UUID | None = None


def applies(event_type: type[Event]) -> Callable[[Applier], Applier]:
    """Mark a method as the one that applies ``event_type`` to the aggregate."""

    def decorate(method: Applier) -> Applier:
        method.__dict__["_applies"] = event_type
        return method

    return decorate


class Aggregate:
    """Base of event-sourced aggregates that apply contract events."""

    _appliers: ClassVar[dict[type[Event], Applier]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        appliers = dict(cls._appliers)
        for value in cls.__dict__.values():
            event_type = getattr(value, "_applies", None)
            if event_type is not None:
                appliers[event_type] = value
        cls._appliers = appliers

    def __init__(self, aggregate_id: UUID) -> None:
        self.id = aggregate_id
        self.version = 0
        self.created_on: datetime | None = None
        self.modified_on: datetime | None = None
        self._pending: list[Event] = []

    def trigger(self, ctx: CommandContext, event_type: type[E], **fields: Any) -> E:
        """Create the next event of this aggregate, apply it, and keep it for saving.

        An event type that may name a person is given the aggregate's ``person_id`` when the
        caller names none, so its personal fields are encrypted under that person's key."""
        if "person_id" in event_type.model_fields and "person_id" not in fields:
            person_id = getattr(self, "person_id", None)
            if isinstance(person_id, UUID) and person_id != self.id:
                fields["person_id"] = person_id
        event = event_type(
            originator_id=self.id,
            originator_version=self.version + 1,
            timestamp=ctx.at,
            actor=ctx.actor,
            correlation_id=ctx.correlation_id,
            caused_by=ctx.caused_by,
            **fields,
        )
        self.apply(event)
        self._pending.append(event)
        return event

    def apply(self, event: Event) -> None:
        try:
            applier = self._appliers[type(event)]
        except KeyError:
            msg = f"{type(self).__name__} does not apply {type(event).event_type}"
            raise TypeError(msg) from None
        applier(self, event)
        self.version = event.originator_version
        if self.created_on is None:
            self.created_on = event.timestamp
        self.modified_on = event.timestamp

    def collect_events(self) -> list[Event]:
        """Hand over the events not yet saved (the library calls this on save)."""
        pending, self._pending = self._pending, []
        return pending

    @classmethod
    def project(cls, aggregate: Self | None, events: Iterable[Any]) -> Self | None:
        """Rebuild (or fast-forward) an aggregate from its stored events."""
        for event in events:
            if aggregate is None:
                aggregate = cls(event.originator_id)
            aggregate.apply(event)
        return aggregate
