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
import threading
import time
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    OperationalError,
)
from psycopg.sql import SQL, Identifier

from services.runtime.group_commit import Group

Key = tuple[UUID | str, int]

_ATTEMPTS = 10
_PAUSE_SECONDS = 0.2


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
        self._select_stored = SQL(
            "SELECT e.originator_id, e.originator_version, e.state, e.notification_id "
            "FROM {events} e JOIN unnest(%s::uuid[], %s::int8[]) AS k(id, version) "
            "ON e.originator_id = k.id AND e.originator_version = k.version"
        ).format(events=Identifier(self.datastore.schema, self.events_table_name))
        self._holding = threading.local()

    def insert_groups(self, groups: Sequence[Group]) -> list[Sequence[int] | None]:
        """See ``GroupRecorder``. Tried again on a lost connection; a connection lost while
        committing leaves it unknown whether the transaction committed, so each attempt after
        the first looks for the batch's own events first (its versions holding its very
        bytes) and answers those saves as written instead of running their commands twice."""
        attempt = 1
        while True:
            try:
                return self._insert_groups(groups, look_for_own=attempt > 1)
            except (InterfaceError, OperationalError):
                if attempt >= _ATTEMPTS:
                    raise
                attempt += 1
                time.sleep(_PAUSE_SECONDS)

    def _insert_groups(
        self, groups: Sequence[Group], *, look_for_own: bool
    ) -> list[Sequence[int] | None]:
        accepted = _first_of_each_key(groups)
        written: dict[int, list[int]] = {}
        ids: Sequence[int] = []
        # An exception anywhere below leaves the transaction block, which rolls it back.
        with (
            self.datastore.get_connection() as conn,
            conn.pipeline() as pipeline,
            conn.transaction(),
            conn.cursor() as curs,
        ):
            self._lock_table(curs)
            self._holding.conn = conn  # the insert below need not take the lock again
            try:
                keys = [key for index in accepted for key in _keys(groups[index])]
                if keys and look_for_own:
                    curs.execute(
                        self._select_stored,
                        ([k[0] for k in keys], [k[1] for k in keys]),
                        prepare=True,
                    )
                    pipeline.sync()
                    stored = {
                        (r["originator_id"], r["originator_version"]): (
                            bytes(r["state"]),
                            r["notification_id"],
                        )
                        for r in curs
                    }
                    for index in accepted:
                        own = _own_ids(groups[index], stored)
                        if own is not None:
                            written[index] = own
                    accepted = [
                        i
                        for i in accepted
                        if i not in written and _keys(groups[i]).isdisjoint(stored)
                    ]
                # A save alone needs no look: its conflict fails the insert, and its batch.
                elif keys and len(groups) > 1:
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
            finally:
                self._holding.conn = None
        outcomes = _split(groups, accepted, ids)
        for index, own in written.items():
            outcomes[index] = own
        return outcomes

    def _lock_table(self, curs: Any) -> None:
        """The library's table lock, taken once per transaction of ``insert_groups`` (its
        insert asks for it again)."""
        if getattr(self._holding, "conn", None) is curs.connection:
            return
        super()._lock_table(curs)  # type: ignore[misc]


def _own_ids(group: Group, stored: dict[Key, tuple[bytes, int]]) -> list[int] | None:
    """The positions of ``group``'s events when each is stored with the very bytes of the
    group's (an earlier attempt of this batch committed it); None otherwise."""
    found = []
    for event in group.events:
        row = stored.get((event.originator_id, event.originator_version))
        if row is None or row[0] != bytes(event.state):
            return None
        found.append(row[1])
    return found or None


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
