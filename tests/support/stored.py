"""Events as a reader of a log meets them: stored, then numbered as notifications."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from eventsourcing.persistence import Mapper, Notification


def as_notifications(mapper: Mapper[Any], events: Iterable[Any]) -> list[Notification]:
    """``events`` stored through ``mapper``, at positions 1, 2, … in the order given."""
    notifications = []
    for position, event in enumerate(events, start=1):
        stored = mapper.to_stored_event(event)
        notifications.append(
            Notification(
                id=position,
                originator_id=stored.originator_id,
                originator_version=stored.originator_version,
                topic=stored.topic,
                state=stored.state,
            )
        )
    return notifications
