"""The Agency: an organisation that takes part in referrals, as the directory knows it."""

from __future__ import annotations

from uuid import UUID

from contracts.directory import (
    NATIONAL_JURISDICTION,
    PLATFORM_AGENCY_ID,
    AgencyDeactivated,
    AgencyDetails,
    AgencyDetailsChanged,
    AgencyReactivated,
    AgencyRegistered,
    agency_record_id,
)
from services.runtime.aggregate import Aggregate, CommandContext, applies
from services.runtime.errors import InvalidRequestError, NotFoundError, RuleViolationError


class AgencyNotFoundError(NotFoundError):
    def __init__(self, agency_id: str) -> None:
        super().__init__(f"No agency {agency_id!r} in the directory.", agency_id=agency_id)


class AgencyAlreadyRegisteredError(RuleViolationError):
    def __init__(self, agency_id: str) -> None:
        super().__init__(
            f"The agency {agency_id!r} is already in the directory; change its details instead.",
            allowed=["change_details"],
            agency_id=agency_id,
        )


class AgencyRuleError(RuleViolationError):
    """A command the agency's current state forbids."""


def check_agency_id(agency_id: str) -> None:
    """Raises InvalidRequestError for the id reserved to the platform's own actor."""
    if agency_id == PLATFORM_AGENCY_ID:
        raise InvalidRequestError(
            "agency_id",
            f"{PLATFORM_AGENCY_ID!r} is reserved for the platform itself; choose another id.",
        )


def check_details(details: AgencyDetails) -> None:
    """Raises InvalidRequestError naming the field when the details contradict each other."""
    if len(set(details.services)) != len(details.services):
        raise InvalidRequestError("services", "Name each service once.")
    if details.province == NATIONAL_JURISDICTION and details.district is not None:
        raise InvalidRequestError(
            "district", "A national agency (province *) has no district; leave it out."
        )


class Agency(Aggregate):
    def __init__(self, aggregate_id: UUID) -> None:
        super().__init__(aggregate_id)
        self.agency_id = ""
        self.details: AgencyDetails | None = None
        self.active = False

    @property
    def current(self) -> AgencyDetails:
        assert self.details is not None
        return self.details

    @classmethod
    def register(
        cls, ctx: CommandContext, agency_id: str, details: AgencyDetails, *, active: bool = True
    ) -> Agency:
        """A new agency; raises InvalidRequestError for a reserved id or inconsistent details."""
        check_agency_id(agency_id)
        check_details(details)
        agency = cls(agency_record_id(agency_id))
        agency.trigger(ctx, AgencyRegistered, agency_id=agency_id, details=details, active=active)
        return agency

    def change_details(self, ctx: CommandContext, details: AgencyDetails) -> bool:
        """Replace the details; returns False (and records nothing) when nothing changed."""
        check_details(details)
        if details == self.details:
            return False
        self.trigger(ctx, AgencyDetailsChanged, agency_id=self.agency_id, details=details)
        return True

    def deactivate(self, ctx: CommandContext, reason: str | None = None) -> None:
        """Raises AgencyRuleError when the agency is inactive already."""
        if not self.active:
            raise AgencyRuleError(
                f"The agency {self.agency_id!r} is inactive already.", allowed=["reactivate"]
            )
        self.trigger(ctx, AgencyDeactivated, agency_id=self.agency_id, reason=reason)

    def reactivate(self, ctx: CommandContext, reason: str | None = None) -> None:
        """Raises AgencyRuleError when the agency is active already."""
        if self.active:
            raise AgencyRuleError(
                f"The agency {self.agency_id!r} is active already.", allowed=["deactivate"]
            )
        self.trigger(ctx, AgencyReactivated, agency_id=self.agency_id, reason=reason)

    @applies(AgencyRegistered)
    def _registered(self, event: AgencyRegistered) -> None:
        self.agency_id = event.agency_id
        self.details = event.details
        self.active = event.active

    @applies(AgencyDetailsChanged)
    def _changed(self, event: AgencyDetailsChanged) -> None:
        self.details = event.details

    @applies(AgencyDeactivated)
    def _deactivated(self, _event: AgencyDeactivated) -> None:
        self.active = False

    @applies(AgencyReactivated)
    def _reactivated(self, _event: AgencyReactivated) -> None:
        self.active = True
