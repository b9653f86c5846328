"""Events of the agency directory: who an agency is, what kind, where, and what it offers.

The directory is the authority on agencies. Everything else names an agency by its id and
learns its kind from here; a client never asserts a kind. The originator is the agency's
record, whose id derives from the agency id (``agency_record_id``): an agency id is a public,
lower-case slug, never personal data.
"""

from __future__ import annotations

from uuid import UUID, uuid5

from pydantic import Field

from contracts.envelope import AGENCY_ID_PATTERN, KETNOI_NAMESPACE, Event, Model
from contracts.vocabulary import AgencyKind, ServiceType

# The platform's own actor (deadline watch, command line, demo seeding) acts under this id.
# It is reserved: no agency may be registered under it, so no token can ever speak for it.
PLATFORM_AGENCY_ID = "ketnoi"

# A province slug, or "*" for an agency whose jurisdiction is the whole country (a ministry).
JURISDICTION_PATTERN = r"^(\*|[a-z][a-z0-9-]*)$"
NATIONAL_JURISDICTION = "*"
COUNTRY_PATTERN = r"^[A-Z]{2}$"  # ISO 3166-1 alpha-2


def agency_record_id(agency_id: str) -> UUID:
    """The id of an agency's record in the directory log (derived from its public id)."""
    return uuid5(KETNOI_NAMESPACE, f"directory/agency/{agency_id}")


class AgencyContact(Model):
    """How to reach the organisation: its switchboard, office email and address. Never a
    person's own phone or email."""

    phone: str | None = Field(default=None, max_length=40, pattern=r"^\+?[0-9][0-9 ().-]{2,39}$")
    email: str | None = Field(default=None, max_length=200, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    address: str | None = Field(default=None, max_length=300)
    website: str | None = Field(default=None, max_length=300, pattern=r"^https?://\S+$")


class AgencyDetails(Model):
    """What the directory says about an agency, all of it replaced at once when it changes."""

    kind: AgencyKind
    name_vi: str = Field(min_length=1, max_length=200, description="the name in Vietnamese")
    name_en: str = Field(min_length=1, max_length=200, description="the name in English")
    country: str = Field(pattern=COUNTRY_PATTERN, description="ISO 3166-1 alpha-2")
    province: str = Field(
        min_length=1,
        max_length=60,
        pattern=JURISDICTION_PATTERN,
        description="province slug, or * for a national agency",
    )
    district: str | None = Field(default=None, min_length=1, max_length=80)
    services: tuple[ServiceType, ...] = Field(default=(), max_length=len(ServiceType))
    contact: AgencyContact = AgencyContact()


class AgencyRegistered(Event):
    """An agency joined the directory."""

    event_type = "org.ketnoi.directory.agency_registered"

    agency_id: str = Field(min_length=1, max_length=120, pattern=AGENCY_ID_PATTERN)
    details: AgencyDetails
    active: bool = True


class AgencyDetailsChanged(Event):
    """An agency's kind, names, jurisdiction, services or contact changed."""

    event_type = "org.ketnoi.directory.agency_details_changed"

    agency_id: str = Field(min_length=1, max_length=120, pattern=AGENCY_ID_PATTERN)
    details: AgencyDetails


class AgencyDeactivated(Event):
    """The agency no longer takes part: its users are refused and nobody may name it."""

    event_type = "org.ketnoi.directory.agency_deactivated"

    agency_id: str = Field(min_length=1, max_length=120, pattern=AGENCY_ID_PATTERN)
    reason: str | None = Field(default=None, max_length=1000)


class AgencyReactivated(Event):
    """A deactivated agency takes part again."""

    event_type = "org.ketnoi.directory.agency_reactivated"

    agency_id: str = Field(min_length=1, max_length=120, pattern=AGENCY_ID_PATTERN)
    reason: str | None = Field(default=None, max_length=1000)


DIRECTORY_EVENTS: tuple[type[Event], ...] = (
    AgencyRegistered,
    AgencyDetailsChanged,
    AgencyDeactivated,
    AgencyReactivated,
)
