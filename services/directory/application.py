"""The directory service: registers agencies and answers who an agency is."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from eventsourcing.application import AggregateNotFoundError

from contracts.directory import DIRECTORY_EVENTS, AgencyDetails, agency_record_id
from contracts.vocabulary import AgencyKind, ServiceType
from services.directory.domain import Agency, AgencyAlreadyRegisteredError, AgencyNotFoundError
from services.runtime.aggregate import CommandContext
from services.runtime.application import Result, ServiceApplication
from services.runtime.follower import topics_of
from services.runtime.persistence import decode_stored

_TOPICS = topics_of(DIRECTORY_EVENTS)


class DirectoryService(ServiceApplication):
    """The agency directory, its own log ``directory``."""

    name = "directory"

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        super().__init__(env=env)
        # Every agency, kept current from the log for listing and searching (a directory is
        # small: thousands of agencies at most).
        self._catalogue: dict[str, Agency] = {}
        self._position = 0
        self._lock = threading.Lock()

    # -- reading -----------------------------------------------------------------------------

    def get_agency(self, agency_id: str) -> Agency:
        """Raises AgencyNotFoundError when the directory has no such agency."""
        try:
            return self.load(Agency, agency_record_id(agency_id))
        except AggregateNotFoundError:
            raise AgencyNotFoundError(agency_id) from None

    def list_agencies(
        self,
        *,
        province: str | None = None,
        kind: AgencyKind | None = None,
        service: ServiceType | None = None,
        country: str | None = None,
        active: bool | None = None,
    ) -> list[Agency]:
        """Agencies matching every filter given, by agency id."""
        self._refresh()
        found = []
        for agency in self._catalogue.values():
            details = agency.current
            if (
                (province is None or details.province == province)
                and (kind is None or details.kind is kind)
                and (service is None or service in details.services)
                and (country is None or details.country == country)
                and (active is None or agency.active is active)
            ):
                found.append(agency)
        return sorted(found, key=lambda a: a.agency_id)

    def _refresh(self) -> None:
        with self._lock:
            while True:
                batch = self.recorder.select_notifications(
                    start=self._position + 1, limit=500, topics=_TOPICS
                )
                for notification in batch:
                    event = decode_stored(self.mapper, notification)
                    agency_id = getattr(event, "agency_id", "")
                    agency = self._catalogue.get(agency_id) or Agency(event.originator_id)
                    agency.apply(event)
                    self._catalogue[agency_id] = agency
                    self._position = notification.id
                if len(batch) < 500:
                    return

    # -- commands ----------------------------------------------------------------------------

    def register_agency(
        self, ctx: CommandContext, agency_id: str, details: AgencyDetails, *, active: bool = True
    ) -> Result:
        """Register a new agency. Raises AgencyAlreadyRegisteredError (409) for a known id and
        InvalidRequestError (422) for a reserved id or inconsistent details."""
        request = {"agency_id": agency_id, "details": _json(details), "active": active}

        def run() -> tuple[list[Any], Result]:
            if self._known(agency_id):
                raise AgencyAlreadyRegisteredError(agency_id)
            agency = Agency.register(ctx, agency_id, details, active=active)
            return [agency], _summary(agency)

        return self.execute(ctx, "register_agency", request, run)

    def change_details(self, ctx: CommandContext, agency_id: str, details: AgencyDetails) -> Result:
        """Replace an agency's details; nothing is recorded when they are the same."""
        request = {"agency_id": agency_id, "details": _json(details)}

        def run() -> tuple[list[Any], Result]:
            agency = self.get_agency(agency_id)
            changed = agency.change_details(ctx, details)
            return [agency], {**_summary(agency), "changed": changed}

        return self.execute(ctx, "change_agency_details", request, run)

    def deactivate(self, ctx: CommandContext, agency_id: str, reason: str | None = None) -> Result:
        """Raises AgencyRuleError (409) when the agency is inactive already."""

        def run() -> tuple[list[Any], Result]:
            agency = self.get_agency(agency_id)
            agency.deactivate(ctx, reason)
            return [agency], _summary(agency)

        request = {"agency_id": agency_id, "reason": reason}
        return self.execute(ctx, "deactivate_agency", request, run)

    def reactivate(self, ctx: CommandContext, agency_id: str, reason: str | None = None) -> Result:
        """Raises AgencyRuleError (409) when the agency is active already."""

        def run() -> tuple[list[Any], Result]:
            agency = self.get_agency(agency_id)
            agency.reactivate(ctx, reason)
            return [agency], _summary(agency)

        request = {"agency_id": agency_id, "reason": reason}
        return self.execute(ctx, "reactivate_agency", request, run)

    def ensure(
        self, ctx: CommandContext, agency_id: str, details: AgencyDetails, *, active: bool = True
    ) -> Result:
        """Make the directory say exactly this about an agency: register it, change its
        details, (de)activate it, or nothing when it already does. ``outcome`` in the result
        is ``registered``, ``changed`` or ``unchanged``. Used by imports and seeding, which
        may run again."""
        request = {"agency_id": agency_id, "details": _json(details), "active": active}

        def run() -> tuple[list[Any], Result]:
            if not self._known(agency_id):
                agency = Agency.register(ctx, agency_id, details, active=active)
                return [agency], {**_summary(agency), "outcome": "registered"}
            agency = self.get_agency(agency_id)
            changed = agency.change_details(ctx, details)
            if active != agency.active:
                (agency.reactivate if active else agency.deactivate)(ctx, None)
                changed = True
            outcome = "changed" if changed else "unchanged"
            return ([agency] if changed else []), {**_summary(agency), "outcome": outcome}

        return self.execute(ctx, "ensure_agency", request, run)

    def _known(self, agency_id: str) -> bool:
        return any(True for _ in self.events.get(agency_record_id(agency_id), lte=1))


def _json(details: AgencyDetails) -> dict[str, Any]:
    return details.model_dump(mode="json")


def _summary(agency: Agency) -> Result:
    return {"agency_id": agency.agency_id, "version": agency.version, "active": agency.active}
