"""Every process knows the agency directory: a small reader of the directory log.

The ``AgencyRegister`` keeps agency id -> kind, jurisdiction, names and whether it is active,
read from the ``directory`` log (the runtime knows the directory's contracts, never the
service). It catches up cheaply: one look at the log's last position, and a read of only what
is new. It does so when an entry is older than ``max_age`` seconds, when an agency it does not
know is asked for (so an agency registered a moment ago is known on the next request, in any
process), and, in the process that runs the directory, after every save there.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Annotated, Any, Protocol

from fastapi import Depends, Request

from contracts.directory import (
    DIRECTORY_EVENTS,
    AgencyDeactivated,
    AgencyDetailsChanged,
    AgencyReactivated,
    AgencyRegistered,
)
from contracts.envelope import AgencyRef, Event
from contracts.vocabulary import AgencyKind
from services.runtime.application import ServiceApplication
from services.runtime.errors import InvalidRequestError
from services.runtime.follower import Upstream, open_upstream
from services.runtime.persistence import decode_stored
from services.runtime.settings import Settings

BATCH = 500


@dataclass(frozen=True)
class KnownAgency:
    """An agency as the directory says it is now."""

    agency_id: str
    kind: AgencyKind
    country: str
    province: str
    district: str | None
    name_vi: str
    name_en: str
    active: bool

    def ref(self) -> AgencyRef:
        return AgencyRef(agency_id=self.agency_id, kind=self.kind)


class AgencyLookup(Protocol):
    """What callers need of the directory: one agency by id, current."""

    def lookup(self, agency_id: str) -> KnownAgency | None: ...


class AgencyRegister:
    """An in-memory map of the directory, following its log. Safe to share between threads."""

    def __init__(
        self,
        open_log: Callable[[], Upstream],
        *,
        max_age: float = 1.0,
        owns_log: bool = False,
    ) -> None:
        self._open_log = open_log
        self._log: Upstream | None = None
        self._owns_log = owns_log  # close the log's store with the register
        self.max_age = max_age
        self._agencies: dict[str, KnownAgency] = {}
        self._position = 0
        self._checked_at = float("-inf")
        self._lock = threading.Lock()

    @classmethod
    def of(
        cls,
        settings: Settings,
        app: ServiceApplication | None = None,
        *,
        max_age: float | None = None,
    ) -> AgencyRegister:
        """A register of the directory log: the in-process directory app's when there is one,
        else its tables (opened at the first look, never created here). ``max_age`` defaults
        to ``KETNOI_DIRECTORY_REFRESH_SECONDS``."""

        # One reader at a time (refreshes take a lock): a connection or two is plenty.
        small = settings.model_copy(update={"pg_pool_size": 1, "pg_max_overflow": 1})

        def open_log() -> Upstream:
            return open_upstream(small, "directory", DIRECTORY_EVENTS, app=app)

        age = settings.directory_refresh_seconds if max_age is None else max_age
        register = cls(open_log, max_age=age, owns_log=app is None)
        if app is not None:
            register.follow_saves_of(app)
        return register

    # -- reading -----------------------------------------------------------------------------

    def lookup(self, agency_id: str) -> KnownAgency | None:
        """The agency as the directory says it is now, or None when it has no such agency."""
        if time.monotonic() - self._checked_at > self.max_age:
            self.refresh()
        found = self._agencies.get(agency_id)
        if found is None:
            # Perhaps registered a moment ago, in another process.
            self.refresh()
            found = self._agencies.get(agency_id)
        return found

    def peek(self, agency_id: str) -> KnownAgency | None:
        """The agency as last read, when that read is recent enough and knows it; None when
        only ``lookup`` (which may read the directory log) can tell."""
        if time.monotonic() - self._checked_at > self.max_age:
            return None
        return self._agencies.get(agency_id)

    def resolve(self, agency_id: str, field: str) -> AgencyRef:
        """See ``resolve_agency``."""
        return resolve_agency(self, agency_id, field)

    def agencies(self) -> list[KnownAgency]:
        """Every agency known, by id (after catching up)."""
        self.refresh()
        return sorted(self._agencies.values(), key=lambda a: a.agency_id)

    @property
    def position(self) -> int:
        """The last position of the directory log read."""
        return self._position

    # -- catching up -------------------------------------------------------------------------

    def refresh(self) -> int:
        """Read what the directory log gained since the last look; returns how many events.

        Costs one query of the log's last position when nothing is new.
        """
        with self._lock:
            log = self._log
            if log is None:
                log = self._log = self._open_log()
            self._checked_at = time.monotonic()
            last = log.recorder.max_notification_id() or 0
            applied = 0
            while self._position < last:
                batch = log.recorder.select_notifications(
                    start=self._position + 1, limit=BATCH, stop=last, topics=log.topics
                )
                for notification in batch:
                    self._apply(decode_stored(log.mapper, notification))
                    applied += 1
                self._position = batch[-1].id if len(batch) == BATCH else last
            return applied

    def close(self) -> None:
        """Close the connections to the directory log this register opened itself."""
        with self._lock:
            log, self._log = self._log, None
        if log is not None and self._owns_log:
            datastore = getattr(log.recorder, "datastore", None)
            if datastore is not None:
                datastore.close()

    def mark_stale(self) -> None:
        """Look at the log again on the next lookup."""
        self._checked_at = float("-inf")

    def follow_saves_of(self, app: ServiceApplication) -> None:
        """In the process that runs the directory, look again after each of its saves."""
        previous: Callable[[Any], None] = app._notify

        def notify(recordings: Any) -> None:
            previous(recordings)
            self.mark_stale()

        app._notify = notify  # type: ignore[method-assign]

    def load(self, events: Iterable[Event]) -> None:
        """Apply events directly (tests and tools that hold a directory log's events)."""
        with self._lock:
            for event in events:
                self._apply(event)

    def _apply(self, event: Event) -> None:
        if isinstance(event, AgencyRegistered | AgencyDetailsChanged):
            d = event.details
            earlier = self._agencies.get(event.agency_id)
            self._agencies[event.agency_id] = KnownAgency(
                agency_id=event.agency_id,
                kind=d.kind,
                country=d.country,
                province=d.province,
                district=d.district,
                name_vi=d.name_vi,
                name_en=d.name_en,
                active=event.active
                if isinstance(event, AgencyRegistered)
                else (earlier.active if earlier else True),
            )
        elif isinstance(event, AgencyDeactivated | AgencyReactivated):
            known = self._agencies.get(event.agency_id)
            if known is not None:
                active = isinstance(event, AgencyReactivated)
                self._agencies[event.agency_id] = replace(known, active=active)


def resolve_agency(agencies: AgencyLookup, agency_id: str, field: str) -> AgencyRef:
    """The agency named in a request, with its kind from the directory.

    Raises InvalidRequestError (422) naming ``field`` when the directory does not know the
    agency or it is inactive.
    """
    found = agencies.lookup(agency_id)
    if found is None:
        raise InvalidRequestError(
            field,
            f"No agency {agency_id!r} in the agency directory; check the id "
            "(GET /directory/agencies lists them) or ask an administrator to register it.",
        )
    if not found.active:
        raise InvalidRequestError(
            field, f"The agency {agency_id!r} is inactive in the agency directory."
        )
    return found.ref()


async def agency_register(request: Request) -> AgencyRegister:
    """FastAPI dependency: the app's agency register (async: no thread is needed for it)."""
    register: AgencyRegister = request.app.state.agencies
    return register


Agencies = Annotated[AgencyRegister, Depends(agency_register)]
