"""Which fields of which events hold a person's data, and what they read as once erased.

A field is marked with ``Personal`` in its annotation (``Annotated[str, PERSONAL]``), in an
event or in a model nested in one (through tuples of models too). The event store encrypts
the values of these fields under a key of the event's ``person_id`` (an event without one is
stored as it is: its marked fields are empty or it names no person); destroying that key
(erasure) leaves each of them reading as its ``erased`` value, one that still validates, so
every reader of a log goes on decoding it.

What stays in clear: ids, versions, times of events, agencies, stages and the closed
vocabularies that route a case, decide consent and make the anonymised statistics (needs,
risk level, exploitation types, mental state, scores). Names, dates of birth, nationality,
languages, sex, places, notes, findings, reasons, feedback, the person's own words, guardian
details, the facts a referral copies and the values a disclosure released are personal.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from types import NoneType, UnionType
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

# What a personal text reads as once the person's key is destroyed.
ERASED_TEXT = "[personal data erased]"
_UNSET: Any = object()

Path = tuple[str, ...]  # field names, and "*" for every item of a tuple


@dataclass(frozen=True)
class Personal:
    """Marks a field as the person's data; ``erased`` is its value once erased (by default
    the field's default, else an empty text, mapping or tuple)."""

    erased: Any = _UNSET


PERSONAL = Personal()


def personal_paths(model: type[BaseModel]) -> dict[Path, Any]:
    """Every personal field of ``model`` (nested models included) and its erased value, as
    it is stored (JSON). Raises TypeError for a marked field with no erased value."""
    return dict(_paths(model))


@cache
def _paths(model: type[BaseModel]) -> tuple[tuple[Path, Any], ...]:
    return tuple(_walk(model, ()))


def _walk(model: type[BaseModel], prefix: Path) -> Iterator[tuple[Path, Any]]:
    for name, info in model.model_fields.items():
        path = (*prefix, name)
        marks = _marks(info)
        if marks:
            yield path, _erased_value(model, name, info, marks[0])
            continue
        for nested, many in _nested_models(info.annotation):
            yield from _walk(nested, (*path, "*") if many else path)


def _marks(info: FieldInfo) -> list[Personal]:
    """The field's marks, also where it is an optional marked alias (``PersonalText | None``)."""
    found = [m for m in info.metadata if isinstance(m, Personal)]
    if get_origin(info.annotation) in (Union, UnionType):
        for arg in get_args(info.annotation):
            found += [m for m in getattr(arg, "__metadata__", ()) if isinstance(m, Personal)]
    return found


def _nested_models(annotation: Any) -> Iterator[tuple[type[BaseModel], bool]]:
    origin = get_origin(annotation)
    if origin in (Union, UnionType):
        for arg in get_args(annotation):
            if arg is not NoneType:
                yield from _nested_models(arg)
        return
    if origin is tuple:
        args = get_args(annotation)
        if len(args) == 2 and args[1] is Ellipsis:
            for nested, _ in _nested_models(args[0]):
                yield nested, True
        return
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation, False


def _erased_value(model: type[BaseModel], name: str, info: FieldInfo, mark: Personal) -> Any:
    if mark.erased is not _UNSET:
        return _json(mark.erased)
    if not info.is_required():
        return _json(info.get_default(call_default_factory=True))
    kind = get_origin(info.annotation) or info.annotation
    if kind is str:
        return ERASED_TEXT
    if kind is dict:
        return {}
    if kind is tuple:
        return []
    msg = f"{model.__name__}.{name} is personal but has no erased value; give Personal(erased=)"
    raise TypeError(msg)


def _json(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_json(v) for v in value]
    if hasattr(value, "value"):  # an enum member: stored as its value
        return value.value
    return value


__all__ = ["ERASED_TEXT", "PERSONAL", "Personal", "personal_paths"]
