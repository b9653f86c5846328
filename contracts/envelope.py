"""The envelope every stored event shares, and the registry of event types.

An event type has a stable dotted name (``org.ketnoi.intake.reception_recorded``) and a
version. The stored topic of an event is ``<name>.v<version>``: it names no Python module, so
code can move without rewriting history. Adding an optional field keeps the version; a
breaking change bumps it and registers an upcaster from the previous version, so every stored
version keeps decoding (the golden fixtures in ``tests/contract`` hold us to that).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, ClassVar
from uuid import UUID, uuid5

from pydantic import BaseModel, ConfigDict, Field

from contracts.vocabulary import AgencyKind, Role

# Namespace for deterministic ids derived inside Ketnoi (event ids, idempotency records).
KETNOI_NAMESPACE = UUID("6c0f4a8e-2a53-5b8e-9d0e-4b1f8d6c2e71")

_NAME_PATTERN = re.compile(r"^org\.ketnoi(\.[a-z][a-z0-9_]*)+$")
_TOPIC_PATTERN = re.compile(r"^(?P<name>.+)\.v(?P<version>[1-9][0-9]*)$")

Slug = str  # agency ids, user ids: lower-case, no personal data
# An agency id: a lower-case slug (never personal data), the same rule wherever one appears.
AGENCY_ID_PATTERN = r"^[a-z0-9][a-z0-9_.-]*$"

# An agency id is a lower-case slug (``dong-thap-police``): letters, digits and inner hyphens,
# at most 63 characters, like a DNS label. It names Kafka topics (``ketnoi.agency.<id>``), so
# it has no '.' or '_' (Kafka treats them alike in metric names: two agencies would collide)
# and nothing a URL or a topic would need to escape. This is the one place the rule lives.
AGENCY_ID_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
AGENCY_ID_MAX_LENGTH = 63
AgencyId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=AGENCY_ID_MAX_LENGTH,
        pattern=AGENCY_ID_PATTERN,
        description="an agency's id: a lower-case slug such as dong-thap-police",
    ),
]


class Model(BaseModel):
    """A frozen value object that refuses unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)


class Actor(Model):
    """Who did it: the user, their agency and the role they acted in."""

    user_id: str = Field(min_length=1, max_length=120)
    agency_id: AgencyId
    role: Role


class AgencyRef(Model):
    """An agency as named in an event: its stable id and its kind."""

    agency_id: AgencyId
    kind: AgencyKind


class Event(Model):
    """Base of every stored event.

    Subclasses set ``event_type`` (stable dotted name) and, when they change incompatibly,
    ``event_version``. ``originator_id`` is the aggregate's id (a random UUID, never personal
    data); ``originator_version`` its position in that aggregate's history.
    """

    event_type: ClassVar[str]
    event_version: ClassVar[int] = 1

    originator_id: UUID
    originator_version: int = Field(ge=1)
    timestamp: datetime
    actor: Actor
    caused_by: UUID | None = None
    correlation_id: UUID | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "event_type" in cls.__dict__:
            register(cls)

    @property
    def event_id(self) -> UUID:
        """A stable id for this event, the same wherever it is read or re-published."""
        return event_id_of(self.originator_id, self.originator_version)

    @classmethod
    def topic(cls) -> str:
        return f"{cls.event_type}.v{cls.event_version}"


def event_id_of(originator_id: UUID, originator_version: int) -> UUID:
    return uuid5(KETNOI_NAMESPACE, f"{originator_id}/{originator_version}")


Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

_CURRENT: dict[str, type[Event]] = {}
_CURRENT_TOPICS: dict[str, type[Event]] = {}  # "<name>.v<current version>" -> class
_UPCASTERS: dict[tuple[str, int], Upcaster] = {}


class UnknownEventTypeError(LookupError):
    """A stored topic names an event type or version this code does not know."""


def register(cls: type[Event]) -> None:
    name = cls.event_type
    if not _NAME_PATTERN.match(name):
        msg = f"event type {name!r} must be dotted lower-case under 'org.ketnoi.'"
        raise ValueError(msg)
    existing = _CURRENT.get(name)
    if existing is not None and existing is not cls:
        msg = f"event type {name!r} is defined twice: {existing!r} and {cls!r}"
        raise ValueError(msg)
    _CURRENT[name] = cls
    _CURRENT_TOPICS[cls.topic()] = cls


def upcaster(name: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register a function that turns the state of ``name`` v``from_version`` into v+1."""

    def decorate(func: Upcaster) -> Upcaster:
        _UPCASTERS[(name, from_version)] = func
        return func

    return decorate


def event_types() -> dict[str, type[Event]]:
    """Every registered event type by name (the current version of each)."""
    return dict(_CURRENT)


def current_class(topic: str) -> type[Event] | None:
    """The class of a stored topic when it names its type's current version, else None."""
    return _CURRENT_TOPICS.get(topic)


def resolve(topic: str, state: dict[str, Any]) -> tuple[type[Event], dict[str, Any]]:
    """Find the current class for a stored topic and upcast the stored state to it.

    Raises UnknownEventTypeError when the name is unknown, when the stored version is newer
    than this code, or when an upcaster in the chain is missing.
    """
    current = _CURRENT_TOPICS.get(topic)
    if current is not None:  # stored in its current version: nothing to upcast
        return current, state
    match = _TOPIC_PATTERN.match(topic)
    if match is None:
        msg = f"not a Ketnoi event topic: {topic!r}"
        raise UnknownEventTypeError(msg)
    name, version = match["name"], int(match["version"])
    try:
        cls = _CURRENT[name]
    except KeyError:
        msg = f"unknown event type {name!r}"
        raise UnknownEventTypeError(msg) from None
    if version > cls.event_version:
        msg = f"{name} v{version} is newer than this code (v{cls.event_version})"
        raise UnknownEventTypeError(msg)
    while version < cls.event_version:
        try:
            step = _UPCASTERS[(name, version)]
        except KeyError:
            msg = f"no upcaster for {name} from v{version}"
            raise UnknownEventTypeError(msg) from None
        state = step(state)
        version += 1
    return cls, state


class CommandRecorded(Event):
    """A command carried an Idempotency-Key; its first result is kept here.

    Recorded in the same transaction as the command's own events, as version 1 of an id
    derived from the key, so a retry can neither append twice nor see a different result.
    """

    event_type = "org.ketnoi.runtime.command_recorded"

    command: str
    request_digest: str
    result: dict[str, Any]
