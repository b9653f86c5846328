"""Several writers' saves in one sealed transaction (see ``services/runtime/group_commit.py``).

Mixins of the sealed recorders. On PostgreSQL the transaction takes the table lock first, so
the versions already stored cannot change under it: one query finds the saves that would
break the log's unique key, those are left out, and the rest go in with one insert, sealed as
the library's own insert is (a batch of one save skips the query: its conflict fails its
insert). On SQLite each save is written under a savepoint, and one that
breaks a constraint is rolled back alone.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    OperationalError,
)
from eventsourcing.utils import retry
from psycopg.sql import SQL, Identifier

from services.runtime.group_commit import Group

Key = tuple[UUID | str, int]


def _keys(group: Group) -> set[Key]:
    return {(e.originator_id, e.originator_version) for e in group.events}


def _first_of_each_key(groups: Sequence[Group]) -> list[int]:
    """The groups that repeat no aggregate version an earlier group of the batch writes (two
    commands that loaded the same version: the first wins, as it would alone)."""
    seen: set[Key] = set()
    chosen: list[int] = []
    for index, group in enumerate(groups):
        keys = _keys(group)
        if keys.isdisjoint(seen):
            chosen.append(index)
            seen |= keys
    return chosen


def _split(
    groups: Sequence[Group], accepted: Sequence[int], ids: Sequence[int]
) -> list[Sequence[int] | None]:
    outcomes: list[Sequence[int] | None] = [None] * len(groups)
    start = 0
    for index in accepted:
        count = len(groups[index].events)
        outcomes[index] = list(ids[start : start + count])
        start += count
    return outcomes


class PostgresGroups:
    """Mixin of a sealed PostgreSQL recorder: ``insert_groups`` in one transaction."""

    datastore: Any
    events_table_name: str

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._select_taken = SQL(
            "SELECT e.originator_id, e.originator_version FROM {events} e "
            "JOIN unnest(%s::uuid[], %s::int8[]) AS k(id, version) "
            "ON e.originator_id = k.id AND e.originator_version = k.version"
        ).format(events=Identifier(self.datastore.schema, self.events_table_name))

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_groups(self, groups: Sequence[Group]) -> list[Sequence[int] | None]:
        """See ``GroupRecorder``."""
        accepted = _first_of_each_key(groups)
        ids: Sequence[int] = []
        # An exception anywhere below leaves the transaction block, which rolls it back.
        with (
            self.datastore.get_connection() as conn,
            conn.pipeline() as pipeline,
            conn.transaction(),
            conn.cursor() as curs,
        ):
            self._lock_table(curs)  # type: ignore[attr-defined]
            keys = [key for index in accepted for key in _keys(groups[index])]
            # A save alone needs no look: its conflict fails the insert, and so its batch.
            if keys and len(groups) > 1:
                # Under the lock: no other writer can store these versions meanwhile.
                curs.execute(
                    self._select_taken,
                    ([k[0] for k in keys], [k[1] for k in keys]),
                    prepare=True,
                )
                pipeline.sync()
                taken = {(r["originator_id"], r["originator_version"]) for r in curs}
                accepted = [i for i in accepted if _keys(groups[i]).isdisjoint(taken)]
            for index in accepted:
                tracking = groups[index].tracking
                if tracking is not None:
                    # Raises IntegrityError when another process tracked it first: the
                    # whole batch is rolled back and its saves are written one by one.
                    self._insert_tracking(curs, tracking)  # type: ignore[attr-defined]
            events = [e for index in accepted for e in groups[index].events]
            if events:
                self._insert_stored_events(curs, events)  # type: ignore[attr-defined]
                pipeline.sync()
                ids = self._fetch_ids_after_insert_events(  # type: ignore[attr-defined]
                    curs, events
                )
        return _split(groups, accepted, ids)


class SQLiteGroups:
    """Mixin of a sealed SQLite recorder: ``insert_groups`` in one transaction."""

    datastore: Any

    def insert_groups(self, groups: Sequence[Group]) -> list[Sequence[int] | None]:
        """See ``GroupRecorder``."""
        outcomes: list[Sequence[int] | None] = []
        with self.datastore.transaction(commit=True) as c:
            for group in groups:
                c.execute("SAVEPOINT ketnoi_group")
                try:
                    ids = self._insert_events(  # type: ignore[attr-defined]
                        c, list(group.events), tracking=group.tracking
                    )
                except (sqlite3.IntegrityError, IntegrityError):
                    c.execute("ROLLBACK TO ketnoi_group")
                    outcomes.append(None)
                else:
                    outcomes.append(list(ids or ()))
                c.execute("RELEASE ketnoi_group")
        return outcomes
